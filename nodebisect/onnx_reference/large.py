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

A run that needs the same large model as a file many times (``--transform``: the
reference's all-values run, each tool application, each diff) writes its weights once:
inside ``shared_weights(model)``, ``ModelFile(model)`` writes only a small model file beside
one shared data file.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import tempfile
import weakref
from typing import IO, Any, Iterable, Iterator

import onnx
from onnx import helper

from nodebisect.onnxgraph import initializer_bytes, shell


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


class SharedWeights:
    """``model``'s large weights written once to a temporary ``weights.data``; model files beside it point there."""

    DATA = "weights.data"

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.dir = tempfile.mkdtemp(prefix="nodebisect-weights-")
        self._finalizer = weakref.finalize(self, shutil.rmtree, self.dir, True)
        self._numbers = itertools.count()  # next() is atomic: threads get distinct file names
        try:
            with open(os.path.join(self.dir, self.DATA), "wb") as fh:
                self.entries = externalized(model.graph.initializer, fh, self.DATA)
        except BaseException:
            self.close()
            raise

    def model_file(self, graph_of: onnx.ModelProto | None = None) -> str:
        """A new model file (``graph_of``'s graph, else the model's) whose weights are the shared ones."""
        out = graph_of if graph_of is not None else shell(self.model)
        del out.graph.initializer[:]
        out.graph.initializer.extend(self.entries)
        path = os.path.join(self.dir, f"model-{next(self._numbers)}.onnx")
        with open(path, "wb") as fh:
            fh.write(out.SerializeToString())
        return path

    def close(self) -> None:
        self._finalizer()


_SHARED: dict[int, SharedWeights] = {}  # id(model) -> its shared weights, while a ``shared_weights`` block runs


@contextlib.contextmanager
def shared_weights(model: onnx.ModelProto) -> Iterator[SharedWeights | None]:
    """Within this block, every file of ``model`` (too large for protobuf) shares one weights file.

    The block holds ``model``, so its id names it until the block ends; ``model`` must not
    change inside it. Nothing happens for a model under the limit (it travels as bytes).
    """
    if not too_large(model) or id(model) in _SHARED:
        yield _SHARED.get(id(model))
        return
    shared = _SHARED[id(model)] = SharedWeights(model)
    try:
        yield shared
    finally:
        del _SHARED[id(model)]
        shared.close()


def _shared(model: onnx.ModelProto) -> SharedWeights | None:
    shared = _SHARED.get(id(model))
    return shared if shared is not None and shared.model is model else None


class ModelFile:
    """``model`` written to a temporary folder as ``model.onnx`` + ``model.onnx.data``; removed by ``close()`` or with the object.

    ``graph_of``: a model whose graph to write instead of ``model``'s (the same model with
    more outputs marked, built by ``shell``); the weights are always ``model``'s. Inside
    ``shared_weights(model)`` only the model file is written, beside the shared weights.
    """

    def __init__(self, model: onnx.ModelProto, graph_of: onnx.ModelProto | None = None) -> None:
        shared = _shared(model)
        if shared is not None:
            self.path = shared.model_file(graph_of)
            self._finalizer = weakref.finalize(self, _unlink, self.path)
            return
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


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


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


__all__ = ["LIMIT", "ModelFile", "SharedWeights", "shared_weights", "too_large", "weight_bytes", "write_model"]
