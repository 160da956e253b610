"""WHERE the ONNX graph first departs: the untouched run, then ``all`` or ``bisect``.

Returns the culprit value (bad, with every mapped input good) and everything
measured on the way; it does not explain the culprit (``diagnose`` does) and
never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nodebisect.errors import RuntimeFailedError
from nodebisect.prepared import Prepared, memory_available
from nodebisect.records import Comparison, Step
from nodebisect.run import Options, RunLog
from nodebisect.search.bisection import Bisector
from nodebisect.values.graphmap import GraphMap, build_graph_map
from nodebisect.values.masks import output_masks
from nodebisect.search.prober import Prober

if TYPE_CHECKING:
    from nodebisect.runtime.handle import Ort

# `auto` marks every mapped value at once while the reference activations stay
# small enough that holding ORT's copies beside them is harmless.
AUTO_ALL_MAX_BYTES = 256 * 1024 * 1024
AUTO_ALL_MAX_PROBES = 4000


@dataclass
class SearchOutcome:
    """What the search measured and where it stopped."""

    gm: GraphMap
    prober: Prober
    strategy: str
    probes: list[str]
    outputs: list[str]
    bad_outputs: list[str] = field(default_factory=list)
    culprit: str | None = None  # ONNX value: bad, its mapped inputs good
    failure: RuntimeFailedError | None = None  # onnxruntime could not run the untouched graph

    @property
    def comparisons(self) -> dict[str, Comparison]:
        return self.prober.comparisons

    @property
    def steps(self) -> list[Step]:
        return self.prober.steps


def map_graph(prep: Prepared) -> GraphMap:
    """Index the ONNX graph against the reference activations."""
    return build_graph_map(prep.onnx_model, prep.acts.values, prep.acts.outputs, refs=prep.refs)


def choose_strategy(opts: Options, gm: GraphMap, acts: Any, probes: list[str]) -> str:
    """``auto``: ``all`` while every marked value fits easily in free memory, else ``bisect``."""
    if opts.strategy != "auto":
        return opts.strategy
    total = sum(acts.values[gm.mapped[p]].nbytes for p in probes)
    # ORT hands every marked value back at once: that copy must fit easily in free memory.
    limit = min(AUTO_ALL_MAX_BYTES, memory_available() // 8)
    return "all" if total <= limit and len(probes) <= AUTO_ALL_MAX_PROBES else "bisect"


def search(prep: Prepared, gm: GraphMap, opts: Options, log: RunLog, ort: Ort) -> SearchOutcome:
    """Run the untouched graph, then the chosen strategy, to the first divergent value.

    ``ort``: the run's onnxruntime handle (EP, optimization level, child process).
    """
    from nodebisect.runtime.observer import ObserverCheck

    runner = ort.runner(prep.onnx_model, prep.feeds)
    # Fixed bounds the user asked for (--rtol/--atol) are judged as fixed bounds, unless --oracle on.
    prober = Prober(runner, gm, prep.acts, opts, log, oracle=prep.oracle if opts.judges_noise() else {})
    probes = gm.probes()
    outputs = [o.name for o in prep.onnx_model.graph.output if o.name in gm.mapped]
    prober.masks = output_masks(prep.feeds, {o: prep.acts.values[gm.mapped[o]].shape for o in outputs})
    strategy = choose_strategy(opts, gm, prep.acts, probes)
    outcome = SearchOutcome(gm, prober, strategy, probes, outputs)
    log.stage(f"run onnxruntime ({strategy})")
    # The untouched graph first: what the user's runtime really computes.
    observe = ObserverCheck(prep.onnx_model)
    try:
        untouched_bad = observe.run(prober.measure, outputs, "untouched")
    except RuntimeFailedError as exc:
        observe.note()
        outcome.failure = exc
        return outcome
    probes_per_step = opts.probes_per_step
    if strategy == "all":
        probes_per_step = _mark_all(prober, observe, probes, outputs, untouched_bad, log)
    fusion_note = observe.note()
    if fusion_note:
        log.note(fusion_note)
    outcome.bad_outputs = [o for o in outputs if not prober.comparisons[o].ok]
    if outcome.bad_outputs:
        outcome.culprit = _bisect(outcome, probes_per_step, log)
    return outcome


def _mark_all(prober: Prober, observe: Any, probes: list[str], outputs: list[str], untouched_bad: set[str], log: RunLog) -> int:
    """One session marking every value; falls back to one probe per session if marking changed the outputs."""
    untouched = {o: prober.comparisons[o] for o in outputs}
    observe.run(prober.measure, list(dict.fromkeys(probes + outputs)), "probed")
    probed_bad = {o for o in outputs if not prober.comparisons[o].ok}
    probes_per_step = prober.opts.probes_per_step
    if probed_bad != untouched_bad:
        log.note(
            "observer effect: marking every value as an output changed the final outputs "
            f"(diverging untouched: {sorted(untouched_bad) or 'none'}; with probes: {sorted(probed_bad) or 'none'}); "
            "the untouched run is what counts, and the search continues with few probes per session"
        )
        for v in probes:
            prober.comparisons.pop(v, None)
        probes_per_step = 1  # each marked value can break a fusion: mark as few as possible
    prober.comparisons.update(untouched)
    return probes_per_step


def cone_bisector(gm: GraphMap, probes: list[str], measure: Any, k: int, known: dict[str, bool]) -> Bisector:
    """A ``Bisector`` over the mapped probes, walking each value's ancestor cone."""
    probe_set = set(probes)
    return Bisector(
        order=probes,
        ancestors=lambda v: (a for a in gm.ancestors(v) if a in probe_set),
        inputs=gm.mapped_inputs,
        measure=measure,
        k=k,
        known=known,
    )


def earliest(gm: GraphMap, values: list[str]) -> str:
    """The value produced first in graph order."""
    return min(values, key=lambda v: gm.position[gm.producer[v]])


def _bisect(outcome: SearchOutcome, probes_per_step: int, log: RunLog) -> str:
    """The first divergent value in the cone of the earliest bad output."""
    gm, prober = outcome.gm, outcome.prober
    target = earliest(gm, outcome.bad_outputs)
    known = {v: not c.ok for v, c in prober.comparisons.items()}
    bisector = cone_bisector(gm, outcome.probes, prober.measure, probes_per_step, known)
    probe_set = set(outcome.probes)
    cone = sum(1 for a in gm.ancestors(target) if a in probe_set and a not in prober.comparisons) + 1
    log.expect_steps(len(prober.steps), cone, max(1, probes_per_step))
    log.stage("bisect")
    return bisector.locate(target)
