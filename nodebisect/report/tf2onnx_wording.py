"""The sentences of a Keras/TensorFlow verdict, in tf2onnx's terms (``report.wording`` asks here first).

A verdict is TensorFlow's when its reference op is a TF op (``FrameworkRef.target``
``tf.<OpType>``, set by ``frontends.keras``) or the run's exporter is tf2onnx; the
stages are tf2onnx's (capture, TF optimization, conversion, graph optimization,
runtime) and a TF kernel that approximates (``framework``) is said to be TensorFlow's.
"""

from __future__ import annotations

from nodebisect.records import CAUSE_CONVERSION, RIGHT, WRONG, FirstDivergent, Stage

REPO_TF2ONNX = ("onnx/tensorflow-onnx", "tf2onnx's op handlers (tf2onnx/onnx_opset/)")
REPO_TF2ONNX_OPTIMIZER = ("onnx/tensorflow-onnx", "tf2onnx's ONNX optimizers (tf2onnx/optimizer/)")
REPO_TENSORFLOW = ("tensorflow/tensorflow", "TensorFlow: tf.function tracing and grappler")
REPO_TF_KERNEL = ("tensorflow/tensorflow", "the TensorFlow kernel behind the Keras layer (keras-team/keras if the layer should pick another)")


def is_tensorflow(fd: FirstDivergent | None, exporter: str = "") -> bool:
    """Is this a Keras/TensorFlow verdict (the reference ops are TF ops)?"""
    return exporter == "tf2onnx" or (fd is not None and fd.framework.target.startswith("tf."))


def reference_name(env: dict) -> str:
    """Whose values the report compares against, by the run's environment: PyTorch, TensorFlow or a reference model."""
    if env.get("command") == "diff":
        return "the reference model"
    return "TensorFlow" if env.get("exporter") == "tf2onnx" else "PyTorch"


def _optimizer(fd: FirstDivergent) -> str:
    return fd.optimizer.get("optimizer", "") if fd.optimizer.get("tool") == "tf2onnx" else ""


def stage_sentence(fd: FirstDivergent) -> str:
    """Stage and cause as one sentence, or "" where the generic sentence holds (runtime, drift)."""
    if fd.stage == Stage.CAPTURE:
        return "tracing changed the behaviour: Keras eager and the frozen tf.function graph already differ, before any ONNX is written"
    if fd.stage == Stage.TF_OPTIMIZATION:
        return "grappler (tf2onnx's tf_optimize) changed the numerics: the frozen graph before and after it differ, before any ONNX is written"
    if fd.stage == Stage.FRAMEWORK:
        return ("TensorFlow's own kernel is the inexact side: onnxruntime computes the ONNX op as ONNX's float64 reference evaluator does, "
                "TensorFlow departs from it (not a tf2onnx defect)")
    if fd.stage == Stage.GRAPH_OPTIMIZATION:
        named = _optimizer(fd)
        return ("tf2onnx's ONNX optimizers turned this op into nodes that compute something else: wrong on TensorFlow's own inputs, "
                "right when converted with only {remove_identity}" + (f"; the optimizer at fault is {named}" if named else ""))
    if fd.cause == CAUSE_CONVERSION:
        return "tf2onnx's conversion of this TF op computes something else: wrong even on TensorFlow's own inputs, also with only {remove_identity}"
    return ""


def file_at(fd: FirstDivergent) -> tuple[str, str] | None:
    """(repository, component), or None where the generic answer holds."""
    if fd.stage in (Stage.CAPTURE, Stage.TF_OPTIMIZATION):
        return REPO_TENSORFLOW
    if fd.stage == Stage.FRAMEWORK:
        return REPO_TF_KERNEL
    if fd.stage == Stage.GRAPH_OPTIMIZATION:
        return REPO_TF2ONNX_OPTIMIZER
    if fd.cause == CAUSE_CONVERSION:
        return REPO_TF2ONNX
    return None


def what_to_do(fd: FirstDivergent) -> str:
    """What the user can do meanwhile, or "" where the generic line holds."""
    if fd.stage == Stage.GRAPH_OPTIMIZATION:
        named = _optimizer(fd)
        left_out = f" without '{named}'" if named else ""
        return f"meanwhile, convert with tf2onnx.convert.from_keras(..., optimizers=...) listing tf2onnx's optimizers{left_out}"
    if fd.stage == Stage.FRAMEWORK:
        return "the ONNX model is the exact one here: accept the difference (--rtol/--atol) or compare against an exact implementation"
    if fd.stage in (Stage.CAPTURE, Stage.TF_OPTIMIZATION):
        return "meanwhile, compare the ONNX model against the traced graph, or rewrite the layer so tracing keeps its numerics"
    if fd.cause == CAUSE_CONVERSION:
        return "meanwhile, rewrite the layer with ops tf2onnx converts right, or give tf2onnx a custom op handler (custom_op_handlers=...)"
    return ""


def explanation(fd: FirstDivergent) -> str:
    """The diagnosis in words for the stages only TensorFlow has, or "" for the generic composition."""
    if fd.stage in (Stage.CAPTURE, Stage.TF_OPTIMIZATION):
        return stage_sentence(fd) + f" at {fd.onnx_value or 'the outputs'}"
    if fd.stage == Stage.FRAMEWORK:
        tf_err, ort_err = fd.op_noise.get("tensorflow", 0.0), fd.op_noise.get("onnxruntime", 0.0)
        kernel = fd.optimizer.get("kernel", "")
        return (f"wrong against TensorFlow, yet onnxruntime is within {ort_err:.3g} of the ONNX op's exact float64 answer and TensorFlow "
                f"{tf_err:.3g} from it" + (f": {kernel}" if kernel else ""))
    if fd.checks.unoptimized_export == RIGHT and _optimizer(fd):
        return (f"wrong even when fed TensorFlow's own input values; converted with only {{remove_identity}} it is right, and adding "
                f"tf2onnx's optimizers in order, '{_optimizer(fd)}' is the first that makes it wrong")
    if fd.checks.unoptimized_export == WRONG:
        return "wrong even when fed TensorFlow's own input values, also when converted with only {remove_identity}: the op's conversion itself"
    return ""


def issue_title(fd: FirstDivergent, op: str, symptom: str) -> str:
    """The GitHub issue title in tf2onnx's terms, or "" where the generic title holds (runtime, drift)."""
    if fd.stage == Stage.CAPTURE:
        return f"tf.function: the frozen graph differs from Keras eager at {op}{symptom}"
    if fd.stage == Stage.TF_OPTIMIZATION:
        return f"grappler changes the result of {op}{symptom}"
    if fd.stage == Stage.FRAMEWORK:
        return f"{op}: TensorFlow's kernel departs from the exact op, onnxruntime matches it{symptom}"
    if fd.stage == Stage.GRAPH_OPTIMIZATION:
        return f"tf2onnx optimizer {_optimizer(fd) or '(default set)'}: rewriting {op} changes its result{symptom}"
    if fd.cause == CAUSE_CONVERSION:
        return f"tf2onnx: {op} converted as {fd.op_type} computes something else{symptom}"
    return ""
