"""Order the nodes of a divergent segment by evidence, most suspect first.

Inside a decomposed op only the last ONNX node carries the framework value, so
it is blamed by default even when the defect sits earlier (a Softmax axis, a
Where, a Cast). Evidence used, strongest first:

1. the first node that turns finite inputs into NaN/Inf;
2. the point where the lowering leaves PyTorch's own decomposition of the op
   (passed in as ``evidence``);
3. a node whose op type or attributes differ from the same position in *twin*
   segments (other ONNX lowerings of the same aten op with the same shape of
   decomposition, e.g. the attention of every other layer);
4. an attribute that contradicts the FX node's own arguments (Softmax axis vs
   ``dim``, LayerNormalization epsilon vs ``eps``), an arithmetic op type that
   is not the aten op's, or a non-default numeric argument that appears nowhere
   in the lowering (``label_smoothing`` of a SoftmaxCrossEntropyLoss);
5. priors: the node carrying the value, then numerically sensitive op types.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from nodebisect.onnxgraph import node_attributes
from nodebisect.values.graphmap import GraphMap
from nodebisect.records import Suspect
from nodebisect.reference import RefOp

_SENSITIVE = {"Softmax", "LogSoftmax", "Where", "Cast", "Div", "Pow", "Sqrt", "Reciprocal", "Exp", "Log", "Erf", "Mod", "Clip", "Max", "Min", "Resize"}
_ARITH = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "pow": "Pow", "maximum": "Max", "minimum": "Min"}


def rank_suspects(
    gm: GraphMap,
    model: onnx.ModelProto,
    segment: list[str],
    carrier: str,
    ops: dict[str, RefOp],
    nan_source: str = "",
    extra: list[str] | None = None,
    evidence: list[tuple[str, float, str]] | None = None,
) -> list[Suspect]:
    """Score every candidate node and return them most suspect first.

    ``evidence`` carries (node, score, reason) found by other means, e.g. the
    departure points from PyTorch's own decomposition (``decomposition.py``).
    """
    candidates = list(dict.fromkeys(list(segment) + list(extra or [])))
    scores: dict[str, list[tuple[float, str]]] = {n: [] for n in candidates}
    small_consts = _small_constants(model)
    for name, score, reason in evidence or []:
        if name in scores:
            scores[name].append((score, reason))

    if nan_source in scores:
        scores[nan_source].append((0.95, "first node producing NaN/Inf from finite inputs"))

    for name, reason in _twin_outliers(gm, candidates, small_consts):
        scores[name].append((0.9, reason))

    for name in candidates:
        reason = _contradicts_fx(gm, name, ops) or _dropped_argument(gm, name, ops, small_consts)
        if reason:
            scores[name].append((0.85, reason))

    for name in candidates:
        op = gm.nodes[name].op_type
        if name == carrier:
            scores[name].append((0.3, "carries the divergent framework value"))
        elif op in _SENSITIVE:
            scores[name].append((0.2, f"{op} is numerically sensitive"))
        else:
            scores[name].append((0.1, "part of the same decomposition"))

    ranked = []
    for name in candidates:
        best = max(scores[name], key=lambda s: s[0])
        reasons = "; ".join(r for _, r in sorted(scores[name], key=lambda s: -s[0]))
        ranked.append(Suspect(onnx_node=name, op_type=gm.nodes[name].op_type, score=best[0], reason=reasons))
    ranked.sort(key=lambda s: (-s.score, -gm.position[s.onnx_node]))
    return ranked


def _small_constants(model: onnx.ModelProto) -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    for t in model.graph.initializer:
        n = int(np.prod(t.dims)) if t.dims else 1
        if n <= 64:
            try:
                arr = numpy_helper.to_array(t)
                out[t.name] = (str(arr.dtype), tuple(arr.shape), tuple(np.asarray(arr).ravel().tolist()))
            except Exception:  # noqa: BLE001
                continue
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                    arr = numpy_helper.to_array(attr.t)
                    if arr.size <= 64:
                        out[node.output[0]] = (str(arr.dtype), tuple(arr.shape), tuple(arr.ravel().tolist()))
    return out


def _signature(gm: GraphMap, name: str, consts: dict[str, tuple]) -> tuple:
    node = gm.nodes[name]
    attrs = tuple(sorted((k, repr(v)) for k, v in node_attributes(node).items()))
    const_inputs = tuple(consts.get(i) for i in node.input if i in consts)
    return (node.op_type, attrs, const_inputs)


def _twin_outliers(gm: GraphMap, candidates: list[str], consts: dict[str, tuple]) -> list[tuple[str, str]]:
    """Nodes that differ from the same position in segments lowering the same aten op."""
    found: list[tuple[str, str]] = []
    seg_keys = list(dict.fromkeys(gm.segment_of[c] for c in candidates))
    for key in seg_keys:
        members = gm.segments.get(key, [])
        if not members:
            continue
        target = gm.refs[members[0]].target
        if not target:
            continue
        twins = [
            nodes
            for k, nodes in gm.segments.items()
            if k != key and nodes and gm.refs[nodes[0]].target == target and len(nodes) == len(members)
        ]
        if len(twins) < 2:
            continue
        for pos, name in enumerate(members):
            if name not in candidates:
                continue
            mine = _signature(gm, name, consts)
            theirs = Counter(_signature(gm, t[pos], consts) for t in twins)
            common, count = theirs.most_common(1)[0]
            if mine != common and count >= max(2, len(twins) // 2 + 1):
                found.append((name, _describe_difference(mine, common, count, target)))
    return found


def _describe_difference(mine: tuple, common: tuple, count: int, target: str) -> str:
    if mine[0] != common[0]:
        return f"is {mine[0]} where {count} other lowerings of {target} have {common[0]} at this position"
    mine_attrs, their_attrs = dict(mine[1]), dict(common[1])
    diffs = [f"{k}={mine_attrs.get(k, '<default>')} (others: {their_attrs.get(k, '<default>')})" for k in sorted(set(mine_attrs) | set(their_attrs)) if mine_attrs.get(k) != their_attrs.get(k)]
    if diffs:
        return f"attribute {', '.join(diffs)} differs from {count} other lowerings of {target}"
    return f"constant input differs from {count} other lowerings of {target}"


def _contradicts_fx(gm: GraphMap, name: str, ops: dict[str, RefOp]) -> str:
    """The attribute of ``name`` that contradicts its reference op's own arguments, in words ("" if none)."""
    node = gm.nodes[name]
    op = ops.get(gm.refs[name].fx_node)
    if op is None:
        return ""
    target, args = op.target, op.args
    base = target.split(".")[1] if target.startswith("aten.") and "." in target else target
    attrs = node_attributes(node)
    for check in (_softmax_axis, _layernorm_eps, _avg_pool_args, _scatter_reduction, _axis_vs_dim):
        reason = check(node.op_type, base, target, args, attrs)
        if reason:
            return reason
    if base in _ARITH and len(gm.segments.get(gm.segment_of[name], [])) == 1:
        expected = _ARITH[base]
        if node.op_type in _ARITH.values() and node.op_type != expected:
            return f"{node.op_type} node lowers {target}, which is {expected}"
    return ""


