"""Turn a finished search into the result's rows: node records, tolerances, NaN origin, stats.

Also the one observation only the whole search can make: most values vanish
below atol, so a match there proves nothing.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import onnx
import onnx.numpy_helper

from nodebisect.onnxgraph import first_nonfinite_node, node_attributes
from nodebisect.records import (
    CAUSE_CONVERSION,
    CAUSE_INHERITED,
    DIVERGED,
    MATCH,
    NOT_RUN,
    OK,
    STATUS_DIVERGED,
    UNMAPPED,
    Comparison,
    FirstDivergent,
    LocateResult,
    NodeRecord,
    OutputComparison,
    Scope,
    op_noise_ratio,
)
from nodebisect.prepared import ReproData
from nodebisect.run import RunLog
from nodebisect.values.graphmap import GraphMap
from nodebisect.values.noise import WITHIN_NOISE
from nodebisect.search.strategy import SearchOutcome, cone_bisector, earliest


# A node wrong on PyTorch's own inputs is cleared only when onnxruntime is about as close to the
# exact answer as PyTorch itself (LayerNorm of rows with a large mean: both round the cancelling
# subtraction, differently); NOISE_FACTOR is for drift that a node only inherits.
CONVERSION_DRIFT_FACTOR = 2.0
_FULL_PRECISION = ("float32", "float64")


def precision_drift(outcome: SearchOutcome, fd: FirstDivergent) -> dict[str, Any]:
    """Drift, not a defect: the culprit only rounds differently, nothing upstream is wrong, all within noise.

    Deep and half-precision models drift past any fixed tolerance. When the first
    value beyond it is right on PyTorch's own inputs (``inherited``, and the
    search upstream found no value wrong on its own) and every value beyond the
    tolerance is within ``NOISE_FACTOR`` of PyTorch's own rounding error against
    the float64 oracle, no node computes something else: calling that a
    divergence is the false alarm the issue forbids.

    A culprit wrong on PyTorch's own inputs (``conversion``) is cleared only in
    full precision and when, on the op alone (``fd.op_noise``: both sides on
    PyTorch's inputs against the op's exact answer on them), onnxruntime's error is
    within ``CONVERSION_DRIFT_FACTOR`` of PyTorch's: the node computes the same
    function, rounded differently, and neither is closer to exact (LayerNorm over
    rows with a large mean). The whole-program noise is not enough here: it holds
    the rounding of the op's inputs too, which a wrong op can hide under
    (``torch.remainder(h, 0.1)`` at ``|h| ~ 1e6``: PyTorch is exact on its inputs,
    the lowering is 0.03 off on them). Any other cause (a half-precision rounding the runtime skips,
    as in Fp16RoundingElided, where onnxruntime is *closer* to exact) stays a
    divergence, however small: the model may rely on that rounding.

    Returns:
        {} for a divergence; else the worst output and the culprit that was cleared.
    """
    if fd.metrics.criterion != WITHIN_NOISE:
        return {}
    culprit_ratio = fd.metrics.noise_ratio
    if fd.cause == CAUSE_CONVERSION:
        if fd.metrics.expected_dtype not in _FULL_PRECISION or fd.metrics.noise_ratio > CONVERSION_DRIFT_FACTOR or not fd.op_noise:
            return {}
        culprit_ratio = op_noise_ratio(fd.op_noise)
        if culprit_ratio > CONVERSION_DRIFT_FACTOR:
            return {}
    elif fd.cause != CAUSE_INHERITED:
        return {}
    bad = [c for c in outcome.comparisons.values() if not c.ok]
    if not bad or any(c.metrics.criterion != WITHIN_NOISE for c in bad):
        return {}
    worst = max((outcome.comparisons[o] for o in outcome.bad_outputs), key=lambda c: c.metrics.max_abs, default=None)
    return {
        "culprit": fd.onnx_node,
        "cause": fd.cause,
        "values_beyond_tolerance": len(bad),
        "worst_output": worst.onnx_value if worst else "",
        "max_abs": worst.metrics.max_abs if worst else fd.metrics.max_abs,
        "noise_ratio": max(c.metrics.noise_ratio for c in bad),
        "culprit_noise_ratio": culprit_ratio,
        "dtype": fd.metrics.expected_dtype,
    }


def _drift_culprit_clause(drift: dict[str, Any]) -> str:
    """Why the first value past the tolerance is not a defect, for the drift note."""
    if drift.get("cause") == CAUSE_CONVERSION:
        return (
            f"differs even on PyTorch's own inputs, but onnxruntime is within {drift['culprit_noise_ratio']:.2g}x of "
            "PyTorch's own distance from the op's exact answer on those inputs: the same function, rounded differently"
        )
    return "is right on PyTorch's own inputs with nothing upstream wrong on its own"


def search_result(
    outcome: SearchOutcome,
    environment: dict[str, Any],
    first_divergent: FirstDivergent | None,
    repro: ReproData | None,
    log: RunLog,
    drift: dict[str, Any] | None = None,
) -> LocateResult:
    """The ``LocateResult`` of one search (the pipeline adds stages, trials and timings).

    ``drift`` (from ``precision_drift``) turns a divergence into a match with a note.
    """
    gm, comparisons = outcome.gm, outcome.comparisons
    nonfinite_origin = _nonfinite_origin(outcome)
    _note_vanishing_values(gm, comparisons, outcome.prober.acts, log, outcome.outputs)
    if drift:
        first_divergent = repro = None
        log.note(
            f"precision drift, not a defect: {drift['values_beyond_tolerance']} value(s) exceed the fixed tolerance "
            f"(worst output max_abs={drift['max_abs']:.3g}), but each is within {drift['noise_ratio']:.2g}x PyTorch's own "
            f"{drift['dtype']} rounding error against the exact (float64) answer, and the first of them "
            f"({drift['culprit']}) {_drift_culprit_clause(drift)}; "
            "pass --oracle off (or explicit --rtol/--atol) to judge by the fixed tolerance alone"
        )
    outputs = output_records(outcome)
    if first_divergent is not None:
        first_divergent = dataclasses.replace(first_divergent, scope=divergence_scope(outputs))
    result = LocateResult(
        verdict=DIVERGED if outcome.bad_outputs and not drift else MATCH,
        first_divergent=first_divergent,
        nodes=node_records(gm, comparisons),
        outputs=outputs,
        environment=environment,
        steps=outcome.steps,
        tolerance=_tolerances_used(comparisons),
        repro=repro,
    )
    if drift:
        result.stats["precision_drift"] = drift
    if nonfinite_origin:
        result.stats["first_nonfinite"] = nonfinite_origin
        who = "PyTorch too" if nonfinite_origin["framework_nonfinite"] else "PyTorch stays finite there"
        where = (
            f"value {nonfinite_origin['onnx_value']}"
            if nonfinite_origin["onnx_node"] == nonfinite_origin["carrier"]
            else f"inside the nodes computing {nonfinite_origin['onnx_value']}"
        )
        result.notes.append(
            f"onnxruntime's first NaN/Inf from finite inputs comes from {nonfinite_origin['onnx_node']} "
            f"({nonfinite_origin['op_type']}, {where}); {who}"
        )
    runner = outcome.prober.runner
    result.stats.update(
        onnx_nodes=len(gm.order),
        mapped_values=len(outcome.probes),
        compared_values=len(comparisons),
        ort_sessions=runner.sessions,  # the search; isolation sessions are counted apart
        ort_seconds=round(runner.seconds, 3),
        strategy=outcome.strategy,
        probes_per_step=outcome.prober.opts.probes_per_step,
    )
    return result


def output_records(outcome: SearchOutcome) -> list[OutputComparison]:
    """One record per model output; with a mask input, its error at the positions the mask keeps."""
    records = []
    labels = list(getattr(outcome.prober.acts, "output_labels", None) or [])
    labels = labels if len(labels) == len(outcome.outputs) else [""] * len(outcome.outputs)
    for o, label in zip(outcome.outputs, labels):
        cmp, attended = outcome.comparisons[o], outcome.prober.attended.get(o)
        record = OutputComparison(name=o, ok=cmp.ok, metrics=cmp.metrics, label=label)
        if attended is not None:
            record.max_abs_attended, record.ok_attended = attended.metrics.max_abs, attended.ok
        records.append(record)
    return records


def divergence_scope(outputs: list[OutputComparison]) -> str:
    """``masked_positions`` when every diverging output agrees where the mask keeps positions (vocab.Scope).

    ``attended`` when a diverging output also differs at kept positions; "" when no
    mask applies to a diverging output (a pooled output, or no mask input at all).
    """
    bad = [o for o in outputs if not o.ok]
    if not bad or any(o.ok_attended is None for o in bad):
        return Scope.ATTENDED if any(o.ok_attended is False for o in bad) else ""
    return Scope.MASKED_POSITIONS if all(o.ok_attended for o in bad) else Scope.ATTENDED


def node_records(gm: GraphMap, comparisons: dict[str, Comparison]) -> list[NodeRecord]:
    """One row per ONNX node: its mapped value's status and metrics."""
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
                inputs=list(node.input),
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


