"""Stage checks: did the numerics change before ONNX existed, or in the exporter's optimizer?

- capture: eager PyTorch vs the exported program (``torch.export``);
- decomposition: the exported program vs its decomposition (what ONNX is made from);
- graph_optimization: a conversion culprit that is right in the same program
  exported with ``optimize=False`` was introduced by the exporter's ONNX optimizer.

Each takes the prepared model explicitly and compares with each value's own dtype.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from nodebisect.prepared import Prepared
from nodebisect.reference import Reference
from nodebisect.records import RIGHT, STAGE_CAPTURE, STAGE_DECOMPOSITION, WRONG, Cause, FirstDivergent, Metrics, Stage
from nodebisect.run import Options, RunLog
from nodebisect.runtime.handle import Ort
from nodebisect.values.compare import compare


def check_capture(loaded: Any, prep: Prepared, opts: Options, log: RunLog) -> tuple[dict[str, Any], FirstDivergent | None]:
    """Eager forward (every module hooked) vs the exported program's activations."""
    from nodebisect.frontends.capture import capture_modules, module_output_nodes

    acts = prep.acts
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            eager = capture_modules(loaded.module, loaded.args, loaded.kwargs, device=opts.device)
    except Exception as exc:  # noqa: BLE001 - the eager run is a cross-check only
        log.note(f"eager forward failed, capture stage not checked: {str(exc).splitlines()[0][:160]}")
        return {"checked": False}, None
    out_names = [n for n in acts.outputs if n in acts.values]
    bad_outputs = []
    for i, (e, name) in enumerate(zip(eager.final, out_names)):
        cmp = compare(f"output_{i}", acts.values[name], e, opts.rtol, opts.atol, acts.dtypes.get(name))
        if _beyond_drift(cmp, name, e, prep, opts):
            bad_outputs.append(cmp)
    info: dict[str, Any] = {"checked": True, "modules_hooked": len(eager.order), "eager_matches_export": not bad_outputs}
    if not bad_outputs:
        return info, None
    out_nodes = module_output_nodes(prep.program)
    culprit_module, culprit_fx, metrics = "", "", bad_outputs[0].metrics
    modules = []  # every hooked module, eager vs export: growth.svg plots how the difference grows
    for path in eager.order:
        fx_name = out_nodes.get(path)
        if not fx_name or fx_name not in acts.values:
            continue
        cmp = compare(fx_name, acts.values[fx_name], eager.outputs[path], opts.rtol, opts.atol, acts.dtypes.get(fx_name))
        modules.append({"module": path, "fx_node": fx_name, "max_abs": cmp.metrics.max_abs})
        if not culprit_module and _beyond_drift(cmp, fx_name, eager.outputs[path], prep, opts):
            culprit_module, culprit_fx, metrics = path, fx_name, cmp.metrics
    info["modules"] = modules
    info["first_module"] = culprit_module
    info["fx_node"] = culprit_fx
    return info, fx_culprit(prep.acts, culprit_fx, STAGE_CAPTURE, metrics, module=culprit_module)