def _softmax_axis(op: str, base: str, target: str, args: tuple[Any, ...], attrs: dict[str, Any]) -> str:
    if op in ("Softmax", "LogSoftmax") and base in ("softmax", "_softmax", "log_softmax", "_log_softmax") and len(args) > 1:
        dim, rank = args[1], _rank(args[0])
        axis = attrs.get("axis", -1)
        if isinstance(dim, int) and rank and (axis % rank) != (dim % rank):
            return f"{op} attribute axis={axis} contradicts argument dim={dim} of {target}"
    return ""


def _layernorm_eps(op: str, base: str, target: str, args: tuple[Any, ...], attrs: dict[str, Any]) -> str:
    if op == "LayerNormalization" and base in ("layer_norm", "native_layer_norm") and len(args) > 4:
        eps = args[4]
        got = attrs.get("epsilon", 1e-5)
        if isinstance(eps, float) and not np.isclose(got, eps, rtol=1e-3, atol=0):
            return f"LayerNormalization attribute epsilon={got:g} contradicts argument eps={eps:g} of {target}"
    return ""


# aten.avg_pool{1,2,3}d(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
_AVG_POOL = ("avg_pool1d", "avg_pool2d", "avg_pool3d")


def _avg_pool_args(op: str, base: str, target: str, args: tuple[Any, ...], attrs: dict[str, Any]) -> str:
    if op != "AveragePool" or base not in _AVG_POOL:
        return ""
    divisor = args[6] if len(args) > 6 else None
    if isinstance(divisor, int) and divisor:
        kernel = list(attrs.get("kernel_shape", []))
        window = int(np.prod(kernel)) if kernel else 0
        if divisor != window:
            return (
                f"AveragePool has no divisor_override attribute: it divides by the {window} elements of "
                f"kernel_shape={kernel}, but {target} passes divisor_override={divisor}"
            )
    ceil_mode = args[4] if len(args) > 4 else False
    if isinstance(ceil_mode, bool) and bool(attrs.get("ceil_mode", 0)) != ceil_mode:
        return f"AveragePool attribute ceil_mode={attrs.get('ceil_mode', 0)} contradicts argument ceil_mode={ceil_mode} of {target}"
    include_pad = args[5] if len(args) > 5 else True
    padded = any(p for p in attrs.get("pads", []) or [])
    if padded and isinstance(include_pad, bool) and bool(attrs.get("count_include_pad", 0)) != include_pad:
        return (
            f"AveragePool attribute count_include_pad={attrs.get('count_include_pad', 0)} contradicts "
            f"argument count_include_pad={include_pad} of {target}"
        )
    return ""


