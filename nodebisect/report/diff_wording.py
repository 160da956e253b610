"""The sentences of a ``diff`` verdict: a candidate ONNX model against the ONNX model it was made from.

``report.wording`` asks here first when the culprit was compared with a reference
model (``Checks.compared_with``); every view (terminal, report.md, TUI) reads the
same words. Where to file names the tool that made the candidate when its
``producer_name`` says which, else the user's own pipeline.
"""

from __future__ import annotations

from typing import Any

from nodebisect.records import FirstDivergent
from nodebisect.vocab import Cause, Stage

# producer (as ``onnx_reference.defects.producer_of`` names it, a prefix) -> (repository, component).
TOOL_REPOS = {
    "onnxconverter-common": ("microsoft/onnxconverter-common", "the float16 conversion (convert_float_to_float16)"),
    "onnxmltools": ("onnx/onnxmltools", "onnxmltools' conversion"),
    "onnxruntime.quantization": ("microsoft/onnxruntime", "onnxruntime.quantization"),
    "onnxruntime.transformers.float16": ("microsoft/onnxruntime", "the onnxruntime.transformers float16 conversion (convert_float_to_float16)"),
    "onnxruntime.transformers": ("microsoft/onnxruntime", "the onnxruntime.transformers optimizer (fusions)"),
    "onnxruntime": ("microsoft/onnxruntime", "onnxruntime's graph optimizations (the saved optimized model)"),
    "onnxoptimizer": ("onnx/optimizer", "onnxoptimizer's passes"),
    "onnxslim": ("inisis/OnnxSlim", "onnxslim"),
    "onnxsim": ("daquexian/onnx-simplifier", "onnx-simplifier"),
    "onnxscript": ("microsoft/onnxscript", "the onnxscript optimizer / rewrite rules"),
}
_PRECISION_CAUSES = (Cause.PRECISION_OVERFLOW, Cause.NAN_BORN, Cause.QUANTIZATION_ERROR)


def is_diff(fd: FirstDivergent | None) -> bool:
    return fd is not None and bool(fd.checks.compared_with)


def _backend(fd: FirstDivergent) -> str:
    """The reference's backend, as ``Checks.compared_with`` records it ("the reference model (onnxruntime cpu)")."""
    text = fd.checks.compared_with
    return text[text.find("(") + 1 : -1] if text.endswith(")") and "(" in text else "the reference's backend"


def tool_repo(fd: FirstDivergent) -> tuple[str, str] | None:
    tool = fd.checks.transformed_by
    return next((where for key, where in TOOL_REPOS.items() if tool.startswith(key)), None)


def stage_sentence(fd: FirstDivergent) -> str | None:
    """Stage and cause in diff's terms, or None for the words ``locate`` uses."""
    tool = fd.checks.transformed_by or "the transformation that made the candidate"
    cause = fd.cause
    if cause == Cause.PRECISION_OVERFLOW:
        return (f"the candidate's {fd.metrics.dtype} overflows here: the reference's value is beyond {fd.metrics.dtype}'s largest "
                "finite value, so the candidate holds inf; keep this node (and what it feeds) in float32")
    if cause == Cause.NAN_BORN:
        return f"NaN is born here in the candidate from finite inputs, where the reference has none ({tool})"
    if cause == Cause.CONSTANT_CHANGED:
        return f"{tool} changed a constant this node reads ({fd.checks.constant}): the node computes something else even on the reference's own inputs"
    if cause == Cause.QUANTIZATION_ERROR:
        how = fd.checks.quantization or "is wrong on the reference's own inputs"
        return (f"this quantized node {how}: its int8 scale rounds most of its values away (a weight or an activation "
                "with outliers); the rest of the model's quantization error is drift")
    if fd.stage == Stage.TRANSFORMATION and fd.checks.replaced:
        return (f"{tool} fused {fd.checks.replaced} into this {fd.op_type}, and it computes something else: wrong even on "
                "the reference's own inputs")
    if fd.stage == Stage.TRANSFORMATION:
        return f"{tool} made this node compute something else: wrong even on the reference's own inputs"
    if fd.stage == Stage.RUNTIME or cause == Cause.RUNTIME:
        text = f"the two backends compute this node differently (the reference on {_backend(fd)}, the candidate on onnxruntime)"
        if fd.checks.closer_to_exact == "candidate":
            return text + f"; the candidate is nearer the exact (float64) answer: {_backend(fd)} is off here"
        if fd.checks.closer_to_exact == "reference":
            return text + "; the reference is nearer the exact (float64) answer: the candidate's onnxruntime is off here"
        return text
    if cause == Cause.INHERITED:
        return "no wrong node: on the reference's own inputs this node is right; drift from the candidate's precision grows here"
    return None


