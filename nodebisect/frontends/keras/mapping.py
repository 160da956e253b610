"""ONNX values -> TensorFlow tensors, by tf2onnx's names, under the three rules of issue #24.

tf2onnx writes no metadata: a node converted 1:1 is named after the TF op ``X``
and its output ``X:0``. Three rules make that naming safe to compare by:

1. **Single-consumer chains.** When a handler expands one TF op into several
   nodes, the first keeps ``X:0`` and helpers (``X__7``, ``X_Foo__12``) carry the
   op's value on; likewise tf2onnx's optimizers absorb TF ops with no node of their
   own (a ``BiasAdd`` folded into the ``Conv`` named ``X``). The ONNX values of
   ``X``'s group are tried against ``X:0`` and the TF tensors of absorbed ops
   downstream of it (single consumer); the first that agrees is mapped.
2. **Layouts.** NHWC ops are wrapped in Transposes that the transpose optimizer
   moves, so a value is compared under the layout candidates: identity,
   channels-first/last permutations, a reshape that only drops unit dimensions.
3. **Fused segments.** Values the optimizers made under fresh names
   (``Conv__33``) have no TF tensor: they stay unmapped and are blamed as part of
   the segment between the last good and the first bad mapped value.

Where no value of a group agrees, the group's exit (the value its consumers read)
is mapped to the last candidate tensor under the first layout its shape allows,
so a defect shows there; in a shape of its own (a divergence) only where ONNX wires
it into a TF consumer's node. Graph outputs always map to the TF outputs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import onnx

from nodebisect.frontends.keras.graphrun import GraphValues

_PERMS = {3: [(0, 2, 1)], 4: [(0, 3, 1, 2), (0, 2, 3, 1)], 5: [(0, 4, 1, 2, 3), (0, 2, 3, 4, 1)]}
_HELPER = re.compile(r"^(.*?)(?:__\d+)$")


@dataclass
class Mapped:
    """Reference values keyed by ONNX value names, and the TF tensor and layout behind each."""

    values: dict[str, np.ndarray] = field(default_factory=dict)
    tensor: dict[str, str] = field(default_factory=dict)  # ONNX value -> TF tensor name
    layout: dict[str, str] = field(default_factory=dict)  # ONNX value -> "identity" | "perm(0, 3, 1, 2)" | "reshape"
    base: dict[str, str] = field(default_factory=dict)  # ONNX node -> the TF op it was converted from ("" for fresh names)


def layouts(ref: np.ndarray, shape: tuple[int, ...]) -> Iterator[tuple[str, np.ndarray]]:
    """``ref`` rearranged to ``shape``: each layout candidate whose shape fits, identity first."""
    if ref.shape == shape:
        yield "identity", ref
    for perm in _PERMS.get(ref.ndim, []):
        moved = ref.transpose(perm)
        if moved.shape == shape:
            yield f"perm{perm}", moved
    squeezed = [d for d in ref.shape if d != 1]
    if ref.shape != shape and ref.size == int(np.prod(shape)) and squeezed == [d for d in shape if d != 1]:
        yield "reshape", ref.reshape(shape)


def base_op(node: str, tf_ops: set[str]) -> str:
    """The TF op an ONNX node was made from: its own name, or a helper's (``X__7``, ``X_Foo__12``) base; "" for none."""
    if node in tf_ops:
        return node
    m = _HELPER.match(node)
    name = m.group(1) if m else ""
    while name:
        if name in tf_ops:
            return name
        head, sep, tail = name.rpartition("_")
        if not sep or "/" in tail or not head:
            return ""
        name = head
    return ""


