"""Explain a culprit value: its cause, its segment ordered by evidence, and its verified repro.

``explain``: the value the search stopped at -> ``FirstDivergent``; ``follow_to_source``:
an inherited culprit -> the upstream value wrong on its own; ``verified_repro``: the
smallest window that still fails -> ``ReproData``. Runs the culprit's local subgraph on reference inputs (isolate), a one-level
wider window when it looks inherited, onnxruntime's optimizers when they are to
blame (fusions), and PyTorch's own decomposition of the op (decomposition).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from nodebisect.diagnose.isolate import Isolation, LocalGraph, context_check, isolate_value, local_graph
from nodebisect.prepared import Prepared
from nodebisect.records import (
    CAUSE_CONVERSION,
    CAUSE_INHERITED,
    CAUSE_OPTIMIZER,
    CAUSE_RUNTIME,
    DIVERGED,
    Comparison,
    FirstDivergent,
    LocateResult,
    Stage,
)
from nodebisect.prepared import ReproData
from nodebisect.run import Options, RunLog
from nodebisect.runtime.handle import Ort
from nodebisect.values.graphmap import GraphMap
from nodebisect.values.noise import WITHIN_NOISE


def explain(
    culprit: str,
    gm: GraphMap,
    prep: Prepared,
    comparisons: dict[str, Comparison],
    opts: Options,
    log: RunLog,
    ort: Ort,
) -> FirstDivergent:
    """Cause and segment of ``culprit`` (an ONNX value that is bad while its mapped inputs are good)."""
    from nodebisect.diagnose.casts import lossy_cast_evidence
    from nodebisect.diagnose.tail import born_evidence
    from nodebisect.diagnose.suspects import rank_suspects

    t = log.stage("isolate the culprit")
    carrier = gm.producer[culprit]
    fx_name = gm.mapped[culprit]
    local = local_graph(prep.onnx_model, gm, culprit)
    iso = isolate_value(local, culprit, gm, prep, opts, ort)
    if iso.cause == CAUSE_INHERITED:
        iso = context_check(iso, culprit, gm, prep, opts, ort)
    fusion = _blame_fusion(iso, culprit, prep, fx_name, opts, log, ort) if iso.cause == CAUSE_OPTIMIZER else {}
    log.timings["isolate"] = time.perf_counter() - t
    seg_key = gm.segment_of[carrier]
    segment = [n for n in gm.segments.get(seg_key, [carrier]) if n in local.nodes or n == carrier]
    reference = prep.acts
    evidence = _decomposition_evidence(local, carrier, gm, prep, iso, gm.refs[carrier].fx_node or fx_name)
    evidence += reference.weight_evidence(gm, prep.onnx_model, list(dict.fromkeys(segment + local.nodes)))
    reference_inputs = {v: prep.acts.values[gm.mapped[v]] for v in local.inputs if v in gm.mapped}
    evidence += lossy_cast_evidence(gm, local.nodes, {**prep.feeds, **reference_inputs, **iso.internal})
    evidence += born_evidence(gm, segment, carrier, culprit, iso.internal)  # past a pass-through tail (Casts)
    suspects = rank_suspects(gm, prep.onnx_model, segment, carrier, reference.ops(), iso.nan_source, extra=local.nodes, evidence=evidence)
    ordered = [s.onnx_node for s in suspects]
    ref = gm.refs[carrier]
    if not ref.fx_node:  # a node the exporter made (a Cast its optimizer inserted): ask the reference
        ref = reference.describe(fx_name)
    stage = {CAUSE_RUNTIME: Stage.RUNTIME, CAUSE_OPTIMIZER: Stage.RUNTIME_OPTIMIZER}.get(iso.cause, Stage.CONVERSION)
    m = comparisons[culprit].metrics
    noise: dict[str, float] = {}
    if iso.cause == CAUSE_CONVERSION and m.criterion == WITHIN_NOISE:  # may be rounding: measure the op alone
        noise = reference.op_alone(fx_name, iso.internal.get(culprit))
    return FirstDivergent(
        onnx_node=carrier,
        op_type=gm.nodes[carrier].op_type,
        onnx_value=culprit,
        stage=stage,
        cause=iso.cause,
        segment=ordered,
        segment_op_types=[gm.nodes[n].op_type for n in ordered],
        framework=ref,
        metrics=comparisons[culprit].metrics,
        suspects=suspects,
        isolated_metrics=iso.metrics,
        input_values=list(gm.mapped_inputs(culprit)),
        optimizer=fusion,
        op_noise=noise,
        checks=iso.checks,
    )


def _decomposition_evidence(
    local: LocalGraph, carrier: str, gm: GraphMap, prep: Prepared, iso: Isolation, fx_name: str
) -> list[tuple[str, float, str]]:
    """Where the ONNX lowering leaves PyTorch's own decomposition of the culprit's op.

    ``fx_name`` is the carrier's FX node: from the exporter's metadata, or, for a
    carrier the exporter's optimizer made (a Cast it inserted, no metadata), the FX
    node its value is mapped to, so such a lowering is not left without evidence.
    """
    from nodebisect.diagnose.decomposition import MAX_SEGMENT_NODES, departure_points, guarded_later

    op = prep.acts.op(fx_name) if fx_name else None
    if op is None or len(local.nodes) < 2 or len(local.nodes) > MAX_SEGMENT_NODES or not iso.internal:
        return []
    try:
        candidates = prep.acts.intermediates(fx_name)
    except Exception:  # noqa: BLE001 - evidence only; many ops have no decomposition
        return []
    good = set(local.inputs) | gm.initializers
    for n in local.nodes:
        if gm.nodes[n].op_type == "Constant":
            good.update(o for o in gm.nodes[n].output if o)
    values = {**prep.feeds, **iso.internal}
    entries = departure_points(
        local.nodes,
        *_wiring(local, gm),
        carrier,
        values,
        guarded_later(candidates, prep.acts.values.get(fx_name)),
        good,
    )
    target = gm.refs[carrier].target or op.target
    if not entries:  # no internal value matches PyTorch's decomposition: try the counterfactual
        return _repair_evidence(local, carrier, gm, prep, iso, candidates, target)
    out = []
    for rank, name in enumerate(entries):
        if rank == 0:
            out.append((name, 0.88, f"first node to leave PyTorch's own decomposition of {target}: its inputs match PyTorch intermediates, its output matches none"))
        else:
            out.append((name, 0.5, f"also leaves PyTorch's decomposition of {target}, downstream of {entries[0]}"))
    return out


def _wiring(local: LocalGraph, gm: GraphMap) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Input and output value names per node of the local subgraph (empty names dropped)."""
    return (
        {n: [i for i in gm.nodes[n].input if i] for n in local.nodes},
        {n: [o for o in gm.nodes[n].output if o] for n in local.nodes},
    )


