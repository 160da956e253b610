"""Facts about an ONNX graph that several wings need: node keys, reads, attributes, sizes, opset.

One place for each, so the search, the runtime, the TorchScript mapping and the
report bundle agree on what a node is called and what it reads.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

import numpy as np
import onnx
from onnx import helper

from nodebisect.errors import BadInputError


def node_keys(model: onnx.ModelProto) -> Iterator[tuple[str, onnx.NodeProto]]:
    """(unique name, node) in graph order; unnamed or repeated names get their index appended."""
    used: set[str] = set()
    for idx, node in enumerate(model.graph.node):
        name = node.name or f"{node.op_type}_{idx}"
        if name in used:
            name = f"{name}__{idx}"
        used.add(name)
        yield name, node


def subgraph_inputs(node: onnx.NodeProto) -> set[str]:
    """Names a node reads, including outer-scope names used by its subgraphs (If/Loop/Scan)."""
    names = {i for i in node.input if i}
    for attr in node.attribute:
        graphs = list(attr.graphs) + ([attr.g] if attr.HasField("g") else [])
        for g in graphs:
            local = {i.name for i in g.input} | {i.name for i in g.initializer}
            for n in g.node:
                local.update(o for o in n.output if o)
            for n in g.node:
                names.update(x for x in subgraph_inputs(n) if x not in local)
    return names


def topological_order(model: onnx.ModelProto) -> list[int] | None:
    """The main graph's node indices in a topological order, as close to the file's as can be; None when already sorted.

    ONNX requires the nodes sorted, and onnxruntime sorts them anyway, so some tools leave
    theirs out of order: onnxruntime's transformers float16 converter appends its graph
    input and output Casts after every other node. nodebisect reads graph order as
    dataflow order (the first divergent node, a prefix sub-model, a value's precision),
    so such a graph is sorted first. Kahn's algorithm, the lowest file index first.
    """
    import heapq

    graph = model.graph
    produced = {o for n in graph.node for o in n.output if o}
    needs = [{x for x in subgraph_inputs(n) if x in produced} for n in graph.node]  # what other nodes must write first
    if _sorted_fast(graph, needs):
        return None
    waiting: dict[str, list[int]] = {}
    missing = [0] * len(graph.node)
    heap: list[int] = []
    for i, need in enumerate(needs):
        missing[i] = len(need)
        for x in need:
            waiting.setdefault(x, []).append(i)
        if not need:
            heapq.heappush(heap, i)
    order: list[int] = []
    while heap:
        i = heapq.heappop(heap)
        order.append(i)
        for o in {o for o in graph.node[i].output if o}:
            for j in waiting.pop(o, []):
                missing[j] -= 1
                if missing[j] == 0:
                    heapq.heappush(heap, j)
    if len(order) < len(graph.node):  # a cycle, or a value produced twice: left where the file has it
        seen = set(order)
        order += [i for i in range(len(graph.node)) if i not in seen]
    return order


def _sorted_fast(graph: Any, needs: list[set[str]]) -> bool:
    available: set[str] = set()
    for node, need in zip(graph.node, needs):
        if not need <= available:
            return False
        available.update(o for o in node.output if o)
    return True


def topologically_sorted(model: onnx.ModelProto, owned: bool = False) -> onnx.ModelProto:
    """``model`` with its main graph's nodes in topological order (``topological_order``); the same object when sorted.

    ``owned``: the caller loaded it and may have it changed in place; else a copy is sorted
    (the user's ModelProto is never modified).
    """
    order = topological_order(model)
    if order is None:
        return model
    if not owned:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        model = copy
    nodes = [onnx.NodeProto() for _ in order]
    for target, i in zip(nodes, order):
        target.CopyFrom(model.graph.node[i])
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def first_nonfinite_node(nodes: Iterable[tuple[str, onnx.NodeProto]], values: dict[str, Any]) -> str:
    """The first of ``nodes`` (graph order) whose float output holds NaN/Inf while its float inputs are finite.

    Where a NaN is born, not where it is first seen: inputs missing from
    ``values`` (initializers) count as finite. "" when none is.
    """

    def bad(v: Any) -> bool:
        return isinstance(v, np.ndarray) and v.dtype.kind == "f" and not np.isfinite(v).all()

    for name, node in nodes:
        if any(bad(values.get(o)) for o in node.output if o) and not any(bad(values.get(i)) for i in node.input if i):
            return name
    return ""


def initializer_bytes(model: onnx.ModelProto) -> int:
    """Bytes of in-memory weights (``raw_data``), read from each tensor's dims and type.

    Cheap: no serialization (``ModelProto.ByteSize`` takes seconds), and no read of
    ``raw_data`` itself, which copies the weight into a Python bytes object (0.1 s per
    call on BERT-base).
    """
    return sum(tensor_bytes(t) for t in model.graph.initializer if t.HasField("raw_data"))


def tensor_bytes(t: onnx.TensorProto) -> int:
    """The bytes of a tensor's elements, from its dims and type, wherever they are stored (no copy of them)."""
    size = _ITEMSIZE.get(t.data_type)
    if size is None:  # a packed (4-bit) or string type: the bytes themselves
        return len(t.raw_data) + sum(len(x) for x in t.string_data)
    count = 1
    for d in t.dims:
        count *= d
    return count * size


_T = onnx.TensorProto
_ITEMSIZE = {_T.FLOAT: 4, _T.UINT8: 1, _T.INT8: 1, _T.UINT16: 2, _T.INT16: 2, _T.INT32: 4, _T.INT64: 8, _T.BOOL: 1,
             _T.FLOAT16: 2, _T.DOUBLE: 8, _T.UINT32: 4, _T.UINT64: 8, _T.BFLOAT16: 2, _T.COMPLEX64: 8, _T.COMPLEX128: 16}


def node_attributes(node: onnx.NodeProto) -> dict[str, Any]:
    """Small, JSON-safe attribute values (tensors and graphs are summarised)."""
    out: dict[str, Any] = {}
    for attr in node.attribute:
        if attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
            out[attr.name] = "<graph>"
            continue
        if attr.type == onnx.AttributeProto.TENSOR:
            out[attr.name] = f"<tensor {list(attr.t.dims)}>"
            continue
        value = helper.get_attribute_value(attr)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        elif isinstance(value, list):
            value = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in value][:16]
        out[attr.name] = value
    return out


def value_types(model: onnx.ModelProto) -> dict[str, tuple[Any, list[int | None] | None]]:
    """Value name -> (numpy dtype or None, dims or None), from the model's type annotations."""
    out: dict[str, tuple[Any, list[int | None] | None]] = {}
    g = model.graph
    for vi in list(g.value_info) + list(g.output) + list(g.input):
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type"):
            continue
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type)) if tt.elem_type else None
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim] if tt.HasField("shape") else None
        out[vi.name] = (dtype, dims)
    return out


