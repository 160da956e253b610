"""tf2onnx's own path, step by step: trace, freeze, grappler, convert under a chosen optimizer set.

``tf2onnx.convert.from_keras`` does these steps in one call; nodebisect needs what
lies between them: the frozen GraphDef before grappler (the TF optimization
stage's "before"), the GraphDef tf2onnx converts (the reference's names are its
op names), and conversions of that same GraphDef under other optimizer sets
(``{remove_identity}``, the baseline, and one optimizer more at a time). So it
traces the model as ``from_keras`` does on TF 2.16+, records
``tf2onnx.tf_loader.tf_optimize``'s input and output while ``from_trackable``
freezes (the function is called, not changed), and converts with
``tf2onnx.convert._convert_common``, the function every tf2onnx entry point ends in
and the only one that takes both a GraphDef and ``optimizers``.
"""

from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterator

import onnx

from nodebisect.errors import BadInputError, ExportFailedError
from nodebisect.frontends.keras.load import import_stack

BASELINE = ("remove_identity",)  # without it GRU/LSTM graphs are invalid (issue #24)


@dataclass
class Frozen:
    """The traced model as tf2onnx sees it."""

    before: Any  # GraphDef, frozen, before grappler
    after: Any  # GraphDef tf2onnx converts (after grappler)
    input_names: list[str]
    output_names: list[str]
    rename: dict[str, str]  # TF output tensor -> ONNX graph output name
    tables: dict[str, Any] = field(default_factory=dict)
    name: str = "model"
    opset: int | None = None


def signature(model: Any) -> list[Any]:
    """The model's input signature from its Keras inputs (dynamic dimensions stay dynamic)."""
    tf, _, _ = import_stack()
    inputs = getattr(model, "inputs", None) if getattr(model, "built", True) else None
    try:
        inputs = list(inputs or [])
    except (AttributeError, ValueError, TypeError):
        inputs = []
    if not inputs:
        raise BadInputError(
            f"the subclassed Keras model {type(model).__name__} has no input signature (tf2onnx needs one)",
            tip="wrap it: inp = keras.Input(shape=...); keras.Model(inp, model(inp))",
        )
    return [tf.TensorSpec(shape=i.shape, dtype=i.dtype, name=getattr(i, "name", None)) for i in inputs]


@contextlib.contextmanager
def _recording_grappler(tf_loader: Any, seen: dict[str, Any]) -> Iterator[None]:
    """Record the GraphDef before and after ``tf_loader.tf_optimize`` (it runs unchanged)."""
    original = tf_loader.tf_optimize

    def recorded(input_names: list[str], output_names: list[str], graph_def: Any) -> Any:
        seen["before"] = graph_def
        seen["after"] = original(input_names, output_names, graph_def)
        return seen["after"]

    tf_loader.tf_optimize = recorded
    try:
        yield
    finally:
        tf_loader.tf_optimize = original


def freeze(model: Any, opset: int | None = None) -> Frozen:
    """Trace ``model`` in inference mode and freeze it, as ``tf2onnx.convert.from_keras`` does."""
    tf, _, tf2onnx = import_stack()
    from tf2onnx import tf_loader
    from tf2onnx.convert import tensor_names_from_structed

    specs = signature(model)

    @tf.function(input_signature=specs)
    def call(*args: Any) -> Any:
        return model(args[0] if len(args) == 1 else list(args), training=False)

    try:
        concrete = call.get_concrete_function()
    except Exception as exc:  # noqa: BLE001 - the user's model cannot be traced
        raise ExportFailedError(f"tracing the Keras model failed: {_first_line(exc)}", step="capture") from exc
    captures = getattr(concrete.graph, "function_captures", None)  # TF >= 2.13; older graphs keep _captures (as tf2onnx reads them)
    captured = {t.name for t in captures.by_val_internal.values()} if captures is not None else {t.name for _, t in concrete.graph._captures.values()}
    input_names = [t.name for t in concrete.inputs if t.name not in captured]
    output_names = [t.name for t in concrete.outputs if t.dtype != tf.dtypes.resource]
    rename = tensor_names_from_structed(concrete, input_names, output_names)
    seen: dict[str, Any] = {}
    try:
        with tf.device("/cpu:0"), _recording_grappler(tf_loader, seen):
            after, tables = tf_loader.from_trackable(model, concrete, input_names, output_names, False)
    except Exception as exc:  # noqa: BLE001
        raise ExportFailedError(f"freezing the traced model failed: {_first_line(exc)}", step="freeze") from exc
    return Frozen(before=seen.get("before", after), after=after, input_names=input_names, output_names=output_names,
                  rename=rename, tables=tables or {}, name=getattr(model, "name", "model"), opset=opset)


