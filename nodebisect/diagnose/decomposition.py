"""Evidence from PyTorch's own decomposition of the culprit's aten op.

Inside a decomposed op only the segment's last value has a framework
reference. But PyTorch can decompose the same aten op into primitive ops
(``torch._decomp``), and many ONNX values inside the segment have a counterpart
among those intermediates (the attention scores, the masked scores, the
softmax...). Walking back from the wrong output through values that have *no*
counterpart finds where the ONNX lowering left PyTorch's path: the earliest
node of that region whose inputs still had counterparts is the prime suspect.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nodebisect.values.compare import compare

MAX_SEGMENT_NODES = 200


# The magnitude from which a value of each dtype reads as a mask fill (its finfo.min/max):
# float16's extremes are 65504, a legitimate number in float32, so the bound is per dtype.
_FILL = {"float16": float(np.finfo(np.float16).max)}
_FILL_DEFAULT = 1e38  # float32 (and bfloat16, float64): -3.4e38 is finfo(float32).min


def _saturate(arr: np.ndarray) -> np.ndarray:
    """Read the dtype's extremes as infinities: masks filled with finfo.min mean -inf.

    Exporters write ``finfo.min`` (``-3.4e38`` in float32, ``-65504`` in float16) where
    PyTorch's decomposition writes ``-inf`` for the same mask; both are the same intent,
    and must not count as a departure. The same reading in every dtype keeps one culprit
    per bug: without float16's bound the mask-filling Where was named in float16 and the
    Softmax in float32 for the same missing guard (issue #22.3).
    """
    if arr.dtype.kind != "f":
        return arr
    bound = _FILL.get(str(arr.dtype), _FILL_DEFAULT)
    out = arr.astype(np.float64)
    out[out <= -bound] = -np.inf
    out[out >= bound] = np.inf
    return out


def has_counterpart(value: np.ndarray, candidates: list[np.ndarray]) -> bool:
    """True when some torch intermediate holds the same numbers (any view of them)."""
    mine = _saturate(value.reshape(-1))
    for cand in candidates:
        if cand.size != value.size or cand.size == 0:
            continue
        if (cand.dtype == np.bool_) != (value.dtype == np.bool_):
            continue
        # Widened to float64 by _saturate: judge with the tolerance of the tensors' own dtype.
        if compare("", mine, _saturate(cand.reshape(-1)), dtype=str(cand.dtype)).ok:
            return True
    return False


def guarded_later(candidates: list[np.ndarray], expected: np.ndarray | None) -> list[np.ndarray]:
    """``candidates`` less those holding NaN where PyTorch's answer for the op has none.

    Such an intermediate is a value PyTorch mends later in its own decomposition (the
    softmax of a fully masked row, NaN, before ``_safe_softmax``'s guard makes it 0).
    A lowering value matching it matches an error PyTorch guards against: counting it as
    the shared path would blame the node after the missing guard (the final MatMul of an
    additive ``-inf`` mask), where a bool mask gets the Softmax. One missing-guard
    convention for every mask kind (issue #22.3): the Softmax in both.
    """
    if expected is None or expected.dtype.kind != "f" or np.isnan(expected).any():
        return list(candidates)
    return [c for c in candidates if c.dtype.kind != "f" or not np.isnan(c).any()]


def departure_points(
    nodes: list[str],
    node_inputs: dict[str, list[str]],
    node_outputs: dict[str, list[str]],
    carrier: str,
    onnx_values: dict[str, np.ndarray],
    candidates: list[np.ndarray],
    good_inputs: set[str],
) -> list[str]:
    """Nodes where the ONNX lowering leaves PyTorch's decomposition, earliest first.

    Args:
        nodes: the local subgraph's node names in graph order.
        node_inputs / node_outputs: value names per node.
        carrier: the node producing the divergent value.
        onnx_values: every local value as computed by ONNX Runtime on reference inputs.
        candidates: torch intermediates from ``torch_intermediates``.
        good_inputs: boundary inputs and constants (trusted by construction).
    """
    producer = {o: n for n in nodes for o in node_outputs[n]}
    counterpart: dict[str, bool] = {}
    for n in nodes:
        for o in node_outputs[n]:
            if o in onnx_values:
                counterpart[o] = has_counterpart(onnx_values[o], candidates)
    internal = [o for n in nodes for o in node_outputs[n] if n != carrier and o in counterpart]
    if not any(counterpart[o] for o in internal):
        return []  # no shared path with PyTorch's decomposition: no evidence either way

    def lacks(n: str) -> bool:
        outs = [o for o in node_outputs[n] if o in counterpart]
        return bool(outs) and not any(counterpart[o] for o in outs)

    if not lacks(carrier):
        return []
    region: set[str] = set()
    stack = [carrier]
    while stack:
        n = stack.pop()
        if n in region:
            continue
        region.add(n)
        for i in node_inputs[n]:
            p = producer.get(i)
            if p is not None and lacks(p):
                stack.append(p)
    entries = []
    for n in nodes:
        if n not in region:
            continue
        ok_inputs = [i for i in node_inputs[n] if i in good_inputs or (producer.get(i) and not lacks(producer[i]))]
        if ok_inputs:
            entries.append(n)
    return entries


def repaired_by(
    model: Any,
    carrier_value: str,
    feeds: dict[str, np.ndarray],
    internal: dict[str, np.ndarray],
    candidates: list[np.ndarray],
    is_right: Any,
) -> list[str]:
    """Internal values whose replacement by a PyTorch intermediate makes the culprit right.

    When no internal value of the lowering matches PyTorch's decomposition, the
    departure rule has nothing to anchor on (a two-node ``silu`` whose Sigmoid
    became a Tanh). The counterfactual settles it: feed the rest of the local
    subgraph PyTorch's own intermediate (same shape and dtype) in place of one
    internal value; if the culprit's value then matches PyTorch, the node making
    that value is the one that computes something else. Run in ONNX's reference
    evaluator: small segments only, and no onnxruntime session.

    Returns:
        the internal value names whose replacement repairs the culprit, earliest first.
    """
    import onnx
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    found = []
    for value, actual in internal.items():
        if value == carrier_value or has_counterpart(actual, candidates):
            continue
        for cand in candidates:
            if cand.shape != actual.shape or cand.dtype != actual.dtype:
                continue
            sub = onnx.ModelProto()
            sub.CopyFrom(model)
            kept = [n for n in sub.graph.node if value not in n.output]
            if len(kept) == len(sub.graph.node):
                break
            del sub.graph.node[:]
            sub.graph.node.extend(kept)
            elem = helper.np_dtype_to_tensor_dtype(cand.dtype)
            sub.graph.input.append(helper.make_tensor_value_info(value, elem, list(cand.shape)))
            names = {i.name for i in sub.graph.input}
            try:
                with np.errstate(all="ignore"):
                    got = ReferenceEvaluator(sub).run([carrier_value], {k: v for k, v in {**feeds, value: cand}.items() if k in names})[0]
            except Exception:  # noqa: BLE001 - a cut the evaluator cannot run proves nothing
                continue
            if is_right(np.asarray(got)):
                found.append(value)
                break
    return found


def dropped_right_value(
    nodes: list[str],
    node_inputs: dict[str, list[str]],
    node_outputs: dict[str, list[str]],
    values: dict[str, np.ndarray],
    expected: np.ndarray,
    wrong: np.ndarray,
    dtype: str | None,
) -> tuple[str, str] | None:
    """The first node that had PyTorch's answer on an input and dropped it, element-wise.

    When the op decomposes to a single prim (``atan2``), PyTorch offers no
    intermediate to anchor on, only the op's own output. Inside an element-wise
    lowering that is still enough: at the elements where the op is wrong, one
    branch of a ``Where`` (``atan(y/x) + pi``) often already holds PyTorch's
    value while the node passes the other branch on. The first node whose input
    holds the expected numbers at every wrong element while its output does not
    is where the lowering departs, the missing-guard convention applied to
    elements instead of whole tensors. Same-shape values only.

    Returns:
        (node, input value) or None.
    """
    if not wrong.any():
        return None
    want = expected[wrong]

    def right(name: str) -> bool:
        arr = values.get(name)
        if arr is None or arr.shape != expected.shape or arr.dtype.kind != "f":
            return False
        return compare(name, np.ascontiguousarray(arr[wrong]), want, dtype=dtype).ok

    for n in nodes:
        outs = [o for o in node_outputs[n] if o in values]
        if not outs or any(right(o) for o in outs):
            continue
        held = next((i for i in node_inputs[n] if right(i)), None)
        if held is not None:
            return n, held
    return None