# torch's reduce names -> ONNX ScatterElements/ScatterND reduction; "mean" has none.
_SCATTER_REDUCTION = {"sum": "add", "add": "add", "prod": "mul", "multiply": "mul", "amax": "max", "amin": "min", "mean": None}


def _scatter_reduction(op: str, base: str, target: str, args: tuple[Any, ...], attrs: dict[str, Any]) -> str:
    if op not in ("ScatterElements", "ScatterND") or not base.startswith("scatter"):
        return ""
    reduce = args[4] if base == "scatter_reduce" and len(args) > 4 else ("sum" if base == "scatter_add" else None)
    if base == "scatter" and len(args) > 4 and isinstance(args[4], str):
        reduce = args[4]  # aten.scatter.reduce / value_reduce
    got = attrs.get("reduction", "none")
    if not isinstance(reduce, str) or reduce not in _SCATTER_REDUCTION:
        return ""
    expected = _SCATTER_REDUCTION[reduce]
    if expected is None:
        return (
            f"{op} attribute reduction='{got}' contradicts argument reduce='{reduce}' of {target}: "
            f"ONNX {op} has no '{reduce}' reduction"
        )
    if got != expected:
        return f"{op} attribute reduction='{got}' contradicts argument reduce='{reduce}' of {target} (expected reduction='{expected}')"
    return ""


# aten op -> (ONNX op, index of its ``dim`` argument, default dim) for ops whose axis is an attribute.
_AXIS_OF = {
    "cat": ("Concat", 1, 0),
    "concat": ("Concat", 1, 0),
    "gather": ("GatherElements", 1, None),
    "scatter": ("ScatterElements", 1, None),
    "scatter_add": ("ScatterElements", 1, None),
    "scatter_reduce": ("ScatterElements", 1, None),
}


def _axis_vs_dim(op: str, base: str, target: str, args: tuple[Any, ...], attrs: dict[str, Any]) -> str:
    spec = _AXIS_OF.get(base)
    if spec is None or spec[0] != op:
        return ""
    _, index, default = spec
    dim = args[index] if len(args) > index else default
    first = args[0][0] if base in ("cat", "concat") and isinstance(args[0], (list, tuple)) and args[0] else args[0]
    rank = _rank(first)
    axis = attrs.get("axis", 0)
    if isinstance(dim, int) and rank and (axis % rank) != (dim % rank):
        return f"{op} attribute axis={axis} contradicts argument dim={dim} of {target}"
    return ""


def _rank(arg: Any) -> int:
    val = getattr(arg, "meta", {}).get("val") if hasattr(arg, "meta") else None
    return len(val.shape) if val is not None and hasattr(val, "shape") else 0


# Schema types a lowering writes as a plain number; ScalarType, Layout and MemoryFormat are also
# ints in the schema but enums whose ONNX form (a Cast's ``to``) is another number.
_NUMERIC_TYPES = {"int", "SymInt", "float", "number"} | {f"Optional[{t}]" for t in ("int", "SymInt", "float", "number")}
_TRIVIAL = (0, 1, -1)
_SENTINEL = 2**31  # ints this large mean "to the end" (a slice's end): a lowering may clamp them
# (aten op, argument) that change only the backward pass: a forward lowering rightly has no trace of them.
_BACKWARD_ONLY = {("embedding", "padding_idx")}


