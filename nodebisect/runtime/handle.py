"""The run's one onnxruntime handle, and what a prepared model keeps warm between runs.

``Ort`` is built once per ``locate`` by the pipeline and handed to every step that
runs onnxruntime: the execution provider, the graph optimization level, the
child process (None when crashes are not isolated) and the run log that counts
the diagnosis' sessions. Steps ask it for runners (``runner``) or for one counted
session (``counted_run``); none of them builds an ``OrtRunner`` or holds the child.

``WarmOrt`` outlives a run: owned by a ``PreparedModel`` (``pipeline``), it holds
the child process, the weights file of the model searched (written in a thread
while PyTorch captures) and the answers onnxruntime already gave, so a re-run of
the prepared model under another tolerance starts no process, writes no weights
and asks onnxruntime only what it has not asked before. ``close()`` ends it; an
unclosed one ends when it is garbage-collected or at interpreter exit.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from nodebisect.runtime.answers import Answers
from nodebisect.runtime.runner import OrtRunner, needs_weights_file
from nodebisect.runtime.sandbox import OrtChild
from nodebisect.runtime.weights import Weights

# Large models (beyond the pinned one) whose weights file is kept, most recent last.
KEPT_WEIGHTS = 2


@dataclass
class Ort:
    """EP, optimization level, child process and session counting of one run."""

    ep: str = "cpu"
    opt_level: str = "all"
    child: OrtChild | None = None
    log: Any = None  # run.RunLog: counted_run adds to its extra_sessions
    warm: WarmOrt | None = None

    def runner(self, model: Any, feeds: dict[str, np.ndarray], opt_level: str | None = None) -> OrtRunner:
        """A runner of ``model`` on ``feeds`` with the run's EP and level (or ``opt_level``)."""
        warm = self.warm
        return OrtRunner(
            model,
            feeds,
            ep=self.ep,
            opt_level=opt_level or self.opt_level,
            child=self.child,
            weights=warm.weights_for(model) if warm is not None else None,
            answers=warm.answers if warm is not None else None,
        )

    def counted_run(self, model: Any, feeds: dict[str, Any], values: list[str]) -> dict[str, np.ndarray]:
        """``values`` of ``model`` in one session, counted in ``log.extra_sessions`` (the teacher-forced
        cone, the exactness audit)."""
        runner = self.runner(model, feeds)
        got = runner.run(values)
        if self.log is not None:
            self.log.extra_sessions += runner.sessions
        return got

    def warm_up(self, model: Any) -> None:
        """Start writing the weights file of ``model``, the model the search will run (kept with the warm state)."""
        if self.warm is not None:
            self.warm.write_weights(model)

    def reused(self) -> int:
        """Requests answered so far from the kept answers (over the warm state's life)."""
        return self.warm.answers.hits if self.warm is not None else 0


class WarmOrt:
    """The onnxruntime state a prepared model keeps between runs: child, weights, answers."""

    def __init__(self, isolate_crashes: bool = True, timeout_s: float = 600.0) -> None:
        self._state = _State(OrtChild(timeout_s=timeout_s) if isolate_crashes else None)
        if self._state.child is not None:
            self._state.child.start()  # imports onnxruntime while PyTorch exports and captures
        self.answers = self._state.answers
        self._finalizer = weakref.finalize(self, self._state.close)

    @property
    def child(self) -> OrtChild | None:
        return self._state.child

    def handle(self, ep: str, opt_level: str, isolate_crashes: bool, timeout_s: float, log: Any) -> Ort:
        """The handle of one run (a re-run may change the EP, the level, the isolation, the timeout)."""
        child = None
        if isolate_crashes:
            if self._state.child is None:
                self._state.child = OrtChild(timeout_s=timeout_s)
            child = self._state.child
            child.timeout_s = timeout_s
        return Ort(ep=ep, opt_level=opt_level, child=child, log=log, warm=self)

    def write_weights(self, model: Any) -> None:
        """Start writing ``model``'s weights file in a thread, if it has one (the model to be searched)."""
        pinned = self._state.pinned
        if id(model) not in pinned and needs_weights_file(model):
            pinned[id(model)] = (model, Weights(model, background=True))

    def weights_for(self, model: Any) -> Weights | None:
        """The kept weights file of ``model``: pinned, or one of the last few large models run."""
        pinned, recent = self._state.pinned, self._state.recent
        key = id(model)  # the table holds the model, so its id stays its own
        if key in pinned:
            return pinned[key][1]
        if key not in recent:
            if not needs_weights_file(model):
                return None
            recent[key] = (model, Weights(model, by_content=True))
            while len(recent) > KEPT_WEIGHTS:
                recent.pop(next(iter(recent)))[1].close()
        return recent[key][1]

    def close(self) -> None:
        """Stop the child, remove the weights files, drop the answers (idempotent)."""
        self._finalizer()


class _State:
    """What ``WarmOrt`` owns, apart from it so that its finalizer does not keep it alive."""

    def __init__(self, child: OrtChild | None) -> None:
        self.child = child
        self.pinned: dict[int, tuple[Any, Weights]] = {}
        self.recent: dict[int, tuple[Any, Weights]] = {}
        self.answers = Answers()

    def close(self) -> None:
        if self.child is not None:
            self.child.close()
        for table in (self.pinned, self.recent):
            for _model, weights in table.values():
                weights.close()
            table.clear()
        self.answers.clear()