def _repair_evidence(
    local: LocalGraph, carrier: str, gm: GraphMap, prep: Prepared, iso: Isolation, candidates: list[Any], target: str
) -> list[tuple[str, float, str]]:
    """The node whose output, replaced by PyTorch's own intermediate, makes the culprit right."""
    from nodebisect.diagnose.decomposition import dropped_right_value, repaired_by
    from nodebisect.values.compare import agreeing, compare, resolve_tolerance

    value = next(o for o in gm.nodes[carrier].output if o in gm.mapped)
    fx_name = gm.mapped[value]
    expected, dtype = prep.acts.values[fx_name], prep.acts.dtypes.get(fx_name)
    feeds = {n: prep.feeds[n] if n in prep.feeds else prep.acts.values[gm.mapped[n]] for n in local.inputs}
    # Graph order, so the earliest repairing node leads: when the only PyTorch value is the op's
    # own output (atan2 decomposes to one prim), every node on the path to the carrier that
    # selects it "repairs" the op, and the first of them is where the lowering goes wrong.
    internal = {v: iso.internal[v] for v in local.internal_values if v in iso.internal and v != value}
    fixed = [v for v in repaired_by(local.model, value, feeds, internal, candidates, lambda got: compare(value, got, expected, dtype=dtype).ok) if v in gm.producer]
    out = []
    got = iso.internal.get(value)
    if fixed and got is not None and got.shape == expected.shape:
        # The per-element rule and dtype tolerance of the compare() above: the elements it calls wrong.
        wrong = ~agreeing(got, expected, resolve_tolerance(str(dtype or expected.dtype)))
        hit = dropped_right_value(
            local.nodes,
            *_wiring(local, gm),
            {**feeds, **iso.internal},
            expected,
            wrong,
            dtype,
        )
        if hit is not None:
            node, held = hit
            source = f" (from {gm.producer[held]})" if held in gm.producer else ""
            reason = f"at the {int(wrong.sum())} element(s) where {target} is wrong, its input {held}{source} holds PyTorch's value and its output does not"
            cond = gm.nodes[node].input[0] if gm.nodes[node].op_type == "Where" else ""
            if cond in gm.producer:
                reason += f": it picks the other branch, so its condition ({gm.producer[cond]}, {gm.nodes[gm.producer[cond]].op_type}) is wrong there"
            out.append((node, 0.92, reason))
    for rank, v in enumerate(fixed):
        reason = f"replacing its output by PyTorch's own intermediate (the decomposition of {target}) makes the op right"
        out.append((gm.producer[v], 0.9 if rank == 0 else 0.5, reason + (": this node computes something else" if rank == 0 else f", as downstream of {gm.producer[fixed[0]]}")))
    return out