def _note_vanishing_values(gm: GraphMap, comparisons: dict[str, Comparison], acts: Any, log: RunLog, outputs: list[str]) -> None:
    """Warn when most values, or every model output, are below atol: there, any ONNX value would "match".

    Random-weight models (e.g. some transformers inits) can shrink activations to
    1e-30; inputs can zero an output (a gate or mask of zeros). A match on them
    says nothing about the conversion.
    """
    float_cmps = [(v, c) for v, c in comparisons.items() if c.tolerance.atol > 0]
    if not float_cmps:
        return
    tiny: list[str] = []
    for v, c in float_cmps:
        ref = np.asarray(acts.values[gm.mapped[v]])
        if ref.dtype == np.float16:
            ref = ref.astype(np.float32)  # exactly the same numbers; numpy reduces float16 without SIMD, ten times slower
        if ref.dtype.kind == "f" and ref.size and np.isfinite(ref.sum(dtype=np.float64)):  # all finite: no mask, no copy
            if max(float(ref.max()), -float(ref.min())) <= c.tolerance.atol:
                tiny.append(v)
            continue
        finite = ref[np.isfinite(ref)] if ref.dtype.kind == "f" else ref
        if finite.size and float(np.abs(finite).max()) <= c.tolerance.atol:
            tiny.append(v)
    float_outputs = [o for o in outputs if o in dict(float_cmps)]
    if len(tiny) * 2 > len(float_cmps):
        log.note(
            f"{len(tiny)} of {len(float_cmps)} compared values are entirely below atol: there any ONNX value "
            "matches, so this comparison cannot see a defect (random weights that vanish? use real "
            "weights or inputs of realistic scale, or a smaller --atol)"
        )
    elif float_outputs and all(o in tiny for o in float_outputs):
        log.note(
            f"every model output ({', '.join(float_outputs[:3])}{', …' if len(float_outputs) > 3 else ''}) is entirely "
            "below atol on these inputs: any ONNX value matches there, so the outputs prove nothing (inputs that zero "
            "them, such as a mask or gate of zeros? try other inputs)"
        )


