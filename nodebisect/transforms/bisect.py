"""``--transform NAME``: apply a known transformation, then search its knobs for the fix.

1. name the reference's unnamed nodes (a copy: the tools' keep-lists match names);
2. run the reference once, every value (headroom, the first departing node);
3. apply the tool as-is; does its candidate match? ``nodebisect.diff`` says (``DiffAnswer``:
   node by node, each value within what the candidate's precision explains, masked
   positions apart), so the transformation's verdict is the diff's; without it, the
   final outputs under the precision's tolerance (``judge``) say;
4. if not: the rules to switch off (``search.rules_to_disable``) or the nodes to keep
   out (``search.keep_list``, the first departing node and its neighbours first), each
   setting judged on final outputs (``judge``: one run, not a diff); for float16, when
   no keep-list helps, the constants the conversion changes;
5. apply the answer afresh, run it, and check it matches (``rechecked``: by diff again
   when diff judged the candidate); write both candidates to the output folder.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx

from nodebisect.transforms.search import Budget, keep_list, rules_to_disable
from nodebisect.transforms.evaluate import run_outputs, run_values
from nodebisect.transforms.judge import PRECISION_TOLERANCE, Judge, relative_error
from nodebisect.transforms.record import TransformRecord
from nodebisect.transforms.registry import Transform, lookup, named_copy


MAX_CONSTANTS = 5  # the constants named when no keep-list helps: those the culprit reads first, then the most changed
# diff finds a departure the final outputs keep within the precision's limit: a fix must at least halve their error.
TARGET_FRACTION = 0.5
# Seconds the keep-list search may spend minimizing a fix it holds (--transform-budget): a sweep's model
# gets 900 s in all, and one application of quantize_static on an 875-node graph takes 6 s.
SEARCH_BUDGET_S = 240.0


@dataclass(frozen=True)
class DiffAnswer:
    """What ``nodebisect.diff`` says of a candidate: where it departs, and whether it does.

    ``departs`` is None when diff could not compare (an optimizer renamed too much to
    map); the final outputs decide then. A divergence only at positions a mask input
    excludes does not depart unless the user asked for ``--strict-masked``.
    """

    culprit: dict[str, str] = field(default_factory=dict)  # the first departing reference node: node, op_type, value
    departs: bool | None = None


DiffOracle = Callable[[onnx.ModelProto, onnx.ModelProto], DiffAnswer]


class _Attempts:
    """Each knob setting applied and run once (the searches ask again for the same setting)."""

    def __init__(self, spec: Transform, reference: onnx.ModelProto, feeds: dict[str, Any], judge: Judge, ep: str,
                 cancel: Callable[[], bool] | None, child: Any = None) -> None:
        self.spec, self.reference, self.feeds, self.judge, self.ep = spec, reference, feeds, judge, ep
        self.cancel, self.child = cancel, child
        self.scores: dict[frozenset[str], float] = {}
        self.models: dict[frozenset[str], onnx.ModelProto] = {}
        self.runs = 0  # candidates run (an application the tool refuses runs nothing)

    def score(self, knob: frozenset[str]) -> float:
        if knob not in self.scores:
            if self.cancel is not None and self.cancel():
                from nodebisect.errors import CancelledError

                raise CancelledError("cancelled during the --transform search")
            model, step = None, "apply"
            try:
                model = self.spec.apply(self.reference, knob, self.feeds)
                step, self.runs = "run", self.runs + 1
                self.scores[knob] = self.judge.score(run_outputs(model, self.feeds, self.ep, child=self.child))
            except Exception as exc:  # noqa: BLE001 - a knob setting the tool or onnxruntime refuses does not match
                if not knob:  # the tool as it comes: nothing to search
                    raise _plain_failure(self.spec, step, exc) from None
                self.scores[knob] = float("inf")
            if not knob:
                self.models[knob] = model
        return self.scores[knob]

    def matches(self, knob: frozenset[str]) -> bool:
        return self.score(knob) <= self.judge.limit


def transform_and_bisect(
    reference: onnx.ModelProto,
    name: str,
    feeds: dict[str, np.ndarray],
    out_dir: str | Path | None = None,
    *,
    ep: str = "cpu",
    tolerance: float | None = None,
    cancel: Callable[[], bool] | None = None,
    culprit_of: DiffOracle | None = None,
    isolate_crashes: bool = True,
    strict_masked: bool = False,
    progress: Callable[[Any], None] | None = None,
    budget_s: float = SEARCH_BUDGET_S,
) -> TransformRecord:
    """Apply ``name`` to ``reference`` and, when its candidate departs, find and check the fix.

    ``culprit_of(reference, candidate)``: ``nodebisect.diff``'s answer (``DiffAnswer``), asked of
    the candidate as the tool makes it (the verdict, and where the keep-list search starts) and of
    the fixed candidate (the re-check). Without it (or when it names none) the first node whose
    output departs while its inputs do not, by value name, is the start, and the final outputs
    decide. ``isolate_crashes``: the candidates run in onnxruntime's child process (a knob setting
    that crashes onnxruntime does not match). ``strict_masked``: judge the final outputs at the
    positions a mask input excludes too. ``progress``: takes ``run.Event`` (the search's stage line).
    ``budget_s``: seconds the keep-list search may spend minimizing (``search.Budget``).
    """
    from nodebisect.onnx_reference.large import shared_weights
    from nodebisect.runtime.sandbox import OrtChild

    ref, named = named_copy(reference)
    child = OrtChild() if isolate_crashes else None
    try:
        with shared_weights(ref):  # past 2 GB: the reference's weights written once for every run and application
            return _transform_and_bisect(ref, len(named), name, feeds, out_dir, ep, tolerance, cancel, culprit_of, child, strict_masked, progress,
                                         budget_s)
    finally:
        if child is not None:
            child.close()


def _transform_and_bisect(
    ref: onnx.ModelProto, named: int, name: str, feeds: dict[str, np.ndarray], out_dir: str | Path | None, ep: str,
    tolerance: float | None, cancel: Callable[[], bool] | None, culprit_of: DiffOracle | None, child: Any,
    strict_masked: bool, progress: Callable[[Any], None] | None, budget_s: float = SEARCH_BUDGET_S,
) -> TransformRecord:
    start = time.perf_counter()
    spec = lookup(name)
    adapter = spec.adapter()
    _check_converts(spec, ref)
    values = run_values(ref, feeds, ep)
    expected = {o.name: values[o.name] for o in ref.graph.output}
    judge = Judge.for_feeds(expected, feeds, spec.precision, tolerance, strict_masked)
    attempts = _Attempts(spec, ref, feeds, judge, ep, cancel, child)
    record = TransformRecord(name=spec.label, tool=spec.tool, version=spec.version(), knob=spec.knob_name,
                             precision=spec.precision, limit=judge.limit, named_nodes=named,
                             masked_outputs=sorted(judge.keep), budget_s=budget_s)
    record.score = attempts.score(frozenset())
    record.matched = record.score <= judge.limit
    plain = attempts.models.get(frozenset())
    if spec.impl == "fp16":
        record.headroom = adapter.headroom(values, _producers(ref))
    answer = culprit_of(ref, plain) if plain is not None and culprit_of is not None else DiffAnswer()
    record.culprit = dict(answer.culprit)
    if answer.departs is not None:  # the verdict is diff's, node by node; the outputs' score stays as a fact
        record.judged_by = "diff"
        # a tolerance the user gave binds the outputs too: both must hold
        record.matched = not answer.departs and (tolerance is None or record.matched)
        if answer.departs and record.score <= judge.limit:  # a departure the outputs keep within the limit
            attempts.judge = judge = Judge(expected, spec.precision, record.score * TARGET_FRACTION, judge.keep)
            record.target = judge.limit
    if plain is not None and not record.matched and not record.culprit:
        attempts.runs += 1
        record.culprit = first_departing(ref, values, _safe_values(plain, feeds, ep), judge.limit)
    if not record.matched:
        if progress is not None:
            from nodebisect.run import Event

            progress(Event(kind="stage", message=f"search {spec.tool}'s {spec.knob_name} for the fix"))
        _search(spec, adapter, ref, attempts, record)
    if not record.matched and not record.fixable and spec.knob != "rules" and plain is not None and culprit_of is not None:
        _search_from_first_departing(spec, adapter, ref, attempts, record, values, plain, feeds, ep)
    knob = frozenset(record.keep_nodes or record.rules)
    rechecks = 0
    if not record.matched and record.fixable:
        rechecks = 1
        fixed = spec.apply(ref, knob, feeds)  # afresh: the answer is checked by applying it
        record.recheck_score = judge.score(run_outputs(fixed, feeds, ep, child=child))
        record.rechecked = record.recheck_score <= judge.limit
        if record.rechecked and record.judged_by == "diff" and culprit_of is not None:
            record.rechecked = culprit_of(ref, fixed).departs is False  # the verdict's judge says it matches too
        record.tool_kwargs = adapter.knob_kwargs(record.keep_nodes or record.rules, ref, spec)
        if out_dir is not None:
            record.fixed_candidate = _write(out_dir, "fixed_candidate.onnx", fixed)
    if out_dir is not None and plain is not None:
        record.candidate = _write(out_dir, "candidate.onnx", plain)
    record.applications = len(attempts.scores) + rechecks
    record.candidate_runs = attempts.runs + rechecks
    record.seconds = round(time.perf_counter() - start, 3)
    return record


def _check_converts(spec: Transform, ref: onnx.ModelProto) -> None:
    """A float16 or int8 conversion of a reference whose weights are float16 already is bad input (exit 2).

    The float16 converters would change nothing (onnxconverter-common refuses, onnxruntime's
    copy passes it through) and onnxruntime.quantization writes DynamicQuantizeLinear on float16
    values, which onnxruntime rejects: none of that is the tool's defect.
    """
    from nodebisect.errors import BadInputError

    if spec.precision not in ("float16", "int8"):
        return
    kinds = {t.data_type for t in ref.graph.initializer}
    if onnx.TensorProto.FLOAT16 in kinds and onnx.TensorProto.FLOAT not in kinds:
        raise BadInputError(
            f"--transform {spec.label} converts a float32 model, and this reference's weights are float16 already",
            tip="give the float32 model (export it before .half() or torch_dtype=float16)",
        )


def failed_record(name: str, error: Any) -> TransformRecord:
    """The record of a transformation that could not be judged (``error``: the ``NodebisectError`` it raised).

    ``locate --transform`` keeps locate's verdict and says this beside it, instead of losing both.
    """
    spec = lookup(name)
    return TransformRecord(name=spec.label, tool=spec.tool, version=spec.version(), knob=spec.knob_name, precision=spec.precision,
                           limit=PRECISION_TOLERANCE[spec.precision], fixable=False, failed=error.message, failed_tip=error.tip,
                           failed_exit=int(error.exit_code))


def _plain_failure(spec: Transform, step: str, exc: Exception) -> Exception:
    """The tool as it comes failed: it refused the reference (exit 2), or it wrote a model onnxruntime
    cannot load or run (exit 4, ``runtime_failed``: the tool's defect, as an export onnxruntime rejects
    is the exporter's; the user's model and inputs are fine, so not bad input)."""
    from nodebisect.errors import BadInputError, RuntimeFailedError

    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    if step == "apply":
        return BadInputError(f"{spec.tool} could not apply --transform {spec.label} to the reference: {first}")
    tool = f"{spec.tool} {spec.version()}".strip()  # no version when the distribution's metadata is missing
    return RuntimeFailedError(
        f"the candidate {tool} makes with --transform {spec.label} does not run in onnxruntime: {first}",
        tip=f"the reference runs, so the tool wrote an invalid model: report it to {spec.tool} with the reference model"
        + ("; meanwhile --transform fp16-ort (onnxruntime's copy of the converter) converts many such models" if spec.name == "fp16" else ""),
    )


def _search_from_first_departing(
    spec: Transform, adapter: Any, ref: onnx.ModelProto, attempts: _Attempts, record: TransformRecord,
    values: dict[str, Any], plain: onnx.ModelProto, feeds: dict[str, Any], ep: str,
) -> None:
    """No keep-list grew from diff's culprit: grow one from the first node whose values depart at all.

    diff names where the candidate goes wrong beyond its precision (a NaN born at a Div from
    zeros); the values may have left the reference's further up, where float16 rounded them
    to zero, within what float16 must do there. Keeping the culprit's readers along with it
    can stop a keep-list that works (onnxconverter-common still casts a kept node's output
    through float16 when the model lists it in value_info), so the search starts again there.
    """
    attempts.runs += 1
    start = first_departing(ref, values, _safe_values(plain, feeds, ep), record.limit)
    if not start or start.get("node") == record.culprit.get("node"):
        return
    record.fixable, constants = True, record.unfixable_constants
    record.unfixable_constants = []
    _search(spec, adapter, ref, attempts, record, start=start.get("node", ""))
    if not record.fixable:
        record.unfixable_constants = constants  # said from diff's culprit, as before


def _search(spec: Transform, adapter: Any, ref: onnx.ModelProto, attempts: _Attempts, record: TransformRecord, start: str = "") -> None:
    items = spec.candidates(ref)
    record.candidates = len(items)
    if spec.knob == "rules":
        disabled = rules_to_disable(items, attempts.matches)
        if disabled is None:
            record.fixable = False
            return
        record.rules, record.rule = disabled, disabled[0] if disabled else ""
        if spec.name == "onnxscript" and adapter.FOLDING in disabled:
            _folded_node(adapter, ref, attempts, record)
        return
    order = rank_candidates(ref, items, start or record.culprit.get("node", ""), record.headroom)
    budget = Budget(record.budget_s or float("inf"))
    keep = keep_list(order, attempts.matches, attempts.score, budget)
    record.minimized = not budget.cut
    if keep is None:
        record.fixable = False
        if spec.impl == "fp16":
            record.unfixable_constants = _constants_no_keep_list_saves(adapter, ref, frozenset(order), record.culprit.get("node", ""), spec.name)
        return
    record.keep_nodes = keep


def _folded_node(adapter: Any, ref: onnx.ModelProto, attempts: _Attempts, record: TransformRecord) -> None:
    """Constant folding is at fault: which node's folding (folding stays on for the others)?"""
    others = frozenset(r for r in record.rules if r != adapter.FOLDING)
    nodes = rules_to_disable(adapter.fold_items(ref), lambda unfolded: attempts.matches(others | unfolded))
    if not nodes:
        return
    by_name = {n.name: n for n in ref.graph.node}
    record.rules = [r for r in record.rules if r != adapter.FOLDING] + nodes
    record.rule = adapter.FOLDING
    record.folded = [{"node": n, "op_type": by_name[n].op_type, "value": by_name[n].output[0]} for n in (x.removeprefix(adapter.FOLD) for x in nodes)]


def rank_candidates(model: onnx.ModelProto, candidates: list[str], culprit: str, headroom: list[dict[str, Any]]) -> list[str]:
    """The culprit, its neighbours, then the nodes whose values overflow float16, then graph order."""
    allowed = set(candidates)
    producer = _producers(model)
    by_name = {n.name: n for n in model.graph.node}
    readers: dict[str, list[str]] = {}
    for node in model.graph.node:
        for value in node.input:
            readers.setdefault(value, []).append(node.name)
    first: list[str] = []
    if culprit in by_name:
        node = by_name[culprit]
        first = [culprit] + [producer[v] for v in node.input if v in producer] + [r for v in node.output for r in readers.get(v, [])]
    first += [row["node"] for row in headroom if row.get("kind") == "over_range"]
    ordered = [n for n in dict.fromkeys(first + candidates) if n in allowed]
    return ordered


def first_departing(model: onnx.ModelProto, reference: dict[str, Any], candidate: dict[str, Any], limit: float) -> dict[str, str]:
    """The first node (graph order) whose output departs while its inputs do not (else the first departing)."""
    fallback: dict[str, str] = {}
    for node in model.graph.node:
        outs = [relative_error(candidate[v], reference[v]) for v in node.output if v in candidate and v in reference]
        if not outs or max(outs) <= limit:
            continue
        ins = [relative_error(candidate[v], reference[v]) for v in node.input if v in candidate and v in reference]
        found = {"node": node.name, "op_type": node.op_type, "value": node.output[0]}
        if not ins or max(ins) <= limit:
            return found
        fallback = fallback or found
    return fallback


def _constants_no_keep_list_saves(adapter: Any, ref: onnx.ModelProto, kept: frozenset[str], culprit: str, tool: str) -> list[dict[str, Any]]:
    """The constants the conversion changes even with every candidate kept, read near the culprit first."""
    rows = adapter.changed_constants(ref, kept, tool)
    return sorted(rows, key=lambda r: (culprit not in r.get("readers", []), -abs(r["after"] - r["before"]) / max(abs(r["before"]), 1e-30)))[:MAX_CONSTANTS]


def _safe_values(model: onnx.ModelProto, feeds: dict[str, Any], ep: str) -> dict[str, Any]:
    try:
        return run_values(model, feeds, ep)
    except Exception:  # noqa: BLE001 - the culprit is a refinement; the outputs already decided
        return {}


def _producers(model: onnx.ModelProto) -> dict[str, str]:
    return {v: n.name for n in model.graph.node for v in n.output}


def _write(out_dir: str | Path, filename: str, model: onnx.ModelProto) -> str:
    """Atomically; a model past protobuf's 2 GB with its weights in ``<filename>.data`` beside it."""
    from nodebisect.onnx_reference.large import write_model

    path = Path(out_dir) / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    write_model(model, path)
    return str(path)