def check_decomposition(loaded: Any, prep: Prepared, opts: Options, log: RunLog, info: dict[str, Any]) -> FirstDivergent | None:
    """Does the decomposed program (what ONNX was made from) still compute what torch.export captured?"""
    import torch
    import torch.utils._pytree as pytree

    from nodebisect.frontends.capture import capture_fx, to_numpy

    acts = prep.acts
    try:
        # Outputs first (no activations kept); record every node only if they differ.
        with torch.no_grad():
            out = prep.original.module()(*loaded.args, **loaded.kwargs)
        outs_before = [to_numpy(t) for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
    except Exception as exc:  # noqa: BLE001 - a cross-check only
        log.note(f"the exported program could not run before decomposition: {str(exc).splitlines()[0][:160]}")
        return None
    out_names = [n for n in acts.outputs if n in acts.values]
    bad = [
        cmp
        for i, (b, name) in enumerate(zip(outs_before, out_names))
        if _beyond_drift(cmp := compare(f"output_{i}", acts.values[name], b, opts.rtol, opts.atol, acts.dtypes.get(name)), name, b, prep, opts)
    ]
    info["decomposition_matches_export"] = not bad
    if not bad:
        return None
    culprit, metrics = "", bad[0].metrics
    before = capture_fx(prep.original, loaded.args, loaded.kwargs, device=opts.device)
    for name in acts.order:  # decomposed program order; names kept through decomposition compare
        if name in before.values and name not in prep.program.graph_signature.user_inputs:
            cmp = compare(name, acts.values[name], before.values[name], opts.rtol, opts.atol, acts.dtypes.get(name))
            if _beyond_drift(cmp, name, before.values[name], prep, opts):
                culprit, metrics = name, cmp.metrics
                break
    return fx_culprit(prep.acts, culprit, STAGE_DECOMPOSITION, metrics)


def _beyond_drift(cmp: Any, fx_name: str, other: Any, prep: Prepared, opts: Options) -> bool:
    """Two PyTorch runs differ by more than their own precision explains.

    Eager kernels and the exported program's ops round differently; in a deep or
    half-precision model that drift passes any fixed tolerance. When the float64
    oracle knows the value, a difference within ``NOISE_FACTOR`` of the exported
    program's own error against it is drift, not a change of behaviour.
    """
    from nodebisect.values.noise import WITHIN_NOISE, judge

    if cmp.ok:
        return False
    oracle = prep.oracle.get(fx_name) if opts.judges_noise() else None
    if oracle is None:
        return True
    dtype = prep.acts.dtypes.get(fx_name) or ""
    return judge(cmp, other, prep.acts.values[fx_name], oracle, dtype).metrics.criterion != WITHIN_NOISE


def check_exporter_optimizer(loaded: Any, prep: Prepared, fd: FirstDivergent, opts: Options, log: RunLog, ort: Ort) -> tuple[str, dict[str, str]]:
    """Node conversion or the exporter's ONNX optimizer? Re-translate without optimizing and look again.

    Runs on ``prep``'s own feeds and activations (the given inputs), whatever
    input sets the trials compared afterwards. Returns the unoptimized export's
    outcome at the culprit's value: ``RIGHT`` (the optimizer introduced the defect),
    ``WRONG``, or "" when it could not be checked; with ``RIGHT``, the onnxscript rule
    at fault (``exporter_rule``, ``exporter_optimizer``: see ``exporter_rule``).
    """
    from nodebisect.frontends.dynamo import unoptimized_export

    value = fd.onnx_value
    try:
        plain = unoptimized_export(prep, loaded, opts.opset)
        produced = {o for n in plain.graph.node for o in n.output}
        if value not in produced or value not in prep.acts.values:
            return ""
        # onnxruntime's own fusions off: only the exporter's optimizer differs between the two graphs.
        runner = ort.runner(plain, prep.feeds, opt_level="disabled")
        got = runner.run([value])[value]
        log.extra_sessions += runner.sessions
    except Exception as exc:  # noqa: BLE001 - attribution is a refinement, never a failure
        log.note(f"could not re-export without the ONNX optimizer to attribute the stage: {str(exc).splitlines()[0][:160]}")
        return "", {}
    if not compare(value, got, prep.acts.values[value], opts.rtol, opts.atol, prep.acts.dtypes.get(value)).ok:
        return WRONG, {}
    return RIGHT, exporter_rule(plain, prep.feeds, log, opts.isolate_crashes)


def exporter_rule(plain: Any, feeds: dict[str, Any], log: RunLog, isolate_crashes: bool = True) -> dict[str, str]:
    """The onnxscript rewrite rule (or pass: constant folding, CSE) whose switching off makes the optimized graph right.

    The unoptimized export is optimized again rule set by rule set, as ``torch.onnx.export(optimize=True)``
    does (``transforms.onnxscript_rules``), and compared with itself unoptimized on the same feeds.
    """
    from nodebisect.transforms.bisect import transform_and_bisect

    try:
        record = transform_and_bisect(plain, "onnxscript", feeds, isolate_crashes=isolate_crashes)
    except Exception as exc:  # noqa: BLE001 - naming the rule is a refinement, never a failure
        log.note(f"could not bisect the exporter's optimizer rules: {str(exc).splitlines()[0][:160]}")
        return {}
    log.extra_sessions += record.applications
    if record.matched or not record.rechecked or not record.rule:
        return {}
    named = {"exporter_rule": ", ".join(r for r in record.rules if not r.startswith("fold:")) or record.rule,
             "exporter_optimizer": f"{record.tool} {record.version}"}
    if record.folded:  # constant folding, of these nodes: the folded constant
        named["exporter_rule"] = ", ".join(dict.fromkeys([record.rule] + [r for r in record.rules if not r.startswith("fold:")]))
        named["exporter_folded"] = ", ".join(f"{f['node']} ({f['op_type']})" for f in record.folded)
    return named


def unoptimized_window(prep: Prepared, value: str) -> tuple[bytes, dict[str, Any]] | None:
    """The subgraph computing ``value`` in the unoptimized export, fed with PyTorch's values.

    What the optimizer's maintainers need next to the folded node: the ops as the
    exporter translated them (e.g. Conv + BatchNormalization) before they were folded.
    """
    from nodebisect.diagnose.isolate import local_graph
    from nodebisect.values.graphmap import build_graph_map

    plain = prep.unoptimized_onnx
    if plain is None:
        return None
    gm = build_graph_map(plain, prep.acts.values, prep.acts.outputs)
    if value not in gm.producer:
        return None
    window = local_graph(plain, gm, value, depth=1)  # one level up: the ops the optimizer folded together
    inputs = {n: prep.feeds[n] if n in prep.feeds else prep.acts.values[gm.mapped[n]] for n in window.inputs}
    return window.model.SerializeToString(), inputs


def note_framework_nans(acts: Any, log: RunLog) -> None:
    """Say when PyTorch itself makes NaN: there values are compared NaN-to-NaN."""
    for name in acts.order:
        arr = acts.values[name]
        if arr.dtype.kind == "f" and arr.size and not np.isfinite(arr).all() and np.isnan(arr).any():
            log.note(f"PyTorch itself produces NaN at FX node {name!r}: values there are compared NaN-to-NaN")
            return


def fx_culprit(reference: Reference, fx_name: str, stage: Stage, metrics: Metrics, module: str = "") -> FirstDivergent:
    """A culprit that is a value of the reference itself (stages before ONNX exists: capture, decomposition).

    Its framework side is what the reference says of it (target, innermost module and
    its type, source line); ``module`` (the capture check's module path) wins when given.
    """
    ref = reference.describe(fx_name)
    if module:
        ref.module = module
    target = ref.target
    return FirstDivergent(
        onnx_node=fx_name,
        op_type=target,
        onnx_value=fx_name,
        stage=stage,
        cause=Cause(stage.value),  # before ONNX exists the stage is the cause
        segment=[fx_name] if fx_name else [],
        segment_op_types=[target] if target else [],
        framework=ref,
        metrics=metrics,
    )
