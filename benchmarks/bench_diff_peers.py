"""``nodebisect diff`` against its peers on the same real cases, in one run (issue #21).

Each case is one the tests build (tests/test_diff.py's builders, tests/transform_models.py,
tests/fp16_nan_models.py's and tests/ort_fusion_models.py's torch models through the dynamo exporter), made by the real
tool, unmodified (the fused Gemm is onnxruntime's own output with its beta edited, as the
test does), plus controls: clean transformations where the right answer is "nothing". On
the same inputs, each tool is asked where the candidate departs from the reference:

  nodebisect     ``nodebisect.diff(REF, CAND, feeds)`` (the Python API, its defaults:
                 onnxruntime in a child process, as the CLI runs it)
  onnx-diagnostic  0.9.3 has no one command for two ONNX models with values: ``compare``
                 aligns them by edit distance (``ObsCompare.obs_sequence_from_model`` +
                 ``ObsComparePair.distance_sequence``, what ``python -m onnx_diagnostic compare``
                 runs), ``sbs`` needs a torch ExportedProgram. So: that alignment, each model's
                 every value from its own evaluators (``OnnxruntimeEvaluator`` node by node,
                 ``ExtendedReferenceEvaluator`` for the ONNX reference evaluator), and each aligned
                 pair compared with its ``max_diff``, flagged by ``sbs``'s rule and defaults
                 (abs <= atol and rel <= rtol, 1e-5 each) or a NaN count that differs
  Polygraphy     0.53.6, ``polygraphy run M --onnxrt --onnx-outputs mark all`` for both models
                 through its Python API (``ModifyOutputs(..., outputs=constants.MARK_ALL)``,
                 ``OnnxrtRunner``, ``Comparator.run`` on the same feeds), compared by its own
                 ``Comparator.compare_accuracy`` with its default ``CompareFunc.simple()``
                 (atol = rtol = 1e-5), which pairs outputs by name, then by substring, then by index.
                 It has no runner for ONNX's reference evaluator: for that case the evaluator's
                 values go in as a saved RunResults (its ``--load-outputs`` interop recipe).

A peer "points at" the first value it flags in the reference's graph order (neither peer
gives a verdict: that is what a user reads first), named by the node that produces it;
it names the culprit when that value is the culprit's. Then, per ``--transform`` case, what
the knob search costs: tool applications and candidate runs (``transform`` record), and
diff's own onnxruntime sessions.

One run, wall seconds (``time.perf_counter``), on whatever the machine is doing.
onnx-diagnostic's evaluators import scipy, which the venv lacks: put one on the path after the
venv's own packages (``pip install --target /tmp/scipy_pp --no-deps scipy``); without it its
column says why it has no verdict.

Usage: PYTHONPATH=.:/tmp/scipy_pp python benchmarks/bench_diff_peers.py [--out DIR] [--only CASE ...] [--no-transform]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import fp16_nan_models as nan_models  # noqa: E402 - the tests' torch models (torch imported when one is built)
import ort_fusion_models as fusion_models  # noqa: E402

ATOL = RTOL = 1e-5  # onnx-diagnostic sbs's defaults; Polygraphy's CompareFunc.simple() defaults are the same


@dataclass
class Case:
    name: str
    reference: Path
    candidate: Path
    feeds: dict[str, np.ndarray]
    culprit: set[str]  # node and value names (reference or candidate) that are the culprit
    what: str
    reference_ep: str = "cpu"  # "reference": ONNX's reference evaluator
    loose: float = 1e-4  # a user's tolerance for the candidate's precision (float16 1e-2, int8 1e-1): the peers' second try


@dataclass
class Answer:
    tool: str
    seconds: float = 0.0
    points_at: str = "nothing"
    hit: bool = False
    detail: str = ""
    flagged: int = 0  # values flagged in all
    compared: int = 0
    error: str = ""
    loose: str = ""  # what it points at with the case's loose tolerance (the same values re-thresholded)
    in_process: float = 0.0  # nodebisect with onnxruntime in this process (isolate_crashes=False), as the peers run


@dataclass
class TransformCase:
    name: str
    build: Callable[[], tuple[onnx.ModelProto, dict[str, np.ndarray]]]
    transform: str
    expect: str
    row: dict[str, Any] = field(default_factory=dict)


# -- the cases -----------------------------------------------------------------------------------


def build_cases(folder: Path) -> list[Case]:
    """tests/test_diff.py's ``models`` fixture, step for step (a fixture cannot be called outside pytest)."""
    import test_diff as td  # noqa: PLC0415 - the tests' own builders
    import transform_models as tm  # noqa: PLC0415

    from nodebisect.onnx_reference.inputs import both_feeds

    def save(model: onnx.ModelProto, name: str) -> Path:
        path = folder / f"{name}.onnx"
        onnx.save(model, str(path))
        return path

    p = {
        "overflow": save(td.overflow_model(), "overflow"), "overflow16": save(td._fp16(td.overflow_model()), "overflow16"),
        "constant": save(td.constant_model(), "constant"), "constant16": save(td._fp16(td.constant_model()), "constant16"),
        "clean": save(td.clean_model(), "clean"), "outlier": save(td.outlier_model(), "outlier"),
        "feature": save(td.outlier_model(weight_outlier=False), "feature"),
        "logsoftmax": save(td._model([onnx.helper.make_node("Mul", ["x", "s"], ["xs"], name="scale"),
                                      onnx.helper.make_node("LogSoftmax", ["xs"], ["ls"], name="logsoftmax", axis=-1),
                                      onnx.helper.make_node("Neg", ["ls"], ["y"], name="neg")], [td._const("s", np.float32(60.0))]), "logsoftmax"),
    }
    broken = td.ort_optimized(td.clean_model(), folder / "clean_ort.onnx")  # onnxruntime's fused Gemm, its bias counted twice
    gemm = next(n for n in broken.graph.node if n.op_type == "Gemm")
    next(a for a in gemm.attribute if a.name == "beta").f = 2.0
    p["broken_ort"] = save(broken, "broken_ort")
    for name in ("outlier", "feature"):
        td.quantized(p[name], folder / f"{name}_int8.onnx")
        p[f"{name}_int8"] = folder / f"{name}_int8.onnx"
    td.quantized_qdq(p["outlier"], folder / "outlier_qdq.onnx")
    p["outlier_qdq"] = folder / "outlier_qdq.onnx"
    argmax, argmax_feeds = tm.argmax_of_exp()
    p["argmax"] = save(argmax, "argmax")
    import onnxoptimizer  # noqa: PLC0415

    p["argmax_opt"] = save(onnxoptimizer.optimize(argmax), "argmax_opt")  # its default passes, eliminate_nop_monotone_argmax among them

    def feeds(ref: str, cand: str) -> dict[str, np.ndarray]:  # the inputs nodebisect draws (seed 0), given to every tool
        return both_feeds(onnx.load(str(p[ref])), onnx.load(str(p[cand])), None, None, 0)[0]

    feature_x = np.random.default_rng(7).standard_normal((4, td.D)).astype(np.float32)
    feature_x[:, 5] = 300.0
    for name, made in (("clean16", td._fp16(td.clean_model())),):
        p[name] = save(made, name)
    td.quantized(p["clean"], folder / "clean_int8.onnx")
    td.quantized_qdq(p["clean"], folder / "clean_qdq.onnx")
    p["clean_int8"], p["clean_qdq"], p["clean_ort"] = folder / "clean_int8.onnx", folder / "clean_qdq.onnx", folder / "clean_ort.onnx"
    td.ort_optimized(td.clean_model(), p["clean_ort"])
    half, int8 = 1e-2, 1e-1
    for name, build in (("pooling", nan_models.heads_pooling), ("cumln", nan_models.cum_ln)):  # torch + the dynamo exporter
        ref_model, cand_model, p[f"{name}_feeds"] = _torch_case(build)
        p[name], p[f"{name}16"] = save(ref_model, name), save(cand_model, f"{name}16")
    p["timenorm"] = save(_time_norm()[0], "timenorm")
    p["timenorm_ort"] = save(fusion_models.bert_fused(_time_norm()[0], str(folder)), "timenorm_ort")
    return [
        Case("fp16 overflow", p["overflow"], p["overflow16"], feeds("overflow", "overflow16"), {"square", "energy"},
             "convert_float_to_float16: h*h past 65504", loose=half),
        Case("fp16 clamped constant", p["constant"], p["constant16"], feeds("constant", "constant16"), {"scale_up", "hb"},
             "convert_float_to_float16 clamps 2e4 to 1e4", loose=half),
        Case("int8 weight outlier", p["outlier"], p["outlier_int8"], feeds("outlier", "outlier_int8"), {"mm1", "h"},
             "quantize_dynamic, mm1's weight has one 40", loose=int8),
        Case("int8 activation outlier", p["feature"], p["feature_int8"], {"x": feature_x}, {"mm1", "h"},
             "quantize_dynamic, input feature 5 at 300", loose=int8),
        Case("QDQ weight outlier", p["outlier"], p["outlier_qdq"], feeds("outlier", "outlier_qdq"), {"mm1", "h"},
             "quantize_static QDQ, mm1's weight has one 40", loose=int8),
        Case("broken ORT fusion", p["clean"], p["broken_ort"], feeds("clean", "broken_ort"), {gemm.name, gemm.output[0], "mm1", "bias1"},
             "onnxruntime's fused Gemm (mm1+bias1), beta 2"),
        Case("ORT vs reference evaluator", p["logsoftmax"], p["logsoftmax"], feeds("logsoftmax", "logsoftmax"), {"logsoftmax", "ls"},
             "one model: onnx.reference's LogSoftmax gives -inf", reference_ep="reference"),
        Case("onnxoptimizer argmax", p["argmax"], p["argmax_opt"], argmax_feeds, {"argmax", "y"},
             "onnxoptimizer 0.4.2 eliminate_nop_monotone_argmax"),
        Case("ORT LayerNorm fusion, wrong axis (torch)", p["timenorm"], p["timenorm_ort"], _time_norm()[1], {"LayerNorm_0", "add_1"},
             "optimize_model(bert) fuses a norm over time into LayerNormalization over features"),
        Case("fp16 NaN born (torch)", p["pooling"], p["pooling16"], p["pooling_feeds"], {"node_div", "div"},
             "exp weights rounded to 0 entering Transpose->Reshape: 0/0 at the Div", loose=half),
        # controls: clean transformations, where the right answer is "nothing"
        Case("CumLN float16 (torch)", p["cumln"], p["cumln16"], p["cumln_feeds"], set(),
             "control: NaN only when intermediate values are marked as outputs", loose=half),
        Case("clean float16", p["clean"], p["clean16"], feeds("clean", "clean16"), set(), "control", loose=half),
        Case("clean ORT fusions", p["clean"], p["clean_ort"], feeds("clean", "clean_ort"), set(), "control"),
        Case("clean int8 (dynamic)", p["clean"], p["clean_int8"], feeds("clean", "clean_int8"), set(), "control", loose=int8),
        Case("clean int8 (QDQ)", p["clean"], p["clean_qdq"], feeds("clean", "clean_qdq"), set(), "control", loose=int8),
    ]


