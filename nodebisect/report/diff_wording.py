"""The sentences of a ``diff`` verdict: a candidate ONNX model against the ONNX model it was made from.

``report.wording`` asks here first when the culprit was compared with a reference
model (``Checks.compared_with``); every view (terminal, report.md, TUI) reads the
same words. Where to file names the tool that made the candidate when its
``producer_name`` says which, else the user's own pipeline.
"""

from __future__ import annotations

from nodebisect.records import FirstDivergent
from nodebisect.vocab import Cause, Stage

# producer (as ``onnx_reference.defects.producer_of`` names it, a prefix) -> (repository, component).
TOOL_REPOS = {
    "onnxconverter-common": ("microsoft/onnxconverter-common", "the float16 conversion (convert_float_to_float16)"),
    "onnxmltools": ("onnx/onnxmltools", "onnxmltools' conversion"),
    "onnxruntime.quantization": ("microsoft/onnxruntime", "onnxruntime.quantization"),
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
    if fd.stage == Stage.TRANSFORMATION:
        return f"{tool} made this node compute something else: wrong even on the reference's own inputs"
    if fd.stage == Stage.RUNTIME or cause == Cause.RUNTIME:
        return "the candidate's runtime computes these nodes differently from the reference's: right in the reference's backend, wrong in the candidate's"
    if cause == Cause.INHERITED:
        return "no wrong node: on the reference's own inputs this node is right; drift from the candidate's precision grows here"
    return None


def file_at(fd: FirstDivergent) -> tuple[str, str] | None:
    """Where a transformation defect is fixed: the tool that made the candidate, when known."""
    if fd.cause in _PRECISION_CAUSES or fd.cause == Cause.INHERITED:
        return None  # what the precision does, not a bug of a tool: keep the node out instead
    if fd.stage == Stage.TRANSFORMATION:
        return tool_repo(fd)
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
