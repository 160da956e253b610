"""Follow drift to its source: every value of a cone recomputed from PyTorch's own inputs.

A culprit found "inherited" is right on PyTorch's inputs: the real defect lies
upstream, hidden by the tolerance (a small-magnitude value changed by 0.5 % sits
far below ``atol``) until a later node (rsqrt, softmax) amplifies it. So the cone
is run once more "teacher-forced": every mapped value a node reads is replaced by
PyTorch's reference value, so each value is its own segment computed alone on
correct inputs. A segment whose output is then wrong beyond what float rounding
of its own inputs can explain is a local defect; the earliest one is the source.

The local criterion is stricter than the search's tolerance on purpose: run on
exact inputs, one segment in float32 differs from PyTorch by a few ulps of its
values and of its inputs, never by a relative 1e-4 of the whole tensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper

from nodebisect.onnxgraph import sub_model, value_infos
from nodebisect.values.graphmap import GraphMap

REF_SUFFIX = "__nodebisect_ref"
# Relative L2 error of one segment run on exact inputs, beyond which it is a local defect.
LOCAL_REL = {"float32": 1e-4, "float64": 1e-9, "float16": 1e-2, "bfloat16": 5e-2}
# ... and its largest error must exceed this many ulps of the larger of its output and input magnitudes.
ULP_FLOOR = 64
# Reference values fed per session at most (bytes); larger cones run in several sessions.
MAX_FEED_BYTES = 512 * 1024 * 1024


@dataclass
class LocalError:
    """How wrong one value is when its segment runs alone on PyTorch's inputs."""

    value: str
    rel_l2: float
    max_abs: float
    floor: float
    limit: float

    @property
    def wrong(self) -> bool:
        return self.rel_l2 > self.limit and self.max_abs > self.floor


def teacher_forced_model(model: onnx.ModelProto, gm: GraphMap, values: list[str], fed: set[str]) -> onnx.ModelProto:
    """``model`` where every read of a value in ``fed`` comes from a new graph input (PyTorch's value)."""
    types = value_infos(model)
    nodes = []
    for name in gm.order:
        node = onnx.NodeProto()
        node.CopyFrom(gm.nodes[name])
        for i, x in enumerate(node.input):
            if x in fed:
                node.input[i] = x + REF_SUFFIX
        nodes.append(node)
    graph = model.graph
    ref_inputs = []
    for x in sorted(fed):
        vi = onnx.ValueInfoProto()
        vi.CopyFrom(types[x])
        vi.name = x + REF_SUFFIX
        ref_inputs.append(vi)
    outputs = [types.get(v) or onnx.ValueInfoProto(name=v) for v in values]
    return sub_model(model, nodes, list(graph.initializer), list(graph.input) + ref_inputs, outputs, list(graph.value_info))


def local_errors(
    model: onnx.ModelProto,
    gm: GraphMap,
    acts: Any,
    feeds: dict[str, np.ndarray],
    values: list[str],
    run: Any,
) -> dict[str, LocalError]:
    """Each value of ``values`` recomputed from PyTorch's values of the mapped values it reads.

    Args:
        run: ``(model, feeds, values) -> {value: array}``, one onnxruntime session.
    """
    types = value_infos(model)
    reference = {v: np.asarray(acts.values[gm.mapped[v]]) for v in gm.mapped}

    def feedable(x: str) -> bool:  # typed, and numpy holds it in the graph's own dtype (not bf16)
        if x not in types or not types[x].type.HasField("tensor_type") or x not in gm.producer:
            return False
        elem = types[x].type.tensor_type.elem_type
        return elem != onnx.TensorProto.BFLOAT16 and np.dtype(helper.tensor_dtype_to_np_dtype(elem)) == reference[x].dtype

    out: dict[str, LocalError] = {}
    for batch in _batches(values, gm, reference):
        fed = {x for v in batch for n in gm.cut(v)[0] for x in gm.reads[n] if x in gm.mapped and x not in gm.graph_inputs and feedable(x)}
        forced = teacher_forced_model(model, gm, batch, fed)
        got = run(forced, {**feeds, **{x + REF_SUFFIX: reference[x] for x in fed}}, batch)
        for v in batch:
            inputs = [reference[x] for x in gm.mapped_inputs(v) if x in reference]
            out[v] = local_error(v, reference[v], got[v], inputs, acts.dtypes.get(gm.mapped[v], ""))
    return out


def local_error(value: str, expected: np.ndarray, actual: np.ndarray, inputs: list[np.ndarray], dtype: str) -> LocalError:
    """The relative L2 error and the ulp floor of one segment's output."""
    kind = dtype or str(expected.dtype)
    limit = LOCAL_REL.get(kind, 0.0)
    if expected.dtype.kind != "f" or expected.shape != actual.shape or limit == 0.0:
        wrong = expected.shape != actual.shape or not np.array_equal(expected, actual)
        return LocalError(value, float("inf") if wrong else 0.0, float("inf") if wrong else 0.0, 0.0, 0.0)
    e = expected.astype(np.float64)
    a = actual.astype(np.float64)
    finite = np.isfinite(e) & np.isfinite(a)
    placement = bool((np.isnan(e) != np.isnan(a)).any() or (np.isinf(e) != np.isinf(a)).any())
    diff = np.abs(a[finite] - e[finite])
    norm = float(np.sqrt((e[finite] ** 2).sum()))
    rel = float(np.sqrt((diff**2).sum())) / norm if norm > 0 else (float("inf") if diff.size and diff.max() > 0 else 0.0)
    scale = max([float(np.abs(e[finite]).max()) if finite.any() else 0.0] + [_finite_max(x) for x in inputs])
    eps = float(np.finfo(np.float16).eps if kind == "float16" else 2.0**-7 if kind == "bfloat16" else np.finfo(expected.dtype).eps)
    max_abs = float(diff.max()) if diff.size else 0.0
    if placement:
        rel, max_abs = float("inf"), float("inf")
    return LocalError(value, rel, max_abs, ULP_FLOOR * eps * scale, limit)


def _finite_max(x: np.ndarray) -> float:
    if x.dtype.kind != "f" or not x.size:
        return 0.0
    f = np.abs(x[np.isfinite(x)])
    return float(f.max()) if f.size else 0.0


def _batches(values: list[str], gm: GraphMap, reference: dict[str, np.ndarray]) -> list[list[str]]:
    """Split ``values`` so the reference inputs each session needs stay under ``MAX_FEED_BYTES``."""
    batches: list[list[str]] = [[]]
    size = 0
    for v in values:
        need = sum(reference[x].nbytes for x in gm.mapped_inputs(v) if x in reference)
        if batches[-1] and size + need > MAX_FEED_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(v)
        size += need
    return [b for b in batches if b]
