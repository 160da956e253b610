"""Models past protobuf's 2 GB limit: their weights as external data, the user's model never modified.

A ``ModelProto`` over 2 GB lives in memory but cannot be serialized: onnxruntime,
the quantizer and ``onnx.save`` must get it as a file whose large initializers sit
in a data file beside it. ``onnx.save_model(save_as_external_data=True)`` would do
that by stripping the model it is given of its weights (in place), and a copy first
doubles the memory of a model that is already the largest thing in the process; so
the weights are written straight from the model's own tensors, and the file's
model is a shell (graph without initializers) plus one small external entry per
weight. ``LIMIT`` is a module constant so that a test can lower it and exercise
these paths on a small model.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from typing import IO, Any, Iterable

import onnx
from onnx import helper

from nodebisect.onnxgraph import initializer_bytes


# protobuf's 2 GB limit, with room for the graph itself (lowered by tests).
LIMIT = 2**31 - 2**26
# Initializers below this many bytes stay inside the model file.
INLINE_BYTES = 1024
# Where a large weight starts in the data file (aligned offsets let onnxruntime map weights).
ALIGN = 64


def too_large(model: onnx.ModelProto) -> bool:
    """Whether ``model`` must travel as a file with external data (its weights near or past 2 GB)."""
    return weight_bytes(model) >= LIMIT


def weight_bytes(model: onnx.ModelProto) -> int:
    """The bytes of ``model``'s in-memory weights (``onnxgraph.initializer_bytes``)."""
    return initializer_bytes(model)


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


def externalized(initializers: Iterable[onnx.TensorProto], fh: IO[bytes], location: str) -> list[onnx.TensorProto]:
    """Each large initializer's bytes appended to ``fh``, replaced by an entry pointing there (small ones as they are)."""
    out = []
    for t in initializers:
        if t.data_location == onnx.TensorProto.EXTERNAL or len(t.raw_data) < INLINE_BYTES:
            out.append(t)
            continue
        fh.write(b"\0" * ((-fh.tell()) % ALIGN))
        offset = fh.tell()
        fh.write(t.raw_data)
        entry = onnx.TensorProto(name=t.name, data_type=t.data_type, dims=list(t.dims), data_location=onnx.TensorProto.EXTERNAL)
        for key, value in (("location", location), ("offset", str(offset)), ("length", str(len(t.raw_data)))):
            item = entry.external_data.add()
            item.key, item.value = key, value
        out.append(entry)
    return out


class ModelFile:
    """``model`` written to a temporary folder as ``model.onnx`` + ``model.onnx.data``; removed by ``close()`` or with the object.

    ``graph_of``: a model whose graph to write instead of ``model``'s (the same model with
    more outputs marked, built by ``shell``); the weights are always ``model``'s.
    """

    def __init__(self, model: onnx.ModelProto, graph_of: onnx.ModelProto | None = None) -> None:
        self.dir = tempfile.mkdtemp(prefix="nodebisect-large-")
        self._finalizer = weakref.finalize(self, shutil.rmtree, self.dir, True)
        self.path = os.path.join(self.dir, "model.onnx")
        try:
            write_model(model, self.path, graph_of, durable=False)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> ModelFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def write_model(model: onnx.ModelProto, path: str | os.PathLike[str], graph_of: onnx.ModelProto | None = None, durable: bool = True) -> list[str]:
    """Write ``model`` to ``path``; past ``LIMIT`` its large weights go to ``<path>.data`` beside it.

    Returns the files written. ``model`` is not modified. ``durable``: each file atomically
    and synced (a file for the user); off for a temporary file.
    """
    from nodebisect.report.atomic import write_bytes

    def write(target: str, data: bytes) -> None:
        if durable:
            write_bytes(target, data)
        else:
            with open(target, "wb") as fh:
                fh.write(data)

    path = os.fspath(path)
    if not too_large(model) and graph_of is None:
        write(path, model.SerializeToString())
        return [path]
    out = graph_of if graph_of is not None else shell(model)
    del out.graph.initializer[:]
    data = path + ".data"
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(data)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            out.graph.initializer.extend(externalized(model.graph.initializer, fh, os.path.basename(data)))
        os.replace(tmp, data)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    write(path, out.SerializeToString())
    return [path, data]


def inferred_value_info(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """``onnx.shape_inference`` on ``model``'s graph with its large weights as typed inputs (no 2 GB limit, seconds)."""
    g = model.graph
    light = shell(model)
    inputs = {i.name for i in g.input}
    for init in g.initializer:
        if len(init.raw_data) + 4 * (len(init.float_data) + len(init.int64_data) + len(init.int32_data)) <= 4096:
            light.graph.initializer.append(init)
        elif init.name not in inputs:  # a large weight's type and shape, without its data
            light.graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    try:
        return list(onnx.shape_inference.infer_shapes(light).graph.value_info)
    except Exception:  # noqa: BLE001 - without types those values are not typed
        return []


__all__ = ["LIMIT", "ModelFile", "inferred_value_info", "shell", "too_large", "weight_bytes", "write_model"]