@functools.lru_cache(maxsize=None)
def _torch_case(build: Callable[[], Any]) -> tuple[onnx.ModelProto, onnx.ModelProto, dict[str, np.ndarray]]:
    """tests/fp16_nan_models.py's models, exported once for the peers' rows and the --transform row."""
    return build()


@functools.lru_cache(maxsize=None)
def _time_norm() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    return fusion_models.time_norm()


def transform_cases() -> list[TransformCase]:
    import transform_models as tm  # noqa: PLC0415

    def pooling() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
        reference, _, feeds = _torch_case(nan_models.heads_pooling)
        return reference, feeds

    return [
        TransformCase("fp16 NaN born (torch)", pooling, "fp16", "keep node_transpose, node__unsafe_view"),
        TransformCase("ORT LayerNorm fusion (torch)", _time_norm, "ort-transformers:bert", "enable_layer_norm"),
        TransformCase("fp16 LayerNorm overflow", tm.fp16_layernorm_overflow, "fp16", "keep layer_norm"),
        TransformCase("fp16 clamped constant", tm.fp16_clamped_constant, "fp16", "no keep-list (divisor)"),
        TransformCase("int8 weight outlier", lambda: tm.two_matmuls(weight_outlier=True), "quantize-dynamic", "exclude mm_in"),
        TransformCase("int8 activation outlier", lambda: tm.two_matmuls(activation_outlier=True), "quantize-static", "exclude mm_in"),
        TransformCase("Gemm weight outlier", tm.gemm_weight_outlier, "quantize-dynamic", "exclude gemm_in (gemm_in_MatMul)"),
        TransformCase("onnxoptimizer argmax", tm.argmax_of_exp, "onnxoptimizer", "eliminate_nop_monotone_argmax"),
        TransformCase("onnxscript folding", tm.logsoftmax_of_constant, "onnxscript", "fold:log_prior"),
    ]


