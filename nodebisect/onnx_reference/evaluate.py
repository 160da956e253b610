"""Every intermediate value of an ONNX model on one set of feeds, in onnxruntime or ONNX's reference evaluator.

The reference model is the reference: marking all its values as outputs (which
stops some of onnxruntime's fusions) is what we want here, one run for all. Values
beyond a memory budget are spilled to ``.npy`` files and memory-mapped, as
``locate`` does with PyTorch's activations. ``as_float64`` makes the same model in
double precision: its values are each float value's exact answer (natural noise).
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import tempfile
import weakref
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from nodebisect.errors import BadInputError
from nodebisect.onnxgraph import initializer_bytes

REFERENCE_BACKENDS = ("cpu", "cuda", "reference")


class Values(dict):
    """name -> array; arrays past ``budget`` bytes live in ``.npy`` files, memory-mapped (removed with the object)."""

    def __init__(self, budget: int | None = None) -> None:
        super().__init__()
        self.budget = budget
        self.held = 0
        self.spilled = 0
        self.folder = ""

    def keep(self, name: str, array: np.ndarray) -> None:
        array = np.asarray(array)
        if self.budget is not None and self.held + array.nbytes > self.budget and array.nbytes > 0:
            if not self.folder:
                self.folder = tempfile.mkdtemp(prefix="nodebisect-diff-")
                weakref.finalize(self, shutil.rmtree, self.folder, True)
            path = os.path.join(self.folder, f"{len(self)}.npy")
            np.save(path, array)
            self[name] = np.load(path, mmap_mode="r")
            self.spilled += array.nbytes
            return
        self.held += array.nbytes
        self[name] = array


def all_values(model: onnx.ModelProto, feeds: dict[str, np.ndarray], backend: str, budget: int | None = None) -> Values:
    """Every node output of ``model`` (and its graph inputs) on ``feeds``, by value name."""
    if backend not in REFERENCE_BACKENDS:
        raise BadInputError(f"unknown reference backend {backend!r}", tip="use --reference-ep cpu, cuda or reference")
    out = Values(budget)
    for name, array in feeds.items():
        out.keep(name, array)
    got = _evaluator(model, feeds) if backend == "reference" else _onnxruntime(model, feeds, backend)
    for name, array in got.items():
        out.keep(name, array)
    return out


def _marked(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """``model`` with every typed node output a graph output (values of unknown type are left out).

    A model past protobuf's limit is marked without its weights (``onnxgraph.shell``): the
    session reads them from the file ``large.ModelFile`` writes, never from a copy.
    """
    from nodebisect.onnx_reference.large import too_large
    from nodebisect.onnxgraph import shell

    types = element_types(model)
    if too_large(model):
        marked = shell(model)
    else:
        marked = onnx.ModelProto()
        marked.CopyFrom(model)
    have = {o.name for o in marked.graph.output}
    for node in marked.graph.node:
        for o in node.output:
            if o and o not in have and o in types:
                marked.graph.output.append(helper.make_tensor_value_info(o, types[o], None))
                have.add(o)
    return marked, [o.name for o in marked.graph.output]


def element_types(model: onnx.ModelProto) -> dict[str, int]:
    """Each value's element type; shape inference runs on the graph without its large weights (seconds, not minutes)."""
    g = model.graph
    known = {vi.name: vi.type.tensor_type.elem_type for vi in list(g.value_info) + list(g.output) + list(g.input) if vi.type.HasField("tensor_type")}
    if all(o in known for n in g.node for o in n.output if o):
        return known
    from nodebisect.onnxgraph import inferred_value_info

    inferred = inferred_value_info(model)  # the graph without its large weights
    return {**{vi.name: vi.type.tensor_type.elem_type for vi in inferred if vi.type.HasField("tensor_type")}, **known}


def _onnxruntime(model: onnx.ModelProto, feeds: dict[str, np.ndarray], ep: str) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    from nodebisect.runtime.runner import providers_for

    marked, names = _marked(model)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = _session(ort, model, marked, options, providers_for(ep))
    return dict(zip(names, session.run(names, feeds)))


def _session(ort: Any, model: onnx.ModelProto, marked: onnx.ModelProto, options: Any, providers: list[str]) -> Any:
    """One session of ``marked`` (``model`` with its values marked); past protobuf's 2 GB limit through a
    temporary file whose weights, ``model``'s, sit beside it as external data."""
    from nodebisect.onnx_reference.large import ModelFile, too_large

    if not too_large(model):
        return ort.InferenceSession(marked.SerializeToString(), options, providers=providers)
    with ModelFile(model, graph_of=marked) as file:
        return ort.InferenceSession(file.path, options, providers=providers)