def value_infos(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    """Every typed value of the graph (intermediates, outputs, inputs) by name.

    Exporters write the intermediates' types; a model from elsewhere (hand-made, another
    converter, an optimizer's output) may not, and a local subgraph cut from it could
    not be loaded. Then ONNX's shape inference fills in what it can (once per model).
    """
    g = model.graph
    known = {vi.name: vi for vi in list(g.value_info) + list(g.output) + list(g.input)}
    if all(o in known for n in g.node for o in n.output if o):
        return known
    return {**_inferred_types(model), **known}


_INFERRED: list[tuple[onnx.ModelProto, dict[str, onnx.ValueInfoProto]]] = []  # the last few models (held, so ids stay theirs)


def _inferred_types(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    for held, types in _INFERRED:
        if held is model:
            return types
    types = {vi.name: vi for vi in inferred_value_info(model)}
    _INFERRED[:] = [*_INFERRED[-3:], (model, types)]
    return types


# Initializers up to this many bytes stay in the graph shape inference reads (a Reshape's shape,
# a Slice's bounds: values it reads); larger ones go in as typed inputs.
INFER_INLINE_BYTES = 4096


def inferred_value_info(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """``onnx.shape_inference`` on ``model``'s graph with its large weights as typed inputs; [] when it fails.

    Inference on the model itself serializes every weight into ONNX's C++ and parses the
    whole model back: 1.8 s on BERT-base (0.25 s on its int8 version), and impossible past
    protobuf's 2 GB. The weights' values do not decide any type or shape, so they stay out.
    """
    g = model.graph
    light = shell(model)
    inputs = {i.name for i in g.input}
    for init in g.initializer:
        if tensor_bytes(init) <= INFER_INLINE_BYTES:
            light.graph.initializer.append(init)
        elif init.name not in inputs:  # a large weight's type and shape, without its data
            light.graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    try:
        return list(onnx.shape_inference.infer_shapes(light).graph.value_info)
    except Exception:  # noqa: BLE001 - types are a convenience; without them the cut is tried as it is
        return []


def shell(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` without its graph's initializers (every other field copied): a copy costs the graph, not the weights."""
    out = onnx.ModelProto()
    for fd, value in model.ListFields():
        if fd.name != "graph":
            _copy_field(out, fd, value)
    for fd, value in model.graph.ListFields():
        if fd.name != "initializer":
            _copy_field(out.graph, fd, value)
    return out


def _copy_field(target: Any, fd: Any, value: Any) -> None:
    if hasattr(value, "extend"):  # a repeated field (FieldDescriptor.label is gone from protobuf's upb)
        getattr(target, fd.name).extend(value)
    elif hasattr(value, "CopyFrom"):
        getattr(target, fd.name).CopyFrom(value)
    else:
        setattr(target, fd.name, value)


def sub_model(
    model: onnx.ModelProto,
    nodes: list[onnx.NodeProto],
    initializers: list[onnx.TensorProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    value_info: list[onnx.ValueInfoProto] = (),  # type: ignore[assignment]
    name: str = "",
) -> onnx.ModelProto:
    """A model holding ``nodes`` of ``model`` (same opsets and functions), filled in place so weights are copied once."""
    sub = onnx.ModelProto(ir_version=model.ir_version, producer_name=model.producer_name)
    sub.opset_import.extend(model.opset_import)
    sub.functions.extend(model.functions)
    g = sub.graph
    g.name = name or model.graph.name
    g.node.extend(nodes)
    g.initializer.extend(initializers)
    g.input.extend(inputs)
    g.output.extend(outputs)
    g.value_info.extend(value_info)
    return sub


def opset_of(model: onnx.ModelProto, default: int = 0) -> int:
    """The default-domain opset the model imports."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default)


def check_feeds_fit(onnx_model: onnx.ModelProto, feeds: dict[str, np.ndarray], onnx_path: str | None) -> None:
    """Refuse inputs whose rank, static dims or dtype the ONNX graph's inputs rule out."""
    for vi in onnx_model.graph.input:
        if vi.name not in feeds or not vi.type.HasField("tensor_type"):
            continue
        tt = vi.type.tensor_type
        arr = feeds[vi.name]
        where = f"{onnx_path} " if onnx_path else "the ONNX model "
        tip = "the ONNX file and the inputs must come from the same model" if onnx_path else "check the inputs"
        if tt.elem_type:
            want = helper.tensor_dtype_to_np_dtype(tt.elem_type)
            if np.dtype(want) != arr.dtype and not (arr.dtype == np.float32 and tt.elem_type == 16):  # bf16 is widened
                raise BadInputError(f"{where}expects input {vi.name!r} as {np.dtype(want)}, got {arr.dtype}", tip=tip)
        if tt.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
            if len(dims) != arr.ndim or any(d is not None and d != s for d, s in zip(dims, arr.shape)):
                shown = ["?" if d is None else d for d in dims]
                raise BadInputError(f"{where}expects input {vi.name!r} of shape {shown}, got {list(arr.shape)}", tip=tip)
