"""Add, Sub and Mul lowered from aten add/sub/mul, checked bit for bit on PyTorch's own inputs.

IEEE 754 makes float32 addition, subtraction and multiplication exact: the result
is the true one, rounded once. PyTorch's kernels and onnxruntime's both honour
that, so a node that is the whole lowering of ``aten.add.Tensor`` (or sub, mul),
fed PyTorch's own float32 inputs, must reproduce PyTorch's output bit for bit.
A node that does not computes another function, however small the difference:
RMSNorm's ``variance + eps`` turned into ``variance - eps`` moves the value by one
ulp when the variance is large, below every tolerance and every noise estimate,
yet gives ``rsqrt`` of a negative number (NaN) on a row whose variance is 0.

A match is never turned into a divergence on this evidence (the outputs agree on
these inputs); the node is named in a note and in ``stats["inexact_ops"]`` so the
user can try inputs that expose it. Used by ``pipeline`` when the verdict is match.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper

from nodebisect.onnxgraph import sub_model, value_infos
from nodebisect.prepared import Prepared
from nodebisect.runtime.handle import Ort
from nodebisect.values.graphmap import GraphMap
from nodebisect.diagnose.source import REF_SUFFIX

EXACT_OPS = {"Add", "Sub", "Mul"}
EXACT_TARGETS = {"aten.add.Tensor", "aten.sub.Tensor", "aten.mul.Tensor"}
# Nodes named in the note at most (the stats hold them all).
NOTE_NODES = 3


def exact_op_candidates(gm: GraphMap, prep: Prepared) -> dict[str, list[Any]]:
    """Single-node lowerings of add/sub/mul (alpha 1) in float32 whose inputs PyTorch's values can feed.

    Returns:
        node name -> what feeds each of its inputs (``_source``), in graph order.
    """
    inits = {t.name: t for t in prep.onnx_model.graph.initializer}
    out: dict[str, list[Any]] = {}
    for name in gm.order:
        node = gm.nodes[name]
        ref = gm.refs.get(name)
        if node.op_type not in EXACT_OPS or ref is None or ref.target not in EXACT_TARGETS or len(node.output) != 1:
            continue
        if gm.segments.get(gm.segment_of.get(name, ""), []) != [name]:
            continue  # part of a larger lowering: PyTorch's value is not this node's alone
        value = node.output[0]
        fx = prep.acts.op(gm.mapped.get(value, ""))
        if fx is None or fx.kwargs.get("alpha", 1) != 1 or len(fx.args) > 2:
            continue
        expected = prep.acts.values.get(fx.name)
        if expected is None or expected.dtype != np.float32:
            continue
        sources = [_source(gm, prep, inits, x) for x in node.input]
        if all(x is not None for x in sources):
            out[name] = sources
    return out


def audit_exact_ops(gm: GraphMap, prep: Prepared, run: Any) -> list[dict[str, Any]]:
    """The candidates whose output, on PyTorch's own inputs, is not PyTorch's bit for bit.

    Args:
        run: ``(model, feeds, values) -> {value: array}``, one onnxruntime session.
    """
    candidates = exact_op_candidates(gm, prep)
    if not candidates:
        return []
    names = list(candidates)
    types = value_infos(prep.onnx_model)
    nodes: dict[str, onnx.NodeProto] = {}
    inits: dict[str, onnx.TensorProto] = {}
    inputs: dict[str, onnx.ValueInfoProto] = {}
    feeds: dict[str, np.ndarray] = {}
    for name in names:
        node = onnx.NodeProto()
        node.CopyFrom(gm.nodes[name])
        for i, (x, source) in enumerate(zip(list(node.input), candidates[name])):
            if isinstance(source, onnx.TensorProto):  # a scalar constant: float32 to both sides
                inits[x] = source
            elif isinstance(source, onnx.NodeProto):
                nodes[source.name] = source
            else:  # PyTorch's value, under a name of its own: it may also be another candidate's output
                fed = x + REF_SUFFIX
                node.input[i] = fed
                if fed not in inputs:
                    feeds[fed] = source
                    inputs[fed] = helper.make_tensor_value_info(fed, onnx.TensorProto.FLOAT, list(source.shape))
        nodes[name] = node
    values = [gm.nodes[n].output[0] for n in names]
    outputs = [types.get(v) or helper.make_tensor_value_info(v, onnx.TensorProto.FLOAT, None) for v in values]
    model = sub_model(prep.onnx_model, list(nodes.values()), list(inits.values()), list(inputs.values()), outputs)
    got = run(model, feeds, values)
    found = []
    for name, value in zip(names, values):
        expected = prep.acts.values[gm.mapped[value]]
        actual = np.asarray(got[value])
        if actual.shape != expected.shape:
            continue
        same = (actual == expected) | (np.isnan(actual) & np.isnan(expected))
        if same.all():
            continue
        both = np.isfinite(actual) & np.isfinite(expected) & ~same
        ulps = np.abs(actual[both].astype(np.float64) - expected[both]) / np.spacing(np.abs(expected[both]).astype(np.float32))
        node = gm.nodes[name]
        found.append(
            {
                "node": name,
                "op_type": node.op_type,
                "target": gm.refs[name].target,
                "fx_node": gm.mapped[value],
                "differing": int((~same).sum()),
                "elements": int(same.size),
                "max_ulps": float(ulps.max()) if ulps.size else None,  # None: only NaN/Inf differ
            }
        )
    return found


def note_text(found: list[dict[str, Any]]) -> str:
    """One note naming the inexact nodes (the first ``NOTE_NODES``), or ""."""
    if not found:
        return ""
    named = "; ".join(
        f"{f['node']} ({f['op_type']}, from {f['target']}) differs at {f['differing']}/{f['elements']} elements"
        + (f" by up to {f['max_ulps']:.3g} ulps" if f["max_ulps"] is not None else " (NaN/Inf)")
        for f in found[:NOTE_NODES]
    )
    more = f" and {len(found) - NOTE_NODES} more" if len(found) > NOTE_NODES else ""
    return (
        f"not bit-exact on PyTorch's own inputs, where IEEE arithmetic makes add, sub and mul exact: {named}{more}. "
        "Their lowering computes another function whose effect stays within tolerance on these inputs; "
        "other inputs may expose it (--trials N, or the inputs that matter to you)"
    )


def _source(gm: GraphMap, prep: Prepared, inits: dict[str, onnx.TensorProto], x: str) -> Any:
    """What feeds ONNX value ``x`` in the audit: PyTorch's own float32 array, a scalar constant, or None.

    Every input must be PyTorch's own value, or the audit compares two functions of
    different inputs: a constant the exporter folded (a rotary ``cos`` table,
    computed by the folding, not by PyTorch) is replaced by PyTorch's value of the
    FX node of that name, a weight by PyTorch's parameter. Only scalar float
    constants (``eps``, a scale) stay in the graph: PyTorch holds its Python scalars
    in float32 too. Returns an ndarray, the scalar's TensorProto or Constant
    NodeProto, or None when PyTorch has no value for ``x``.
    """
    value = None
    if x in prep.feeds:
        value = prep.feeds[x]
    elif x in gm.mapped:
        value = prep.acts.values.get(gm.mapped[x])
    elif x in prep.acts.values:  # folded into a constant, but an FX value PyTorch computed
        value = prep.acts.values[x]
    elif x in inits and (param := prep.acts.parameter(x)) is not None:  # the exporter names initializers by FQN
        value = param
    elif x in inits:
        return inits[x] if _float_scalar(inits[x]) else None
    elif x in gm.producer and gm.nodes[gm.producer[x]].op_type == "Constant":
        node = gm.nodes[gm.producer[x]]
        attr = node.attribute[0] if node.attribute else None
        return node if attr is not None and attr.name == "value" and _float_scalar(attr.t) else None
    return value if isinstance(value, np.ndarray) and value.dtype == np.float32 else None


def _float_scalar(t: onnx.TensorProto) -> bool:
    return t.data_type == onnx.TensorProto.FLOAT and int(np.prod(t.dims)) == 1


def audit(gm: GraphMap, prep: Prepared, ort: Ort) -> list[dict[str, Any]]:
    """``audit_exact_ops`` in one onnxruntime session (counted by ``ort``, the run's handle); [] when it cannot run."""
    try:
        return audit_exact_ops(gm, prep, ort.counted_run)
    except Exception:  # noqa: BLE001 - the match stands without this check
        return []
