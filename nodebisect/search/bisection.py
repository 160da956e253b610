"""Search for the first divergent value: a pure stepping algorithm over probe names.

No torch, no onnxruntime: the caller injects ``measure(values) -> set of bad
values`` (one ONNX Runtime session per call in practice) and the graph structure
as two functions. Tests drive it with a fake oracle.

Binary search assumes "once bad, later bad", which parallel branches break. So
the search runs over the ancestor cone of a known-bad value only, and its answer
is *confirmed*: a candidate is the culprit only if every nearest mapped input of
it is good; otherwise the search restarts on the cone of its earliest bad input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable


@dataclass
class SearchTrace:
    """What the search measured, in order (one entry per oracle call)."""

    calls: list[list[str]] = field(default_factory=list)
    bad: dict[str, bool] = field(default_factory=dict)


class Bisector:
    """Find a bad probe whose mapped inputs are all good, with few oracle calls.

    Args:
        order: probe names in topological order.
        ancestors: probe -> all probes it depends on (any order).
        inputs: probe -> its nearest mapped upstream probes.
        measure: evaluates a batch of probes and returns the bad ones; each call
            is one ONNX Runtime session, so batches matter more than their size.
        k: probes per call during the search (k=1 is binary search; k=3 splits
            the interval in four per session).
        known: results already measured (e.g. by an all-outputs run).
    """

    def __init__(
        self,
        order: list[str],
        ancestors: Callable[[str], Iterable[str]],
        inputs: Callable[[str], list[str]],
        measure: Callable[[list[str]], set[str]],
        k: int = 1,
        known: dict[str, bool] | None = None,
    ) -> None:
        self.order = order
        self.pos = {p: i for i, p in enumerate(order)}
        self.ancestors = ancestors
        self.inputs = inputs
        self.measure = measure
        self.k = max(1, k)
        self.trace = SearchTrace(bad=dict(known or {}))

    def _ensure(self, probes: list[str]) -> None:
        todo = [p for p in dict.fromkeys(probes) if p not in self.trace.bad]
        if not todo:
            return
        bad = self.measure(todo)
        self.trace.calls.append(todo)
        for p in todo:
            self.trace.bad[p] = p in bad

    def first_bad_in_cone(self, target: str) -> str:
        """Binary (k-ary) search over ``target``'s ancestor cone; ``target`` is bad."""
        cone = sorted((p for p in self.ancestors(target) if p in self.pos), key=self.pos.__getitem__)
        cone.append(target)
        lo, hi = 0, len(cone) - 1  # cone[hi] is bad; no bad index known below lo
        while lo < hi:
            width = hi - lo
            if width <= self.k:
                picks = list(range(lo, hi))
            else:
                picks = sorted({lo + (width * j) // (self.k + 1) for j in range(1, self.k + 1)})
            self._ensure([cone[i] for i in picks])
            new_hi = hi
            for i in picks:
                if self.trace.bad[cone[i]]:
                    new_hi = i
                    break
            goods = [i for i in picks if i < new_hi and not self.trace.bad[cone[i]]]
            lo = max(goods) + 1 if goods else lo
            if new_hi == hi and not goods:
                break  # cannot happen with picks inside [lo, hi); guard against loops
            hi = new_hi
            # Use what is already known inside the new interval to shrink it for free.
            while lo < hi and cone[lo] in self.trace.bad and not self.trace.bad[cone[lo]]:
                lo += 1
        return cone[hi]

    def locate(self, target: str) -> str:
        """The confirmed culprit upstream of (or equal to) the bad ``target``."""
        seen: set[str] = set()
        while True:
            candidate = self.first_bad_in_cone(target)
            parents = self.inputs(candidate)
            self._ensure(parents)
            bad_parents = [p for p in parents if self.trace.bad[p]]
            if not bad_parents or candidate in seen:
                return candidate
            seen.add(candidate)
            target = min(bad_parents, key=self.pos.__getitem__)
