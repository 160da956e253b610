"""The one place the steps are wired together: load, export, capture, map, search.

``locate()`` is the public API; the CLI and the TUI call it and render the
``LocateResult`` it returns.
"""

from __future__ import annotations

import math
import platform
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from nodebisect.errors import BadInputError, CancelledError, ExportFailedError, RuntimeFailedError
from nodebisect.records import (
    CAUSE_CONVERSION,
    CAUSE_INHERITED,
    CAUSE_OPTIMIZER,
    CAUSE_RUNTIME,
    DIVERGED,
    EXPORT_FAILED,
    MATCH,
    NOT_RUN,
    OK,
    STAGE_CAPTURE,
    STAGE_DECOMPOSITION,
    STAGE_GRAPH_OPTIMIZATION,
    STAGE_CONVERSION,
    STATUS_DIVERGED,
    UNMAPPED,
    Comparison,
    Event,
    ExportFailure,
    FirstDivergent,
    FrameworkRef,
    LocateResult,
    Metrics,
    NodeRecord,
    RUNTIME_FAILED,
    OutputComparison,
    ReproData,
    Step,
)

Progress = Callable[[Event], None]
STRATEGIES = ("auto", "all", "bisect")
# `auto` marks every mapped value at once while the reference activations stay
# small enough that holding ORT's copies beside them is harmless.
AUTO_ALL_MAX_BYTES = 256 * 1024 * 1024
AUTO_ALL_MAX_PROBES = 4000
# A user's ONNX file "belongs" to the model when this share of its node outputs
# carry FX names of the model's exported program.
MIN_OWNERSHIP = 0.2
# onnx.checker costs ~1 s on a 400 MB model; above this size onnxruntime's own load checks suffice.
CHECKER_MAX_BYTES = 64 * 1024 * 1024


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


@dataclass
class Prepared:
    """An ONNX model with the framework's reference values for its value names.

    Attributes:
        onnx_model: the model to debug (exported, or the user's file).
        acts: reference activations keyed by names the ONNX graph uses.
        flat_inputs: the model inputs, in ONNX graph-input order.
        program: the decomposed ExportedProgram (dynamo path) or None.
        refs: per ONNX node FrameworkRef, where the ONNX metadata lacks them.
        mapping_quality: how much of the graph found framework values.
    """

    onnx_model: Any
    acts: Any
    flat_inputs: list[Any]
    program: Any = None
    opset: int = 0
    refs: dict[str, FrameworkRef] | None = None
    original: Any = None  # ExportedProgram before decomposition (dynamo path)
    notes: list[str] = field(default_factory=list)
    mapping_quality: dict[str, Any] = field(default_factory=dict)


def locate(
    model: Any,
    inputs: Any = None,
    *,
    progress: Progress | None = None,
    **options: Any,
) -> LocateResult:
    """Find the first ONNX node whose output departs from the framework model.

    Args:
        model: an ``nn.Module``, a ``torch.export.ExportedProgram``, or a path /
            factory spec (``model.pt2``, ``file.py:Factory``).
        inputs: a tensor, a tuple of tensors or a dict of keyword tensors; when
            omitted, ``inputs_file`` / ``input_specs`` / the model's stored
            example inputs are used.
        progress: called with an ``Event`` at each step (CLI bar, TUI worker).
        **options: fields of ``Options`` (``onnx_path``, ``rtol``, ``atol``,
            ``strategy``, ``ep``, ``device``, ...).

    Returns:
        The ``LocateResult``; ``verdict`` is "match", "diverged" or
        "export_failed". Bad input raises ``NodebisectError`` subclasses.
    """
    unknown = set(options) - set(Options.__dataclass_fields__)
    if unknown:
        raise TypeError(f"unknown option(s): {sorted(unknown)}")
    opts = Options(**options)
    if opts.exporter not in ("dynamo", "torchscript"):
        raise BadInputError(f"unknown exporter {opts.exporter!r}", tip="use dynamo or torchscript")
    if opts.strategy not in STRATEGIES:
        raise BadInputError(f"unknown strategy {opts.strategy!r}", tip="use auto, all or bisect")
    return _Locator(model, inputs, opts, progress or (lambda _e: None)).run()


