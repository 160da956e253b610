"""The candidate's untouched run, started while the reference runs (``diff``'s one overlap).

``locate``'s search first runs the candidate as the user's runtime would (only its
graph outputs marked): the observer check, the run whose final outputs the verdict
rests on, since marking every value can stop onnxruntime's fusions and hide a
fusion bug. That run needs nothing from the reference: it is started in a thread
before the reference's all-values run, with the run's own onnxruntime state
(``runtime.handle.WarmOrt``: its child process, the candidate's weights file
written in the background, the kept answers), and the search then finds its
answer kept under exactly the request it makes (``runtime.answers``). Nothing is
skipped: the same session, on the same graph and feeds, only earlier. When the
request the search makes differs (an output that does not map), it simply runs
again; an error here is left for the search to meet and report.

Only where both models' weights fit in memory together several times over:
two sessions are alive at once.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from typing import Any

import numpy as np
import onnx

from nodebisect.onnx_reference.large import weight_bytes

# Both models' weights, times this, must fit in the available memory to run side by side (two sessions, their
# copies and casts of the weights, the models themselves): BERT-base yes, a model past 2 GB no.
OVERLAP_MEMORY_FACTOR = 8


class EarlyUntouched:
    """The untouched run of ``model`` in a thread; ``join()`` before the search asks for it."""

    def __init__(self, warm: Any, model: onnx.ModelProto, feeds: dict[str, np.ndarray], opts: Any) -> None:
        self._thread: threading.Thread | None = None
        self._dir = ""
        from nodebisect.runtime.observer import ObserverCheck

        warm.write_weights(model)  # the weights file every candidate session reads, written from now on
        ort = warm.handle(opts.ep, opts.opt_level, opts.isolate_crashes, opts.timeout_s, None)
        check = ObserverCheck.MAX_BYTES >= weight_bytes(model)  # the search saves its optimized graph: so do we
        if check:
            self._dir = tempfile.mkdtemp(prefix="nodebisect-early-")
        optimized = os.path.join(self._dir, "untouched.onnx") if check else None
        outputs = [o.name for o in model.graph.output]

        def run() -> None:
            try:
                ort.runner(model, feeds).run(outputs, optimized_path=optimized)
            except Exception:  # noqa: BLE001 - the search runs it again and reports what went wrong
                pass

        self._thread = threading.Thread(target=run, name="nodebisect-untouched", daemon=True)
        self._thread.start()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = ""


def worth_overlapping(reference: onnx.ModelProto, candidate: onnx.ModelProto) -> bool:
    """Whether the two sessions may be alive at once (memory)."""
    from nodebisect.prepared import memory_available

    return OVERLAP_MEMORY_FACTOR * (weight_bytes(reference) + weight_bytes(candidate)) < memory_available()


__all__ = ["EarlyUntouched", "worth_overlapping"]
