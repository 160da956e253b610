"""The culprit in diff's words: what the transformation did there, and which tool did it.

``locate`` finds the node and whether it is wrong on the reference's own inputs
(``conversion``), right there (``inherited``: drift), or wrong only in onnxruntime
(``runtime``/``optimizer``). For a transformed candidate a node wrong on the
reference's inputs is the transformation's doing, and what it did is read from
the values: an overflow past the candidate dtype's range, a NaN born from finite
inputs, a constant the node reads that is no longer the reference's, a quantized
node. The same model on two execution providers is the runtime's doing.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from nodebisect.records import DIVERGED, MATCH, STATUS_DIVERGED, Checks, FirstDivergent, LocateResult, Metrics
from nodebisect.vocab import Cause, Stage

# A constant is changed when it moved by more than this relative amount (float16's half ulp is 4.9e-4).
CONSTANT_RTOL = 2e-3
_FINITE_MAX = {"float16": 65504.0, "bfloat16": 3.39e38}
# producer_name (lower case, a prefix) -> the tool's name as the report says it.
_TOOLS = {
    "onnxconverter-common": "onnxconverter-common (convert_float_to_float16)",
    "onnxmltools": "onnxmltools",
    "onnx.quantize": "onnxruntime.quantization",
    "onnxruntime.quant": "onnxruntime.quantization",
    "onnxruntime.transformers": "onnxruntime.transformers optimizer",
    "onnxruntime": "onnxruntime",
    "onnxoptimizer": "onnxoptimizer",
    "onnxslim": "onnxslim",
    "onnx-simplifier": "onnxsim",
    "onnxsim": "onnxsim",
    "pytorch": "torch.onnx",
    "onnxscript": "onnxscript",
}


def producer_of(model: onnx.ModelProto, reference: onnx.ModelProto | None = None) -> str:
    """The tool that made ``model`` from ``reference``: its producer_name when the tool set its own, else what the graph shows.

    Most tools keep the producer_name of the model they transform (a float16
    conversion of a torch export still says "pytorch"), so the Casts
    ``convert_float_to_float16`` names ``*_cast_to_*`` and the quantizer's
    ``*_quantized`` values speak for them. "" when nothing says.
    """
    name = (model.producer_name or "").strip()
    seen = reference is not None and name == (reference.producer_name or "").strip()
    if seen:  # the producer fields are the reference's (torch's version, say): only the graph speaks for the tool
        name = _seen_in_graph(model)
    if not name:
        return ""
    label = next((tool for key, tool in _TOOLS.items() if name.lower().startswith(key)), name)
    return f"{label} {model.producer_version}".strip() if model.producer_version and not seen else label


def _seen_in_graph(model: onnx.ModelProto) -> str:
    names = [n.name for n in model.graph.node]
    outputs = [o for n in model.graph.node for o in n.output]
    if any("_cast_to_" in n or n.startswith("graph_input_cast") or n.startswith("graph_output_cast") for n in names):
        return "onnxconverter-common"  # or onnxruntime.transformers.float16, its copy: the same Cast names
    if any(o.endswith(("_quantized", "_QuantizeLinear_Output", "_DequantizeLinear_Output")) for o in outputs):
        return "onnxruntime.quantization"
    return ""


def in_diff_terms(
    result: LocateResult, candidate: onnx.ModelProto, reference: onnx.ModelProto, mapping: Any,
    values: dict[str, np.ndarray], producer: str, same_model: bool, acts: Any,
) -> LocateResult:
    """``result`` with diff's stage and cause, the checks the wording reads, and a quantized node that stands out."""
    from nodebisect.onnx_reference.quantized import standout

    fd = result.first_divergent
    if not same_model and (fd is None or fd.cause == Cause.INHERITED):  # drift, or nothing: does one int8 node stand out?
        found = standout(candidate, set(mapping.to_reference), result.nodes)
        if found is not None:
            fd = _quantization_culprit(found, result, fd)
            result.verdict, result.repro = DIVERGED, None  # a drift culprit's repro is not this node's
    if fd is None:
        return result
    if not same_model and fd.cause == Cause.INHERITED and fd.onnx_value in acts.reduced:
        return _precision_drift(result, fd)
    framework = acts.describe(fd.onnx_value)
    if fd.onnx_node in mapping.ref_nodes:  # a node that kept its name (and absorbed others: QDQ folds a Relu): its own name
        framework = replace(framework, module=fd.onnx_node, target=mapping.ref_nodes[fd.onnx_node].op_type)
    culprit = _culprit(fd, candidate, reference, mapping, values, producer, same_model, acts.kind, acts.exact)
    if fd.onnx_node in mapping.replaced:  # a fusion: compared at its outputs, named with what it stands for
        culprit = replace(culprit, checks=replace(culprit.checks, replaced=", ".join(mapping.replaced[fd.onnx_node])))
    result.first_divergent = replace(culprit, framework=framework)
    return result