def map_values(model: onnx.ModelProto, onnx_values: dict[str, np.ndarray], tf: GraphValues, rename: dict[str, str],
               agrees: Callable[[str, np.ndarray, np.ndarray], bool]) -> Mapped:
    """Map ONNX values onto TF tensors (the three rules); ``agrees(name, onnx, ref)`` is the search's own tolerance."""
    out = Mapped()
    graph = model.graph
    tf_ops = set(tf.op_type)
    groups: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        out.base[node.name] = base_op(node.name, tf_ops)
        if out.base[node.name]:
            groups.setdefault(out.base[node.name], []).append(node)
    reverse = {v: k for k, v in rename.items()}
    by_op: dict[str, list[str]] = {}
    for t in tf.values:
        by_op.setdefault(t.rpartition(":")[0], []).append(t)
    for o in graph.output:  # the graph's outputs are the TF outputs, whatever the nodes before them
        tensor = reverse.get(o.name, o.name)
        if tensor in tf.values and o.name in onnx_values:
            _take(out, o.name, tensor, tf.values[tensor], onnx_values[o.name], raw_ok=True)
    consumers: dict[str, set[str]] = {}
    for node in graph.node:
        for x in node.input:
            consumers.setdefault(x, set()).add(node.name)
    outputs = {o.name for o in graph.output}
    for op, nodes in groups.items():
        tensors = _candidates(op, tf, groups, by_op.get(op, []))
        if not tensors:
            continue
        names = {n.name for n in nodes}
        produced = [v for n in nodes for v in n.output if v and v in onnx_values and v not in out.values]
        taken: set[str] = set()
        for value in produced:
            for tensor in tensors:
                if tensor in taken:
                    continue
                fit = next((lay for lay in layouts(tf.values[tensor], onnx_values[value].shape)
                            if _same_kind(lay[1], onnx_values[value]) and agrees(value, onnx_values[value], _cast(lay[1], onnx_values[value]))), None)
                if fit is not None:
                    out.values[value], out.tensor[value], out.layout[value] = _cast(fit[1], onnx_values[value]), tensor, fit[0]
                    taken.add(tensor)
                    break
        if taken:
            continue
        exits = [v for v in produced if v in outputs or consumers.get(v, set()) - names]
        if len(exits) == 1:  # nothing agrees: the value the rest of the graph reads carries the op's value
            # In a shape of its own only where ONNX wires it as TF does (into the node of a TF consumer of the tensor):
            # an intermediate the handler crops afterwards (ConvTranspose -> Slice__72) has another shape by design.
            wired = any(n.name in consumers.get(exits[0], set()) for c in tf.consumers.get(tensors[-1], []) for n in groups.get(c, []))
            _take(out, exits[0], tensors[-1], tf.values[tensors[-1]], onnx_values[exits[0]], raw_ok=wired)
    return out


def _candidates(op: str, tf: GraphValues, groups: dict[str, Any], own: list[str]) -> list[str]:
    """``op``'s output tensors (``own``), then those of TF ops absorbed after it (no ONNX node of their own, single consumer)."""
    found = list(own)
    current = f"{op}:0"
    while current in tf.values and len(tf.consumers.get(current, [])) == 1:
        nxt = tf.consumers[current][0]
        if nxt in groups or tf.producer_input.get(nxt) != current or f"{nxt}:0" not in tf.values:
            break
        current = f"{nxt}:0"
        found.append(current)
    return found


def _take(out: Mapped, value: str, tensor: str, ref: np.ndarray, got: np.ndarray, raw_ok: bool) -> None:
    """Map ``value`` to ``tensor`` under the first layout that fits; none fits: as it is (a shape that differs is a divergence)."""
    fit = next((lay for lay in layouts(ref, got.shape) if _same_kind(lay[1], got)), None)
    if fit is None and raw_ok and ref.ndim == got.ndim and _same_kind(ref, got):
        fit = ("identity", ref)
    if fit is not None:
        out.values[value], out.tensor[value], out.layout[value] = _cast(fit[1], got), tensor, fit[0]


def _same_kind(ref: np.ndarray, got: np.ndarray) -> bool:
    return (ref.dtype.kind == "f") == (got.dtype.kind == "f") and (ref.dtype.kind == "b") == (got.dtype.kind == "b")


def _cast(ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    """Integers as ONNX holds them (tf2onnx widens shapes to int64); floats stay the reference's own."""
    return ref.astype(got.dtype) if ref.dtype.kind in "iu" and ref.dtype != got.dtype else np.ascontiguousarray(ref)
