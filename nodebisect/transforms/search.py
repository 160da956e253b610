"""The knob searches, pure: which rules to switch off, which nodes to keep out.

Both take a predicate that applies the transformation with a knob setting,
runs the candidate and says whether it matches the reference; nothing here
knows ONNX or onnxruntime, so the searches are tested with a fake oracle.

- ``rules_to_disable``: delta debugging (Zeller's ddmin) over the tool's rule
  list: the smallest set of enabled rules that still breaks the model names the
  rule(s) at fault; switch them off and look again, until the candidate matches.
- ``keep_list``: greedy growth over candidates in the order the caller ranks
  them (the culprit and its neighbours first), in doubling steps, then
  minimization (ddmin: no kept node that is not needed), then the kept nodes
  ordered by how much each one helps (how bad the model gets without it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence, TypeVar

T = TypeVar("T")


@dataclass
class SearchCount:
    """How many times the transformation was applied and the candidate run (the search's cost)."""

    applications: int = 0
    tried: list[tuple[str, ...]] = field(default_factory=list)


@dataclass
class Budget:
    """Seconds a search may spend minimizing once it holds an answer.

    Each application of a tool can cost seconds on a large graph (``quantize_static`` on an
    875-node GPT-Neo: 6 s, most of it the quantizer's own node rewiring), and ddmin over
    a few dozen kept nodes asks for a hundred: past the budget the search keeps the answer
    it holds (a fix, checked, not the smallest) and says so (``cut``).
    """

    seconds: float = float("inf")
    started: float = field(default_factory=time.perf_counter)
    cut: bool = False  # a minimization stopped early: the answer is a fix, not the smallest

    def spent(self) -> bool:
        if time.perf_counter() - self.started > self.seconds:
            self.cut = True
            return True
        return False


def ddmin(items: Sequence[T], fails: Callable[[list[T]], bool], budget: Budget | None = None) -> list[T]:
    """A 1-minimal subset of ``items`` for which ``fails`` still holds (``fails(items)`` is assumed).

    Zeller & Hildebrandt's ddmin, complement-first; order of ``items`` is kept. Past ``budget``,
    the smallest failing subset found so far.
    """
    current = list(items)
    n = 2
    while len(current) >= 2:
        if budget is not None and budget.spent():
            break
        chunks = _split(current, n)
        reduced = False
        for chunk in chunks:
            if fails(chunk):
                current, n, reduced = chunk, 2, True
                break
        if not reduced:
            for i in range(len(chunks)):
                complement = [x for j, c in enumerate(chunks) if j != i for x in c]
                if complement and fails(complement):
                    current, n, reduced = complement, max(n - 1, 2), True
                    break
        if not reduced:
            if n >= len(current):
                break
            n = min(len(current), 2 * n)
    return current


def _split(items: list[T], n: int) -> list[list[T]]:
    size, rest = divmod(len(items), n)
    chunks, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < rest else 0)
        if end > start:
            chunks.append(items[start:end])
        start = end
    return chunks


def rules_to_disable(rules: Sequence[str], matches: Callable[[frozenset[str]], bool], max_rounds: int = 8) -> list[str] | None:
    """The smallest set of rules to switch off so that the candidate matches, or None.

    ``matches(disabled)`` applies the tool with the rules in ``disabled`` off. None:
    even with every rule off the candidate does not match (the tool's fixed part, not a rule).
    Each round isolates a minimal set of still-enabled rules that breaks the model on its own
    (ddmin) and switches the last of them off; then each switched-off rule is switched back
    on when the candidate still matches without it (rules that only broke in company).
    """
    everything = frozenset(rules)
    if matches(frozenset()):
        return []
    if not matches(everything):
        return None
    disabled: list[str] = []
    for _ in range(max_rounds):
        enabled = [r for r in rules if r not in disabled]

        def fails(subset: list[str], enabled: list[str] = enabled) -> bool:
            return not matches(everything - frozenset(subset))

        culprits = ddmin(enabled, fails) if fails(enabled) else enabled[-1:]
        disabled.append(culprits[-1])
        if matches(frozenset(disabled)):
            break
    else:
        disabled = list(rules)
    for rule in list(disabled):  # minimize: switch back on what is not needed
        trial = frozenset(d for d in disabled if d != rule)
        if len(disabled) > 1 and matches(trial):
            disabled.remove(rule)
    return disabled


def keep_list(
    ordered: Sequence[str], matches: Callable[[frozenset[str]], bool], score: Callable[[frozenset[str]], float],
    budget: Budget | None = None,
) -> list[str] | None:
    """The smallest set of nodes to keep out of the transformation, most helpful first, or None.

    ``ordered`` ranks the candidates (the culprit and its neighbours first); the kept set grows
    along it in doubling steps until the candidate matches (None when even all of them do not),
    is then minimized (ddmin), and ordered by ``score`` without each node (higher: worse
    without it, so the node helps more). Past ``budget`` the minimization and the ordering stop:
    the kept set found so far, in rank order.
    """
    if matches(frozenset()):
        return []
    kept: frozenset[str] | None = None
    size = 1
    while True:
        trial = frozenset(ordered[:size])
        if matches(trial):
            kept = trial
            break
        if size >= len(ordered):
            return None
        size = min(len(ordered), size * 2)
    members = [n for n in ordered if n in kept]
    if len(members) > 1:  # 1-minimal: no single kept node can go (ddmin: O(k log n) applications, not n)
        members = ddmin(members, lambda subset: matches(frozenset(subset)), budget)
    if len(members) == 1 or (budget is not None and budget.spent()):
        return members
    help_of = {m: score(frozenset(x for x in members if x != m)) for m in members}
    return sorted(members, key=lambda m: (-help_of[m], members.index(m)))
