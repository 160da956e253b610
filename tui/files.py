"""The app's file actions: save the result JSON, write the report bundle (in a thread worker).

A mixin of ``NodebisectApp``: it reads ``self.result`` and uses the app's
``notify``/``push_screen``; the report is written by ``nodebisect.report.bundle``,
the same writer as ``locate --report``.
"""

from __future__ import annotations

from importlib.util import find_spec
from typing import Any

from textual import work

from nodebisect.errors import NodebisectError
from nodebisect.records import LocateResult

from .screens import PathScreen

REPORT_MODULE = "nodebisect.report.bundle"


class FileActions:
    """``s`` (save JSON) and ``w`` (write the report bundle)."""

    result: LocateResult | None
    notify: Any
    push_screen: Any
    call_from_thread: Any

    def action_save_json(self) -> None:
        if self.result is None:
            self.notify("no result to save yet", severity="warning")
            return
        self.push_screen(PathScreen("Save the result JSON to", "nodebisect-result.json"), self.save_json)

    def save_json(self, path: str | None) -> None:
        if not path or self.result is None:
            return
        from nodebisect.report.atomic import write_text

        try:
            write_text(path, self.result.to_json())
        except OSError as exc:
            self.notify(f"cannot write {path}: {exc.strerror}", severity="error")
            return
        self.notify(f"wrote {path}")

    def action_write_report(self) -> None:
        if self.result is None:
            self.notify("no result to report yet", severity="warning")
            return
        if find_spec(REPORT_MODULE) is None:
            self.notify(f"cannot write the report: {REPORT_MODULE} is not installed in this nodebisect",
                        title="report unavailable", severity="error", timeout=8)
            return
        self.push_screen(PathScreen("Write the report bundle into the folder", "nodebisect-report"), self.write_report)

    def write_report(self, out_dir: str | None) -> None:
        if out_dir and self.result is not None:
            self.notify(f"writing the report to {out_dir} ...")
            self._write_report_worker(self.result, out_dir)

    @work(thread=True, group="report", exit_on_error=False)
    def _write_report_worker(self, result: LocateResult, out_dir: str) -> None:
        try:
            from nodebisect.report.bundle import write_report
        except ImportError as exc:
            self.call_from_thread(self.notify, f"cannot write the report: {exc}", severity="error")
            return
        try:
            written = write_report(result, out_dir)
        except (NodebisectError, OSError) as exc:
            self.call_from_thread(self.notify, f"report failed: {getattr(exc, 'message', exc)}", severity="error")
            return
        self.call_from_thread(self.notify, f"wrote the report to {written or out_dir}")
