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
import shutil
import tempfile
import weakref
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from nodebisect.errors import BadInputError
from nodebisect.onnxgraph import value_infos

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
    """``model`` with every typed node output a graph output (values of unknown type are left out)."""
    types = value_infos(model)
    marked = copy.copy(model)
    marked.CopyFrom(model)
    have = {o.name for o in marked.graph.output}
    names = []
    for node in marked.graph.node:
        for o in node.output:
            if o and o not in have and o in types and types[o].type.HasField("tensor_type"):
                vi = helper.make_tensor_value_info(o, types[o].type.tensor_type.elem_type, None)
                marked.graph.output.append(vi)
                have.add(o)
                names.append(o)
    return marked, [o.name for o in marked.graph.output]


def _onnxruntime(model: onnx.ModelProto, feeds: dict[str, np.ndarray], ep: str) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    from nodebisect.runtime.runner import providers_for

    marked, names = _marked(model)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = _session(ort, marked, options, providers_for(ep))
    return dict(zip(names, session.run(names, feeds)))


def _session(ort: Any, model: onnx.ModelProto, options: Any, providers: list[str]) -> Any:
    """One session; a model over protobuf's 2 GB limit goes through a temporary file with external data."""
    if model.ByteSize() < 2**31 - 2**24:
        return ort.InferenceSession(model.SerializeToString(), options, providers=providers)
    folder = tempfile.mkdtemp(prefix="nodebisect-diff-model-")
    try:
        path = os.path.join(folder, "model.onnx")
        onnx.save_model(model, path, save_as_external_data=True, location="model.onnx.data")
        return ort.InferenceSession(path, options, providers=providers)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


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
    for i, init in enumerate(graph.initializer):
        if init.data_type == TensorProto.FLOAT:
            array = numpy_helper.to_array(init, base_dir="").astype(np.float64)
            graph.initializer[i].CopyFrom(numpy_helper.from_array(array, init.name))
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
    del graph.value_info[:]
    return wide if found else None


def exact_values(model: onnx.ModelProto, feeds: dict[str, np.ndarray], budget: int | None = None) -> tuple[Values, str]:
    """The float64 run of ``model`` (onnxruntime, else the reference evaluator), and "" or why there is none."""
    wide = as_float64(model)
    if wide is None:
        return Values(), "the reference model holds no float32 values to run in float64"
    wide_feeds = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in feeds.items()}
    errors = []
    for backend in ("cpu", "reference"):
        try:
            return all_values(wide, wide_feeds, backend, budget), ""
        except Exception as exc:  # noqa: BLE001 - some ops have no double kernel: the noise is then unknown
            errors.append(str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__)
    return Values(), f"the reference model does not run in float64 ({errors[-1]}); values are judged by fixed tolerances"