def _precision_drift(result: LocateResult, fd: FirstDivergent) -> LocateResult:
    """Drift the candidate's precision must cause: the first value past the bounds is right on the reference's inputs.

    ``locate`` found no node wrong on the reference's own values upstream either (the
    teacher-forced search for a local source), so nothing the transformation made is
    wrong: it computes at a lower precision, and the error accumulates. For a
    float32 candidate that stays a divergence (``locate``'s rule); here it is a match.
    """
    from nodebisect.report.diff_wording import drift_note

    bad = [r for r in result.nodes if r.status == STATUS_DIVERGED]
    worst = max((o for o in result.outputs if not o.ok), key=lambda o: o.metrics.max_abs, default=None)
    drift = {
        "culprit": fd.onnx_node, "cause": str(fd.cause), "values_beyond_tolerance": len(bad),
        "worst_output": worst.name if worst else "", "max_abs": worst.metrics.max_abs if worst else fd.metrics.max_abs,
        "dtype": fd.metrics.dtype, "noise_ratio": max((r.metrics.noise_ratio for r in bad if r.metrics), default=0.0),
    }
    result.verdict, result.first_divergent, result.repro = MATCH, None, None
    result.stats["precision_drift"] = drift
    result.notes.append(drift_note(drift))
    return result


def _quantization_culprit(found: Any, result: LocateResult, drift: FirstDivergent | None) -> FirstDivergent:
    record = next(r for r in result.nodes if r.onnx_value == found.value)
    words = f"adds {found.added:.2g} relative error"
    words += f", {found.added / found.median:.3g}x the median ({found.median:.2g}) of the other {found.others} quantized node(s)" if found.median > 0 else ""
    return FirstDivergent(
        onnx_node=found.node, op_type=record.op_type, onnx_value=found.value, stage=Stage.TRANSFORMATION, cause=Cause.QUANTIZATION_ERROR,
        segment=list(found.nodes), segment_op_types=[r.op_type for n in found.nodes for r in result.nodes if r.onnx_node == n],
        framework=record.framework, metrics=record.metrics or Metrics(), amplifiers=[drift.onnx_node] if drift is not None else [],
        checks=Checks(quantization=words),
    )


def closer_to_exact(fd: FirstDivergent, exact: dict[str, np.ndarray]) -> str:
    """"candidate" or "reference": whose value of the worst element is nearer the float64 answer ("" when unknown)."""
    answer, worst = exact.get(fd.onnx_value), fd.worst
    if answer is None or "index" not in worst or "expected" not in worst or "actual" not in worst:
        return ""
    try:
        true = float(np.asarray(answer)[tuple(worst["index"])])
        ref, cand = float(worst["expected"]), float(worst["actual"])
    except (IndexError, TypeError, ValueError):
        return ""
    if not np.isfinite(true):
        return ""
    ref_err = abs(ref - true) if np.isfinite(ref) else float("inf")
    cand_err = abs(cand - true) if np.isfinite(cand) else float("inf")
    return "" if ref_err == cand_err else "candidate" if cand_err < ref_err else "reference"


