"""``diff``: the first node where an ONNX model departs from the ONNX model it was derived from.

The numbered steps: 1. read both models; 2. the same inputs for both; 3. the
reference's every value; 4. map the candidate's values onto them (refuse when too
little maps); 5. the reference as the candidate holds it (``precision``), with exact
answers (a float64 run of the reference unless the candidate is reduced precision); 6. ``locate``'s search and diagnosis on a ``PreparedModel`` of the
candidate; 7. the culprit in diff's words (``defects``).
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import replace
from typing import Any

import numpy as np
import onnx

from nodebisect.errors import BadInputError
from nodebisect.onnx_reference.large import too_large
from nodebisect.onnxgraph import initializer_bytes, shell
from nodebisect.records import LocateResult
from nodebisect.run import Event, RunLog

# Share of the available memory the reference's values may hold before spilling to disk.
MEMORY_SHARE = 4
# --trials: the given inputs again at these magnitudes (an overflow or an underflow the first set does not reach).
TRIAL_SCALES = (10.0, 0.1, 100.0)
# At most this share of a candidate's float values at full precision: the float32 reference is its exact answer.
FULL_PRECISION_SHARE = 0.1


def diff(
    reference: Any,
    candidate: Any,
    inputs: Any = None,
    *,
    ep: str = "cpu",
    reference_ep: str = "cpu",
    trials: int = 0,
    report: Any = None,
    log: Any = None,
    input_specs: list[str] | None = None,
    seed: int = 0,
    **options: Any,
) -> LocateResult:
    """Compare ``candidate`` (optimized, fused, float16, quantized, on another EP) with ``reference``.

    Args:
        reference / candidate: paths or ``onnx.ModelProto``; the same file twice with
            ``ep`` != ``reference_ep`` is the EP-vs-EP case.
        inputs: dict name -> array, an .npz path, or None (``input_specs``, else random draws).
        ep: the candidate's onnxruntime execution provider ("cpu", "cuda").
        reference_ep: "cpu" / "cuda" (onnxruntime) or "reference" (``onnx.reference.ReferenceEvaluator``).
        trials: more random input sets (each searched; the first divergence is the answer).
        report: a folder to write report.md, report.json and repro/ into.
        log: a progress callback (``nodebisect.Event``) or a ``RunLog`` whose notes get the run's.
        **options: ``locate``'s search options (rtol, atol, strategy, isolate_crashes, timeout_s, memory_budget), and
            ``made_by``: the tool that made the candidate, when the caller knows it (``--transform``): named in the
            report instead of what the candidate's producer_name or its graph suggests.

    Returns:
        The ``LocateResult``; ``stats["mapping"]`` holds the coverage. Raises
        ``BadInputError`` (exit 2) when the models are unrelated or the inputs do not fit.
    """
    started = time.perf_counter()
    options = dict(options)
    made_by = str(options.pop("made_by", "") or "")
    emit = log.emit if isinstance(log, RunLog) else (log or (lambda _e: None))
    ref_model, ref_name = read_model(reference, "reference")
    cand_model, cand_name = read_model(candidate, "candidate")
    if reference_ep == ep and same_model(ref_model, cand_model, (ref_name, cand_name)):
        raise BadInputError(
            f"the candidate is the reference, run on the same backend ({ep}): there is nothing to compare",
            tip="give the transformed model as CANDIDATE, or compare backends: --ep cuda, or --reference-ep reference",
        )
    results, scales = [], [1.0] + [TRIAL_SCALES[(k - 1) % len(TRIAL_SCALES)] for k in range(1, max(trials, 1))]
    base: dict[str, np.ndarray] | None = None
    for index, scale in enumerate(scales):
        given, specs = (inputs, input_specs) if index == 0 else (_scaled(base or {}, scale), None)
        if index:
            emit(Event(kind="stage", message=f"trial {index}: the inputs x{scale:g}"))
        result = _diff_once(ref_model, cand_model, given, specs, seed, ep, reference_ep, dict(options), emit, (ref_name, cand_name), made_by)
        base = base if base is not None else result.stats["diff"].pop("feeds")
        result.stats["diff"].pop("feeds", None)
        results.append(result)
        if result.verdict != "match":
            break
    result = results[-1]
    if len(scales) > 1:  # which input sets were compared, and what each found
        result.stats["trials"] = [{"scale": s, "verdict": r.verdict, "culprit": r.first_divergent.onnx_node if r.first_divergent else ""} for s, r in zip(scales, results)]
    result.stats["seconds"] = round(time.perf_counter() - started, 3)
    if isinstance(log, RunLog):
        log.notes.extend(result.notes)
    if report is not None:
        from nodebisect.report.bundle import write_report

        write_report(result, report)
    return result


def read_model(model: Any, role: str) -> tuple[onnx.ModelProto, str]:
    """An ``onnx.ModelProto`` (its nodes topologically sorted) and how to name it; a missing or unreadable file is bad input."""
    from nodebisect.onnxgraph import topologically_sorted

    if isinstance(model, onnx.ModelProto):
        return topologically_sorted(model), f"<{role} ModelProto>"
    path = os.fspath(model)
    if not os.path.isfile(path):
        raise BadInputError(f"{role} model not found: {path}", tip="give the path of an .onnx file")
    try:
        loaded = onnx.load(path)
    except Exception as exc:  # noqa: BLE001 - protobuf and external-data errors alike
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise BadInputError(f"cannot read the {role} model {path}: {first}", tip="give an ONNX model file (.onnx), its external data beside it") from None
    return topologically_sorted(loaded, owned=True), path


def _diff_once(
    ref_model: onnx.ModelProto, cand_model: onnx.ModelProto, inputs: Any, specs: list[str] | None, seed: int,
    ep: str, reference_ep: str, options: dict[str, Any], emit: Any, names: tuple[str, str], made_by: str = "",
) -> LocateResult:
    from nodebisect.onnx_reference.early import EarlyUntouched, worth_overlapping
    from nodebisect.onnx_reference.evaluate import all_values
    from nodebisect.onnx_reference.inputs import both_feeds
    from nodebisect.prepared import memory_available
    from nodebisect.run import make_options
    from nodebisect.runtime.handle import WarmOrt

    timings: dict[str, float] = {}
    t = time.perf_counter()
    # 2. the same inputs for both, each in its own dtypes
    ref_feeds, cand_feeds = both_feeds(ref_model, cand_model, inputs, specs, seed)
    mib = options.pop("memory_budget", None)
    budget = int(mib * 2**20) if mib else memory_available() // MEMORY_SHARE
    opts = make_options({"ep": ep, **options})
    warm = WarmOrt(isolate_crashes=opts.isolate_crashes, timeout_s=opts.timeout_s)  # the candidate's onnxruntime side, for the search
    early = None
    try:
        # 3. every reference value; the candidate's untouched run meanwhile (the search's first question,
        # joined just before the search: the mapping and the reference's casts overlap its end too)
        early = EarlyUntouched(warm, cand_model, cand_feeds, opts) if worth_overlapping(ref_model, cand_model) else None
        emit(Event(kind="stage", message=f"run the reference ({reference_ep})"))
        try:
            values = all_values(ref_model, ref_feeds, reference_ep, budget)
        except BadInputError:
            raise
        except Exception as exc:  # noqa: BLE001 - the reference must run: say so in one line
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise BadInputError(f"the reference model does not run on {reference_ep}: {first}", tip="check the model with onnx.checker, or try --reference-ep reference") from None
        timings["reference"] = time.perf_counter() - t
        return _compare(ref_model, cand_model, values, (ref_feeds, cand_feeds), budget, opts, warm, inputs, specs, seed, reference_ep, emit, names,
                        timings, made_by, early)
    finally:
        if early is not None:
            early.join()  # (idempotent) before its child process is closed
        warm.close()


def _compare(
    ref_model: onnx.ModelProto, cand_model: onnx.ModelProto, values: Any, feeds: tuple[dict[str, np.ndarray], dict[str, np.ndarray]],
    budget: int, opts: Any, warm: Any, inputs: Any, specs: list[str] | None, seed: int, reference_ep: str, emit: Any,
    names: tuple[str, str], timings: dict[str, float], made_by: str = "", early: Any = None,
) -> LocateResult:
    """Steps 4-7 on the reference's values: map, the reference in the candidate's terms, the search, diff's words.

    ``early``: the candidate's untouched run still going (``EarlyUntouched``), joined before the search asks for it.
    """
    from nodebisect.onnx_reference.defects import in_diff_terms, producer_of
    from nodebisect.onnx_reference.evaluate import exact_values
    from nodebisect.onnx_reference.mapping import map_candidate, related
    from nodebisect.onnx_reference.precision import model_reference
    from nodebisect.onnxgraph import node_keys, opset_of
    from nodebisect.pipeline import PreparedModel, locate
    from nodebisect.prepared import Prepared
    from nodebisect.report.diff_wording import in_reference_terms

    ref_feeds, cand_feeds = feeds
    ep = opts.ep
    # 4. map the candidate's values onto the reference's
    mapping = map_candidate(ref_model, cand_model, values)
    if not related(mapping) or not any(o.name in mapping.to_reference for o in cand_model.graph.output):
        raise BadInputError(
            f"too little of the reference maps onto the candidate to judge ({mapping.stats['covered']} of {mapping.stats['reference_values']} "
            f"reference values, {mapping.stats['shared_names']:.0%} of its names): the candidate does not look derived from the reference",
            tip="diff compares a model with its own optimized, float16, quantized or re-targeted version; check the order REFERENCE CANDIDATE",
        )
    # 5. the reference as the candidate holds it: its dtypes, its precision's tolerance
    order = [o for _, n in node_keys(cand_model) for o in n.output if o]
    acts, precision = model_reference(mapping, values, {}, cand_model, order)
    acts.kind = "ONNX's reference evaluator" if reference_ep == "reference" else f"onnxruntime {reference_ep}"
    t = time.perf_counter()
    why = _exact_answers(acts, mapping, values, precision, lambda: exact_values(ref_model, ref_feeds, budget))
    timings["reference_float64"] = time.perf_counter() - t
    mapping.stats["precision"] = {p: sum(1 for v in precision.values() if v == p) for p in sorted(set(precision.values()))}
    same_file = same_model(ref_model, cand_model, names)
    producer = made_by or producer_of(cand_model, ref_model)
    env = _environment(ep, reference_ep, names, producer, opset_of(cand_model, 0), same_file)
    env["run_inputs"] = {"inputs_file": os.fspath(inputs) if isinstance(inputs, (str, os.PathLike)) else None, "input_specs": specs, "seed": seed}
    notes = [f"no float64 run of the reference: {why}"] if why else []
    if values.spilled:
        notes.append(f"reference values beyond {budget / 2**20:.0f} MiB ({values.spilled / 2**20:.0f} MiB) were spilled to disk and memory-mapped")
    refs = {name: acts.describe(next((o for o in n.output if o in mapping.to_reference), "")) if any(o in mapping.to_reference for o in n.output) else _unmapped()
            for name, n in node_keys(cand_model)}

    def refine(result: LocateResult) -> LocateResult:  # 7. diff's words: overflow, NaN born, a constant changed, quantization
        return in_diff_terms(result, cand_model, ref_model, mapping, values, producer, same_file, acts)

    prep = Prepared(onnx_model=cand_model, acts=acts, flat_inputs=list(cand_feeds.values()), feeds=cand_feeds, refs=refs,
                    mapping_quality=mapping.stats, notes=notes, opset=opset_of(cand_model, 0), refine=refine)
    prepared = PreparedModel(opts=opts, source=names[1], environment=env, prep=prep, notes=list(notes), timings=timings, warm=warm)
    # 6. locate's search and diagnosis, unchanged
    if early is not None:
        early.join()
    result = locate(prepared, progress=emit)
    result.notes = [in_reference_terms(note) for note in result.notes]  # locate's notes speak of PyTorch
    result.stats.pop("reused_preparation", None)
    result.stats.pop("reused_ort_answers", None)
    result.stats["diff"] = {"feeds": ref_feeds, "reference": names[0], "candidate": names[1], "reference_ep": reference_ep, "ep": ep,
                            "reference_seconds": round(timings["reference"], 3), "float64_seconds": round(timings["reference_float64"], 3)}
    return result


def _scaled(feeds: dict[str, np.ndarray], scale: float) -> dict[str, np.ndarray]:
    """The float inputs times ``scale`` (integer inputs, ids and masks, as they are)."""
    return {k: (v * v.dtype.type(scale)).astype(v.dtype) if v.dtype.kind == "f" else v for k, v in feeds.items()}


def same_model(reference: onnx.ModelProto, candidate: onnx.ModelProto, names: tuple[str, str]) -> bool:
    """One model given twice (the EP-vs-EP case): the same object, the same file, or files with the same bytes."""
    if reference is candidate:
        return True
    paths = [n for n in names if os.path.isfile(n)]
    if len(paths) == 2:
        if os.path.samefile(*paths):
            return True
        if os.path.getsize(paths[0]) != os.path.getsize(paths[1]):
            return False
        with open(paths[0], "rb") as a, open(paths[1], "rb") as b:
            return a.read() == b.read()
    ref_graph, cand_graph = reference.graph, candidate.graph
    if len(ref_graph.node) != len(cand_graph.node) or initializer_bytes(reference) != initializer_bytes(candidate):
        return False  # (ModelProto.ByteSize walks the whole model: seconds on BERT-base)
    if any((a.op_type, a.input, a.output) != (b.op_type, b.input, b.output) for a, b in zip(ref_graph.node, cand_graph.node)):
        return False
    if too_large(reference):  # past protobuf's 2 GB: the graphs, then the weights one by one
        same = shell(reference).SerializeToString(deterministic=True) == shell(candidate).SerializeToString(deterministic=True)
        return same and all(a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)
                            for a, b in zip(ref_graph.initializer, cand_graph.initializer))
    return reference.SerializeToString(deterministic=True) == candidate.SerializeToString(deterministic=True)


def _exact_answers(acts: Any, mapping: Any, values: dict[str, np.ndarray], precision: dict[str, str], run_float64: Any) -> str:
    """Fill ``acts.exact`` (each value's exact answer, for its noise); "" or why there is none.

    A candidate computing (nearly) all in float16 or int8 is judged at that precision:
    the float32 reference is exact there (its own error is ~1/8000 of a float16 ulp),
    so the float64 run of the reference, as costly as the reference's own run, is
    skipped. Otherwise the float64 run gives the full-precision values their noise.
    """
    floats = [c for c, a in acts.values.items() if a.dtype.kind == "f"]
    full = [c for c in floats if c not in acts.reduced and precision.get(c) != "constant"]  # constants are exact anyway
    if len(full) <= FULL_PRECISION_SHARE * len(floats):
        acts.exact = {c: values[mapping.to_reference[c]] for c in floats}
        return ""
    exact, why = run_float64()
    acts.exact = {c: exact[mapping.to_reference[c]] for c in floats if mapping.to_reference[c] in exact}
    return why


def _unmapped() -> Any:
    from nodebisect.records import FrameworkRef

    return FrameworkRef()


def _environment(ep: str, reference_ep: str, names: tuple[str, str], producer: str, opset: int, same_file: bool) -> dict[str, Any]:
    import onnxruntime

    from nodebisect.environment import __version__

    return {
        "nodebisect": __version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
        "python": platform.python_version(), "os": f"{platform.system()} {platform.release()}", "machine": platform.machine(),
        "ep": ep, "reference_ep": reference_ep, "opset": opset, "opt_level": "all", "command": "diff",
        "reference": names[0], "candidate": names[1], "candidate_producer": producer, "same_model": same_file,
    }


__all__ = ["diff", "read_model"]
