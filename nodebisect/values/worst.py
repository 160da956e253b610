"""The values behind a divergence: the worst element and the small constants around it.

Norms say *how much* a value departs; a maintainer needs *which element and
why*: ``atan2(y=+0.0, x=-0.52)`` is ``+3.1416`` in PyTorch and ``-3.1416`` in
onnxruntime. These helpers run where the arrays are (the diagnosis step) and
return plain JSON-ready dicts for ``FirstDivergent.worst``; the reports only
render them. numpy and onnx protos only: no torch, no onnxruntime.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# A constant input is "small" (worth printing whole) up to this many elements.
SMALL_CONSTANT_ELEMENTS = 8
# Ops whose output element depends only on the inputs' elements at the same (broadcast) index:
# through these alone, "the inputs at the worst element" means something.
ELEMENTWISE = frozenset(
    "Abs Acos Add And Asin Atan BitwiseAnd BitwiseNot BitwiseOr Cast CastLike Ceil Clip Constant Cos Cosh Div Elu Equal Erf "
    "Exp Floor Gelu Greater GreaterOrEqual HardSigmoid Identity IsInf IsNaN LeakyRelu Less LessOrEqual Log Max Min Mod Mul "
    "Neg Not Or Pow Reciprocal Relu Round Selu Sigmoid Sign Sin Sinh Softplus Sqrt Sub Tan Tanh Where Xor".split()
)
# (op, input position) that take shapes, axes or indices: plumbing, not numerics.
SHAPE_ARGUMENTS = frozenset(
    [("Reshape", 1), ("Expand", 1), ("Tile", 1), ("Unsqueeze", 1), ("Squeeze", 1), ("Slice", 1), ("Slice", 2), ("Slice", 3),
     ("Slice", 4), ("ConstantOfShape", 0), ("Range", 0), ("Range", 1), ("Range", 2), ("Pad", 1), ("Resize", 1), ("Resize", 2),
     ("Resize", 3), ("Split", 1), ("TopK", 1), ("OneHot", 1), ("Gather", 1), ("GatherElements", 1), ("ScatterElements", 1)]
    + [(f"Reduce{k}", 1) for k in ("Max", "Min", "Mean", "Sum", "Prod", "L1", "L2", "LogSum", "LogSumExp", "SumSquare")]
)


def worst_element(
    expected: np.ndarray,
    actual: np.ndarray,
    input_values: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """The element where ``actual`` departs most from ``expected``, with the inputs there.

    A position where one side is NaN/Inf and the other is not (or the other
    infinity) ranks above every finite difference. Inputs are reported at the
    same index when they broadcast to the output's shape (element-wise ops);
    others are left out, since no single element of them belongs to it.

    Args:
        expected: PyTorch's value of the culprit's output.
        actual: onnxruntime's value.
        input_values: the culprit's inputs by ONNX value name (PyTorch's values).

    Returns:
        ``{"index": [i, j, ...], "expected": float, "actual": float,
        "inputs": {name: float}}`` plus, when NaN placement differs,
        ``"nan_mismatch": {counts}`` and ``"finite_max_abs"``; ``{}`` when the shapes
        differ or the arrays are empty.
    """
    e = np.asarray(expected)
    a = np.asarray(actual)
    if a.shape != e.shape:
        if a.size == e.size == 1:
            a = a.reshape(e.shape)
        else:
            return {}
    if e.size == 0:
        return {}
    ef = e.astype(np.float64)
    af = a.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        both = np.isfinite(ef) & np.isfinite(af)
        same_special = (np.isnan(ef) & np.isnan(af)) | (np.isinf(ef) & np.isinf(af) & (np.sign(ef) == np.sign(af)))
        score = np.where(both, np.abs(af - ef), np.where(same_special, -1.0, np.inf))
    flat = int(np.argmax(score))
    index = [int(i) for i in np.unravel_index(flat, e.shape)] if e.ndim else []
    out: dict[str, Any] = {
        "index": index,
        "shape": list(e.shape),
        "expected": _scalar(e.reshape(-1)[flat]),
        "actual": _scalar(a.reshape(-1)[flat]),
        "inputs": {},
    }
    for name, value in (input_values or {}).items():
        v = np.asarray(value)
        try:
            here = np.broadcast_to(v, e.shape).reshape(-1)[flat] if v.shape != e.shape else v.reshape(-1)[flat]
        except ValueError:
            continue  # not element-wise with the output (a MatMul operand, a shape tensor)
        out["inputs"][name] = _scalar(here)
    e_nan, a_nan = np.isnan(ef), np.isnan(af)
    counts = {
        "finite_where_expected_nan": int((e_nan & np.isfinite(af)).sum()),
        "nan_where_expected_finite": int((a_nan & np.isfinite(ef)).sum()),
        "nan_both": int((e_nan & a_nan).sum()),
    }
    if any(counts.values()):
        out["nan_mismatch"] = counts
        out["finite_max_abs"] = float(np.abs(af - ef)[both].max()) if both.any() else 0.0
    return out


def small_constants(onnx_model: Any, node_names: list[str], limit: int = SMALL_CONSTANT_ELEMENTS) -> dict[str, Any]:
    """Small constant inputs of ``node_names``: initializers, Constant and ConstantOfShape values.

    These are where the semantics hide (the ``-3.4e38`` fill of an attention
    mask, an epsilon, a divisor), and they never show in a norm. Tensors over
    ``limit`` elements are summarised by shape and range instead.

    Args:
        onnx_model: an ``onnx.ModelProto``.
        node_names: the culprit and the nodes of its segment.
        limit: largest element count printed whole.

    Returns:
        ``{"value (into Op)": number | [numbers] | {"shape": [...], "min": x, "max": y}}``
        in node order, skipping shape and axis arguments; a ConstantOfShape of
        the list gives ``"out (ConstantOfShape fill)"``.
    """
    from onnx import numpy_helper

    graph = onnx_model.graph
    inits = {t.name: t for t in graph.initializer}
    producers: dict[str, Any] = {o: n for n in graph.node for o in n.output}
    wanted = set(node_names)
    found: dict[str, Any] = {}
    seen: set[str] = set()
    for node in graph.node:
        if node.name not in wanted:
            continue
        if node.op_type == "ConstantOfShape":
            fill = next((a for a in node.attribute if a.name == "value"), None)
            found[f"{node.output[0]} (ConstantOfShape fill)"] = _describe(numpy_helper.to_array(fill.t), limit) if fill is not None else 0.0
        for position, name in enumerate(node.input):
            if not name or name in seen or (node.op_type, position) in SHAPE_ARGUMENTS:
                continue
            key = f"{name} (into {node.op_type})"
            producer = producers.get(name)
            if name in inits:
                found[key] = _describe(numpy_helper.to_array(inits[name]), limit)
            elif producer is not None and producer.op_type == "Constant":
                array = _constant_value(producer)
                if array is not None:
                    found[key] = _describe(array, limit)
            elif producer is not None and producer.op_type == "ConstantOfShape":
                fill = next((a for a in producer.attribute if a.name == "value"), None)
                found[key] = {"fill": _describe(numpy_helper.to_array(fill.t), limit) if fill is not None else 0.0}
            else:
                continue
            seen.add(name)
    return found


def _constant_value(node: Any) -> np.ndarray | None:
    from onnx import helper, numpy_helper

    for attr in node.attribute:
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
        if attr.name in ("value_float", "value_int", "value_floats", "value_ints"):
            return np.asarray(helper.get_attribute_value(attr))
    return None


def _describe(array: np.ndarray, limit: int) -> Any:
    array = np.asarray(array)
    if array.size <= limit:
        if array.ndim == 0:
            return _scalar(array)
        return [_scalar(v) for v in array.reshape(-1)]
    summary: dict[str, Any] = {"shape": list(array.shape), "dtype": str(array.dtype)}
    if array.dtype.kind in "fiub" and array.size:
        summary["min"] = _scalar(array.min())
        summary["max"] = _scalar(array.max())
    return summary


def _scalar(value: Any) -> Any:
    """A JSON-ready Python number (signed zeros and NaN kept as floats)."""
    v = np.asarray(value).item()
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        return v
    if isinstance(v, float) and not math.isfinite(v):
        return v
    return float(v) if isinstance(v, float) else v


__all__ = ["ELEMENTWISE", "SHAPE_ARGUMENTS", "SMALL_CONSTANT_ELEMENTS", "small_constants", "worst_element"]
