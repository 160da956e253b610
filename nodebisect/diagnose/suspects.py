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
   ``dim``, LayerNormalization epsilon vs ``eps``) or an arithmetic op type that
   is not the aten op's;
5. priors: the node carrying the value, then numerically sensitive op types.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from nodebisect.onnxgraph import node_attributes
from nodebisect.search.graphmap import GraphMap
from nodebisect.records import Suspect

_SENSITIVE = {"Softmax", "LogSoftmax", "Where", "Cast", "Div", "Pow", "Sqrt", "Reciprocal", "Exp", "Log", "Erf", "Mod", "Clip", "Max", "Min", "Resize"}
_ARITH = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "pow": "Pow", "maximum": "Max", "minimum": "Min"}


def rank_suspects(
    gm: GraphMap,
    model: onnx.ModelProto,
    segment: list[str],
    carrier: str,
    fx_args: dict[str, tuple[str, tuple[Any, ...]]],
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
        reason = _contradicts_fx(gm, name, fx_args)
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


def _contradicts_fx(gm: GraphMap, name: str, fx_args: dict[str, tuple[str, tuple[Any, ...]]]) -> str:
    """The attribute of ``name`` that contradicts its FX node's own arguments, in words ("" if none)."""
    node = gm.nodes[name]
    ref = gm.refs[name]
    if ref.fx_node not in fx_args:
        return ""
    target, args = fx_args[ref.fx_node]
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
