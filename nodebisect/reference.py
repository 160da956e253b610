"""The reference side: what an ONNX model is checked against, as the search and the diagnosis see it.

The search needs values by name, their dtype, and how far each is from its exact
answer (noise). The diagnosis also asks the reference about the op behind a value:
what it is and where it comes from in the user's code, its arguments, its weights,
its own decomposition, how far the op alone is from exact on the reference's own
inputs. Every question has a "knows nothing" answer here, which the diagnosis reads
as "no evidence", so a reference that only has values (a second ONNX model run in
onnxruntime or ``onnx.reference``, a Keras model) fits without touching ``search/``
or ``diagnose/``. PyTorch is the first implementation
(``frontends.capture.Activations`` for values, ``frontends.torch_reference`` for
what the exported program knows).

Names are the reference's own (FX node names for PyTorch); ``values.graphmap`` maps
ONNX values onto them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nodebisect.records import FrameworkRef

# (onnx node, score, reason): evidence against one node of a culprit's segment.
Evidence = tuple[str, float, str]


@dataclass
class RefOp:
    """The op behind one reference value, as the reference holds it.

    Attributes:
        name: the value's reference name.
        target: the op ("aten.softmax.default" for PyTorch).
        args: positional arguments as the reference holds them (for PyTorch, FX nodes
            for tensors, Python numbers for scalars); rules that read them know the reference.
        kwargs: keyword arguments, likewise.
        schema: the op's argument schema where the reference has one (names, types, defaults).
    """

    name: str
    target: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    schema: Any = None


@dataclass
class Reference:
    """Reference values by name, their dtypes and exact answers, and what the reference knows of its ops.

    Attributes:
        values: each value as a numpy array (on the CPU).
        dtypes: each value's dtype name as the reference computes it ("float16", "bfloat16"...).
        order: the names in the order the reference computes them.
        outputs: the names of the reference's outputs, in output order.
        exact: float64 answers of floating values where known (their natural noise); empty when none.
        output_labels: the user's names for the outputs (``logits``, ``cache.layers[0].keys``), in
            output order; empty when the reference has none beyond ``outputs``.
    """

    values: dict[str, np.ndarray] = field(default_factory=dict)
    dtypes: dict[str, str] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    exact: dict[str, np.ndarray] = field(default_factory=dict)
    kind: str = "reference"
    output_labels: list[str] = field(default_factory=list)

    def describe(self, name: str) -> FrameworkRef:
        """Where ``name`` comes from: the op, its module and the user's source line."""
        return FrameworkRef(fx_node=name)

    def op(self, name: str) -> RefOp | None:
        """The op behind ``name`` (None when the reference cannot say)."""
        return None

    def parameter(self, name: str) -> np.ndarray | None:
        """A weight, buffer or constant the reference's ops read, by its reference name."""
        return None

    def op_alone(self, name: str, onnx_value: np.ndarray | None) -> dict[str, float]:
        """``{"torch", "onnxruntime", "ulp"}``: each side's distance from the op's exact answer on the reference's inputs.

        ``onnx_value`` is onnxruntime's value of the same op computed from those inputs.
        Empty when the reference cannot evaluate its op exactly.
        """
        return {}

    def intermediates(self, name: str) -> list[np.ndarray]:
        """The reference's own decomposition of the op behind ``name``: every intermediate value."""
        return []

    def weight_evidence(self, gm: Any, onnx_model: Any, nodes: list[str]) -> list[Evidence]:
        """ONNX nodes among ``nodes`` that read a weight differing from the reference's own."""
        return []

    def tolerate(self, name: str, cmp: Any) -> Any:
        """``cmp`` (a ``records.Comparison`` of ``name``) re-judged by what the reference knows of the value's expected error.

        A reference whose model runs at another precision than the ONNX model (a float32
        model checked against its float16 conversion) knows drift the dtype's tolerance
        cannot; the default keeps the comparison as it is.
        """
        return cmp

    def elementwise_noise(self, name: str) -> bool:
        """Whether ``name``'s noise is judged element by element (``values.noise.element_ratio``).

        True for values computed at the reference's precision, whose rounding scales with each
        element; a reference whose candidate computes a value at lower precision (int8 with one
        scale per tensor, float16) says False there: that error has the whole tensor's scale.
        """
        return True

    def ops(self) -> dict[str, RefOp]:
        """Every op the reference can name, by value name (the suspects' rules read their arguments)."""
        return {}


__all__ = ["Evidence", "RefOp", "Reference"]
