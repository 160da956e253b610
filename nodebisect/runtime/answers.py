"""onnxruntime answers already computed, kept by exactly what was asked.

A prepared model searched again under another tolerance or strategy (the TUI's
re-run) asks onnxruntime the same questions: the untouched graph, every value
marked, the culprit's windows. The key holds everything that decides an answer:
the bytes of the (prefix) model, which weights file it reads, the bytes of the
feeds it reads, the values asked for, the providers, the optimization level and
the optimizers switched off. onnxruntime asked the same gives the same arrays, so
a kept answer stands for a session; callers count it as one (the result's session
counts stay what the search and the diagnosis asked for).

Kept arrays are read-only: every later reader shares them. Where a run saved the
graph onnxruntime optimized (the observer-effect guard), the file is kept too and
copied back for the request that asks for it again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import weakref
from typing import Any, Iterable

import numpy as np

# Bytes of answers kept at most; later answers are computed again.
ANSWERS_MAX_BYTES = 512 * 1024 * 1024


class Answers:
    """Arrays onnxruntime returned, by request key; ``hits`` counts the requests they answered."""

    def __init__(self, max_bytes: int = ANSWERS_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self._kept: dict[bytes, tuple[list[np.ndarray], str | None]] = {}
        self._dir = ""
        self._finalizer: Any = None

    @staticmethod
    def key(
        source: bytes,
        weights_token: int,
        feeds: dict[str, np.ndarray],
        inputs: Iterable[str],
        outputs: list[str],
        providers: list[str],
        opt_level: str,
        disabled_optimizers: tuple[str, ...] = (),
    ) -> bytes:
        """The digest of one request (``inputs``: the graph inputs the model reads)."""
        h = hashlib.blake2b(source, digest_size=20)
        h.update(repr((weights_token, list(outputs), list(providers), opt_level, list(disabled_optimizers))).encode())
        for name in sorted(set(inputs)):
            if name in feeds:
                arr = np.asarray(feeds[name])
                h.update(repr((name, str(arr.dtype), arr.shape)).encode())
                if arr.dtype.kind == "O":
                    h.update(repr(arr.tolist()).encode())
                else:
                    h.update(np.ascontiguousarray(arr).reshape(-1).view(np.uint8))
        return h.digest()

    def get(self, key: bytes, optimized_path: str | None = None) -> list[np.ndarray] | None:
        """The kept answer (its optimized graph copied to ``optimized_path`` when asked), or None."""
        kept = self._kept.get(key)
        if kept is None:
            return None
        arrays, graph = kept
        if optimized_path:
            if graph is None:
                return None  # the first run did not save its optimized graph: run again to save it
            shutil.copyfile(graph, optimized_path)
        self.hits += 1
        return arrays

    def put(self, key: bytes, arrays: list[Any], optimized_path: str | None = None) -> list[np.ndarray]:
        """Keep ``arrays`` (read-only from now on) when they fit; returns them as numpy arrays."""
        out = [np.asarray(a) for a in arrays]
        size = sum(a.nbytes for a in out)
        if self.bytes + size > self.max_bytes:
            return out
        graph = None
        if optimized_path and os.path.exists(optimized_path):
            graph = os.path.join(self._folder(), f"optimized_{len(self._kept)}.onnx")
            shutil.copyfile(optimized_path, graph)
        for a in out:
            a.flags.writeable = False
        self._kept[key] = (out, graph)
        self.bytes += size
        return out

    def clear(self) -> None:
        """Drop every kept answer and file."""
        self._kept.clear()
        self.bytes = 0
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer, self._dir = None, ""

    def _folder(self) -> str:
        if not self._dir:
            self._dir = tempfile.mkdtemp(prefix="nodebisect-answers-")
            self._finalizer = weakref.finalize(self, shutil.rmtree, self._dir, True)
        return self._dir
