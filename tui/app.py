"""The Textual app and ``create_app``, the one factory the CLI and the tests use.

Opened on a saved result JSON it imports nothing heavier than ``nodebisect.records``;
opened on a model it runs ``nodebisect.locate`` in a thread worker that relays each
progress ``Event`` as a message, so the screen stays live while torch works.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from nodebisect import load_result
from nodebisect.errors import BadInputError, CancelledError, NodebisectError
from nodebisect.records import LocateResult

from .commands import NodeCommands, app_commands
from .files import FileActions
from .messages import NodeChosen, RunFailed, RunFinished, RunProgress
from .preparation import KeptPreparation
from .screens import HelpScreen, MainScreen, RerunScreen

@dataclass(frozen=True)
class RunSpec:
    """What to hand ``nodebisect.locate``: the model and its keyword options."""

    model: str
    options: dict[str, Any] = field(default_factory=dict)


class NodebisectApp(FileActions, App[int]):
    """Shows one ``LocateResult``; can produce it (and re-produce it) from a ``RunSpec``."""

    CSS_PATH = "app.tcss"
    TITLE = "nodebisect"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]
    COMMANDS = App.COMMANDS | {NodeCommands}
    BINDINGS = [
        Binding("q", "quit", "Quit", tooltip="Quit nodebisect", id="quit"),
        Binding("question_mark", "help", "Help", tooltip="Show every key", id="help"),
    ]

    def __init__(self, result: LocateResult | None = None, spec: RunSpec | None = None, source: str = "") -> None:
        super().__init__()
        self.result = result
        self.spec = spec
        self.source = source or (spec.model if spec else "")
        self.running = False
        self._cancel: threading.Event | None = None
        self.kept = KeptPreparation()  # the PreparedModel re-runs search again

    def get_default_screen(self) -> MainScreen:
        return MainScreen()

    @property
    def main(self) -> MainScreen:
        """The table screen at the bottom of the stack (other screens come and go above it)."""
        screen = self.screen_stack[0]
        assert isinstance(screen, MainScreen)
        return screen

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """Textual's palette commands, then nodebisect's: each calls the same action as its key,
        so the palette and the keys cannot drift apart."""
        yield from super().get_system_commands(screen)
        for title, help_text, callback in app_commands(self, self.main):
            yield SystemCommand(title, help_text, callback)

    async def action_quit(self) -> None:
        """Quit at once: a running locate is told to stop at its next step."""
        if self._cancel is not None:
            self._cancel.set()
        self.exit()

    def on_unmount(self) -> None:
        """However the app ends: stop the kept onnxruntime child and remove its weights file."""
        self.kept.close()

    def on_ready(self) -> None:
        """The main screen is composed: show the result, or start producing one."""
        self.sub_title = self.source
        if self.result is not None:
            self.main.show_result(self.result)
        elif self.spec is not None:
            self.start_run(self.spec)

    # -- the locate worker ------------------------------------------------------------
    def start_run(self, spec: RunSpec) -> None:
        self.spec = spec
        self.source = spec.model
        self.sub_title = spec.model
        self.running = True
        self.main.run_started(spec.model)
        self.run_locate(spec)

    @work(thread=True, exclusive=True, group="locate", exit_on_error=False)
    def run_locate(self, spec: RunSpec) -> None:
        """Run ``locate`` off the event loop; everything reaches the UI as messages.

        The model is prepared once (``nodebisect.prepare``) and kept: a re-run that
        changes only how the search judges (tolerance, strategy, EP...) searches the
        kept preparation again, with its onnxruntime child, weights file and answers.
        A re-run that changes what is exported or captured prepares anew.
        """
        from nodebisect import locate

        self._cancel = threading.Event()
        progress = lambda event: self.post_message(RunProgress(event))  # noqa: E731
        try:
            prepared = self.kept.for_run(spec.model, spec.options, progress, self._cancel)
            result = locate(prepared, progress=progress, cancel=self._cancel, **self.kept.search_options(spec.options))
        except CancelledError:
            return  # the user quit: nothing to show
        except NodebisectError as exc:
            self.post_message(RunFailed(exc.message, exc.tip))
            return
        except Exception as exc:  # noqa: BLE001 - shown in the app, not swallowed
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            self.post_message(RunFailed(f"internal error: {type(exc).__name__}: {first}",
                                        "run `nodebisect locate ... --debug` for the traceback"))
            return
        self.post_message(RunFinished(result))

    @on(RunProgress)
    def _progress(self, message: RunProgress) -> None:
        self.main.run_progress(self.source, message.event)

    @on(RunFinished)
    def _finished(self, message: RunFinished) -> None:
        self.running = False
        self.result = message.result
        self.main.show_result(message.result)
        self.notify(f"locate finished: {message.result.verdict}")

    @on(RunFailed)
    def _failed(self, message: RunFailed) -> None:
        self.running = False
        self.main.run_failed(message.message, message.tip)
        self.notify(message.message, title="locate failed", severity="error", timeout=10)

    @on(NodeChosen)
    def _node_chosen(self, message: NodeChosen) -> None:
        self.main.select(message.name)

    # -- actions ----------------------------------------------------------------------
    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_verdict(self) -> None:
        self.main.action_verdict()

    def action_rerun(self) -> None:
        if self.running:
            self.notify("a run is already in progress", severity="warning")
            return
        spec = self.spec
        note = ""
        if spec is None:
            recorded = self.result.model if self.result is not None else ""
            model = recorded_model(recorded, self.source)
            if model is None:
                where = f"{recorded!r}, recorded in {self.source}, is not found from here" if recorded else "the result records no model"
                self.notify(f"re-run needs the model: {where}; start `nodebisect tui MODEL ...` to re-run",
                            severity="warning", timeout=8)
                return
            options, missing = recorded_options(self.result.environment.get("run_inputs", {}) if self.result else {})
            spec = RunSpec(model, options)
            note = f"model recorded in {self.source or 'the result'}" + (
                f"; with its recorded {', '.join(sorted(options))}" if options else ""
            ) + (f"; not found from here: {', '.join(missing)}" if missing else "")

        def rerun(values: dict[str, Any] | None) -> None:
            if values is not None:
                self.start_run(replace(spec, options={**spec.options, **values}))

        self.push_screen(RerunScreen(spec.options, model=spec.model, note=note), rerun)


def create_app(target: str | os.PathLike[str] | LocateResult, **locate_options: Any) -> NodebisectApp:
    """Build the app from a result JSON path, a ``LocateResult``, or a model to locate.

    Args:
        target: ``RESULT.json`` (opened at once, torch never imported), a
            ``LocateResult``, or a model spec that ``nodebisect.locate`` accepts.
        **locate_options: ``locate`` keyword options for a model (ignored for a result).

    Raises:
        BadInputError: the JSON file or model path cannot be used.
    """
    if isinstance(target, LocateResult):
        return NodebisectApp(result=target, source=target.model or "result")
    spec = os.fspath(target)
    if spec.lower().endswith(".json"):
        return NodebisectApp(result=load_result(spec), source=spec)
    if ":" not in spec and not Path(spec).exists():
        raise BadInputError(f"model file not found: {spec}", tip="pass a model file, file.py:factory, or a saved RESULT.json")
    onnx_path = locate_options.get("onnx_path")
    if onnx_path and not Path(onnx_path).exists():
        raise BadInputError(f"ONNX file not found: {onnx_path}", tip="check the --onnx path")
    options = {k: v for k, v in locate_options.items() if v is not None}
    return NodebisectApp(spec=RunSpec(spec, options), source=spec)


def recorded_options(run_inputs: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``locate`` options repeating a saved run's inputs and ONNX file, and the recorded files gone since."""
    options: dict[str, Any] = {}
    missing: list[str] = []
    for key, value in run_inputs.items():
        paths = value if key == "extra_inputs" else [value] if key in ("inputs_file", "onnx_path") else []
        gone = [p for p in paths if not Path(p).exists()]
        if gone:
            missing += gone
            continue
        options[key] = value
    return options, missing


def recorded_model(model: str, result_path: str = "") -> str | None:
    """The model a saved result names, as a spec ``locate`` accepts from here; None when it is gone.

    A path is tried as written (from the cwd) and next to the result JSON; ``file.py:factory``
    checks its file; ``pkg.module:factory`` is offered as is (importing it is the only check).
    """
    if not model or model.startswith("<"):
        return None
    file_part, sep, factory = model.partition(":")
    is_module = bool(sep) and not file_part.endswith(".py") and "/" not in file_part and "\\" not in file_part
    if is_module:
        return model
    bases = [Path.cwd()] + ([Path(result_path).resolve().parent] if result_path else [])
    for base in bases:
        candidate = Path(file_part) if Path(file_part).is_absolute() else base / file_part
        if candidate.exists():
            shown = file_part if base == Path.cwd() or Path(file_part).is_absolute() else str(candidate)
            return shown + (f":{factory}" if sep else "")
    return None