def _blame_fusion(iso: Isolation, culprit: str, prep: Prepared, fx_name: str, opts: Options, log: RunLog, ort: Ort) -> dict[str, Any]:
    """Name the onnxruntime level and optimizer that make the culprit's window wrong."""
    from nodebisect.runtime.fusions import blame_optimizer
    from nodebisect.values.compare import compare

    if iso.model is None:
        return {}
    expected, dtype = prep.acts.values[fx_name], prep.acts.dtypes.get(fx_name)
    try:
        blame = blame_optimizer(
            iso.model,
            iso.feeds,
            culprit,
            lambda got: compare(culprit, got, expected, opts.rtol, opts.atol, dtype).ok,
            ort,
        )
    except Exception as exc:  # noqa: BLE001 - a refinement; the cause stands without it
        log.note(f"could not single out the onnxruntime optimizer: {str(exc).splitlines()[0][:160]}")
        return {}
    if blame is None:
        return {}
    log.extra_sessions += blame.sessions
    return {"level": blame.level, "optimizer": blame.optimizer}


def follow_to_source(
    outcome: Any,
    fd: FirstDivergent,
    prep: Prepared,
    opts: Options,
    log: RunLog,
    ort: Ort,
) -> FirstDivergent:
    """An inherited culprit only amplifies drift: look upstream for the value that is wrong on its own.

    Every mapped value of the culprit's ancestor cone is recomputed from PyTorch's
    own inputs in one teacher-forced session (``diagnose.source``); the earliest one
    that is locally wrong is the source. Without one, the drift is genuine and the
    inherited answer stands.
    """
    from nodebisect.diagnose.source import local_errors

    gm, culprit = outcome.gm, fd.onnx_value
    ancestors = gm.ancestors(culprit)
    # The culprit itself too: a defect only the noise criterion sees is right under the fixed tolerance alone.
    cone = [v for v in outcome.probes if v in ancestors] + [culprit]
    log.stage("follow the drift to its source")

    try:
        errors = local_errors(prep.onnx_model, gm, prep.acts, prep.feeds, cone, ort.counted_run)
    except Exception as exc:  # noqa: BLE001 - a refinement: the inherited answer stands without it
        log.note(f"could not recompute the culprit's inputs from PyTorch's values: {str(exc).splitlines()[0][:160]}")
        return fd
    source = next((v for v in cone if errors[v].wrong), None)
    cone_errors = {gm.producer[v]: errors[v].max_abs for v in cone if v in gm.producer}  # every node alone, for the overlays
    if source is None:
        return replace(fd, cone_errors=cone_errors)
    err = errors[source]
    found = fd if source == culprit else explain(source, gm, prep, outcome.comparisons, opts, log, ort)
    changes: dict[str, Any] = {"local_error": {"rel_l2": err.rel_l2, "max_abs": err.max_abs, "limit": err.limit, "floor": err.floor},
                               "cone_errors": cone_errors}
    if source != culprit:
        changes["amplifiers"] = [fd.onnx_node] + [a for a in fd.amplifiers if a != fd.onnx_node]
        changes["checks"] = replace(found.checks, amplified_at=f"{fd.onnx_node} ({fd.op_type})")
    if found.cause == CAUSE_INHERITED:  # right alone under the tolerance, yet far beyond rounding: a small conversion defect
        changes.update(cause=CAUSE_CONVERSION, stage=Stage.CONVERSION)
    return replace(found, **changes)


def verified_repro(
    fd: FirstDivergent, gm: GraphMap, prep: Prepared, opts: Options, log: RunLog, ort: Ort
) -> tuple[ReproData, dict[str, Any]]:
    """The smallest window ending at the culprit that still fails on PyTorch's values (``repro_check``).

    Returns the repro and the worst element there (its inputs, the window's small constants),
    for the pipeline to put on the culprit.
    """
    from nodebisect.diagnose.repro_check import reproducing_window

    check = reproducing_window(prep.onnx_model, gm, fd.onnx_value, prep, opts, ort)
    log.extra_sessions += check.sessions
    return check.repro, check.worst


def refined(result: LocateResult, prep: Prepared, opts: Options, log: RunLog, ort: Ort) -> LocateResult:
    """``prep.refine`` on the result; a culprit it names anew (diff: the quantized node whose error stands
    out, where the search saw only drift) gets its own verified repro, as a searched culprit does."""
    from nodebisect.values.graphmap import build_graph_map

    before = result.first_divergent.onnx_value if result.first_divergent is not None else ""
    result = prep.refine(result)
    fd = result.first_divergent
    if fd is None or result.verdict != DIVERGED or result.repro is not None or fd.onnx_value == before:
        return result
    try:
        gm = build_graph_map(prep.onnx_model, prep.acts.values, prep.acts.outputs, refs=prep.refs)
        repro, worst = verified_repro(fd, gm, prep, opts, log, ort)
    except Exception as exc:  # noqa: BLE001 - the culprit stands without its repro; say why there is none
        log.note(f"no repro bundle for {fd.onnx_node}: {type(exc).__name__}: {str(exc)[:200]}")
        return result
    result.repro = repro
    result.first_divergent = replace(fd, worst=worst or fd.worst)
    return result

