"""Find the first node whose inclusion makes onnxruntime fail (raise, crash or hang).

Bisects over topological prefixes of the graph: prefix ``i`` holds nodes
``0..i`` and marks the values nothing inside it consumes, so every node of the
prefix is built and run. Failing is assumed monotone in ``i`` (a prefix that
fails keeps failing as nodes are added), which holds for load errors, kernel
errors and crashes tied to one node. Runs go through the runner's child process,
so a crash costs a fresh child, not nodebisect.
"""

from __future__ import annotations

from dataclasses import dataclass

from nodebisect.errors import RuntimeFailedError
from nodebisect.runtime.runner import OrtRunner


@dataclass
class FailurePoint:
    """Where onnxruntime first fails, and what it said."""

    index: int
    node: str
    error: str
    kind: str  # "raised" | "crashed" | "hung"
    runs: int


def _frontier(runner: OrtRunner, upto: int) -> list[str]:
    nodes = runner.model.graph.node[: upto + 1]
    consumed = set()
    for n in nodes:
        consumed.update(i for i in n.input if i)
    outs = [o for n in nodes for o in n.output if o and o not in consumed]
    return outs or [o for o in nodes[upto].output if o]


def _kind(exc: RuntimeFailedError) -> str:
    name = type(exc).__name__
    return {"OrtCrashed": "crashed", "OrtHung": "hung"}.get(name, "raised")


def localize_failure(runner: OrtRunner, names: list[str]) -> FailurePoint | None:
    """Binary search for the first failing prefix; ``names`` are the node names in graph order.

    Returns None when even the whole graph runs (the failure was elsewhere).
    """
    runs = 0
    errors: dict[int, RuntimeFailedError] = {}

    def fails(i: int) -> bool:
        nonlocal runs
        runs += 1
        try:
            runner.run(_frontier(runner, i))
        except RuntimeFailedError as exc:
            errors[i] = exc
            return True
        return False

    hi = len(names) - 1
    if hi < 0 or not fails(hi):
        return None
    lo = 0
    while lo < hi:
        mid = (lo + hi) // 2
        if fails(mid):
            hi = mid
        else:
            lo = mid + 1
    exc = errors[hi]
    return FailurePoint(index=hi, node=names[hi], error=exc.message, kind=_kind(exc), runs=runs)