# -- the tools -------------------------------------------------------------------------------------


def producers(model: onnx.ModelProto) -> dict[str, str]:
    return {v: n.name for n in model.graph.node for v in n.output}


def graph_order(model: onnx.ModelProto) -> list[str]:
    """Every value a node makes, in the reference's node order."""
    return [v for n in model.graph.node for v in n.output if v]


def run_nodebisect(case: Case) -> Answer:
    import nodebisect  # noqa: PLC0415

    t = time.perf_counter()
    result = nodebisect.diff(case.reference, case.candidate, case.feeds, reference_ep=case.reference_ep)
    seconds = time.perf_counter() - t
    t = time.perf_counter()
    nodebisect.diff(case.reference, case.candidate, case.feeds, reference_ep=case.reference_ep, isolate_crashes=False)
    in_process = time.perf_counter() - t
    fd = result.first_divergent
    if fd is None:
        return Answer("nodebisect", seconds, f"{result.verdict}: nothing", hit=not case.culprit, in_process=in_process)
    named = {fd.onnx_node, fd.framework.module, fd.onnx_value} - {""}
    where = fd.onnx_node if fd.framework.module in ("", fd.onnx_node) else f"{fd.onnx_node} (reference {fd.framework.module})"
    return Answer("nodebisect", seconds, f"{where}: {fd.cause}", hit=bool(named & case.culprit),
                  detail=f"{result.verdict}, {fd.op_type}, stage {fd.stage}", in_process=in_process)


