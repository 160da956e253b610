"""Evidence from the values a Cast actually converts: the cast that loses them.

Integer arithmetic lowered through float (``torch.div(a, b, rounding_mode="floor")``
on int64 becomes Cast(float32) / Div / Floor / Cast(int64)) is exact in PyTorch
and wrong in ONNX as soon as a value leaves float32's exact integer range
(|x| > 2**24): the defect is the first Cast, but only the last one carries the FX
value. Checking the values each Cast received on the reference run against its
target type names the one that rounds, overflows or wraps them.
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from nodebisect.values.graphmap import GraphMap

# Above the carrier's prior and the decomposition departure (0.88): a cast that
# changes the very values it was given is a defect on its own.
CAST_SCORE = 0.92

# FX targets that are a dtype conversion written in the model (x.float(), x.to(...)).
_USER_CASTS = ("aten._to_copy", "aten.to.", "aten.type_as", "prims.convert_element_type", "aten._to_dtype")

def lossy_cast_evidence(gm: GraphMap, nodes: list[str], values: dict[str, np.ndarray]) -> list[tuple[str, float, str]]:
    """(node, score, reason) for each Cast among ``nodes`` that changes values it was given.

    Args:
        gm: the graph map.
        nodes: the ONNX nodes to check (the culprit's local subgraph).
        values: ONNX value name -> array from the reference run (feeds, boundary
            inputs and the isolated run's internal values); a Cast whose input is
            missing is skipped.
    """
    out = []
    for name in nodes:
        node = gm.nodes.get(name)
        if node is None or node.op_type != "Cast" or not node.input or node.input[0] not in values:
            continue
        if gm.refs.get(name) is not None and gm.refs[name].target.startswith(_USER_CASTS):
            continue  # the model's own conversion: PyTorch loses the same values
        to = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "to"), None)
        if to is None:
            continue
        try:
            target = np.dtype(helper.tensor_dtype_to_np_dtype(to))
        except Exception:  # noqa: BLE001 - bfloat16, float8: no numpy dtype to test against
            continue
        reason = lossy_cast(np.asarray(values[node.input[0]]), target)
        if reason:
            out.append((name, CAST_SCORE, f"Cast to {target} {reason}"))
    return out


def lossy_cast(source: np.ndarray, target: np.dtype) -> str:
    """Why casting ``source`` to ``target`` changes its values, in words ("" when it keeps them)."""
    if source.size == 0 or source.dtype == target:
        return ""
    if source.dtype.kind in "iu" and target.kind == "f":
        return _int_to_float(source, target)
    if source.dtype.kind in "iu" and target.kind in "iu":
        info = np.iinfo(target)
        out_of_range = (source < info.min) | (source > info.max)
        if out_of_range.any():
            return (
                f"wraps {int(out_of_range.sum())} of {source.size} values: they reach {_extreme(source)}, "
                f"outside {target}'s range [{info.min}, {info.max}]"
            )
        return ""
    if source.dtype.kind == "f" and target.kind == "f" and target.itemsize < source.dtype.itemsize:
        finite = np.isfinite(source)
        with np.errstate(over="ignore"):
            overflow = finite & ~np.isfinite(source.astype(target))
        if overflow.any():
            return (
                f"overflows {int(overflow.sum())} of {source.size} values to infinity: they reach "
                f"{_extreme(source[finite])}, beyond {target}'s largest {float(np.finfo(target).max):.6g}"
            )
    return ""


def _int_to_float(source: np.ndarray, target: np.dtype) -> str:
    """An integer cast to float is exact only up to 2**(mantissa bits + 1)."""
    exact = 2 ** (np.finfo(target).nmant + 1)
    wide = source.astype(np.int64)
    big = np.abs(source.astype(np.float64)) > exact
    if not big.any():
        return ""
    with np.errstate(over="ignore", invalid="ignore"):
        back = source.astype(target).astype(np.float64)  # integer-valued above ``exact``
        fits = np.abs(back) < 2.0**63
        back_int = np.where(fits, back, 0.0).astype(np.int64)
    lost = big & (~fits | (back_int != wide))
    if not lost.any():
        return ""
    return (
        f"rounds {int(lost.sum())} of {source.size} {source.dtype} values: they reach {_extreme(source)}, "
        f"beyond {target}'s exact integer range of ±2**{np.finfo(target).nmant + 1} ({exact:,})"
    )


def _extreme(values: np.ndarray) -> str:
    flat = values.ravel()
    value = flat[int(np.argmax(np.abs(flat.astype(np.float64))))]
    return f"{value:.6g}" if isinstance(value, (float, np.floating)) else f"{int(value):,}"