def _dropped_argument(gm: GraphMap, name: str, ops: dict[str, RefOp], consts: dict[str, tuple]) -> str:
    """A non-default numeric argument of the FX node that its lowering never writes, in words ("" if none).

    A converter that has no place for an argument drops it silently:
    ``F.cross_entropy(label_smoothing=0.1)`` becomes one SoftmaxCrossEntropyLoss,
    which has no label smoothing, and the loss is the unsmoothed one. Per-op checks
    (``_contradicts_fx``) need to know the op; this one only asks whether a number the
    model chose (a float or int other than 0/1/-1, differing from the schema's
    default; never a bool, string, list, dtype, ``dim`` or "to the end" sentinel) is
    anywhere in the lowering: an attribute of the segment's nodes or a small constant
    they read. Only two forms count as written: the value ``v`` itself and ``1 - v``
    (a complement, as in label smoothing's ``1 - eps``; see ``_holds``). Other derived
    forms (``v / 2``, ``v * 3``, ``sqrt(v)``) are deliberately not accepted: almost any
    number is some small function of another, so accepting them would hide real drops.
    Only the segment's carrier is named: the argument belongs to the whole lowering,
    and the carrier is the node that stands for the op. Only positional arguments are
    seen (``RefOp.args``), so kwarg-only ones such as
    ``scaled_dot_product_attention``'s ``scale`` are never judged. Arguments that act
    only on the backward pass (``_BACKWARD_ONLY``) are skipped.
    """
    op = ops.get(gm.refs[name].fx_node)
    if op is None:
        return ""
    key = gm.segment_of[name]
    members = gm.segments.get(key, [])
    if not members or name != _segment_carrier(gm, key, members):
        return ""
    target, args, schema = op.target, op.args, op.schema
    if schema is None:
        return ""
    written: list[float] | None = None
    base = target.split(".")[1]
    for arg, value in zip(schema.arguments, args):
        if not _judged(arg, value) or (base, arg.name) in _BACKWARD_ONLY:
            continue
        if written is None:
            written = _written_numbers(gm, members, consts)
        if _holds(written, value):
            continue
        ops = sorted({gm.nodes[m].op_type for m in members})
        holder = ops[0] if len(members) == 1 else f"its {len(members)} nodes ({', '.join(ops)})"
        where = f"no attribute or constant input of {holder} holds it"
        return f"argument {arg.name}={value!r} of {target} appears nowhere in its lowering ({where}): the exporter dropped or changed it"
    return ""


def _holds(written: list[float], value: float) -> bool:
    """Whether a lowering that writes ``written`` holds ``value``: ints exactly, floats as ``v`` or ``1 - v``.

    The complement counts only where it is told apart from 1 (``|v| > 0.01``): an
    ``eps=1e-12`` is not held by every constant 1 of the lowering.
    """
    if isinstance(value, int):
        return any(w == value for w in written)
    forms = [value] + ([1 - value] if abs(value) > 0.01 else [])
    return any(math.isclose(w, f, rel_tol=1e-3) for w in written for f in forms)


def _segment_carrier(gm: GraphMap, key: str, members: list[str]) -> str:
    """The node of a segment that produces the FX node's own value (else its last node)."""
    producer = gm.producer.get(key, "")
    return producer if producer in members else members[-1]


def _judged(arg: Any, value: Any) -> bool:
    """Whether ``value`` for schema argument ``arg`` is a number the model chose and a lowering must write."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    if value in _TRIVIAL or abs(value) >= _SENTINEL:
        return False
    if str(arg.real_type) not in _NUMERIC_TYPES or "dim" in arg.name or not arg.has_default_value():
        return False
    default = arg.default_value
    return not (isinstance(default, (int, float)) and not isinstance(default, bool) and math.isclose(value, default, rel_tol=1e-6))


def _written_numbers(gm: GraphMap, members: list[str], consts: dict[str, tuple]) -> list[float]:
    """Every number a lowering writes: its nodes' attributes (small tensors included) and small constant inputs."""
    out: list[float] = []
    for m in members:
        node = gm.nodes[m]
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and int(np.prod(attr.t.dims)) <= 64:
                value: Any = numpy_helper.to_array(attr.t).ravel().tolist()
            elif attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS, onnx.AttributeProto.TENSOR):
                continue
            else:
                value = onnx.helper.get_attribute_value(attr)
            out += [float(v) for v in (value if isinstance(value, list) else [value]) if isinstance(v, (int, float))]
        for i in node.input:
            if i in consts:
                out += [float(v) for v in consts[i][2] if isinstance(v, (int, float)) and math.isfinite(v)]
    return out