def file_at(fd: FirstDivergent) -> tuple[str, str] | None:
    """Where a transformation defect is fixed: the tool that made the candidate, when known."""
    if fd.cause in _PRECISION_CAUSES or fd.cause == Cause.INHERITED:
        return None  # what the precision does, not a bug of a tool: keep the node out instead
    if fd.stage == Stage.TRANSFORMATION:
        return tool_repo(fd)
    if fd.checks.closer_to_exact == "candidate" and "evaluator" in _backend(fd):
        return ("onnx/onnx", "onnx.reference, ONNX's reference evaluator")
    return ("microsoft/onnxruntime", "onnxruntime kernels and graph optimizers") if fd.stage in (Stage.RUNTIME, Stage.RUNTIME_OPTIMIZER) else None


def what_to_do(fd: FirstDivergent) -> str | None:
    node = fd.framework.module or fd.onnx_node  # the reference's node: the name the tools' keep-lists honour
    if fd.cause == Cause.PRECISION_OVERFLOW:
        return f"meanwhile, keep {node} in float32: convert_float_to_float16(..., node_block_list=['{node}'])"
    if fd.cause == Cause.CONSTANT_CHANGED:
        return (f"meanwhile, keep {node} in float32 (node_block_list=['{node}']) or convert with a wider max_finite_val / "
                "smaller min_positive_val so the constant survives")
    if fd.cause == Cause.NAN_BORN:
        return f"meanwhile, keep {node} (and the nodes feeding it) in the reference's precision"
    if fd.cause == Cause.QUANTIZATION_ERROR:
        return f"meanwhile, keep {node} out of the quantization (quantize_dynamic/quantize_static(..., nodes_to_exclude=['{node}']))"
    if fd.stage == Stage.TRANSFORMATION:
        where = tool_repo(fd)
        return f"meanwhile, run the pipeline without {where[1] if where else 'the step that made the candidate'} for this node"
    return None


def in_reference_terms(text: str) -> str:
    """A ``locate`` sentence about "PyTorch" said of the reference model instead (the view's facts of a diff)."""
    return text.replace("PyTorch's", "the reference's").replace("PyTorch", "the reference")


def reference_facts(fd: FirstDivergent, facts: list[Any]) -> list[Any]:
    """The view's facts with the "framework" line as the reference's node and value (a diff has no FX graph)."""
    ref = fd.framework
    line = f"{ref.target or '?'} node '{ref.module or '?'}', value {ref.fx_node or '?'}"
    line += f"; the candidate's {fd.op_type} replaced {fd.checks.replaced}" if fd.checks.replaced else ""
    return [type(f)("reference", line) if f.label == "framework" else f for f in facts]


def drift_note(drift: dict[str, Any]) -> str:
    """Why a reduced-precision candidate past the bounds is still a match (``onnx_reference.defects``)."""
    return (
        f"precision drift, not a defect: {drift['values_beyond_tolerance']} value(s) of the {drift['dtype']} candidate exceed its "
        f"tolerance (worst output max_abs={drift['max_abs']:.3g}), but the first of them ({drift['culprit']}) is right on the "
        "reference's own inputs and no node upstream is wrong on them: the error the lower precision accumulates"
    )


def issue_title(fd: FirstDivergent, symptom: str) -> str:
    """The GitHub issue title of a diff culprit: the tool (or "the transformation"), the node, the symptom."""
    tool = (fd.checks.transformed_by or "").split(" (")[0]
    node = f"{fd.framework.target or fd.op_type} node {fd.framework.module or fd.onnx_node}"
    if fd.stage in (Stage.RUNTIME, Stage.RUNTIME_OPTIMIZER):
        return f"onnxruntime: {node} differs from the reference backend{symptom}"
    what = {
        Cause.PRECISION_OVERFLOW: "overflows after the conversion", Cause.CONSTANT_CHANGED: f"reads a changed constant ({fd.checks.constant})",
        Cause.NAN_BORN: "gives NaN after the conversion", Cause.QUANTIZATION_ERROR: "loses most of its values to quantization",
    }.get(fd.cause, "computes something else after the transformation")
    return f"{tool or 'transformation'}: {node} {what}{symptom}"


def reproduce_command(env: dict[str, Any]) -> list[str]:
    """``nodebisect diff REFERENCE CANDIDATE`` with the backends and inputs the result records."""
    cmd = ["nodebisect", "diff", str(env.get("reference", "REFERENCE.onnx")), str(env.get("candidate", "CANDIDATE.onnx"))]
    if env.get("ep", "cpu") != "cpu":
        cmd += ["--ep", str(env["ep"])]
    if env.get("reference_ep", "cpu") != "cpu":
        cmd += ["--reference-ep", str(env["reference_ep"])]
    inputs = env.get("run_inputs", {})
    if inputs.get("inputs_file"):
        cmd += ["--inputs", str(inputs["inputs_file"])]
    for spec in inputs.get("input_specs") or []:
        cmd += ["--input", str(spec)]
    if inputs.get("seed"):
        cmd += ["--seed", str(inputs["seed"])]
    return cmd
