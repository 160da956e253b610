"""A model's large weights written once to an aligned ``weights.bin`` that every prefix model references.

Without it each onnxruntime session re-serializes every weight it needs (0.5 s
per session on BERT-base), which makes a many-session search slower than
marking everything at once. Writing the file (2.9 s for GPT-2 small's 475 MB)
is I/O: the pipeline starts it in a thread as soon as the ONNX model exists, so
it runs while PyTorch captures, and a prepared model keeps it for its re-runs.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import tempfile
import threading
import weakref
import onnx

from nodebisect.onnxgraph import tensor_bytes

WEIGHTS_FILE = "weights.bin"
# Initializers smaller than this stay inside each prefix model.
INLINE_BYTES = 1024
_TOKENS = itertools.count(1)


class Weights:
    """The externalized initializers of one model: a folder with ``weights.bin`` and the prefix files.

    ``background``: write the file in a thread; ``light()`` waits for it.
    ``token`` tells apart the weights of two models whose graphs read alike (a kept
    answer must not serve another model's weights): unique to this object, or with
    ``by_content`` the digest of the weights written, so that the same window cut
    again in a re-run finds its answers.
    """

    def __init__(self, model: onnx.ModelProto, background: bool = False, by_content: bool = False) -> None:
        self.dir = tempfile.mkdtemp(prefix="nodebisect-ort-")
        self.token: int | bytes = next(_TOKENS)
        self._by_content = by_content
        self._finalizer = weakref.finalize(self, shutil.rmtree, self.dir, True)
        self._light: dict[str, onnx.TensorProto] = {}
        self._paths = itertools.count()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._write_or_keep_error, args=(model,), name="nodebisect-weights", daemon=True)
            self._thread.start()
        else:
            self._write(model)

    def light(self) -> dict[str, onnx.TensorProto]:
        """Initializer name -> the same tensor pointing into ``weights.bin`` (waits for a background write)."""
        self._wait()
        if self._error is not None:
            raise self._error
        return self._light

    def prefix_path(self) -> str:
        """A new file name for a prefix model (external weights resolve relative to the model's own path)."""
        return os.path.join(self.dir, f"prefix_{next(self._paths)}.onnx")

    def close(self) -> None:
        """Remove the folder now (idempotent).

        A write still running is not waited for (Ctrl-C during the capture must not wait
        for 400 MB to reach the disk): it ends writing into a removed file.
        """
        self._finalizer()

    def _wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _write_or_keep_error(self, model: onnx.ModelProto) -> None:
        try:
            self._write(model)
        except BaseException as exc:  # noqa: BLE001 - raised in the thread that needs the weights
            self._error = exc

    def _write(self, model: onnx.ModelProto) -> None:
        light: dict[str, onnx.TensorProto] = {}
        digest = hashlib.blake2b(digest_size=20) if self._by_content else None
        with open(os.path.join(self.dir, WEIGHTS_FILE), "wb") as fh:
            for t in model.graph.initializer:
                # the size from dims: each read of raw_data copies the weight, holding the GIL (the
                # reference's run waits on it when this runs in a thread beside it)
                if t.data_location == onnx.TensorProto.EXTERNAL or not t.HasField("raw_data") or tensor_bytes(t) < INLINE_BYTES:
                    continue
                data = t.raw_data
                pad = (-fh.tell()) % 64  # aligned offsets let onnxruntime map weights directly
                fh.write(b"\0" * pad)
                offset = fh.tell()
                fh.write(data)
                if digest is not None:
                    digest.update(t.name.encode() + b"\0" + data)
                entry = onnx.TensorProto(name=t.name, data_type=t.data_type, dims=list(t.dims))
                entry.data_location = onnx.TensorProto.EXTERNAL
                for key, value in (("location", WEIGHTS_FILE), ("offset", str(offset)), ("length", str(len(data)))):
                    item = entry.external_data.add()
                    item.key, item.value = key, value
                light[t.name] = entry
        self._light = light
        if digest is not None:
            self.token = digest.digest()

