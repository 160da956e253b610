"""The pure search, driven by a fake oracle over hand-built and random DAGs.

The oracle knows which probes are defective; a probe is bad when it is
defective or depends on a defective probe (errors propagate). Each ``measure``
call stands for one ONNX Runtime session, so the tests count calls.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hypothesis_profiles import examples
from nodebisect.search.bisection import Bisector


class FakeGraph:
    """A DAG of probes in topological order, with a fake oracle over it."""

    def __init__(self, parents: dict[str, list[str]], defective: set[str]) -> None:
        self.order = list(parents)
        self.parents = parents
        self.defective = defective
        self.calls: list[list[str]] = []
        self.bad = {p for p in self.order if p in defective or self.ancestors(p) & defective}

    def ancestors(self, probe: str) -> set[str]:
        seen: set[str] = set()
        stack = list(self.parents[probe])
        while stack:
            p = stack.pop()
            if p not in seen:
                seen.add(p)
                stack.extend(self.parents[p])
        return seen

    def measure(self, values: list[str]) -> set[str]:
        self.calls.append(list(values))
        return {v for v in values if v in self.bad}

    def bisector(self, k: int = 1, known: dict[str, bool] | None = None) -> Bisector:
        return Bisector(
            order=self.order,
            ancestors=self.ancestors,
            inputs=lambda p: list(self.parents[p]),
            measure=self.measure,
            k=k,
            known=known,
        )

    def measured(self) -> list[str]:
        return [v for call in self.calls for v in call]


def chain(n: int, defect: int) -> FakeGraph:
    names = [f"v{i}" for i in range(n)]
    parents = {name: ([names[i - 1]] if i else []) for i, name in enumerate(names)}
    return FakeGraph(parents, {names[defect]})


def interleaved_branches(n: int, defect: int) -> FakeGraph:
    """Two independent branches a/b in alternating topological order, joined at the end.

    The defect sits early in branch b; every later a-probe is good, so a search
    over the whole order that trusts "once bad, later bad" is fooled.
    """
    parents: dict[str, list[str]] = {}
    for i in range(n):
        parents[f"a{i}"] = [f"a{i - 1}"] if i else []
        parents[f"b{i}"] = [f"b{i - 1}"] if i else []
    parents["join"] = [f"a{n - 1}", f"b{n - 1}"]
    return FakeGraph(parents, {f"b{defect}"})


def plain_binary_search(graph: FakeGraph, target: str) -> str:
    """Textbook bisection over the whole order: first index whose probe is bad."""
    order = graph.order[: graph.order.index(target) + 1]
    lo, hi = 0, len(order) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if graph.measure([order[mid]]):
            hi = mid
        else:
            lo = mid + 1
    return order[hi]


def log2_bound(n: int) -> int:
    return math.ceil(math.log2(n)) + 4


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize(
    ("n", "defect"),
    [
        pytest.param(2, 0, id="n2-first"),
        pytest.param(17, 0, id="n17-first"),
        pytest.param(17, 16, id="n17-last"),
        pytest.param(64, 31, id="n64-middle"),
        pytest.param(1000, 1, id="n1000-second"),
        pytest.param(1000, 777, id="n1000-late"),
    ],
)
def test_chain_finds_the_defect_in_log_sessions(n: int, defect: int, k: int) -> None:
    graph = chain(n, defect)
    target = graph.order[-1]
    found = graph.bisector(k=k, known={target: True}).locate(target)
    assert found == f"v{defect}"
    assert len(graph.calls) <= log2_bound(n), graph.calls
    assert all(len(call) <= k for call in graph.calls)
    measured = graph.measured()
    assert len(measured) == len(set(measured)), "a probe was measured twice"
    assert target not in measured  # already known bad


def test_k3_uses_fewer_sessions_than_k1_on_a_long_chain() -> None:
    one, three = chain(1000, 613), chain(1000, 613)
    assert one.bisector(k=1, known={"v999": True}).locate("v999") == "v613"
    assert three.bisector(k=3, known={"v999": True}).locate("v999") == "v613"
    assert len(three.calls) < len(one.calls)


@pytest.mark.parametrize("defect", [1, 2, 5])
def test_interleaved_branches_would_fool_plain_binary_search(defect: int) -> None:
    fooled = interleaved_branches(16, defect)
    assert plain_binary_search(fooled, "join") != f"b{defect}"  # the trap is real


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("defect", [1, 2, 5, 14])
def test_interleaved_branches_are_searched_correctly(defect: int, k: int) -> None:
    graph = interleaved_branches(16, defect)
    found = graph.bisector(k=k, known={"join": True}).locate("join")
    assert found == f"b{defect}"
    assert len(graph.calls) <= log2_bound(len(graph.order)) + 2, graph.calls


def test_search_stays_inside_the_ancestor_cone() -> None:
    # A bad side branch that does not feed the target must never be blamed or measured.
    parents = {"x0": [], "y0": [], "x1": ["x0"], "y1": ["y0"], "x2": ["x1"], "y2": ["y1"]}
    graph = FakeGraph(parents, {"x1", "y0"})
    found = graph.bisector(k=1, known={"x2": True}).locate("x2")
    assert found == "x1"
    assert not {"y0", "y1", "y2"} & set(graph.measured())


def test_confirm_step_walks_up_to_a_bad_probe_with_good_inputs() -> None:
    # Binary search over out's cone (p0, p, q, m) probes q (good, a parallel input)
    # and concludes "m"; m's input p is bad, so confirmation restarts on p's cone.
    parents = {"p0": [], "p": ["p0"], "q": [], "m": ["p", "q"], "out": ["m"]}
    assert chain_free_cone_answer(parents, {"p"}, "out") == "m"
    graph = FakeGraph(parents, {"p"})
    bis = graph.bisector(k=1, known={"out": True})
    found = bis.locate("out")
    assert found == "p"
    assert bis.trace.bad["p"] and not any(bis.trace.bad[x] for x in graph.parents["p"])


def chain_free_cone_answer(parents: dict[str, list[str]], defective: set[str], target: str) -> str:
    """What the cone search alone (no confirmation) returns, on a fresh oracle."""
    graph = FakeGraph(parents, defective)
    return graph.bisector(k=1, known={target: True}).first_bad_in_cone(target)


def test_confirmation_restarts_when_the_cone_answer_has_a_bad_input() -> None:
    # Two paths into "out": a long good chain g0..g9 and a bad "b" whose own input
    # "a" is the defect. With the g's known good, the cone search jumps past a and b
    # (it trusts "once bad, later bad" over the interleaved order) and stops at out;
    # confirming out finds its bad input b and restarts there, which finds a.
    parents: dict[str, list[str]] = {"a": []}
    parents["b"] = ["a"]
    for i in range(10):
        parents[f"g{i}"] = [f"g{i - 1}"] if i else []
    parents["out"] = ["b", "g9"]
    graph = FakeGraph(parents, {"a"})
    known = {"out": True, "b": True, **{f"g{i}": False for i in range(10)}}
    bis = graph.bisector(k=1, known=known)
    cone_answer = bis.first_bad_in_cone("out")
    assert cone_answer == "out"  # the search alone is fooled ...
    assert bis.locate("out") == "a"  # ... and confirmation walks to the real culprit
    assert graph.calls == [["a"]]


def test_known_results_cost_no_session() -> None:
    graph = chain(8, 3)
    known = {f"v{i}": i >= 3 for i in range(8)}
    assert graph.bisector(k=3, known=known).locate("v7") == "v3"
    assert graph.calls == []


@st.composite
def random_dag(draw: st.DrawFn) -> tuple[dict[str, list[str]], str]:
    n = draw(st.integers(min_value=2, max_value=40))
    parents: dict[str, list[str]] = {}
    for i in range(n):
        earlier = [f"n{j}" for j in range(i)]
        picks = draw(st.lists(st.sampled_from(earlier), max_size=3, unique=True)) if earlier else []
        parents[f"n{i}"] = picks
    defect = draw(st.sampled_from(list(parents)))
    return parents, defect


@settings(max_examples=examples(150), deadline=None)
@given(dag=random_dag(), k=st.sampled_from([1, 2, 3]))
def test_random_dags_single_defect_is_found(dag: tuple[dict[str, list[str]], str], k: int) -> None:
    parents, defect = dag
    graph = FakeGraph(parents, {defect})
    # The target: any bad probe (the defect itself or something downstream of it).
    target = max(graph.bad, key=graph.order.index)
    found = graph.bisector(k=k, known={target: True}).locate(target)
    assert found == defect
    measured = graph.measured()
    assert len(measured) == len(set(measured))
    assert set(measured) <= graph.ancestors(target) | {target}
