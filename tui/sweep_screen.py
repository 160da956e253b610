"""A sweep directory in the TUI: a table of models; Enter opens one's result as ``nodebisect tui RESULT.json`` would.

Reads only ``DIR/sweep.jsonl`` (each row is a ``locate --json`` document with the
sweep's keys added), so opening a sweep imports nothing heavier than ``nodebisect.records``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from nodebisect.errors import BadInputError
from nodebisect.records import LocateResult
from nodebisect.sweep.results import ROWS_FILE, load_rows

from .app import NodebisectApp

COLUMNS = ("model", "status", "culprit / reason", "aten op", "wall s", "MiB")
# Worst first: what a maintainer opens a sweep for.
STATUS_ORDER = ("diverged", "export_failed", "runtime_failed", "crashed", "timeout", "out_of_memory", "error", "bad_input", "lost",
                "skipped", "match")


def is_sweep_dir(path: str | Path) -> bool:
    """True for a directory written by ``nodebisect sweep --out``."""
    return (Path(path) / ROWS_FILE).is_file()


def load_sweep_rows(path: str | Path) -> list[dict[str, Any]]:
    """The complete rows of a sweep directory, worst first (``sweep.results.load_rows``: torn lines
    skipped, a model's later row wins).

    Raises:
        BadInputError: not a sweep directory.
    """
    if not is_sweep_dir(path):
        raise BadInputError(f"no {ROWS_FILE} in {path}", tip="open a directory written by `nodebisect sweep --out DIR`")
    return sorted(load_rows(Path(path)), key=lambda r: (_rank(r["status"]), r["name"]))


def culprit_text(row: dict[str, Any]) -> tuple[str, str]:
    """(culprit or reason, aten op) for the table."""
    fd = row.get("first_divergent") or {}
    if row["status"] == "diverged" and fd:
        return f"{fd.get('onnx_node', '')} ({fd.get('op_type', '')})", (fd.get("framework") or {}).get("target", "")
    ef = row.get("export_failure") or {}
    return row.get("reason", ""), ef.get("target", "") if ef else ""


class SweepScreen(Screen):
    """Every model of the sweep, worst first; Enter opens its result."""

    BINDINGS = [
        Binding("enter", "open_model", "Open", tooltip="Open the model's result (the node table)", id="sweep-open"),
        Binding("q", "app.quit", "Quit", tooltip="Quit nodebisect", id="sweep-quit"),
    ]

    def __init__(self, rows: list[dict[str, Any]], title: str) -> None:
        super().__init__()
        self.rows = rows
        self.title_text = title

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(self._counts(), id="sweep-counts")
        yield DataTable(id="sweep-table", cursor_type="row", zebra_stripes=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns(*COLUMNS)
        for row in self.rows:
            culprit, target = culprit_text(row)
            table.add_row(row["name"], row["status"], culprit[:90], target, f"{float(row.get('wall_s') or 0):.0f}",
                          f"{float(row.get('peak_rss_mib') or 0):.0f}", key=row["name"])
        table.focus()

    def _counts(self) -> str:
        counts: dict[str, int] = {}
        for row in self.rows:
            counts[row["status"]] = counts.get(row["status"], 0) + 1
        parts = [f"{counts[s]} {s}" for s in STATUS_ORDER if s in counts]
        return f"{self.title_text}: {len(self.rows)} models: " + ", ".join(parts)

    def action_open_model(self) -> None:
        table = self.query_one(DataTable)
        if 0 <= table.cursor_row < len(self.rows):
            self.app.open_model(self.rows[table.cursor_row])  # type: ignore[attr-defined]

    @on(DataTable.RowSelected)
    def _selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open_model()


class SweepApp(NodebisectApp):
    """The result app, opened on a sweep: the model table first, ``m`` brings it back."""

    BINDINGS = NodebisectApp.BINDINGS + [
        Binding("m", "models", "Models", tooltip="Back to the sweep's table of models", id="models"),
    ]

    def __init__(self, sweep_dir: str | Path) -> None:
        super().__init__(source=str(sweep_dir))
        self.sweep_dir = Path(sweep_dir)
        self.rows = load_sweep_rows(sweep_dir)
        self.model_name = ""

    def on_ready(self) -> None:
        super().on_ready()
        self.push_screen(SweepScreen(self.rows, self.sweep_dir.name or str(self.sweep_dir)))

    def open_model(self, row: dict[str, Any]) -> None:
        """Show the row's result on the main screen; a row without one says why."""
        if not row.get("verdict"):
            self.notify(f"{row['name']}: {row['status']}: {row.get('reason', '')}", title="no result", severity="warning")
            return
        result = LocateResult.from_dict(row)
        self.result = result
        self.model_name = row["name"]
        self.sub_title = f"{self.sweep_dir} / {row['name']}"
        self.main.show_result(result)
        if isinstance(self.screen, SweepScreen):
            self.pop_screen()

    def action_models(self) -> None:
        if not isinstance(self.screen, SweepScreen):
            self.push_screen(SweepScreen(self.rows, self.sweep_dir.name or str(self.sweep_dir)))


def create_sweep_app(sweep_dir: str | Path) -> SweepApp:
    """The app for ``nodebisect tui DIR`` when DIR holds a sweep (see ``is_sweep_dir``)."""
    return SweepApp(sweep_dir)


def _rank(status: str) -> int:
    return STATUS_ORDER.index(status) if status in STATUS_ORDER else len(STATUS_ORDER)
