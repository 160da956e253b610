"""The one place the steps are wired together: load, prepare, check stages, search, explain.

``locate()`` is the public API; the CLI and the TUI call it and render the
``LocateResult`` it returns. ``prepare()`` does the expensive half once (load,
export, capture, the stage checks) so that ``locate(prepared, ...)`` can search
the same model again under another tolerance or strategy without exporting or
capturing again (the TUI's re-run). The ``PreparedModel`` also keeps the
onnxruntime side warm (``runtime.handle.WarmOrt``: the child process, the weights
file, the answers already given) until ``close()``; a plain ``locate(model)``
closes its own at the end.

Read top to bottom, ``_prepare`` and ``_search`` are the numbered steps of the
data flow; every step takes its inputs explicitly and returns its outputs. The
``RunLog`` carries progress, cancellation, notes and timings.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

from nodebisect.errors import ExportFailedError
from nodebisect.prepared import Prepared, settle
from nodebisect.records import CAUSE_CONVERSION, CAUSE_INHERITED, DIVERGED, EXPORT_FAILED, MATCH, RIGHT, ExportFailure, FirstDivergent, LocateResult, Stage
from nodebisect.run import Event, Options, Progress, RunLog, make_options, recorded_inputs, search_again_options


@dataclass
class PreparedModel:
    """A model loaded, exported and captured once, with its stage checks: search it many times."""

    opts: Options
    source: str
    environment: dict[str, Any]
    loaded: Any = None
    prep: Prepared | None = None
    failed: LocateResult | None = None  # the export failed: this is the answer
    capture_info: dict[str, Any] = field(default_factory=dict)
    culprit: FirstDivergent | None = None  # a capture or decomposition stage culprit
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    # runtime.handle.WarmOrt: onnxruntime child, weights file and answers, kept for re-runs.
    warm: Any = None

    def close(self) -> None:
        """Stop the onnxruntime child and remove the weights file (idempotent; a later locate starts afresh)."""
        if self.warm is not None:
            self.warm.close()
            self.warm = None

    def __enter__(self) -> PreparedModel:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def locate(model: Any, inputs: Any = None, *, progress: Progress | None = None, **options: Any) -> LocateResult:
    """Find the first ONNX node whose output departs from the framework model.

    Args:
        model: an ``nn.Module``, a ``torch.export.ExportedProgram``, a path /
            factory spec (``model.pt2``, ``file.py:Factory``), or a
            ``PreparedModel`` from ``prepare()`` (searched again without exporting).
        inputs: a tensor, a tuple of tensors or a dict of keyword tensors; when
            omitted, ``inputs_file`` / ``input_specs`` / the model's stored
            example inputs are used.
        progress: called with an ``Event`` at each step (CLI bar, TUI worker).
        **options: fields of ``Options`` (``onnx_path``, ``rtol``, ``atol``,
            ``strategy``, ``ep``, ``device``, ...).

    Returns:
        The ``LocateResult``; ``verdict`` is "match", "diverged", "export_failed"
        or "runtime_failed". Bad input raises ``NodebisectError`` subclasses.
    """
    if isinstance(model, PreparedModel):
        opts = search_again_options(model.opts, options)
        prepared = model
    else:
        opts = make_options(options)
        prepared = None
    log = RunLog(emit=progress or (lambda _e: None), cancel=opts.cancel)
    started = time.perf_counter()
    if prepared is None:
        prepared = _prepare(model, inputs, opts, log)
    else:
        settle(prepared.prep)  # the oracle thread reports into the preparation's notes first
        log.notes.extend(prepared.notes)
    try:
        if prepared.failed is not None:
            return prepared.failed
        if prepared.warm is None:  # closed: this run starts a child of its own, kept until the next close()
            prepared.warm = _warm(opts)
        ort = prepared.warm.handle(opts.ep, opts.opt_level, opts.isolate_crashes, opts.timeout_s, log)
        answered = ort.reused()
        result = _search(prepared, opts, log, ort)
        if opts.on_prepared is not None: opts.on_prepared(prepared.prep)  # noqa: E701 - interop writers read the live arrays
    finally:
        if prepared is not model:  # our own preparation: nothing outlives this run
            prepared.close()
    settle(prepared.prep)
    if prepared is model:  # export and capture were not redone: their timings are not this run's
        result.stats["reused_preparation"] = True
        result.stats["reused_ort_answers"] = ort.reused() - answered  # sessions answered from earlier runs
    return _finish(result, prepared, log, time.perf_counter() - started)


def prepare(model: Any, inputs: Any = None, *, progress: Progress | None = None, **options: Any) -> PreparedModel:
    """Load, export and capture ``model`` once (``locate``'s first half); pass the result to ``locate``."""
    opts = make_options(options)
    return _prepare(model, inputs, opts, RunLog(emit=progress or (lambda _e: None), cancel=opts.cancel))


def _prepare(model: Any, inputs: Any, opts: Options, log: RunLog) -> PreparedModel:
    if opts.onnx_path:  # a bad --onnx file is refused before torch is even imported, let alone the model exported
        from nodebisect.frontends.user_onnx import check_onnx_file

        check_onnx_file(opts.onnx_path)
    from nodebisect.frontends.loading.load import build_loaded_model
    from nodebisect.frontends.export_capture import check_device

    started = time.perf_counter()
    # 1. load the model and its inputs
    check_device(opts.device)
    with log.timed("load", "load"):
        loaded = build_loaded_model(
            model, inputs, input_specs=opts.input_specs, inputs_file=opts.inputs_file, seed=opts.seed,
            trust_pickle=opts.trust_pickle, model_settings=opts.model_settings,
        )
    warm = _warm(opts)  # the onnxruntime child starts now: it imports while PyTorch exports and captures
    try:
        return _export_and_check(loaded, opts, log, warm, started)
    except BaseException:
        warm.close()
        raise


def _export_and_check(loaded: Any, opts: Options, log: RunLog, warm: Any, started: float) -> PreparedModel:
    from nodebisect.diagnose.stages import check_capture, check_decomposition, note_framework_nans
    from nodebisect.environment import environment
    from nodebisect.frontends.export_capture import export_and_capture
    from nodebisect.onnxgraph import opset_of

    env = environment(opts.device, opts.ep, opts.opset, opts.opt_level, "tf2onnx" if loaded.kind == "keras" else opts.exporter)
    if run_inputs := recorded_inputs(opts):  # the report's command and the TUI's re-run repeat them
        env["run_inputs"] = run_inputs
    if loaded.applied_settings:  # said in every answer: the model compared is not the model as given
        env["applied_settings"] = list(loaded.applied_settings)
        log.note(f"applied {', '.join('--model-setting ' + s for s in loaded.applied_settings)} to the model before export")
    # The preparation's notes and timings are its log's own lists: the oracle thread adds to them until settle().
    out = PreparedModel(opts=opts, source=loaded.source, environment=env, loaded=loaded, notes=log.notes, timings=log.timings, warm=warm)
    # 2. export (or read --onnx) and capture the reference activations; the weights file is written meanwhile
    log.stage("export")
    try:
        prep = export_and_capture(loaded, opts, log, warm.handle(opts.ep, opts.opt_level, opts.isolate_crashes, opts.timeout_s, log))
    except ExportFailedError as exc:  # with --onnx: the export nodebisect needs for the reference failed
        out.close()  # nothing to search
        out.failed = LocateResult(  # ExportFailure: stage, cause class, frames, remedy, repro script
            verdict=EXPORT_FAILED, export_failure=ExportFailure.from_error(exc), environment=env, model=loaded.source,
            notes=list(log.notes), stats={"seconds": round(time.perf_counter() - started, 3), "ort_sessions": 0},
        )
        return out
    env["opset"], env["onnx_graph"] = opset_of(prep.onnx_model, prep.opset), prep.onnx_model.graph.name  # graph: Model Explorer's id
    log.notes.extend(prep.notes)
    out.prep = prep
    # 3. stage checks: did the numerics change before ONNX existed?
    if opts.check_capture and loaded.module is None and prep.program is not None:
        log.note("no eager module (a .pt2 keeps only the exported program): eager vs torch.export not checked; pass file.py:factory to check it")
    if opts.check_capture and loaded.module is not None and prep.program is not None:
        with log.timed("capture_check", "check torch.export against eager"):
            out.capture_info, out.culprit = check_capture(loaded, prep, opts, log)
    if opts.check_capture and out.culprit is None and prep.original is not None and prep.program is not None:
        with log.timed("decomposition_check", "check decomposition against the exported program"):
            out.culprit = check_decomposition(loaded, prep, opts, log, out.capture_info)
    note_framework_nans(prep.acts, log)
    return out


def _search(prepared: PreparedModel, opts: Options, log: RunLog, ort: Any) -> LocateResult:
    from nodebisect.diagnose.stages import check_exporter_optimizer, unoptimized_window

    prep = prepared.prep
    assert prep is not None
    t = log.stage("map")
    # 4-6. map, search, explain on the given inputs
    result = _search_once(prep, prepared.environment, opts, log, ort)
    # 7. the same on more input sets, exported once
    if opts.trials > 1 or opts.extra_inputs or getattr(prepared.loaded, "observed", None):
        result = _run_trials(result, prepared, opts, log, ort)
    if prep.mapping_quality:
        result.stats["mapping"] = prep.mapping_quality
    log.timings["map_and_search"] = time.perf_counter() - t
    result.capture = prepared.capture_info
    # 8. conversion, or the exporter's ONNX optimizer? (on the given inputs' feeds)
    fd = result.first_divergent
    if fd is not None and fd.cause == CAUSE_CONVERSION and not opts.onnx_path and prep.program is not None:
        with log.timed("graph_optimization_check", "check the exporter's graph optimizer"):
            unoptimized, rule = check_exporter_optimizer(prepared.loaded, prep, fd, opts, log, ort)
        stage = Stage.GRAPH_OPTIMIZATION if unoptimized == RIGHT else fd.stage
        result.first_divergent = fd = replace(fd, stage=stage, checks=replace(fd.checks, unoptimized_export=unoptimized), optimizer={**fd.optimizer, **rule})
        if fd.stage == Stage.GRAPH_OPTIMIZATION and result.repro is not None:
            result.repro.unoptimized = unoptimized_window(prep, fd.onnx_value)  # the unfused ops, for the repro
    if prep.attribute is not None:  # 8b. a frontend's own stage checks (Keras: capture, grappler, tf2onnx's optimizers)
        result.first_divergent, result.verdict = prep.attribute(result.first_divergent, result.verdict, opts, log, ort)
    if prep.refine is not None:  # 8c. a reference's own words for the culprit (diff's), onnxruntime still up
        from nodebisect.diagnose.explain import refined

        result = refined(result, prep, opts, log, ort)
    # 9. a capture or decomposition culprit comes first: the ONNX graph was made from changed numerics
    if prepared.culprit is not None:
        if result.first_divergent is not None:
            log.note(f"the ONNX graph also departs from the exported program at {result.first_divergent.onnx_node} ({result.first_divergent.op_type}); fix the capture first")
        result.first_divergent = prepared.culprit
        result.verdict = DIVERGED
    return result


def _search_once(prep: Prepared, environment: dict[str, Any], opts: Options, log: RunLog, ort: Any) -> LocateResult:
    """Map the graph, search it, explain the culprit: one input set."""
    from nodebisect.diagnose.explain import explain, follow_to_source, verified_repro
    from nodebisect.frontends.user_onnx import check_model_fits
    from nodebisect.search.failure import runtime_failure_result
    from nodebisect.search.outcome import precision_drift, search_result
    from nodebisect.search.strategy import map_graph, search

    gm = map_graph(prep)
    check_model_fits(prep, gm, opts.onnx_path, opts.exporter == "torchscript")  # the inputs (and --onnx's values) are this model's
    outcome = search(prep, gm, opts, log, ort)
    if outcome.failure is not None:
        return runtime_failure_result(outcome, outcome.failure, environment, log)
    first_divergent = repro = None
    drift: dict[str, Any] = {}
    if outcome.culprit is not None:
        first_divergent = explain(outcome.culprit, gm, prep, outcome.comparisons, opts, log, ort)
        if first_divergent.cause == CAUSE_INHERITED:  # right on PyTorch's inputs: the source lies upstream
            first_divergent = follow_to_source(outcome, first_divergent, prep, opts, log, ort)
        drift = precision_drift(outcome, first_divergent)  # no source beyond rounding, all within noise: a match
        if not drift:
            repro, worst = verified_repro(first_divergent, gm, prep, opts, log, ort)  # a repro that reproduces
            first_divergent = replace(first_divergent, worst=worst or first_divergent.worst)
    result = search_result(outcome, environment, first_divergent, repro, log, drift)
    if result.verdict == MATCH:  # a match still holds exact ops to exactness (diagnose.exact_ops)
        from nodebisect.diagnose.exact_ops import audit, note_text

        inexact = audit(gm, prep, ort)
        if inexact:
            result.stats["inexact_ops"] = inexact
            result.notes.append(note_text(inexact))
    return result


def _run_trials(first: LocateResult, prepared: PreparedModel, opts: Options, log: RunLog, ort: Any) -> LocateResult:
    """Compare on more input sets (export once); group the culprits found."""
    from nodebisect.diagnose.trials import group_trials
    from nodebisect.frontends.export_capture import capture_inputs
    from nodebisect.frontends.trial_inputs import input_sets

    prep, loaded = prepared.prep, prepared.loaded
    if prep.program is None:
        log.note("--trials and several --inputs need the dynamo exporter; only the first input set was compared")
        return first
    results, labels, shapes = [first], ["observed call 1" if getattr(loaded, "observed", None) else "given"], [[list(t.shape) for t in prep.flat_inputs]]
    for index, (label, args, kwargs) in enumerate(input_sets(loaded, prep.onnx_model, opts), start=1):
        log.stage(f"trial {index}: {label} inputs")
        trial = capture_inputs(prep, args, kwargs, opts.device)
        results.append(_search_once(trial, prepared.environment, opts, log, ort))
        labels.append(label)
        shapes.append([list(t.shape) for t in trial.flat_inputs])
    return group_trials(results, labels, shapes, log)


def _finish(result: LocateResult, prepared: PreparedModel, log: RunLog, seconds: float) -> LocateResult:
    from nodebisect.report.wording import explanation

    if result.first_divergent is not None:  # the diagnosis in words, composed once from its typed checks
        result.first_divergent = replace(result.first_divergent, explanation=explanation(result.first_divergent))
    result.model = prepared.source
    result.notes = list(dict.fromkeys(log.notes + result.notes))  # trials repeat the same observations
    result.stats["seconds"] = round(seconds, 3)
    result.stats["extra_sessions"] = log.extra_sessions
    result.stats["timings"] = {k: round(v, 3) for k, v in log.timings.items()}
    log.emit(Event(kind="done", message=result.verdict))
    return result


def _warm(opts: Options) -> Any:
    """The onnxruntime side a preparation keeps: a child process started now when crashes are isolated."""
    from nodebisect.runtime.handle import WarmOrt

    return WarmOrt(isolate_crashes=opts.isolate_crashes, timeout_s=opts.timeout_s)


__all__ = ["Options", "PreparedModel", "locate", "prepare"]
