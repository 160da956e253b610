"""What a run is told (``Options``) and what it keeps while it runs (``RunLog``).

Both are plain objects passed explicitly to every step: no step reads another
step's state, and the log is the one place notes, timings and progress go.
"""

from __future__ import annotations

import math
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Iterator

from nodebisect.errors import BadInputError, CancelledError

STRATEGIES = ("auto", "all", "bisect")
EXPORTERS = ("dynamo", "torchscript")
ORACLE_MODES = ("auto", "on", "off")
# onnxruntime graph optimization levels by the names the CLI and the results use.
ORT_OPT_LEVELS = {
    "disabled": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


@dataclass
class Event:
    """A progress event: one callback type serves the CLI and the TUI.

    ``kind`` is one of: "stage" (a pipeline step starts; ``message`` names it),
    "probe" (a bisection step measured ``values``; ``bad`` lists the divergent
    ones), "done".
    """

    kind: str
    message: str = ""
    values: list[str] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)
    step: int = 0
    total: int = 0


Progress = Callable[[Event], None]


@dataclass
class Options:
    """Everything ``locate`` can be told; the CLI fills it from its flags."""

    onnx_path: str | None = None
    opset: int | None = None
    rtol: float | None = None
    atol: float | None = None
    device: str = "cpu"
    ep: str = "cpu"
    strategy: str = "auto"
    probes_per_step: int = 3
    opt_level: str = "all"
    check_capture: bool = True
    seed: int = 0
    input_specs: list[str] | None = None
    inputs_file: str | None = None
    trust_pickle: bool = False
    exporter: str = "dynamo"
    isolate_crashes: bool = True
    timeout_s: float = 600.0
    # Bytes of reference activations kept in RAM before the rest is memory-mapped
    # from disk (None: a quarter of the available memory).
    memory_budget: int | None = None
    # Extra input sets: N-1 drawn trials (edge-case distributions) and more input files.
    trials: int = 1
    extra_inputs: list[str] | None = None
    # Export with dynamic dimensions; even --trials then also vary the input shapes.
    dynamic: bool = False
    # Set it (from another thread) to stop a run between steps: CancelledError.
    cancel: threading.Event | None = None
    # --model-setting KEY=VALUE: applied to the model's config / attributes before export
    # (frontends.model_settings), noted in every report.
    model_settings: list[str] | None = None
    # The float64 oracle that gives each value its natural noise (values.noise):
    # "auto" runs it when no --rtol/--atol is given and it fits the memory budget.
    oracle: str = "auto"
    # Keras models: tf2onnx's optimizers to convert with ("a,b", "baseline" = {remove_identity}); None: tf2onnx's default.
    tf2onnx_optimizers: str | None = None
    # Called with the run's ``Prepared`` (ONNX model, reference values, feeds) after the search, while
    # its arrays are live: the interop writers (Polygraphy golden values, the model Model Explorer opens).
    on_prepared: Callable[[Any], None] | None = None

    def judges_noise(self) -> bool:
        """Values are judged against the float64 oracle: --oracle on, or auto without fixed --rtol/--atol."""
        return self.oracle == "on" or (self.oracle == "auto" and self.rtol is None and self.atol is None)


# Options that change what is exported and captured; the others only change the search,
# so a prepared model can be searched again under them without exporting again.
PREPARE_FIELDS = (
    "onnx_path", "opset", "device", "seed", "input_specs", "inputs_file", "trust_pickle", "exporter", "memory_budget", "dynamic", "oracle",
    "model_settings", "tf2onnx_optimizers",
)


# Options naming what a run compared (its inputs, its ONNX file): recorded in the result's
# environment as "run_inputs", so the report's reproduce command and the TUI's re-run repeat them.
RECORDED_INPUTS = ("inputs_file", "extra_inputs", "input_specs", "onnx_path", "seed", "trials")
_PATHS = ("inputs_file", "onnx_path")


def recorded_inputs(opts: Options) -> dict[str, Any]:
    """The non-default ``RECORDED_INPUTS`` of ``opts``, file paths made absolute (a re-run may start elsewhere)."""
    defaults = Options()
    out: dict[str, Any] = {}
    for name in RECORDED_INPUTS:
        value = getattr(opts, name)
        if value is None or value == [] or value == getattr(defaults, name):
            continue
        if name in _PATHS:
            value = os.path.abspath(value)
        elif name == "extra_inputs":
            value = [os.path.abspath(v) for v in value]
        out[name] = list(value) if isinstance(value, (list, tuple)) else value
    return out


def search_again_options(before: Options, changes: dict[str, Any]) -> Options:
    """The options of a prepared model's re-run: ``before`` with ``changes``, none of them a ``PREPARE_FIELDS``."""
    opts = make_options({**{f.name: getattr(before, f.name) for f in fields(Options)}, **changes})
    changed = [name for name in PREPARE_FIELDS if getattr(before, name) != getattr(opts, name)]
    if changed:
        raise BadInputError(
            f"{', '.join(changed)} change(s) what is exported or captured; a prepared model can only be searched again",
            tip="call prepare() (or locate the model itself) with the new options",
        )
    return opts


def make_options(options: dict[str, Any]) -> Options:
    """Validate keyword options into ``Options`` (``TypeError`` / ``BadInputError`` as the API promises)."""
    unknown = set(options) - {f.name for f in fields(Options)}
    if unknown:
        raise TypeError(f"unknown option(s): {sorted(unknown)}")
    opts = Options(**options)
    if opts.exporter not in EXPORTERS:
        raise BadInputError(f"unknown exporter {opts.exporter!r}", tip="use dynamo or torchscript")
    if opts.oracle not in ORACLE_MODES:
        raise BadInputError(f"unknown oracle mode {opts.oracle!r}", tip="use auto, on or off")
    if opts.strategy not in STRATEGIES:
        raise BadInputError(f"unknown strategy {opts.strategy!r}", tip="use auto, all or bisect")
    for name in ("rtol", "atol"):
        value = getattr(opts, name)
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise BadInputError(f"--{name} {value} is not a tolerance: it must be a finite number >= 0",
                                tip="e.g. --rtol 1e-3 --atol 1e-4, or leave them out for the per-dtype defaults")
    return opts


@dataclass
class RunLog:
    """Progress events, cancellation, notes, timings and extra session counts of one run."""

    emit: Progress = lambda _e: None
    cancel: threading.Event | None = None
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    extra_sessions: int = 0
    expected_steps: int = 0

    def stage(self, name: str) -> float:
        """Announce a step (after a cancellation check); returns its start time."""
        self.check_cancel()
        self.emit(Event(kind="stage", message=name))
        return time.perf_counter()

    @contextmanager
    def timed(self, key: str, stage: str | None = None) -> Iterator[None]:
        """Time a block under ``key`` in ``timings`` (announcing ``stage`` first when given)."""
        t = self.stage(stage) if stage else time.perf_counter()
        try:
            yield
        finally:
            self.timings[key] = time.perf_counter() - t

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise CancelledError("locate was cancelled")

    def note(self, text: str) -> None:
        self.notes.append(text)

    def expect_steps(self, done: int, cone: int, k: int) -> None:
        """How many probe steps a bisection over ``cone`` values should take (for progress bars)."""
        self.expected_steps = done + (math.ceil(math.log(cone, k + 1)) if cone > 1 else 0) + 1