def _evaluate_all(model: onnx.ModelProto, feeds: dict[str, np.ndarray], backend: str) -> dict[str, Any]:
    from onnx_diagnostic.reference import ExtendedReferenceEvaluator, OnnxruntimeEvaluator  # noqa: PLC0415

    fitted = _fit(model, feeds)
    if backend == "reference":
        return ExtendedReferenceEvaluator(model).run(None, fitted, intermediate=True)
    return OnnxruntimeEvaluator(model).run(None, fitted, intermediate=True)


def run_onnx_diagnostic(case: Case) -> Answer:
    from onnx_diagnostic.helpers import max_diff  # noqa: PLC0415
    from onnx_diagnostic.torch_onnx.compare import ObsCompare, ObsComparePair, ObsType  # noqa: PLC0415

    t = time.perf_counter()
    ref, cand = onnx.load(str(case.reference)), onnx.load(str(case.candidate))
    _dist, _path, pairs = ObsComparePair.distance_sequence(ObsCompare.obs_sequence_from_model(ref), ObsCompare.obs_sequence_from_model(cand))
    with contextlib.redirect_stdout(io.StringIO()):
        ref_values = _evaluate_all(ref, case.feeds, case.reference_ep)
        cand_values = _evaluate_all(cand, case.feeds, "cpu")
    diffs: list[tuple[str, str, dict[str, Any]]] = []
    for pair in pairs:
        if pair.side1 is None or pair.side2 is None or pair.side1.kind != ObsType.NODE:
            continue
        for ref_name, cand_name in zip(pair.side1.name_or_outputs, pair.side2.name_or_outputs):
            if ref_name in ref_values and cand_name in cand_values:
                diffs.append((ref_name, cand_name, max_diff(ref_values[ref_name], cand_values[cand_name])))
    flagged = [f for f in diffs if _flags(f[2], ATOL, RTOL)]
    seconds = time.perf_counter() - t
    answer = Answer("onnx-diagnostic", seconds, flagged=len(flagged), compared=len(diffs), hit=not case.culprit)
    if flagged:
        answer.points_at, answer.hit = _pointed(flagged[0][0], flagged[0][1], ref, cand, case)
        answer.detail = f"abs {flagged[0][2]['abs']:.3g} rel {flagged[0][2]['rel']:.3g}"
    loose = [f for f in diffs if _flags(f[2], case.loose, case.loose)]
    answer.loose = _loose_words(loose[0][:2] if loose else None, len(loose), ref, cand, case)
    return answer


def _flags(d: dict[str, Any], atol: float, rtol: float) -> bool:
    """onnx-diagnostic sbs's rule: a value departs unless abs <= atol and rel <= rtol; or when its NaN count differs."""
    return not (d["abs"] <= atol and d["rel"] <= rtol) or bool(d.get("dnan", 0))


def _pointed(ref_name: str, cand_name: str, ref: onnx.ModelProto, cand: onnx.ModelProto, case: Case) -> tuple[str, bool]:
    """How a peer's first flagged value reads (its producer in the reference, the candidate value it was paired with)."""
    node, made_by = producers(ref).get(ref_name, ref_name), producers(cand).get(cand_name, "")
    pairing = "" if cand_name == ref_name else f" ~ {cand_name}"
    pairing += f"; candidate's {made_by}" if made_by and made_by != node else ""
    return f"{node} ({ref_name}{pairing})", bool({node, ref_name, cand_name, made_by} & case.culprit)


