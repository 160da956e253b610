"""Screens: the main table, help and small forms (one node in full: ``node_screen``)."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.timer import Timer
from textual.widgets import Button, Footer, Header, Input, Label, RichLog, Select, Static

from nodebisect import Event, LocateResult

from .messages import NodeHighlighted, NodeOpened
from .navigation import NavigationActions
from .node_screen import NodeScreen
from .verdict import VerdictScreen, verdict_text
from .view import FILTER_FIELDS, MARK_CULPRIT, MARK_SEGMENT, MARK_SUSPECT, ResultIndex
from .widgets import NodeDetail, NodeTable, VerdictBanner

FILTER_DELAY = 0.15  # seconds of typing quiet before a 10k-row table is refiltered


class MainScreen(NavigationActions, Screen):
    """Verdict banner, the node table with its filter, and a detail pane."""

    # The footer shows these in this order, before the app's q and ?: keep the labels short so
    # that all of them, q Quit and ? Help included, fit in 80 columns.
    BINDINGS = [
        Binding("q", "app.quit", "Quit", tooltip="Quit nodebisect", id="main-quit"),
        Binding("question_mark", "app.help", "Help", tooltip="Show every key", id="main-help"),
        Binding("j", "culprit", "Culprit", tooltip="Jump to the culprit (capture: the ONNX node carrying it)", id="culprit"),
        Binding("enter", "open_detail", "Detail", show=False, tooltip="Open the selected node in full", id="detail"),
        Binding("v", "verdict", "Verdict", tooltip="The whole verdict: why, segment, suspects, notes", id="verdict"),
        Binding("n", "neighbourhood", "Graph", tooltip="Neighbourhood: pick a node to jump to it", id="graph"),
        Binding("slash", "focus_filter", "Filter", tooltip="Filter: op, module, status, is:segment, is:suspect", id="filter"),
        Binding("i", "walk(True)", "Up", show=False, tooltip="Go to a producer (a divergent one first)", id="up"),
        Binding("o", "walk(False)", "Down", show=False, tooltip="Go to a consumer (a divergent one first)", id="down"),
        Binding("b", "back", "Back", show=False, tooltip="Back to the previously selected node", id="back"),
        Binding("r", "rerun", "Re-run", tooltip="Run again with another tolerance or strategy", id="rerun"),
        Binding("w", "write_report", "Report", tooltip="Write the report bundle", id="report"),
        Binding("s", "save_json", "Save", tooltip="Save the result JSON", id="save"),
        Binding("escape", "clear_filter", "Clear filter", show=False, id="clear"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.index: ResultIndex | None = None
        self.history: list[str] = []
        self._filter_timer: Timer | None = None
        self._pinned = ""  # a capture culprit no ONNX node carries: the side panel keeps the verdict on this row

    def compose(self) -> ComposeResult:
        yield Header()
        yield VerdictBanner(Text("no result yet", style="dim"), id="banner")
        with Horizontal(id="body"):
            with Vertical(id="left"):
                yield Input(placeholder="filter: Gemm  op:Softmax  mod:encoder  status:diverged  is:segment", id="filter")
                yield NodeTable(id="nodes")
            with VerticalScroll(id="side"):
                yield NodeDetail(id="detail")
        yield RichLog(id="runlog", max_lines=500, markup=False, wrap=True)
        # Nine keys fill 75 of 80 columns; the palette's own label would cover "s Save" (ctrl+p is in Help).
        yield Footer(compact=True, show_command_palette=False)

    @property
    def table(self) -> NodeTable:
        return self.query_one(NodeTable)

    # -- data in --------------------------------------------------------------------
    def show_result(self, result: LocateResult) -> None:
        self.index = ResultIndex(result)
        self.remove_class("-running")
        self.query_one(VerdictBanner).show_result(self.index)
        self.history.clear()
        self._refilter()
        self._pinned = ""
        if self.index.culprit:
            self.table.show(self.index.culprit)
        elif self.index.capture:  # nothing in the table to start on: start on eager vs export
            self._pinned = self.table.current or ""
            self.query_one(NodeDetail).update(verdict_text(self.index))
        self.table.focus()

    def run_started(self, model: str) -> None:
        self.add_class("-running")
        self.query_one(RichLog).clear()
        self.query_one(VerdictBanner).show_running(model, "starting")

    def run_progress(self, model: str, event: Event) -> None:
        log = self.query_one(RichLog)
        if event.kind == "stage":
            log.write(Text(f"▸ {event.message}", style="bold"))
            self.query_one(VerdictBanner).show_running(model, event.message)
        elif event.kind == "probe":
            style = "red" if event.bad else "green"
            total = f"/{event.total}" if event.total else ""
            log.write(Text(f"  step {event.step}{total}: {len(event.values)} value(s) measured, {len(event.bad)} diverged", style=style))
            if event.bad:
                log.write(Text("    diverged: " + ", ".join(event.bad[:8]) + (" …" if len(event.bad) > 8 else ""), style="dim"))
        elif event.kind == "done":
            log.write(Text(f"✓ done: {event.message}", style="bold"))

    def run_failed(self, message: str, tip: str) -> None:
        self.query_one(RichLog).write(Text(f"✗ {message}", style="bold red"))
        self.query_one(VerdictBanner).show_failed(message, tip)
        if self.index is not None:
            self.remove_class("-running")

    # -- selection --------------------------------------------------------------------
    def select(self, name: str, remember: bool = True) -> None:
        """Move the table cursor to ``name`` (clearing a filter that hides it)."""
        current = self.table.current
        if not self.table.show(name):
            self.query_one("#filter", Input).value = ""
            self._refilter()
            self.table.show(name)
        if remember and current and current != name:
            self.history.append(current)

    @on(NodeHighlighted)
    def _highlighted(self, event: NodeHighlighted) -> None:
        if self._pinned and event.name == self._pinned:
            return
        self._pinned = ""
        self.query_one(NodeDetail).show(self.index, event.name)

    @on(NodeOpened)
    def _opened(self, event: NodeOpened) -> None:
        self.action_open_detail()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        if self._filter_timer is not None:
            self._filter_timer.stop()
        self._filter_timer = self.set_timer(FILTER_DELAY, self._refilter)

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        if self._filter_timer is not None:
            self._filter_timer.stop()
        self._refilter()
        self.table.focus()

    def _refilter(self) -> None:
        if self.index is None:
            return
        keep = self.table.current
        query = self.query_one("#filter", Input).value
        records = self.index.matching(query)
        self.table.load(self.index, records)
        total = len(self.index.result.nodes)
        self.query_one("#left").border_subtitle = f"{len(records)} of {total} nodes" if query.strip() else f"{total} nodes"
        if keep:
            self.table.show(keep)
        if not self.table.row_count:
            self.query_one(NodeDetail).show(None, None)

    def action_focus_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def set_filter(self, query: str) -> None:
        """Filter the table as if ``query`` were typed into the filter box."""
        self.query_one("#filter", Input).value = query
        self._refilter()
        self.table.focus()

    def action_clear_filter(self) -> None:
        filt = self.query_one("#filter", Input)
        if filt.value:
            filt.value = ""
            self._refilter()
        self.table.focus()


class HelpScreen(ModalScreen[None]):
    """Every key, from the bindings themselves, and the filter syntax."""

    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "Close", id="close-help")]

    def compose(self) -> ComposeResult:
        text = Text()
        text.append("nodebisect TUI\n\n", style="bold")
        groups: list[tuple[str, list[Any]]] = [
            ("everywhere", list(self.app.BINDINGS)),
            ("node table", list(MainScreen.BINDINGS) + [b for b in NodeTable.BINDINGS if b.key != "enter"]),
            ("node / graph view", list(NodeScreen.BINDINGS)),
            ("verdict view", list(VerdictScreen.BINDINGS)),
        ]
        listed: set[str] = set()
        rows: list[tuple[str, list[tuple[str, str]]]] = []
        for title, bindings in groups:
            shown = []
            for b in bindings:
                if title != "everywhere" and b.key in listed and b.key in ("q", "question_mark"):
                    continue
                listed.add(b.key)
                shown.append((self.key_names(b), b.tooltip or b.description))
            rows.append((title, shown))
        width = max(len(key) for _, shown in rows for key, _ in shown) + 2  # a long key never runs into its text
        for title, shown in rows:
            text.append(title + "\n", style="bold underline")
            for key, what in shown:
                text.append(f"  {key:<{width}}", style="bold cyan")
                text.append(f"{what}\n")
            text.append("\n")
        text.append("filter\n", style="bold underline")
        text.append("  words match op type, node, module path or status; all must match\n")
        text.append(f"  prefixes narrow a word: {', '.join(f + ':' for f in FILTER_FIELDS)}  e.g. op:Gemm mod:layer.3\n")
        text.append("  is:culprit, is:segment, is:suspect keep the nodes the verdict names\n")
        text.append("\nrows: ", style="bold")
        text.append("culprit", style="bold white on red")
        text.append("  ")
        text.append("diverged", style="bold red")
        text.append("  ")
        text.append("ok but > half the tolerance", style="yellow")
        text.append("  ")
        text.append("ok", style="green")
        text.append("  ")
        text.append("unmapped / not run", style="dim")
        text.append("\nmarks: ", style="bold")
        text.append(f"{MARK_CULPRIT} culprit (or the ONNX node carrying a capture culprit)   "
                    f"{MARK_SEGMENT} in the culprit's segment   {MARK_SUSPECT} suspect outside the segment\n")
        text.append("\nctrl+p", style="bold cyan")
        text.append("  command palette: jump to the culprit, filter, verdict, write report, save, re-run, go to a node\n")
        with VerticalScroll(id="help-box"):
            yield Static(text)
            yield Label("escape or ? closes", classes="hint")


    def key_names(self, binding: Binding) -> str:
        """Each key of a binding as the footer shows it (``+ / =``, ``?``, ``^p``), not its name (``equals_sign``)."""
        return " / ".join(self.app.get_key_display(Binding(key.strip(), "")) for key in binding.key.split(","))


class PathScreen(ModalScreen["str | None"]):
    """Ask where to write something; Enter accepts, Escape cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="cancel-path")]

    def __init__(self, prompt: str, default: str) -> None:
        super().__init__()
        self.prompt = prompt
        self.default = default

    def compose(self) -> ComposeResult:
        with Vertical(id="path-box", classes="form"):
            yield Label(self.prompt)
            yield Input(value=self.default, id="path")
            yield Label("enter writes · escape cancels", classes="hint")

    @on(Input.Submitted, "#path")
    def _submit(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class FormSelect(Select):
    """A form's Select: Enter submits the form, as in its Inputs; space and the arrows open the list."""

    BINDINGS = [Binding("enter", "screen.submit", "Run", show=False)]


class RerunScreen(ModalScreen["dict[str, Any] | None"]):
    """A small form: tolerance and strategy for another ``locate`` run."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="cancel-rerun")]

    def __init__(self, options: dict[str, Any], model: str = "", note: str = "") -> None:
        super().__init__()
        self.options = options
        self.model = model
        self.note = note

    def compose(self) -> ComposeResult:
        def shown(key: str) -> str:
            value = self.options.get(key)
            return "" if value is None else f"{value:g}"

        with Vertical(id="rerun-box", classes="form"):
            yield Label("Re-run locate  (blank tolerance = per-dtype default)", classes="title")
            if self.model:
                yield Label(f"model  {self.model}", id="rerun-model")
            if self.note:
                yield Label(self.note, classes="hint")
            with Horizontal(classes="field"):
                yield Label("rtol", classes="name")
                yield Input(value=shown("rtol"), placeholder="e.g. 1e-3", id="rtol")
            with Horizontal(classes="field"):
                yield Label("atol", classes="name")
                yield Input(value=shown("atol"), placeholder="e.g. 1e-4", id="atol")
            with Horizontal(classes="field"):
                yield Label("strategy", classes="name")
                yield FormSelect(
                    [(s, s) for s in ("auto", "all", "bisect")],
                    value=self.options.get("strategy") or "auto",
                    allow_blank=False,
                    id="strategy",
                )
            yield Label("", id="rerun-error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Run", variant="primary", id="run")
                yield Button("Cancel", id="cancel")

    @on(Button.Pressed, "#run")
    @on(Input.Submitted)
    def action_submit(self) -> None:
        """Run with the form's values (Enter in any field, or the Run button); a bad value stays to be fixed."""
        values, error = self._values()
        self.query_one("#rerun-error", Label).update(error)
        if not error:
            self.dismiss(values)

    @on(Input.Changed)
    def _recheck(self) -> None:
        """An error shown stays only while a field is still wrong (fixing it clears it; no new one while typing)."""
        label = self.query_one("#rerun-error", Label)
        if str(label.render()):
            label.update(self._values()[1])

    def _values(self) -> tuple[dict[str, Any], str]:
        values: dict[str, Any] = {}
        for key in ("rtol", "atol"):
            text = self.query_one(f"#{key}", Input).value.strip()
            try:
                values[key] = float(text) if text else None
            except ValueError:
                return values, f"{key} must be a number, got {text!r}"
            if values[key] is not None and values[key] < 0:
                return values, f"{key} must be >= 0"
        values["strategy"] = self.query_one("#strategy", Select).value
        return values, ""

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