def _nonfinite_origin(outcome: SearchOutcome) -> dict[str, Any]:
    """Where onnxruntime's NaN/Inf are born: the first node making them from finite inputs.

    Searched like a divergence, with "holds NaN/Inf" as the oracle, only when a
    graph output holds some. NaN that PyTorch also produces is reported too.
    """
    gm, comparisons, runner = outcome.gm, outcome.comparisons, outcome.prober.runner

    def nonfinite(c: Comparison) -> bool:
        return c.metrics.nan + c.metrics.inf > 0

    bad_outputs = [o for o in outcome.outputs if o in comparisons and nonfinite(comparisons[o])]
    if not bad_outputs:
        return {}

    def measure(values: list[str]) -> set[str]:
        got = runner.run(values)
        return {v for v in values if got[v].dtype.kind == "f" and not np.isfinite(got[v]).all()}

    known = {v: nonfinite(c) for v, c in comparisons.items()}
    origin = cone_bisector(gm, outcome.probes, measure, outcome.prober.opts.probes_per_step, known).locate(earliest(gm, bad_outputs))
    node = _born_inside(gm, runner, origin)
    reference = outcome.prober.acts.values[gm.mapped[origin]]
    return {
        "onnx_node": node,
        "op_type": gm.nodes[node].op_type,
        "onnx_value": origin,
        "carrier": gm.producer[origin],
        "framework_nonfinite": bool(reference.dtype.kind == "f" and not np.isfinite(reference).all()),
    }


def _born_inside(gm: GraphMap, runner: Any, origin: str) -> str:
    """The node inside ``origin``'s lowering that makes the first NaN/Inf (its carrier if none is).

    The search sees mapped values only; when the op became several ONNX nodes
    (erfcx: Exp overflows, a later Mul turns inf into NaN) one more session on
    the segment's internal values names the node that makes it, as the
    suspect ranking does.
    """
    carrier = gm.producer[origin]
    nodes, _ = gm.cut(origin)
    if len(nodes) < 2:
        return carrier
    read = {i for n in nodes for i in gm.nodes[n].input if i}
    wanted = [v for v in read if v in gm.producer] + [o for n in nodes for o in gm.nodes[n].output if o]
    try:
        values = runner.run(wanted)
        values.update({k: v for k, v in runner.feeds.items() if k in read})  # a -inf mask fed by the user
        for t in runner.model.graph.initializer:
            if t.name in read and t.data_location != onnx.TensorProto.EXTERNAL:
                values[t.name] = onnx.numpy_helper.to_array(t)
    except Exception:  # noqa: BLE001 - evidence only; the carrier stays the answer
        return carrier
    return first_nonfinite_node(((n, gm.nodes[n]) for n in nodes), values) or carrier