def _loose_words(first: tuple[str, str] | None, count: int, ref: onnx.ModelProto, cand: onnx.ModelProto, case: Case) -> str:
    if first is None:
        return f"nothing [{'**yes**' if not case.culprit else 'no'}]"
    words, hit = _pointed(first[0], first[1], ref, cand, case)
    return f"{words} [{'**yes**' if hit else 'no'}] ({count})"


def run_polygraphy(case: Case) -> Answer:
    from polygraphy import constants  # noqa: PLC0415
    from polygraphy.backend.onnx import BytesFromOnnx, ModifyOutputs, OnnxFromPath  # noqa: PLC0415
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx  # noqa: PLC0415
    from polygraphy.comparator import Comparator, CompareFunc  # noqa: PLC0415
    from polygraphy.comparator.struct import IterationResult  # noqa: PLC0415
    from polygraphy.logger import G_LOGGER  # noqa: PLC0415

    G_LOGGER.module_severity = G_LOGGER.CRITICAL  # its per-output log lines, hundreds with mark all, off the terminal

    def runner(path: Path, name: str) -> Any:
        return OnnxrtRunner(SessionFromOnnx(BytesFromOnnx(ModifyOutputs(OnnxFromPath(str(path)), outputs=constants.MARK_ALL))), name=name)

    t = time.perf_counter()
    ref = onnx.load(str(case.reference))
    if case.reference_ep == "reference":  # no such runner: the evaluator's values as a saved RunResults would bring them
        golden = _evaluate_all(ref, case.feeds, "reference")
        results = Comparator.run([runner(case.candidate, "candidate")], data_loader=[case.feeds])
        outputs = {v: np.asarray(golden[v]) for v in graph_order(ref) if v in golden}
        results.lst.insert(0, ("reference", [IterationResult(outputs=outputs, runner_name="reference")]))
    else:
        results = Comparator.run([runner(case.reference, "reference"), runner(case.candidate, "candidate")], data_loader=[case.feeds])
    accuracy = Comparator.compare_accuracy(results)  # CompareFunc.simple(): atol = rtol = 1e-5
    seconds = time.perf_counter() - t
    cand = onnx.load(str(case.candidate))
    failed, status = _failed(accuracy, ref)
    answer = Answer("Polygraphy", seconds, flagged=len(failed), compared=len(status), hit=not case.culprit)
    answer.detail = "passed" if bool(accuracy) else "FAILED"
    if failed:
        answer.points_at, answer.hit = _pointed(failed[0], status[failed[0]], ref, cand, case)
    loose, _ = _failed(Comparator.compare_accuracy(results, compare_func=CompareFunc.simple(atol=case.loose, rtol=case.loose)), ref)
    answer.loose = _loose_words((loose[0], status[loose[0]]) if loose else None, len(loose), ref, cand, case)
    return answer


def _failed(accuracy: Any, ref: onnx.ModelProto) -> tuple[list[str], dict[str, str]]:
    """The reference values Polygraphy's comparison failed, in graph order; each compared value -> its candidate pair."""
    [iteration] = accuracy[0][("reference", "candidate")]  # 0.53: one AccuracyResult per compare func
    status = {name: getattr(res, "output1_name", name) for name, res in iteration.items()}
    order = {v: i for i, v in enumerate(graph_order(ref))}
    return sorted((n for n, res in iteration.items() if not bool(res)), key=lambda n: order.get(n, len(order))), status


