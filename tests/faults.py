"""Inject exactly one fault into a copy of a clean exported ONNX model.

Each helper takes the clean ``ModelProto`` (never modified), a node chosen by a
*finder*, and returns ``(faulted_model, edited_node_name)``: the name the test
then expects ``locate`` to report. Finders pick nodes in the middle of the graph
(never the first or last node) so the search has real work on both sides.
"""

from __future__ import annotations

import copy
from typing import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

FX_KEY = "pkg.torch.onnx.fx_node"

Finder = Callable[[onnx.ModelProto], str]
Fault = Callable[[onnx.ModelProto], tuple[onnx.ModelProto, str]]


# -- finding nodes ---------------------------------------------------------------------


def fx_node_of(node: onnx.NodeProto) -> str:
    """The FX node a node lowers (the segment key), or "" when it carries no metadata."""
    for prop in node.metadata_props:
        if prop.key == FX_KEY:
            return prop.value.split(":")[0].lstrip("%").strip()
    return ""


def segments(model: onnx.ModelProto) -> dict[str, list[str]]:
    """FX node -> names of the ONNX nodes lowering it, in graph order."""
    out: dict[str, list[str]] = {}
    for node in model.graph.node:
        key = fx_node_of(node)
        if key:
            out.setdefault(key, []).append(node.name)
    return out


def _node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    for node in model.graph.node:
        if node.name == name:
            return node
    raise KeyError(f"no node named {name!r} in the model")


ALONE = "alone"  # the node is its FX node's whole lowering and carries its value
INSIDE = "inside"  # one of several nodes lowering an FX node, not carrying its value
ANY = "any"


def placement(model: onnx.ModelProto, name: str) -> str:
    """ALONE, INSIDE, or "carrier" (carries the value of a multi-node segment)."""
    node = _node(model, name)
    fx = fx_node_of(node)
    size = len(segments(model).get(fx, []))
    if size == 1:
        # Its own lowering; the output may be named after a getitem of the FX
        # node (BatchNorm folded into a Conv outputs ``getitem``), still mapped.
        return ALONE
    if fx in node.output:
        return "carrier"
    return INSIDE if fx else "unmapped"


def carrier_of(model: onnx.ModelProto, name: str) -> str:
    """The node of ``name``'s segment whose output is the FX value itself."""
    fx = fx_node_of(_node(model, name))
    return next(n.name for n in model.graph.node if fx_node_of(n) == fx and fx in n.output)


def middle(op_type: str, where: str = ANY) -> Finder:
    """A finder for the ``op_type`` node nearest the middle of the graph.

    Args:
        op_type: the ONNX op type to pick.
        where: ALONE, INSIDE (a decomposed op's inner node) or ANY.
    """

    def find(model: onnx.ModelProto) -> str:
        nodes = list(model.graph.node)
        picks = [
            (abs(idx - len(nodes) / 2), idx, node.name)
            for idx, node in enumerate(nodes[1:-1], start=1)
            if node.op_type == op_type and (where == ANY or placement(model, node.name) == where)
        ]
        if not picks:
            raise LookupError(f"no {where} {op_type} node in the middle of the graph")
        return min(picks)[2]

    return find


def reading_initializer(op_types: tuple[str, ...]) -> Finder:
    """A finder for the middle-most node of ``op_types`` whose weight is an initializer."""

    def find(model: onnx.ModelProto) -> str:
        inits = {t.name for t in model.graph.initializer}
        nodes = list(model.graph.node)
        picks = [
            (abs(idx - len(nodes) / 2), idx, node.name)
            for idx, node in enumerate(nodes[1:-1], start=1)
            if node.op_type in op_types and len(node.input) > 1 and node.input[1] in inits
        ]
        if not picks:
            raise LookupError(f"no {op_types} node reading an initializer in the middle of the graph")
        return min(picks)[2]

    return find


# -- the faults ------------------------------------------------------------------------


def set_attribute(model: onnx.ModelProto, node_name: str, attr: str, value: object) -> tuple[onnx.ModelProto, str]:
    """Set (or add) one attribute of one node."""
    out = copy.deepcopy(model)
    node = _node(out, node_name)
    kept = [a for a in node.attribute if a.name != attr]
    before = [a for a in node.attribute if a.name == attr]
    if before and helper.get_attribute_value(before[0]) == value:
        raise ValueError(f"{node_name}.{attr} is already {value!r}: not a fault")
    del node.attribute[:]
    node.attribute.extend(kept + [helper.make_attribute(attr, value)])
    return out, node_name


def swap_op(model: onnx.ModelProto, node_name: str, new_op: str) -> tuple[onnx.ModelProto, str]:
    """Replace a node's op type, keeping its inputs, outputs and attributes."""
    out = copy.deepcopy(model)
    node = _node(out, node_name)
    if node.op_type == new_op:
        raise ValueError(f"{node_name} is already {new_op}")
    node.op_type = new_op
    return out, node_name


def corrupt_initializer(
    model: onnx.ModelProto, node_name: str, *, scale: float = 1.0, noise: float = 0.0, input_index: int = 1
) -> tuple[onnx.ModelProto, str]:
    """Scale and/or add noise to the initializer a node reads (its weight by default).

    The initializer is copied under a new name so that no other node sharing it
    changes: exactly one node is edited.
    """
    out = copy.deepcopy(model)
    node = _node(out, node_name)
    old = node.input[input_index]
    tensor = next((t for t in out.graph.initializer if t.name == old), None)
    if tensor is None:
        raise LookupError(f"input {input_index} of {node_name} ({old!r}) is not an initializer")
    arr = numpy_helper.to_array(tensor)
    rng = np.random.default_rng(0)
    new = (arr * scale + noise * float(np.abs(arr).mean() or 1.0) * rng.standard_normal(arr.shape)).astype(arr.dtype)
    new_name = f"{old}__faulted"
    out.graph.initializer.append(numpy_helper.from_array(new, new_name))
    node.input[input_index] = new_name
    return out, node_name


# -- named faults for the test table ---------------------------------------------------


def layernorm_epsilon(eps: float = 1.0) -> Fault:
    return lambda m: set_attribute(m, middle("LayerNormalization")(m), "epsilon", eps)


def add_to_sub() -> Fault:
    """A residual Add (its own segment) becomes Sub."""
    return lambda m: swap_op(m, middle("Add", ALONE)(m), "Sub")


def op_swap(op_type: str, new_op: str) -> Fault:
    return lambda m: swap_op(m, middle(op_type)(m), new_op)


def weight(op_types: tuple[str, ...], *, scale: float = 1.0, noise: float = 0.0) -> Fault:
    return lambda m: corrupt_initializer(m, reading_initializer(op_types)(m), scale=scale, noise=noise)


def softmax_axis_in_attention(axis: int = 2) -> Fault:
    """Normalise attention scores over the wrong axis, inside the decomposed SDPA."""
    return lambda m: set_attribute(m, middle("Softmax", INSIDE)(m), "axis", axis)


def mul_in_attention_to(new_op: str) -> Fault:
    """Swap a Mul inside the attention's decomposition (the q/k scale) for ``new_op``."""
    return lambda m: swap_op(m, middle("Mul", INSIDE)(m), new_op)