def _culprit(
    fd: FirstDivergent, candidate: onnx.ModelProto, reference: onnx.ModelProto, mapping: Any,
    values: dict[str, np.ndarray], producer: str, same_model: bool, backend: str = "", exact: dict[str, np.ndarray] | None = None,
) -> FirstDivergent:
    """One culprit in diff's terms: the candidate's runtime (same model), else what the transformation did."""
    checks = replace(fd.checks, compared_with=f"the reference model ({backend})", transformed_by="" if same_model else producer)
    fd = replace(fd, checks=checks)
    if same_model and fd.cause in (Cause.CONVERSION, Cause.RUNTIME):  # one model, two backends: which one is off?
        closer = closer_to_exact(fd, exact)
        return replace(fd, stage=Stage.RUNTIME, cause=Cause.RUNTIME, checks=replace(fd.checks, closer_to_exact=closer))
    if fd.cause != Cause.CONVERSION:
        return fd
    fd = replace(fd, stage=Stage.TRANSFORMATION)
    m = fd.metrics
    ref = values.get(mapping.to_reference.get(fd.onnx_value, ""))
    limit = _FINITE_MAX.get(m.dtype)
    if m.inf and not m.expected_inf and ref is not None and limit and float(np.nanmax(np.abs(np.where(np.isfinite(ref), ref, 0)))) > limit:
        return replace(fd, cause=Cause.PRECISION_OVERFLOW)
    constant = changed_constant(fd.onnx_node, candidate, reference, mapping)
    if constant:
        return replace(fd, cause=Cause.CONSTANT_CHANGED, checks=replace(fd.checks, constant=constant))
    if m.nan and not m.expected_nan:
        return replace(fd, cause=Cause.NAN_BORN)
    if _quantized(fd, candidate):
        return replace(fd, cause=Cause.QUANTIZATION_ERROR)
    return fd


def changed_constant(node_name: str, candidate: onnx.ModelProto, reference: onnx.ModelProto, mapping: Any) -> str:
    """"name: before -> after" for a constant ``node_name`` reads that differs from the reference's, or ""."""
    from nodebisect.onnxgraph import node_keys

    cand_node = dict(node_keys(candidate)).get(node_name)
    if cand_node is None:
        return ""
    cand_consts = _constants(candidate)
    ref_consts = _constants(reference)
    ref_node = mapping.ref_nodes.get(node_name)
    for position, name in enumerate(cand_node.input):
        after = cand_consts.get(name)
        if after is None:
            continue
        before = ref_consts.get(name)
        if before is None and ref_node is not None and position < len(ref_node.input):
            before = ref_consts.get(ref_node.input[position])
        if before is None or before.shape != after.shape or before.dtype.kind != "f":
            continue
        b, a = before.astype(np.float64), after.astype(np.float64)
        moved = np.abs(a - b) > CONSTANT_RTOL * np.abs(b) + 1e-30
        if moved.any():
            i = int(np.argmax(np.abs(a - b) * moved))
            where = "" if b.size == 1 else f"[{i}] "
            return f"{name}: {where}{b.ravel()[i]:.6g} -> {a.ravel()[i]:.6g}" + (f" ({int(moved.sum())} of {b.size} elements)" if b.size > 1 else "")
    return ""


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Initializers and Constant nodes' values by name (external data not loaded is skipped)."""
    out: dict[str, np.ndarray] = {}
    for init in model.graph.initializer:
        try:
            out[init.name] = numpy_helper.to_array(init)
        except Exception:  # noqa: BLE001 - external data absent: nothing to compare
            continue
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value":
                    out[node.output[0]] = numpy_helper.to_array(attr.t)
    return out


def _quantized(fd: FirstDivergent, candidate: onnx.ModelProto) -> bool:
    ops = {"DequantizeLinear", "QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "QLinearMatMul", "QLinearConv", "ConvInteger"}
    return bool(ops & set(fd.segment_op_types)) or fd.op_type in ops


__all__ = ["changed_constant", "in_diff_terms", "producer_of"]