def _fit(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from nodebisect.transforms.evaluate import _fit as fit  # noqa: PLC0415

    return fit(model, feeds)


def run_transform(case: TransformCase, folder: Path) -> None:
    from nodebisect.transforms.api import transform  # noqa: PLC0415

    model, feeds = case.build()
    t = time.perf_counter()
    result = transform(model, case.transform, feeds, report=folder / case.name.replace(" ", "_"), log=None)
    seconds = time.perf_counter() - t
    rec = result.transform
    if rec["matched"]:
        answer = "match"
    elif not rec["fixable"]:
        answer = "no keep-list: " + ", ".join(c["constant"] for c in rec["unfixable_constants"][:1])
    else:
        answer = ", ".join(rec["keep_nodes"] or rec["rules"]) + (" (rechecked)" if rec["rechecked"] else " (NOT rechecked)")
    case.row = {
        "seconds": seconds, "search_seconds": rec["seconds"] - float(result.stats.get("seconds", 0.0)), "applications": rec["applications"], "candidate_runs": rec.get("candidate_runs", 0),
        "diff_sessions": int(result.stats.get("ort_sessions", 0)) + int(result.stats.get("extra_sessions", 0)), "answer": answer,
        "diff": f"{result.first_divergent.onnx_node} ({result.first_divergent.cause})" if result.first_divergent else str(result.verdict),
    }


# -- the run ---------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=None)
    parser.add_argument("--only", nargs="*", default=None, help="case names (substrings) to run")
    parser.add_argument("--no-transform", action="store_true")
    args = parser.parse_args()
    folder = Path(args.out or tempfile.mkdtemp(prefix="bench-diff-peers-"))
    folder.mkdir(parents=True, exist_ok=True)
    tools = (run_nodebisect, run_onnx_diagnostic, run_polygraphy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        cases = build_cases(folder)
        print(f"cases built in {time.perf_counter() - t:.1f}s under {folder}", flush=True)
        for tool in tools:  # warm-up, untimed: each tool's imports and first session, so no row pays them
            _ask(tool, cases[0])
        if args.only:
            cases = [c for c in cases if any(o in c.name for o in args.only)]
        rows = []
        for case in cases:
            answers = [_ask(tool, case) for tool in tools]
            rows.append((case, answers))
            for a in answers:
                print(f"  {case.name} | {a.tool}: {a.seconds:.2f}s (in-process {a.in_process:.2f}s) -> {a.points_at} "
                      f"[{'right' if a.hit else 'wrong'}] {a.detail} flagged {a.flagged}/{a.compared}; loose: {a.loose} {a.error}", flush=True)
        print_table(rows)
        if not args.no_transform and not args.only:
            tcases = transform_cases()
            for tc in tcases:
                run_transform(tc, folder)
                print(f"  --transform {tc.transform} on {tc.name}: {tc.row}", flush=True)
            print_transform_table(tcases)
    return 0


def _ask(tool: Callable[[Case], Answer], case: Case) -> Answer:
    try:
        return tool(case)
    except Exception as exc:  # noqa: BLE001 - a peer that cannot run the case says so in the table
        name = {"run_nodebisect": "nodebisect", "run_onnx_diagnostic": "onnx-diagnostic"}.get(tool.__name__, "Polygraphy")
        first = str(exc).splitlines()[0][:120] if str(exc) else ""
        return Answer(name, points_at="no verdict", error=f"{type(exc).__name__}: {first}")


def print_table(rows: list[tuple[Case, list[Answer]]]) -> None:
    print("\n| case | culprit | nodebisect s (in-process) | nodebisect points at | onnx-diagnostic s (x nodebisect) | "
          "points at, 1e-5 (flagged/compared) | at the loose tolerance | Polygraphy s (x nodebisect) | points at, 1e-5 (flagged/compared) | "
          "at the loose tolerance |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")

    def mark(a: Answer) -> str:
        return "**yes**" if a.hit else "no"

    for case, (nb, od, pg) in rows:
        culprit = sorted(case.culprit, key=len)[0] if case.culprit else "(none: control)"

        def peer(a: Answer) -> tuple[str, str, str]:
            if a.error:
                return "-", f"no verdict ({a.error})", "-"
            ratio = f"{a.seconds:.2f} ({a.seconds / nb.seconds:.2f}x)" if nb.seconds else f"{a.seconds:.2f}"
            return ratio, f"{a.points_at} [{mark(a)}] ({a.flagged}/{a.compared})", f"{a.loose} (tol {case.loose:g})"

        cells = [case.name, culprit, f"{nb.seconds:.2f} ({nb.in_process:.2f})", f"{nb.points_at} [{mark(nb)}]", *peer(od), *peer(pg)]
        print("| " + " | ".join(cells) + " |")


def print_transform_table(cases: list[TransformCase]) -> None:
    print("\n| case | --transform | expected | whole run s | knob search s | tool applications | candidate runs (search + re-check) | "
          "diff's culprit | diff's ORT sessions | answer |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for c in cases:
        r = c.row
        print(f"| {c.name} | {c.transform} | {c.expect} | {r['seconds']:.2f} | {r['search_seconds']:.2f} | {r['applications']} | "
              f"{r['candidate_runs']} | {r['diff']} | {r['diff_sessions']} | {r['answer']} |")


if __name__ == "__main__":
    sys.exit(main())