class _Locator:
    def __init__(self, model: Any, inputs: Any, opts: Options, progress: Progress) -> None:
        self.model = model
        self.inputs = inputs
        self.opts = opts
        self.emit = progress
        self.timings: dict[str, float] = {}
        self.notes: list[str] = []
        self.extra_sessions = 0
        self._expected_steps = 0
        self._feeds: dict[str, np.ndarray] = {}
        self._sandbox: Any = None

    def _stage(self, name: str) -> float:
        self._check_cancel()
        self.emit(Event(kind="stage", message=name))
        return time.perf_counter()

    def _check_cancel(self) -> None:
        cancel = self.opts.cancel
        if cancel is not None and cancel.is_set():
            raise CancelledError("locate was cancelled")

    def run(self) -> LocateResult:
        if self.opts.isolate_crashes:
            from nodebisect.runtime.sandbox import IsolatedOrt

            self._sandbox = IsolatedOrt(timeout_s=self.opts.timeout_s)
        try:
            return self._run()
        finally:
            if self._sandbox is not None:
                self._sandbox.close()

    def _run(self) -> LocateResult:
        import torch

        from nodebisect.frontends.loading import build_loaded_model

        started = time.perf_counter()
        opts = self.opts
        if opts.device == "cuda" and not torch.cuda.is_available():
            raise BadInputError("--device cuda asked for, but torch sees no CUDA device", tip="use --device cpu")
        t = self._stage("load")
        loaded = build_loaded_model(
            self.model,
            self.inputs,
            input_specs=opts.input_specs,
            inputs_file=opts.inputs_file,
            seed=opts.seed,
            trust_pickle=opts.trust_pickle,
        )
        self.timings["load"] = time.perf_counter() - t
        environment = _environment(opts)

        t = self._stage("export")
        try:
            prep = self._prepare(loaded)
        except ExportFailedError as exc:
            if opts.onnx_path:
                raise
            return LocateResult(
                verdict=EXPORT_FAILED,
                export_failure=ExportFailure(step=exc.step, message=exc.message, target=exc.target, source=exc.source, tip=exc.tip),
                environment=environment,
                model=loaded.source,
                stats={"seconds": round(time.perf_counter() - started, 3), "ort_sessions": 0},
            )
        onnx_model, acts = prep.onnx_model, prep.acts
        environment["opset"] = next((o.version for o in onnx_model.opset_import if o.domain in ("", "ai.onnx")), prep.opset)
        environment["exporter"] = opts.exporter
        self.notes.extend(prep.notes)

        capture_info: dict[str, Any] = {}
        capture_culprit = None
        if opts.check_capture and loaded.module is None and prep.program is not None:
            self.notes.append("no eager module (a .pt2 keeps only the exported program): eager vs torch.export not checked; pass file.py:factory to check it")
        if opts.check_capture and loaded.module is not None and prep.program is not None:
            t = self._stage("check torch.export against eager")
            capture_info, capture_culprit = self._check_capture(loaded, prep.program, acts)
            self.timings["capture_check"] = time.perf_counter() - t

        decomposition_culprit = None
        if opts.check_capture and capture_culprit is None and prep.original is not None and prep.program is not None:
            t = self._stage("check decomposition against the exported program")
            decomposition_culprit = self._check_decomposition(prep, loaded, capture_info)
            self.timings["decomposition_check"] = time.perf_counter() - t
        capture_culprit = capture_culprit or decomposition_culprit
        self._note_framework_nans(acts)
        t = self._stage("map")
        result = self._compare_onnx(prep, environment)
        if opts.trials > 1 or opts.extra_inputs:
            result = self._run_trials(result, prep, loaded, environment)
        if prep.mapping_quality:
            result.stats["mapping"] = prep.mapping_quality
        self.timings["map_and_search"] = time.perf_counter() - t
        result.capture = capture_info
        fd = result.first_divergent
        if fd is not None and fd.cause == CAUSE_CONVERSION and not opts.onnx_path and prep.program is not None:
            t = self._stage("check the exporter's graph optimizer")
            self._check_exporter_optimizer(prep, loaded, fd)
            self.timings["graph_optimization_check"] = time.perf_counter() - t
        if capture_culprit is not None:
            if result.first_divergent is not None:
                self.notes.append(
                    f"the ONNX graph also departs from the exported program at {result.first_divergent.onnx_node}"
                    f" ({result.first_divergent.op_type}); fix the capture first"
                )
            result.first_divergent = capture_culprit
            result.verdict = DIVERGED
        result.model = loaded.source
        result.notes = list(dict.fromkeys(self.notes + result.notes))  # trials repeat the same observations
        result.stats["seconds"] = round(time.perf_counter() - started, 3)
        result.stats["extra_sessions"] = self.extra_sessions
        result.stats["timings"] = {k: round(v, 3) for k, v in self.timings.items()}
        self.emit(Event(kind="done", message=result.verdict))
        return result

    def _run_trials(self, first: LocateResult, prep: Prepared, loaded: Any, environment: dict[str, Any]) -> LocateResult:
        """Run the comparison on more input sets (export once); group the culprits found."""
        from dataclasses import replace as dc_replace

        from nodebisect.frontends.capture import capture_fx, flat_user_inputs
        from nodebisect.frontends.loading import load_inputs_file
        from nodebisect.frontends.trial_inputs import trial_inputs

        opts = self.opts
        if prep.program is None:
            self.notes.append("--trials and several --inputs need the dynamo exporter; only the first input set was compared")
            return first
        rows = [_trial_row(0, "given", first)]
        results = [first]
        input_sets: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        for path in opts.extra_inputs or []:
            args, kwargs = load_inputs_file(path)
            input_sets.append((path, args, kwargs))
        from nodebisect.frontends.dynamo import dynamic_dims

        dims = dynamic_dims(prep.onnx_model) if opts.dynamic else None
        for i in range(1, max(opts.trials, 1)):
            input_sets.append(trial_inputs(loaded.args, loaded.kwargs, i, opts.seed, dims))
        for index, (label, args, kwargs) in enumerate(input_sets, start=1):
            self._stage(f"trial {index}: {label} inputs")
            acts = capture_fx(prep.program, args, kwargs, device=opts.device)
            flat = [a for a in flat_user_inputs(prep.program, args, kwargs) if hasattr(a, "dtype")]
            result = self._compare_onnx(dc_replace(prep, acts=acts, flat_inputs=flat), environment)
            rows.append(_trial_row(index, label, result))
            results.append(result)
        export_shapes = _shapes(prep.flat_inputs)
        for row, (_label, args, kwargs) in zip(rows[1:], input_sets):
            row["shapes"] = _shapes([a for a in flat_user_inputs(prep.program, args, kwargs) if hasattr(a, "dtype")])
        rows[0]["shapes"] = export_shapes
        for row in rows:
            row["export_shape"] = row["shapes"] == export_shapes
        diverging = [r for r in rows if r["verdict"] != MATCH]
        if diverging and all(not r["export_shape"] for r in diverging):
            self.notes.append(
                "diverges only at shapes other than the export shape "
                f"({', '.join(str(r['shapes']) for r in diverging)} vs {export_shapes}): a value baked into the graph for the "
                "example's shape, or a dynamic-shape path of the conversion"
            )
        chosen = next((r for r in results if r.verdict != MATCH), first)
        if chosen is not first:
            k = results.index(chosen)
            self.notes.append(f"the given inputs match; trial {k} ({rows[k]['inputs']} inputs) diverges, and its culprit is reported")
        chosen.trials = rows
        groups: dict[str, list[int]] = {}
        for row in rows:
            groups.setdefault(row["onnx_node"] or row["verdict"], []).append(row["trial"])
        chosen.stats["trial_groups"] = groups
        return chosen

    def _prepare(self, loaded: Any) -> Prepared:
        """Export (or load) the ONNX model and capture the reference activations."""
        opts = self.opts
        if opts.exporter == "torchscript":
            from nodebisect.frontends.torchscript import prepare_torchscript

            t = time.perf_counter()
            prep = prepare_torchscript(loaded, opts, self._stage)
            self.timings["export_and_capture"] = time.perf_counter() - t
            return prep
        from nodebisect.frontends.capture import capture_fx, flat_user_inputs, memory_available
        from nodebisect.frontends.dynamo import export_onnx

        t = time.perf_counter()
        exported = export_onnx(loaded, opset=opts.opset, dynamic=opts.dynamic)
        self.timings["export"] = time.perf_counter() - t
        onnx_model = _load_user_onnx(opts.onnx_path) if opts.onnx_path else exported.model
        t = self._stage("capture")
        budget = opts.memory_budget if opts.memory_budget is not None else memory_available() // 4
        acts = capture_fx(exported.program, loaded.args, loaded.kwargs, device=opts.device, memory_budget=budget)
        self.timings["capture"] = time.perf_counter() - t
        if acts.spilled:
            self.notes.append(
                f"reference activations beyond {budget / 2**20:.0f} MiB ({acts.spilled / 2**20:.0f} MiB) were spilled to disk and memory-mapped"
            )
        flat = [a for a in flat_user_inputs(exported.program, loaded.args, loaded.kwargs) if hasattr(a, "dtype")]
        return Prepared(
            onnx_model=onnx_model, acts=acts, flat_inputs=flat, program=exported.program, opset=exported.opset, original=exported.original
        )

    # -- capture stage -------------------------------------------------------------
    def _check_capture(self, loaded: Any, program: Any, acts: Any) -> tuple[dict[str, Any], FirstDivergent | None]:
        from nodebisect.frontends.capture import capture_modules, module_output_nodes
        from nodebisect.search.compare import compare

        import warnings

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                eager = capture_modules(loaded.module, loaded.args, loaded.kwargs, device=self.opts.device)
        except Exception as exc:  # noqa: BLE001 - the eager run is a cross-check only
            self.notes.append(f"eager forward failed, capture stage not checked: {str(exc).splitlines()[0][:160]}")
            return {"checked": False}, None
        fx_outputs = [acts.values[n] for n in acts.outputs if n in acts.values]
        bad_outputs = []
        for i, (e, p) in enumerate(zip(eager.final, fx_outputs)):
            cmp = compare(f"output_{i}", p, e, self.opts.rtol, self.opts.atol)
            if not cmp.ok:
                bad_outputs.append(cmp)
        info: dict[str, Any] = {"checked": True, "modules_hooked": len(eager.order), "eager_matches_export": not bad_outputs}
        if not bad_outputs:
            return info, None
        out_nodes = module_output_nodes(program)
        culprit_module, culprit_fx, metrics = "", "", bad_outputs[0].metrics
        for path in eager.order:
            fx_name = out_nodes.get(path)
            if not fx_name or fx_name not in acts.values:
                continue
            cmp = compare(fx_name, acts.values[fx_name], eager.outputs[path], self.opts.rtol, self.opts.atol)
            if not cmp.ok:
                culprit_module, culprit_fx, metrics = path, fx_name, cmp.metrics
                break
        info["first_module"] = culprit_module
        info["fx_node"] = culprit_fx
        where = f"module {culprit_module!r} (FX node {culprit_fx})" if culprit_module else "the model's outputs"
        return info, _fx_culprit(
            program,
            culprit_fx,
            STAGE_CAPTURE,
            metrics,
            f"torch.export changed the model's behaviour: eager PyTorch and the exported program already differ at {where}. "
            "The ONNX graph is innocent; eager mode takes a path (e.g. a fused fast path) the exported program does not.",
            module=culprit_module,
        )

    def _check_exporter_optimizer(self, prep: Prepared, loaded: Any, fd: FirstDivergent) -> None:
        """Node conversion or the exporter's ONNX optimizer? Re-translate without optimizing and look again."""
        from nodebisect.search.compare import compare
        from nodebisect.frontends.dynamo import export_onnx
        from nodebisect.frontends.loading import LoadedModel
        from nodebisect.runtime.runner import OrtRunner

        value = fd.onnx_value
        try:
            plain = export_onnx(LoadedModel(module=None, exported=prep.program, args=loaded.args, kwargs=loaded.kwargs), opset=self.opts.opset, optimize=False)
            produced = {o for n in plain.model.graph.node for o in n.output}
            if value not in produced or value not in prep.acts.values:
                return
            # onnxruntime's own fusions off: only the exporter's optimizer differs between the two graphs.
            runner = OrtRunner(plain.model, self._feeds, ep=self.opts.ep, opt_level="disabled", sandbox=self._sandbox)
            got = runner.run([value])[value]
            self.extra_sessions += runner.sessions
        except Exception as exc:  # noqa: BLE001 - attribution is a refinement, never a failure
            self.notes.append(f"could not re-export without the ONNX optimizer to attribute the stage: {str(exc).splitlines()[0][:160]}")
            return
        if compare(value, got, prep.acts.values[value], self.opts.rtol, self.opts.atol, prep.acts.dtypes.get(value)).ok:
            fd.stage = STAGE_GRAPH_OPTIMIZATION
            fd.explanation += (
                "; the same program exported with optimize=False is right at this value, so the exporter's ONNX graph "
                "optimizer (onnxscript rewrite rules) introduced the defect"
            )
        else:
            fd.explanation += "; the unoptimized export is wrong here too, so the defect is in the op's conversion itself"

    def _check_decomposition(self, prep: Prepared, loaded: Any, info: dict[str, Any]) -> FirstDivergent | None:
        """Does the decomposed program (what ONNX was made from) still compute what torch.export captured?"""
        from nodebisect.frontends.capture import capture_fx
        from nodebisect.search.compare import compare

        import torch
        import torch.utils._pytree as pytree

        from nodebisect.frontends.capture import to_numpy

        acts = prep.acts
        try:
            # Outputs first (no activations kept); record every node only if they differ.
            with torch.no_grad():
                out = prep.original.module()(*loaded.args, **loaded.kwargs)
            outs_before = [to_numpy(t) for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
        except Exception as exc:  # noqa: BLE001 - a cross-check only
            self.notes.append(f"the exported program could not run before decomposition: {str(exc).splitlines()[0][:160]}")
            return None
        outs_after = [acts.values[n] for n in acts.outputs if n in acts.values]
        bad = [
            cmp
            for i, (b, a) in enumerate(zip(outs_before, outs_after))
            if not (cmp := compare(f"output_{i}", a, b, self.opts.rtol, self.opts.atol)).ok
        ]
        info["decomposition_matches_export"] = not bad
        if not bad:
            return None
        culprit, metrics = "", bad[0].metrics
        before = capture_fx(prep.original, loaded.args, loaded.kwargs, device=self.opts.device)
        for name in acts.order:  # decomposed program order; names kept through decomposition compare
            if name in before.values and name not in prep.program.graph_signature.user_inputs:
                cmp = compare(name, acts.values[name], before.values[name], self.opts.rtol, self.opts.atol, acts.dtypes.get(name))
                if not cmp.ok:
                    culprit, metrics = name, cmp.metrics
                    break
        return _fx_culprit(
            prep.program,
            culprit,
            STAGE_DECOMPOSITION,
            metrics,
            "the ExportedProgram and its decomposition (the program the ONNX exporter translates) already differ"
            + (f" at FX node {culprit}" if culprit else "")
            + ": a decomposition rule changed the numerics before any ONNX was written",
        )

    def _note_framework_nans(self, acts: Any) -> None:
        for name in acts.order:
            arr = acts.values[name]
            if arr.dtype.kind == "f" and arr.size and not np.isfinite(arr).all():
                if np.isnan(arr).any():
                    self.notes.append(f"PyTorch itself produces NaN at FX node {name!r}: values there are compared NaN-to-NaN")
                    return

    # -- ONNX vs framework ---------------------------------------------------------
    def _compare_onnx(self, prep: Prepared, environment: dict[str, Any]) -> LocateResult:
        from nodebisect.search.bisection import Bisector
        from nodebisect.frontends.capture import to_numpy
        from nodebisect.search.compare import compare
        from nodebisect.search.graphmap import build_graph_map, overlap
        from nodebisect.runtime.runner import OrtRunner

        opts = self.opts
        onnx_model, program, acts = prep.onnx_model, prep.program, prep.acts
        gm = build_graph_map(onnx_model, acts.values, acts.outputs, refs=prep.refs)
        if opts.onnx_path:
            share = overlap(gm)
            # Module-level mapping compares far fewer values; torchscript.py checks the node scopes instead.
            owned = share >= MIN_OWNERSHIP or opts.exporter == "torchscript"
            if not owned or len(gm.output_map) < len(onnx_model.graph.output):
                raise BadInputError(
                    f"{opts.onnx_path} does not look like an export of this model "
                    f"({share:.0%} of its values match the model's exported program)",
                    tip="pass the ONNX file exported from this model with torch.onnx.export(..., dynamo=True)",
                )
        flat = prep.flat_inputs
        if len(flat) != len(gm.graph_inputs):
            raise BadInputError(
                f"the ONNX model takes {len(gm.graph_inputs)} input(s), the model was given {len(flat)}",
                tip="the ONNX file and the inputs must come from the same model",
            )
        feeds = {name: to_numpy(t) for name, t in zip(gm.graph_inputs, flat)}
        self._feeds = feeds
        _check_feeds_fit(onnx_model, feeds, opts.onnx_path)
        runner = OrtRunner(onnx_model, feeds, ep=opts.ep, opt_level=opts.opt_level, sandbox=self._sandbox)
        comparisons: dict[str, Comparison] = {}
        steps: list[Step] = []

        def measure(values: list[str], optimized_path: str | None = None) -> set[str]:
            t = time.perf_counter()
            got = runner.run(values, optimized_path=optimized_path)
            bad = set()
            for v in values:
                fx_name = gm.mapped[v]
                cmp = compare(v, got[v], acts.values[fx_name], opts.rtol, opts.atol, acts.dtypes.get(fx_name))
                comparisons[v] = cmp
                if not cmp.ok:
                    bad.add(v)
            steps.append(Step(index=len(steps), probes=list(values), bad=sorted(bad), seconds=round(time.perf_counter() - t, 4)))
            self.emit(Event(kind="probe", values=list(values), bad=sorted(bad), step=len(steps), total=max(self._expected_steps, len(steps))))
            self._check_cancel()
            return bad

        probes = gm.probes()
        outputs = [o.name for o in onnx_model.graph.output if o.name in gm.mapped]
        strategy = opts.strategy
        if strategy == "auto":
            from nodebisect.frontends.capture import memory_available

            total = sum(acts.values[gm.mapped[p]].nbytes for p in probes)
            # ORT hands every marked value back at once: that copy must fit easily in free memory.
            limit = min(AUTO_ALL_MAX_BYTES, memory_available() // 8)
            strategy = "all" if total <= limit and len(probes) <= AUTO_ALL_MAX_PROBES else "bisect"
        self._stage(f"run onnxruntime ({strategy})")
        # The untouched graph first: what the user's runtime really computes.
        observe = _ObserverCheck(onnx_model)
        try:
            untouched_bad = _run_observed(measure, runner, outputs, observe, "untouched")
        except RuntimeFailedError as exc:
            observe.note()
            return self._runtime_failure(exc, runner, gm, environment)
        untouched = {o: comparisons[o] for o in outputs}
        probes_per_step = opts.probes_per_step
        if strategy == "all":
            _run_observed(measure, runner, list(dict.fromkeys(probes + outputs)), observe, "probed")
            probed_bad = {o for o in outputs if not comparisons[o].ok}
            if probed_bad != untouched_bad:
                self.notes.append(
                    "observer effect: marking every value as an output changed the final outputs "
                    f"(diverging untouched: {sorted(untouched_bad) or 'none'}; with probes: {sorted(probed_bad) or 'none'}); "
                    "the untouched run is what counts, and the search continues with few probes per session"
                )
                for v in probes:
                    comparisons.pop(v, None)
                probes_per_step = 1  # each marked value can break a fusion: mark as few as possible
            comparisons.update(untouched)
        fusion_note = observe.note()
        if fusion_note:
            self.notes.append(fusion_note)
        output_cmps = [
            OutputComparison(name=o, ok=comparisons[o].ok, metrics=comparisons[o].metrics) for o in outputs
        ]
        bad_outputs = [o for o in outputs if not comparisons[o].ok]
        first_divergent = None
        repro = None
        if bad_outputs:
            target = min(bad_outputs, key=lambda v: gm.position[gm.producer[v]])
            probe_set = set(probes)
            bisector = Bisector(
                order=probes,
                ancestors=lambda v: (a for a in gm.ancestors(v) if a in probe_set),
                inputs=gm.mapped_inputs,
                measure=measure,
                k=probes_per_step,
                known={v: not c.ok for v, c in comparisons.items()},
            )
            cone = sum(1 for a in gm.ancestors(target) if a in probe_set and a not in comparisons) + 1
            k = max(1, probes_per_step)
            self._expected_steps = len(steps) + (math.ceil(math.log(cone, k + 1)) if cone > 1 else 0) + 1
            self._stage("bisect")
            culprit = bisector.locate(target)
            first_divergent, repro = self._explain(culprit, gm, onnx_model, program, acts, comparisons, feeds)
        nonfinite_origin = self._nonfinite_origin(gm, runner, comparisons, outputs, probes, acts)
        self._note_vanishing_values(gm, comparisons, acts)
        nodes = _node_records(gm, comparisons)
        result = LocateResult(
            verdict=DIVERGED if bad_outputs else MATCH,
            first_divergent=first_divergent,
            nodes=nodes,
            outputs=output_cmps,
            environment=environment,
            steps=steps,
            tolerance=_tolerances_used(comparisons),
            repro=repro,
        )
        if nonfinite_origin:
            result.stats["first_nonfinite"] = nonfinite_origin
            who = "PyTorch too" if nonfinite_origin["framework_nonfinite"] else "PyTorch stays finite there"
            result.notes.append(
                f"onnxruntime's first NaN/Inf from finite inputs comes from {nonfinite_origin['onnx_node']} "
                f"({nonfinite_origin['op_type']}, value {nonfinite_origin['onnx_value']}); {who}"
            )
        result.stats = {
            **result.stats,
            "onnx_nodes": len(gm.order),
            "mapped_values": len(probes),
            "compared_values": len(comparisons),
            "ort_sessions": runner.sessions,  # the search; isolation sessions are counted apart
            "ort_seconds": round(runner.seconds, 3),
            "strategy": strategy,
            "probes_per_step": opts.probes_per_step,
        }
        return result

    def _note_vanishing_values(self, gm: Any, comparisons: dict[str, Comparison], acts: Any) -> None:
        """Warn when most values are below atol: there, any ONNX value would "match".

        Random-weight models (e.g. some transformers inits) can shrink activations to
        1e-30; a match on them says nothing about the conversion.
        """
        import numpy as np

        float_cmps = [(v, c) for v, c in comparisons.items() if c.tolerance.atol > 0]
        if not float_cmps:
            return
        tiny = 0
        for v, c in float_cmps:
            ref = np.asarray(acts.values[gm.mapped[v]])
            finite = ref[np.isfinite(ref)] if ref.dtype.kind == "f" else ref
            if finite.size and float(np.abs(finite).max()) <= c.tolerance.atol:
                tiny += 1
        if tiny * 2 > len(float_cmps):
            self.notes.append(
                f"{tiny} of {len(float_cmps)} compared values are entirely below atol: there any ONNX value "
                "matches, so this comparison cannot see a defect (random weights that vanish? use real "
                "weights or inputs of realistic scale, or a smaller --atol)"
            )

    def _nonfinite_origin(self, gm: Any, runner: Any, comparisons: dict[str, Comparison], outputs: list[str], probes: list[str], acts: Any) -> dict[str, Any]:
        """Where onnxruntime's NaN/Inf are born: the first node making them from finite inputs.

        Searched like a divergence, with "holds NaN/Inf" as the oracle, only when a
        graph output holds some. NaN that PyTorch also produces is reported too.
        """
        import numpy as np

        from nodebisect.search.bisection import Bisector

        def nonfinite(c: Comparison) -> bool:
            return c.metrics.nan + c.metrics.inf > 0

        bad_outputs = [o for o in outputs if o in comparisons and nonfinite(comparisons[o])]
        if not bad_outputs:
            return {}
        known = {v: nonfinite(c) for v, c in comparisons.items()}

        def measure(values: list[str]) -> set[str]:
            got = runner.run(values)
            return {v for v in values if got[v].dtype.kind == "f" and not np.isfinite(got[v]).all()}

        probe_set = set(probes)
        target = min(bad_outputs, key=lambda v: gm.position[gm.producer[v]])
        origin = Bisector(
            order=probes,
            ancestors=lambda v: (a for a in gm.ancestors(v) if a in probe_set),
            inputs=gm.mapped_inputs,
            measure=measure,
            k=self.opts.probes_per_step,
            known=known,
        ).locate(target)
        node = gm.producer[origin]
        reference = acts.values[gm.mapped[origin]]
        return {
            "onnx_node": node,
            "op_type": gm.nodes[node].op_type,
            "onnx_value": origin,
            "framework_nonfinite": bool(reference.dtype.kind == "f" and not np.isfinite(reference).all()),
        }

    def _runtime_failure(self, exc: RuntimeFailedError, runner: Any, gm: Any, environment: dict[str, Any]) -> LocateResult:
        """onnxruntime cannot load or run the model: name the first node that makes it fail."""
        from nodebisect.runtime.crash import localize_failure
        from nodebisect.search.graphmap import node_attributes

        self._stage("localize the onnxruntime failure")
        point = localize_failure(runner, gm.order)
        failure: dict[str, Any] = {"error": exc.message, "kind": type(exc).__name__}
        fd = None
        if point is not None:
            node = gm.nodes[point.node]
            failure.update(node=point.node, op_type=node.op_type, attributes=node_attributes(node), error=point.error, kind=point.kind, runs=point.runs)
            fd = FirstDivergent(
                onnx_node=point.node,
                op_type=node.op_type,
                onnx_value=next((o for o in node.output if o), ""),
                stage="runtime",
                cause=RUNTIME_FAILED,
                segment=[point.node],
                segment_op_types=[node.op_type],
                framework=gm.refs[point.node],
                metrics=Metrics(reason=point.error),
                explanation=f"onnxruntime {point.kind} while running node {point.node} ({node.op_type}): "
                f"every graph prefix before it runs, the prefix ending with it fails",
            )
        else:
            self.notes.append("the failure did not reproduce on any prefix of the graph")
        result = LocateResult(verdict=RUNTIME_FAILED, first_divergent=fd, nodes=_node_records(gm, {}), environment=environment)
        result.runtime_failure = failure
        result.stats = {"onnx_nodes": len(gm.order), "ort_sessions": runner.sessions, "strategy": "localize_failure"}
        return result

    def _explain(
        self, culprit: str, gm: Any, onnx_model: Any, program: Any, acts: Any, comparisons: dict[str, Comparison], feeds: dict[str, np.ndarray]
    ) -> tuple[FirstDivergent, ReproData]:
        from nodebisect.diagnose.isolate import local_graph
        from nodebisect.diagnose.suspects import rank_suspects

        t = self._stage("isolate the culprit")
        opts = self.opts
        carrier = gm.producer[culprit]
        fx_name = gm.mapped[culprit]
        local = local_graph(onnx_model, gm, culprit)
        iso = self._isolate(local, culprit, gm, acts, feeds)
        if iso.cause == CAUSE_INHERITED:
            iso = self._context_check(iso, culprit, gm, onnx_model, feeds, acts, fx_name)
        fusion = self._blame_fusion(iso, culprit, acts, fx_name) if iso.cause == CAUSE_OPTIMIZER else {}
        self.timings["isolate"] = time.perf_counter() - t
        seg_key = gm.segment_of[carrier]
        segment = [n for n in gm.segments.get(seg_key, [carrier]) if n in local.nodes or n == carrier]
        fx_args = (
            {n.name: (str(n.target).replace("torch.ops.", ""), tuple(n.args)) for n in program.graph.nodes if n.op == "call_function"}
            if program is not None
            else {}
        )
        evidence = self._decomposition_evidence(local, carrier, gm, program, acts, iso, feeds)
        suspects = rank_suspects(gm, onnx_model, segment, carrier, fx_args, iso.nan_source, extra=local.nodes, evidence=evidence)
        ordered = [s.onnx_node for s in suspects]
        ref = gm.refs[carrier]
        if not ref.fx_node:
            ref = FrameworkRef(fx_node=fx_name)
        stage = {CAUSE_RUNTIME: "runtime", CAUSE_OPTIMIZER: "runtime_optimizer"}.get(iso.cause, STAGE_CONVERSION)
        explanation = iso.explanation
        if iso.cause == CAUSE_INHERITED:
            explanation += "; its inputs were within tolerance, so this is accumulated numeric drift rather than a wrong node"
        if suspects and suspects[0].onnx_node != carrier and suspects[0].score >= 0.85:
            explanation += f". Most suspect in the segment: {suspects[0].onnx_node} ({suspects[0].op_type}): {suspects[0].reason.split('; ')[0]}"
        repro = ReproData(
            model_bytes=local.model.SerializeToString(),
            inputs={name: feeds[name] if name in feeds else acts.values[gm.mapped[name]] for name in local.inputs},
            expected={culprit: acts.values[fx_name]},
            opt_level=opts.opt_level,
            ep=opts.ep,
        )
        return FirstDivergent(
            onnx_node=carrier,
            op_type=gm.nodes[carrier].op_type,
            onnx_value=culprit,
            stage=stage,
            cause=iso.cause,
            segment=ordered,
            segment_op_types=[gm.nodes[n].op_type for n in ordered],
            framework=ref,
            metrics=comparisons[culprit].metrics,
            suspects=suspects,
            explanation=explanation,
            isolated_metrics=iso.metrics,
            input_values=list(gm.mapped_inputs(culprit)),
            optimizer=fusion,
        ), repro


    def _decomposition_evidence(self, local: Any, carrier: str, gm: Any, program: Any, acts: Any, iso: Any, feeds: dict[str, np.ndarray]) -> list[tuple[str, float, str]]:
        """Where the ONNX lowering leaves PyTorch's own decomposition of the culprit's op."""
        from nodebisect.diagnose.decomposition import MAX_SEGMENT_NODES, departure_points, lifted_tensor, torch_intermediates

        fx_name = gm.refs[carrier].fx_node
        if program is None or len(local.nodes) < 2 or len(local.nodes) > MAX_SEGMENT_NODES or not iso.internal or not fx_name:
            return []
        fx_node = next((n for n in program.graph.nodes if n.name == fx_name and n.op == "call_function"), None)
        if fx_node is None:
            return []
        try:
            reference = dict(acts.values)
            for arg in fx_node.all_input_nodes:  # weights are not among the captured activations
                if arg.name not in reference and (value := lifted_tensor(program, arg.name)) is not None:
                    reference[arg.name] = value
            candidates = torch_intermediates(fx_node, reference)
        except Exception:  # noqa: BLE001 - evidence only; many ops have no decomposition
            return []
        good = set(local.inputs) | gm.initializers
        for n in local.nodes:
            if gm.nodes[n].op_type == "Constant":
                good.update(o for o in gm.nodes[n].output if o)
        values = {**{k: v for k, v in feeds.items()}, **iso.internal}
        entries = departure_points(
            local.nodes,
            {n: [i for i in gm.nodes[n].input if i] for n in local.nodes},
            {n: [o for o in gm.nodes[n].output if o] for n in local.nodes},
            carrier,
            values,
            candidates,
            good,
        )
        target = gm.refs[carrier].target or "the op"
        out = []
        for rank, name in enumerate(entries):
            if rank == 0:
                out.append((name, 0.88, f"first node to leave PyTorch's own decomposition of {target}: its inputs match PyTorch intermediates, its output matches none"))
            else:
                out.append((name, 0.5, f"also leaves PyTorch's decomposition of {target}, downstream of {entries[0]}"))
        return out

    def _blame_fusion(self, iso: Any, culprit: str, acts: Any, fx_name: str) -> dict[str, Any]:
        """Name the onnxruntime level and optimizer that make the culprit's window wrong."""
        from nodebisect.search.compare import compare
        from nodebisect.runtime.fusions import blame_optimizer
        from nodebisect.runtime.runner import providers_for

        if iso.model is None:
            return {}
        expected, dtype = acts.values[fx_name], acts.dtypes.get(fx_name)
        try:
            blame = blame_optimizer(
                iso.model,
                iso.feeds,
                culprit,
                lambda got: compare(culprit, got, expected, self.opts.rtol, self.opts.atol, dtype).ok,
                providers_for(self.opts.ep),
            )
        except Exception as exc:  # noqa: BLE001 - a refinement; the cause stands without it
            self.notes.append(f"could not single out the onnxruntime optimizer: {str(exc).splitlines()[0][:160]}")
            return {}
        if blame is None:
            return {}
        self.extra_sessions += blame.sessions
        found = {"level": blame.level, "optimizer": blame.optimizer}
        iso.explanation += f"; it first goes wrong at optimization level '{blame.level}'"
        iso.explanation += (
            f", and disabling onnxruntime's '{blame.optimizer}' alone makes it right (work around with "
            f"SessionOptions / disabled_optimizers=['{blame.optimizer}'])"
            if blame.optimizer
            else "; no single named optimizer explains it"
        )
        return found

    def _isolate(self, local: Any, culprit: str, gm: Any, acts: Any, feeds: dict[str, np.ndarray]) -> Any:
        """Run a cut of the graph around ``culprit`` on the framework's reference values."""
        from nodebisect.diagnose.isolate import isolate

        fx_name = gm.mapped[culprit]
        return isolate(
            local,
            culprit,
            reference=lambda v: acts.values[gm.mapped[v]],
            graph_feeds=feeds,
            expected=acts.values[fx_name],
            ep=self.opts.ep,
            opt_level=self.opts.opt_level,
            rtol=self.opts.rtol,
            atol=self.opts.atol,
            dtype=acts.dtypes.get(fx_name),
            sandbox=self._sandbox,
        )

    def _context_check(self, iso: Any, culprit: str, gm: Any, onnx_model: Any, feeds: dict[str, np.ndarray], acts: Any, fx_name: str) -> Any:
        """Right alone but wrong in the graph: drift, or an effect spanning nodes?

        Runs a window one mapped level wider (the culprit plus the ops producing
        its inputs) on reference values. Still wrong there means the runtime
        treats the pair differently from the ONNX semantics: wrong only with
        optimizations on is ``optimizer``; right in ONNX's reference evaluator
        is ``runtime``. Right in the window means genuine upstream drift.
        """
        from nodebisect.diagnose.isolate import local_graph

        window = local_graph(onnx_model, gm, culprit, depth=1)
        if not window.inputs and not window.nodes:
            return iso
        wider = self._isolate(window, culprit, gm, acts, feeds)
        if wider.cause in (CAUSE_OPTIMIZER, CAUSE_RUNTIME):
            wider.explanation = (
                "right when run alone on reference inputs but wrong together with the ops producing its inputs: "
                + wider.explanation
            )
            return wider
        return iso


def _node_records(gm: Any, comparisons: dict[str, Comparison]) -> list[NodeRecord]:
    from nodebisect.search.graphmap import node_attributes

    records = []
    for idx, name in enumerate(gm.order):
        node = gm.nodes[name]
        outs = [o for o in node.output if o]
        value = next((o for o in outs if o in gm.mapped), outs[0] if outs else "")
        cmp = comparisons.get(value)
        if value not in gm.mapped:
            status = UNMAPPED
        elif cmp is None:
            status = NOT_RUN
        else:
            status = OK if cmp.ok else STATUS_DIVERGED
        records.append(
            NodeRecord(
                index=idx,
                onnx_node=name,
                op_type=node.op_type,
                onnx_value=value,
                status=status,
                inputs=[i for i in node.input],
                outputs=outs,
                framework=gm.refs[name],
                metrics=cmp.metrics if cmp else None,
                attributes=node_attributes(node),
                mapped_to=gm.mapped.get(value, ""),
            )
        )
    return records


def _tolerances_used(comparisons: dict[str, Comparison]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for cmp in comparisons.values():
        out.setdefault(cmp.metrics.expected_dtype, cmp.tolerance.to_dict())
    return out


class _ObserverCheck:
    """Counts the nodes ORT really runs, untouched vs with probes marked.

    Marking a value as a graph output stops ORT from fusing across it, so a
    fusion bug can vanish while it is observed; fewer optimized nodes untouched
    than probed means probes broke fusions. Only for models small enough to
    re-save cheaply.
    """

    MAX_BYTES = 64 * 1024 * 1024

    def __init__(self, model: Any) -> None:
        import tempfile

        from nodebisect.runtime.runner import initializer_bytes

        self.enabled = initializer_bytes(model) <= self.MAX_BYTES
        self.dir = tempfile.mkdtemp(prefix="nodebisect-opt-") if self.enabled else ""
        self.counts: dict[str, int] = {}

    def path(self, label: str) -> str | None:
        import os

        return os.path.join(self.dir, f"{label}.onnx") if self.enabled else None

    def record(self, label: str) -> None:
        import os

        import onnx

        path = self.path(label)
        if path and os.path.exists(path):
            self.counts[label] = len(onnx.load(path, load_external_data=False).graph.node)

    def note(self) -> str:
        import shutil

        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        untouched, probed = self.counts.get("untouched"), self.counts.get("probed")
        if untouched is None or probed is None or probed <= untouched:
            return ""
        return (
            f"marking probes changed what onnxruntime runs: {untouched} optimized nodes untouched vs {probed} with every "
            "value marked (probes broke fusions); verdicts on final outputs come from the untouched graph"
        )


def _run_observed(measure: Callable[..., set[str]], runner: Any, values: list[str], observe: _ObserverCheck, label: str) -> set[str]:
    bad = measure(values, optimized_path=observe.path(label))
    observe.record(label)
    return bad


def _fx_culprit(program: Any, fx_name: str, stage: str, metrics: Metrics, explanation: str, module: str = "") -> FirstDivergent:
    """A culprit that is an FX node of ``program`` (stages before ONNX exists: capture, decomposition)."""
    from nodebisect.search.graphmap import user_frame

    node = next((n for n in program.graph.nodes if n.name == fx_name), None) if fx_name else None
    target = str(node.target).replace("torch.ops.", "") if node is not None else ""
    trace = (node.meta.get("stack_trace", "") or "") if node is not None else ""
    source, code = user_frame(trace)
    return FirstDivergent(
        onnx_node=fx_name,
        op_type=target,
        onnx_value=fx_name,
        stage=stage,
        cause=stage,
        segment=[fx_name] if fx_name else [],
        segment_op_types=[target] if target else [],
        framework=FrameworkRef(target=target, fx_node=fx_name, module=module, source=source, code=code, stack_trace=trace),
        metrics=metrics,
        explanation=explanation,
    )


def _shapes(tensors: list[Any]) -> list[list[int]]:
    return [list(t.shape) for t in tensors]


def _trial_row(index: int, label: str, result: LocateResult) -> dict[str, Any]:
    fd = result.first_divergent
    return {
        "trial": index,
        "inputs": label,
        "verdict": result.verdict,
        "onnx_node": fd.onnx_node if fd else "",
        "cause": fd.cause if fd else "",
        "max_abs": fd.metrics.max_abs if fd else max((o.metrics.max_abs for o in result.outputs), default=0.0),
    }


def _check_feeds_fit(onnx_model: Any, feeds: dict[str, np.ndarray], onnx_path: str | None) -> None:
    """Refuse inputs whose rank, static dims or dtype the ONNX graph's inputs rule out."""
    from onnx import helper

    for vi in onnx_model.graph.input:
        if vi.name not in feeds or not vi.type.HasField("tensor_type"):
            continue
        tt = vi.type.tensor_type
        arr = feeds[vi.name]
        where = f"{onnx_path} " if onnx_path else "the ONNX model "
        tip = "the ONNX file and the inputs must come from the same model" if onnx_path else "check the inputs"
        if tt.elem_type:
            want = helper.tensor_dtype_to_np_dtype(tt.elem_type)
            if np.dtype(want) != arr.dtype and not (arr.dtype == np.float32 and tt.elem_type == 16):  # bf16 is widened
                raise BadInputError(f"{where}expects input {vi.name!r} as {np.dtype(want)}, got {arr.dtype}", tip=tip)
        if tt.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
            if len(dims) != arr.ndim or any(d is not None and d != s for d, s in zip(dims, arr.shape)):
                shown = ["?" if d is None else d for d in dims]
                raise BadInputError(f"{where}expects input {vi.name!r} of shape {shown}, got {list(arr.shape)}", tip=tip)


def _load_user_onnx(path: str) -> Any:
    import onnx

    from pathlib import Path

    file = Path(path)
    if not file.exists():
        raise BadInputError(f"ONNX file not found: {path}")
    if file.stat().st_size == 0:
        raise BadInputError(f"ONNX file is empty: {path}")
    try:
        model = onnx.load(str(file))  # external data next to the file is read from there
    except Exception as exc:  # noqa: BLE001
        raise BadInputError(f"cannot read {path} as ONNX: {str(exc).splitlines()[0][:200]}", tip="the file may be truncated") from exc
    if not model.graph.node:
        raise BadInputError(f"{path} has no ONNX graph nodes", tip="is it really an ONNX model?")
    try:
        from nodebisect.runtime.runner import initializer_bytes

        # Large models (also small .onnx files with external data): onnxruntime validates them on load,
        # and the checker would have to serialize a proto that may exceed protobuf's 2 GB.
        if file.stat().st_size <= CHECKER_MAX_BYTES and initializer_bytes(model) <= CHECKER_MAX_BYTES:
            onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - a corrupt graph is the user's file, not our crash
        raise BadInputError(f"{path} is not a valid ONNX model: {str(exc).strip().splitlines()[0][:200]}", tip="the file may be truncated or corrupted; re-export it") from exc
    return model


def _environment(opts: Options) -> dict[str, Any]:
    import onnx
    import onnxruntime
    import torch

    import nodebisect

    return {
        "nodebisect": nodebisect.__version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "onnxscript": _version("onnxscript"),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "device": opts.device,
        "ep": opts.ep,
        "opset": opts.opset,
        "opt_level": opts.opt_level,
        "exporter": "dynamo",
    }


def _version(dist: str) -> str:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:  # noqa: BLE001
        return ""


__all__ = ["Options", "Prepared", "locate"]
