"""float16 conversion with onnxconverter-common (``fp16``) or onnxruntime's transformers copy of it
(``fp16-ort``), unmodified; knob: ``node_block_list``.

onnxruntime's ``onnxruntime.transformers.float16`` is onnxconverter-common's converter
with other defaults (constants clamped to ``[5.96e-08, 65504]``, float16's own range,
instead of ``[1e-7, 1e4]``) and fixes: it writes valid models where onnxconverter-common
1.16 writes ones onnxruntime rejects (transformers causal LMs with their cache on, Bart,
T5). But it types every float value float16 before it looks at the block list, so a
kept node's output still passes through a Cast to float16 on its way to the next node,
kept or not: a value over float16's range overflows between two kept nodes, and no
keep-list fixes that (onnxconverter-common casts only around the kept nodes, and
onnxruntime drops the Cast pair it meets around a float32-only kernel, so keeping the
reader there works: ``tests/transform_models.fp16_layernorm_overflow``). ``CLAMP``
holds each tool's range; the quirks below were read in onnxconverter-common.

Naming quirks read in ``onnxconverter_common/float16.py`` (1.16):
- ``node_block_list`` is matched against ``NodeProto.name`` only: an unnamed node
  cannot be kept (nodebisect names the reference's unnamed nodes first, see
  ``registry.named_copy``, and the keep-list uses those names);
- a kept node keeps its initializers in float32 (``process_initializers``) only when
  the model lists no ``value_info`` for them: when it does (the dynamo exporter's
  models do), ``process_value_info`` marks them float16 first, ``insert_cast32_before_node``
  then reads them through a Cast, and the initializer itself is converted: a kept
  node still reads its weights rounded (and clamped) to float16;
- a ``Constant`` node's tensor is converted unless the Constant node itself is kept,
  and a kept Constant's value still passes through float16 on its way to a kept
  reader (a Cast to float16 after it, a Cast to float32 before the reader);
- every other float constant is clamped to ``[min_positive_val, max_finite_val]``
  (1e-7, 1e4 by default) before it is rounded to float16.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

MIN_POSITIVE, MAX_FINITE = 1e-7, 1e4  # onnxconverter-common's defaults (convert_float_to_float16)
CLAMP = {"fp16": (MIN_POSITIVE, MAX_FINITE), "fp16-ort": (5.96e-08, 65504.0)}  # each tool's default clamp range
FLOAT16_MAX = 65504.0
FLOAT16_SMALLEST_NORMAL = 6.103515625e-05


def candidates(reference: onnx.ModelProto) -> list[str]:
    """The computing nodes: a keep-list names what must compute in float32 (a Constant node computes nothing;
    its value is reported by ``changed_constants`` when the conversion changes it)."""
    return [n.name for n in reference.graph.node if n.name and n.op_type != "Constant"]


def apply(reference: onnx.ModelProto, keep: frozenset[str], feeds: dict[str, Any], spec: Any) -> onnx.ModelProto:
    """``convert_float_to_float16(model, keep_io_types=True, node_block_list=keep)`` on a copy (the tool ``spec`` names)."""
    import importlib

    from nodebisect.onnx_reference.large import too_large
    from nodebisect.onnxgraph import inferred_value_info

    float16 = importlib.import_module("onnxruntime.transformers.float16" if spec.name == "fp16-ort" else "onnxconverter_common.float16")

    model = onnx.ModelProto()
    model.CopyFrom(reference)
    extra = {}
    if too_large(model):  # the converter's onnx.shape_inference cannot take a model past 2 GB: types inferred without the weights
        del model.graph.value_info[:]
        model.graph.value_info.extend(inferred_value_info(reference))
        extra["disable_shape_infer"] = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns for every clamped constant; changed_constants() reports them
        return float16.convert_float_to_float16(model, keep_io_types=True, node_block_list=sorted(keep), **extra)


def knob_kwargs(keep: list[str], reference: onnx.ModelProto, spec: Any) -> dict[str, Any]:
    return {"keep_io_types": True, "node_block_list": list(keep)}


def changed_constants(reference: onnx.ModelProto, keep: frozenset[str] = frozenset(), tool: str = "fp16") -> list[dict[str, Any]]:
    """The float constants the conversion (``tool``: fp16 or fp16-ort) changes beyond float16 rounding, with their readers.

    An initializer read by a kept node stays float32 (the converter's rule); a Constant
    node's tensor changes whatever is kept (clamped when not kept, float16 on its way when kept).
    """
    clamp_range = CLAMP.get(tool, CLAMP["fp16"])
    readers: dict[str, list[str]] = {}
    for node in reference.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node.name)
    listed = {v.name for v in list(reference.graph.value_info) + list(reference.graph.input) if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    found = []
    tensors = [(t.name, "", t) for t in reference.graph.initializer]
    for node in reference.graph.node:
        if node.op_type == "Constant":
            tensors += [(node.output[0], node.name, a.t) for a in node.attribute if a.name == "value" and a.t.data_type == onnx.TensorProto.FLOAT]
    for name, producer, tensor in tensors:
        if tensor.data_type != onnx.TensorProto.FLOAT:
            continue
        if not producer and name not in listed and any(r in keep for r in readers.get(name, [])):
            continue  # stays float32 (a kept reader, and no value_info that marks it float16 first)
        before = numpy_helper.to_array(tensor).astype(np.float64)
        after = _converted(before, clamp_range if not (producer and producer in keep) else None)
        change = _largest_change(before, after)
        if change is not None:
            found.append({"constant": name, "constant_node": producer, "readers": readers.get(name, []),
                          "listed_in_value_info": name in listed, **change})
    return found


def _converted(values: np.ndarray, clamp: tuple[float, float] | None) -> np.ndarray:
    v = values.copy()
    if clamp is not None:
        low, high = clamp
        tiny = (v != 0) & (np.abs(v) < low)
        v[tiny] = np.sign(v[tiny]) * low
        big = np.isfinite(v) & (np.abs(v) > high)
        v[big] = np.sign(v[big]) * high
    with np.errstate(over="ignore"):
        return v.astype(np.float16).astype(np.float64)


def _largest_change(before: np.ndarray, after: np.ndarray) -> dict[str, Any] | None:
    """The element changed most, when it changed by more than float16's rounding of the tensor's scale.

    Measured against the tensor's largest magnitude: a weight of 1e-9 beside weights of 0.1
    flushed to 0 changes nothing that matters; a lone epsilon of 1e-12 clamped to 1e-7 does.
    """
    if before.size == 0:
        return None
    scale = float(np.abs(before[np.isfinite(before)]).max(initial=0.0))
    with np.errstate(invalid="ignore"):
        rel = np.abs(after - before) / (scale if scale > 0 else 1.0)
    rel = np.where(np.isfinite(rel), rel, np.inf)
    i = int(np.argmax(rel))
    if not rel.flat[i] > 2.0 ** -10:
        return None
    return {"index": i, "before": float(before.flat[i]), "after": float(after.flat[i])}


# An over-range value whose every over-range element is at least this is a mask's fill (``finfo(float32).min``,
# ``-inf``-like): attention masks hold it on purpose, and no keep-list is owed for it.
MASK_FILL_ABS = 1e38


def headroom(values: dict[str, np.ndarray], producer: dict[str, str], limit: int = 10) -> list[dict[str, Any]]:
    """Reference values over float16's range (``over_range``; a mask's ``finfo.min`` fill: ``mask_fill``) or under
    its smallest normal (``under_normal``), where they are."""
    rows = []
    for name, v in values.items():
        a = np.asarray(v)
        if a.dtype.kind != "f" or a.size == 0:
            continue
        mag = np.abs(a[np.isfinite(a)]).astype(np.float64)
        if mag.size == 0:
            continue
        over = int((mag > FLOAT16_MAX).sum())
        under = int(((mag > 0) & (mag < FLOAT16_SMALLEST_NORMAL)).sum())
        if over:
            fill = bool((mag[mag > FLOAT16_MAX] >= MASK_FILL_ABS).all())
            rows.append({"value": name, "node": producer.get(name, ""), "kind": "mask_fill" if fill else "over_range",
                         "max_abs": float(mag.max()), "elements": over})
        elif under and under / a.size >= 0.01:
            rows.append({"value": name, "node": producer.get(name, ""), "kind": "under_normal", "min_abs": float(mag[mag > 0].min()), "elements": under})
    rows.sort(key=lambda r: (["over_range", "under_normal", "mask_fill"].index(r["kind"]), -r["elements"]))
    fills = [r for r in rows if r["kind"] == "mask_fill"]
    return [r for r in rows if r["kind"] != "mask_fill"][:limit] + fills[:limit]  # the fills: one line, said whatever else is
