"""TensorFlow's frozen graph as a ``Reference``: values under ONNX names, and the Keras layer behind each.

It knows values, their dtypes and where each comes from (the TF op, its Keras
layer from the op's name scope ``<model>_1/<layer>_1/<op>``); it has no float64
answers (``exact`` stays empty: re-running the graph in float64 means rewriting
every op's dtype attributes, not cheap, so values are judged by the fixed
tolerance) and no decomposition, and says so by the interface's defaults.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from nodebisect.records import FrameworkRef
from nodebisect.reference import Reference


@dataclass
class KerasReference(Reference):
    """Reference values keyed by ONNX value names; ``tensor``: the TF tensor behind each."""

    tensor: dict[str, str] = field(default_factory=dict)
    op_type: dict[str, str] = field(default_factory=dict)  # TF op name -> TF op type
    layers: dict[str, str] = field(default_factory=dict)  # Keras layer name -> class name
    kind: str = "keras"

    def describe(self, name: str) -> FrameworkRef:
        """The TF tensor behind ONNX value ``name``, its op and its Keras layer."""
        return tf_ref(self.tensor.get(name, name).rpartition(":")[0] or name, self.op_type, self.layers)


def tf_ref(op: str, op_type: dict[str, str], layers: dict[str, str]) -> FrameworkRef:
    """FrameworkRef of TF op ``op``: target ``tf.<OpType>``, module the Keras layer path of its name scope."""
    path = [_layer_name(part, layers) for part in op.split("/")[:-1]]
    named = [p for p in path[1:] if p in layers]  # the first scope is the model itself
    module = ".".join(named)
    return FrameworkRef(
        fx_node=op, target=f"tf.{op_type.get(op, '')}" if op in op_type else "", module=module,
        module_type=f"keras.layers.{layers[named[-1]]}" if named else "",
    )


def _layer_name(scope: str, layers: dict[str, str]) -> str:
    """``conv2d_1`` (TF's uniquified scope) -> ``conv2d`` where that is the layer's own name."""
    if scope in layers:
        return scope
    stripped = re.sub(r"_\d+$", "", scope)
    return stripped if stripped in layers else scope


def keras_layers(model: Any) -> dict[str, str]:
    """Every layer of ``model`` (nested models too) by name -> class name."""
    found: dict[str, str] = {}
    todo = [model]
    while todo:
        layer = todo.pop()
        for sub in getattr(layer, "layers", []) or []:
            found.setdefault(sub.name, type(sub).__name__)
            todo.append(sub)
    return found