def optimizer_names() -> list[str]:
    """tf2onnx's default optimizers, in the order it runs them."""
    from tf2onnx.optimizer import _get_optimizers

    return list(_get_optimizers())


def chosen_optimizers(text: str | None) -> list[str] | None:
    """``--tf2onnx-optimizers``: None (tf2onnx's default), "baseline" or a comma list of known names."""
    if not text:
        return None
    if text == "baseline":
        return list(BASELINE)
    names = [n.strip() for n in text.split(",") if n.strip()]
    known = optimizer_names()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise BadInputError(f"unknown tf2onnx optimizer(s) {', '.join(unknown)}", tip=f"known: {', '.join(known)}, or 'baseline'")
    return names


def optimizers_for(names: Any) -> Any:
    """An ``OrderedDict`` of tf2onnx optimizers (None: its default set), in tf2onnx's order."""
    if names is None:
        return None
    from tf2onnx.optimizer import _get_optimizers

    table = _get_optimizers()
    return OrderedDict((n, table[n]) for n in table if n in set(names))


def convert(frozen: Frozen, optimizers: Any = None) -> onnx.ModelProto:
    """tf2onnx's conversion of the frozen GraphDef; ``optimizers``: names (None: tf2onnx's default).

    Raises:
        ExportFailedError: tf2onnx raised, or returned a model ONNX cannot load
            (an op it could not convert left in place, e.g. Keras 3's exact GELU's ``Erfc``).
    """
    tf, _, _ = import_stack()
    from tf2onnx.convert import _convert_common

    messages = _TfLog()
    logging.getLogger("tf2onnx").addHandler(messages)
    try:
        with tf.device("/cpu:0"):
            model, _ = _convert_common(
                frozen.after, name=frozen.name, continue_on_error=True, opset=frozen.opset, optimizers=optimizers_for(optimizers),
                input_names=frozen.input_names, output_names=frozen.output_names, tensors_to_rename=frozen.rename,
                initialized_tables=frozen.tables,
            )
    except Exception as exc:  # noqa: BLE001 - tf2onnx's own failure is an export failure
        raise ExportFailedError(f"tf2onnx failed: {_first_line(exc)}", step="conversion", tip="see tf2onnx's log with --debug") from exc
    finally:
        logging.getLogger("tf2onnx").removeHandler(messages)
    check_converted(model, messages.lines)
    return model


def check_converted(model: onnx.ModelProto, log_lines: list[str]) -> None:
    """A model tf2onnx returned but ONNX rejects is an export failure naming the op tf2onnx left unconverted."""
    import onnx.defs

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    unknown = [n for n in model.graph.node if n.domain in ("", "ai.onnx") and not onnx.defs.has(n.op_type)]
    if unknown:
        ops = sorted({n.op_type for n in unknown})
        raise ExportFailedError(
            f"tf2onnx left TensorFlow op(s) {', '.join(ops)} unconverted (node {unknown[0].name}): the ONNX model it returned is invalid",
            step="conversion", target=ops[0],
            tip=f"rewrite the layer without {ops[0]} (e.g. GELU with approximate=True), or give tf2onnx a custom op handler",
        )
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - the checker's many error classes
        raise ExportFailedError(f"tf2onnx returned an invalid ONNX model (opset {opset}): {_first_line(exc)}", step="conversion") from exc
    errors = [line for line in log_lines if "is not supported" in line or "Failed to convert" in line]
    if errors:
        raise ExportFailedError(f"tf2onnx could not convert: {errors[0][:200]}", step="conversion")


class _TfLog(logging.Handler):
    """tf2onnx's error lines of one conversion (it logs unsupported ops and goes on)."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
