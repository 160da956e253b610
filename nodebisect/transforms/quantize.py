"""onnxruntime.quantization, unmodified: dynamic, and static (QDQ) calibrated on the given inputs.

Knob: ``nodes_to_exclude``. Naming quirks read in ``onnxruntime/quantization``
(``base_quantizer.should_quantize_node``, ``quantize.quantize_dynamic``):
- ``nodes_to_exclude`` is matched against the reference's ``NodeProto.name``, before
  the quantizer renames anything (a quantized MatMul becomes ``<name>_quant``, its
  tensors ``<tensor>_quantized``, Q/DQ nodes ``<tensor>_QuantizeLinear``), so the list
  names the reference's nodes; an unnamed node cannot be excluded (nodebisect names them);
- dynamic quantization quantizes a MatMul only when its B is a constant
  (``MatMulConstBOnly``, on by default), so only those are candidates.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx


def candidates(reference: onnx.ModelProto, static: bool) -> list[str]:
    """The nodes the quantizer would quantize: its registry's op types (dynamic: constant-B MatMuls)."""
    from onnxruntime.quantization.registry import IntegerOpsRegistry, QDQRegistry

    ops = set(QDQRegistry if static else IntegerOpsRegistry)
    constants = {t.name for t in reference.graph.initializer}
    names = []
    for node in reference.graph.node:
        if not node.name or node.op_type not in ops:
            continue
        if not static and node.op_type == "MatMul" and (len(node.input) < 2 or node.input[1] not in constants):
            continue
        names.append(node.name)
    return names


def apply(reference: onnx.ModelProto, keep: frozenset[str], feeds: dict[str, Any], spec: Any) -> onnx.ModelProto:
    """``quantize_dynamic`` / ``quantize_static`` (QDQ, per-tensor, calibrated on ``feeds``) with ``nodes_to_exclude=keep``."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static

    class _Feeds(CalibrationDataReader):
        def __init__(self) -> None:
            self._left = [dict(feeds)]

        def get_next(self) -> dict[str, np.ndarray] | None:
            return self._left.pop() if self._left else None

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # "Please consider to run pre-processing" on every call
    try:
        with tempfile.TemporaryDirectory(prefix="nodebisect-quant-") as tmp:
            src, dst = Path(tmp) / "reference.onnx", Path(tmp) / "candidate.onnx"
            onnx.save(reference, str(src))
            if spec.name == "quantize-static":
                quantize_static(str(src), str(dst), _Feeds(), quant_format=QuantFormat.QDQ, nodes_to_exclude=sorted(keep),
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
            else:
                quantize_dynamic(str(src), str(dst), nodes_to_exclude=sorted(keep), weight_type=QuantType.QInt8)
            return onnx.load(str(dst))
    finally:
        root.setLevel(level)


def knob_kwargs(keep: list[str]) -> dict[str, Any]:
    return {"nodes_to_exclude": list(keep)}