def _evaluator(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    with np.errstate(all="ignore"):  # numpy warns on the very NaN and overflow a diff looks for
        evaluator = ReferenceEvaluator(model)
        results = evaluator.run(None, feeds, intermediate=True)
    return {k: np.asarray(v) for k, v in results.items() if k not in feeds and isinstance(v, np.ndarray | np.generic)}


def as_float64(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """``model`` computing in double: float initializers, inputs, outputs, Casts and constants widened.

    None when the model holds no float32 value (nothing to widen) or uses a type the
    widening cannot keep consistent (float16 or bfloat16 tensors).
    """
    wide = onnx.ModelProto()
    wide.CopyFrom(model)
    graph = wide.graph
    found = False
    for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
        tt = vi.type.tensor_type
        if tt.elem_type in (TensorProto.FLOAT16, TensorProto.BFLOAT16):
            return None
        if tt.elem_type == TensorProto.FLOAT:
            tt.elem_type = TensorProto.DOUBLE
            found = True
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT:
            array = numpy_helper.to_array(init, base_dir="").astype(np.float64)
            del init.float_data[:]
            init.data_type = TensorProto.DOUBLE
            init.raw_data = array.tobytes()  # in place: a copy per weight costs seconds on BERT-base
            found = True
        elif init.data_type in (TensorProto.FLOAT16, TensorProto.BFLOAT16):
            return None
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type in ("Cast", "CastLike", "RandomNormal", "RandomUniform", "EyeLike") and attr.name in ("to", "dtype") and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.DOUBLE
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
                attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float64), attr.t.name))
            if node.op_type == "ConstantOfShape" and attr.name == "value" and attr.t.data_type == TensorProto.FLOAT:
                attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float64), attr.t.name))
    return wide if found else None


# Ops onnxruntime has no double kernel for are computed in float32 inside the float64 run, at most this many kinds.
MAX_NARROWED_OPS = 8
# The reference evaluator (pure numpy, slow) stands in for onnxruntime's float64 run only below this model size.
EVALUATOR_MAX_BYTES = 64 * 1024 * 1024
# Ops known to lack a double kernel in onnxruntime's CPU provider (a failed session costs as much as a run).
KNOWN_FLOAT_ONLY = {"Erf"}
# The float64 run holds the widened weights (2x) and onnxruntime's copy of them (2x): skipped past free memory.
WIDE_MEMORY_FACTOR = 4
_NO_KERNEL = re.compile(r"implementation for (\w+)\(")


def exact_values(model: onnx.ModelProto, feeds: dict[str, np.ndarray], budget: int | None = None) -> tuple[Values, str]:
    """The float64 run of ``model``, and "" or why there is none.

    onnxruntime first; an op it has no double kernel for (Erf, some activations) is
    computed in float32 between two Casts, so the rest of the model stays exact (the
    noise of those ops is then float32's, which only loosens the judgement there). The
    reference evaluator stands in only for small models: it is pure numpy.
    """
    from nodebisect.prepared import memory_available

    from nodebisect.onnx_reference.large import weight_bytes

    if WIDE_MEMORY_FACTOR * weight_bytes(model) > memory_available():
        return Values(), f"the reference's {weight_bytes(model) / 2**30:.1f} GiB of weights do not fit in memory again in float64; values are judged by fixed tolerances"
    wide = as_float64(model)
    if wide is None:
        return Values(), "the reference model holds no float32 values to run in float64"
    wide_feeds = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in feeds.items()}
    error = ""
    narrowed: list[str] = []
    for op in sorted(KNOWN_FLOAT_ONLY & {n.op_type for n in wide.graph.node}):  # no double kernel: skip the failing session
        narrowed.append(op)
        wide = _in_float32(wide, op)
    for _ in range(MAX_NARROWED_OPS + 1):
        try:
            return all_values(wide, wide_feeds, "cpu", budget), ""
        except Exception as exc:  # noqa: BLE001 - some ops have no double kernel
            error = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            missing = _NO_KERNEL.search(str(exc))
            if missing is None or missing.group(1) in narrowed:
                break
            narrowed.append(missing.group(1))
            wide = _in_float32(wide, missing.group(1))
    if initializer_bytes(model) <= EVALUATOR_MAX_BYTES:
        try:
            return all_values(as_float64(model), wide_feeds, "reference", budget), ""  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - the evaluator lacks some ops (com.microsoft)
            error = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
    return Values(), f"the reference model does not run in float64 ({error}); values are judged by fixed tolerances"


def _in_float32(model: onnx.ModelProto, op_type: str) -> onnx.ModelProto:
    """``model`` (float64) with every ``op_type`` node computed in float32 between Casts."""
    types = element_types(model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = []
    added: list[str] = []

    def is_double(name: str) -> bool:
        return types.get(name) == TensorProto.DOUBLE

    for node in out.graph.node:
        if node.op_type != op_type:
            nodes.append(node)
            continue
        for i, x in enumerate(node.input):
            if x and is_double(x):
                nodes.append(helper.make_node("Cast", [x], [f"{x}__f32_{node.name}_{i}"], to=TensorProto.FLOAT))
                node.input[i] = f"{x}__f32_{node.name}_{i}"
                added.append(node.input[i])
        after = []
        for i, o in enumerate(node.output):
            if o and is_double(o):
                node.output[i] = f"{o}__f32"
                added.append(node.output[i])
                after.append(helper.make_node("Cast", [f"{o}__f32"], [o], to=TensorProto.DOUBLE))
        nodes += [node] + after
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    # Typed, so reading the model's types needs no shape inference (minutes on a large model).
    out.graph.value_info.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in added)
    return out
