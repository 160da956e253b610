"""--transform NAME (issue #21 items 2 and 3): the real tools, unmodified, on small models built here.

Each case asserts the named fix by the tool's own name (the node to keep out, the pass to
switch off), that the fix was re-checked by applying it, and, independently of nodebisect's
own judge, that the written fixed candidate computes what the reference computes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import transform_models as tm  # noqa: E402

from nodebisect.transforms import search  # noqa: E402

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _run(path_or_model: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    source = str(path_or_model) if isinstance(path_or_model, (str, Path)) else path_or_model.SerializeToString()
    return ort.InferenceSession(source, so, providers=["CPUExecutionProvider"]).run(None, feeds)


def _bisect(case: tuple[Any, dict[str, np.ndarray]], name: str, out: Path) -> Any:
    from nodebisect.transforms.bisect import transform_and_bisect

    model, feeds = case
    return transform_and_bisect(model, name, feeds, out)


def _fixed_matches(record: Any, case: tuple[Any, dict[str, np.ndarray]], rtol: float) -> bool:
    """The written fixed candidate, run here, against the reference (not through nodebisect's judge)."""
    model, feeds = case
    want = _run(model, feeds)
    got = _run(record.fixed_candidate, feeds)
    return all(np.allclose(g.astype(np.float64), w, rtol=rtol, atol=rtol * np.abs(w).max()) for g, w in zip(got, want))


# -- float16 (onnxconverter-common) ------------------------------------------------------------


@pytest.fixture(scope="module")
def fp16_overflow(tmp_path_factory: pytest.TempPathFactory) -> Any:
    pytest.importorskip("onnxconverter_common")
    return _bisect(tm.fp16_layernorm_overflow(), "fp16", tmp_path_factory.mktemp("fp16"))


def test_fp16_overflow_is_fixed_by_keeping_the_layer_norm(fp16_overflow: Any) -> None:
    record = fp16_overflow
    assert record.tool == "onnxconverter-common" and record.version
    assert not record.matched  # as converted, LayerNormalization's float16 input overflows to inf
    assert record.keep_nodes == ["layer_norm"]
    assert record.rechecked and Path(record.fixed_candidate).is_file()
    assert _fixed_matches(record, tm.fp16_layernorm_overflow(), rtol=1e-2)
    # the fix is the tool's own knob, spelled as its call takes it
    assert record.tool_kwargs == {"keep_io_types": True, "node_block_list": ["layer_norm"]}


def test_fp16_headroom_names_the_value_over_float16s_range(fp16_overflow: Any) -> None:
    over = [row for row in fp16_overflow.headroom if row["kind"] == "over_range"]
    assert over and over[0]["value"] == "xs" and over[0]["node"] == "scale_up"
    assert over[0]["max_abs"] > 65504


@pytest.mark.parametrize(("held_by", "node"), [("constant_node", "divisor_const"), ("listed_initializer", "")])
def test_fp16_constant_clamped_by_the_converter_is_named_when_no_keep_list_helps(held_by: str, node: str, tmp_path: Path) -> None:
    pytest.importorskip("onnxconverter_common")
    from nodebisect.report.transform_wording import transform_lines

    record = _bisect(tm.fp16_clamped_constant(held_by), "fp16", tmp_path)
    assert not record.matched and not record.fixable and not record.keep_nodes
    [constant] = record.unfixable_constants
    assert constant["constant"] == "divisor" and constant["constant_node"] == node
    assert constant["readers"] == ["div"]
    assert constant["before"] == 1e5 and constant["after"] == 1e4  # the converter's max_finite_val
    text = "\n".join(transform_lines(record.to_dict()))
    assert "no keep-list fixes it" in text and "'divisor'" in text
    assert ("Constant node 'divisor_const'" in text) == (held_by == "constant_node")
    assert ("value_info" in text.split("even when its readers are kept")[1])


def test_fp16_an_initializer_without_value_info_is_kept_with_its_reader(tmp_path: Path) -> None:
    """The same divisor as an initializer the model does not list in value_info: keeping `div` keeps it float32."""
    pytest.importorskip("onnxconverter_common")
    model, feeds = built = tm.fp16_clamped_constant("listed_initializer")
    del model.graph.value_info[:]
    record = _bisect((model, feeds), "fp16", tmp_path)
    assert record.keep_nodes == ["div"] and record.rechecked and _fixed_matches(record, built, rtol=1e-2)


# -- quantization (onnxruntime.quantization) --------------------------------------------------


@pytest.mark.parametrize(
    ("case", "name"),
    [
        pytest.param(dict(weight_outlier=True), "quantize-dynamic", id="weight-outlier-dynamic"),
        pytest.param(dict(activation_outlier=True), "quantize-static", id="activation-outlier-static"),
    ],
)
def test_quantized_matmul_with_an_outlier_is_excluded_by_name(case: dict[str, bool], name: str, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime.quantization")
    built = tm.two_matmuls(**case)
    record = _bisect(built, name, tmp_path)
    assert not record.matched and record.score > 0.5  # the outlier swamps the int8 scale
    assert record.keep_nodes == ["mm_in"]
    assert record.tool_kwargs == {"nodes_to_exclude": ["mm_in"]}
    assert record.rechecked and _fixed_matches(record, built, rtol=5e-2)


def test_dynamic_quantization_excludes_a_gemm_by_the_name_it_gives_it(tmp_path: Path) -> None:
    """quantize_dynamic rewrites Gemm `gemm_in` into MatMul `gemm_in_MatMul` before it reads nodes_to_exclude:
    the record names the reference's node, the tool's call the name the tool honours."""
    pytest.importorskip("onnxruntime.quantization")
    built = tm.gemm_weight_outlier()
    record = _bisect(built, "quantize-dynamic", tmp_path)
    assert not record.matched and record.keep_nodes == ["gemm_in"]
    assert record.tool_kwargs == {"nodes_to_exclude": ["gemm_in_MatMul"]}
    assert record.rechecked and _fixed_matches(record, built, rtol=5e-2)


def test_static_quantization_candidates_are_every_node_the_tool_quantizes() -> None:
    """quantize_static quantizes the QLinear registry's op types as well as the QDQ registry's (Mul, Add,
    Softmax): with every candidate excluded, the model it writes has no QuantizeLinear left."""
    pytest.importorskip("onnxruntime.quantization")
    from nodebisect.transforms import quantize
    from nodebisect.transforms.registry import lookup

    model, feeds = tm.outlier_channel_softmax()
    everything = frozenset(quantize.candidates(model, static=True))
    assert everything == {"mm", "mul", "add", "softmax"}
    spec = lookup("quantize-static")
    assert any(n.op_type == "QuantizeLinear" for n in quantize.apply(model, frozenset(), feeds, spec).graph.node)
    assert not any(n.op_type == "QuantizeLinear" for n in quantize.apply(model, everything, feeds, spec).graph.node)


def test_an_outlier_channel_is_kept_out_through_the_ops_only_the_qlinear_registry_lists(tmp_path: Path) -> None:
    """The Softmax departs; keeping it, the Add and the Mul out of int8 fixes it (each is needed: a quantized
    reader quantizes its input), none of which the QDQ registry lists."""
    pytest.importorskip("onnxruntime.quantization")
    built = tm.outlier_channel_softmax()
    record = _bisect(built, "quantize-static", tmp_path)
    assert not record.matched and record.culprit["node"] == "softmax"
    assert sorted(record.keep_nodes) == ["add", "mul", "softmax"]
    assert record.rechecked and _fixed_matches(record, built, rtol=5e-2)


@pytest.mark.parametrize("name", ["quantize-dynamic", "quantize-static", "fp16", "onnxscript", "onnxoptimizer", "ort-transformers:bert"])
def test_a_clean_transformation_matches(name: str, tmp_path: Path) -> None:
    """No false alarm: every tool on a model it transforms correctly (the search does not even start)."""
    pytest.importorskip("onnxconverter_common")
    pytest.importorskip("onnxoptimizer")
    record = _bisect(tm.two_matmuls(), name, tmp_path)
    assert record.matched and record.applications == 1  # no search when nothing departs
    assert not record.keep_nodes and not record.fixed_candidate


# -- optimizers: a real onnxoptimizer 0.4.2 pass defect ----------------------------------------


def test_onnxoptimizer_pass_that_drops_exp_before_argmax_is_named(tmp_path: Path) -> None:
    """eliminate_nop_monotone_argmax rewrites ArgMax(Exp(x)) to ArgMax(x): with exp overflowing, two
    infinities tie (the first index wins) where x has a strict order. Other passes fire harmlessly."""
    onnxoptimizer = pytest.importorskip("onnxoptimizer")
    model, feeds = built = tm.argmax_of_exp()
    record = _bisect(built, "onnxoptimizer", tmp_path)
    assert not record.matched
    assert record.rules == ["eliminate_nop_monotone_argmax"] and record.rule == "eliminate_nop_monotone_argmax"
    assert record.rechecked
    # independently: the tool with every default pass but that one keeps the answer
    passes = [p for p in onnxoptimizer.get_fuse_and_elimination_passes() if p != "eliminate_nop_monotone_argmax"]
    assert np.array_equal(_run(onnxoptimizer.optimize(model, passes), feeds)[0], _run(model, feeds)[0])
    assert not np.array_equal(_run(onnxoptimizer.optimize(model), feeds)[0], _run(model, feeds)[0])


def test_onnxscript_constant_folding_names_the_folded_node(tmp_path: Path) -> None:
    """A real onnxscript 0.7.2 folding defect: LogSoftmax of a constant folded to -inf (ONNX's reference op)."""
    pytest.importorskip("onnxscript")
    from nodebisect.report.transform_wording import transform_lines

    built = tm.logsoftmax_of_constant()
    record = _bisect(built, "onnxscript", tmp_path)
    assert not record.matched and record.rule == "FoldConstantsPass"
    assert record.folded == [{"node": "log_prior", "op_type": "LogSoftmax", "value": "logp"}]
    assert record.rules == ["fold:log_prior"] and record.rechecked and _fixed_matches(record, built, rtol=1e-4)
    assert "constant folding of log_prior (LogSoftmax, value logp)" in "\n".join(transform_lines(record.to_dict()))


_FOLDED_LOG_PRIOR = """
import torch


class FoldedLogPrior(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.register_buffer("prior", torch.tensor([[0.0, 200.0, -200.0, 5.0]]))
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x):
        return self.lin(x) + torch.log_softmax(self.prior, -1)


def build():
    return FoldedLogPrior().eval(), (torch.randn(2, 4, generator=torch.Generator().manual_seed(0)),)
"""


@pytest.mark.slow
def test_graph_optimization_stage_names_the_folded_constant(tmp_path: Path, quick_locate: Any) -> None:
    """Issue #21 item 3, the folded constant: torch.onnx.export(optimize=True) folds log_softmax(buffer) to -inf."""
    (tmp_path / "folded.py").write_text(_FOLDED_LOG_PRIOR)
    result = quick_locate(f"{tmp_path / 'folded.py'}:build")
    fd = result.first_divergent
    assert fd is not None and fd.stage == "graph_optimization"
    assert fd.optimizer["exporter_rule"] == "FoldConstantsPass"
    assert fd.optimizer["exporter_folded"] == "node_log_softmax (LogSoftmax)"
    assert "constant folding of node_log_softmax (LogSoftmax) is at fault" in fd.explanation


def test_graph_optimization_stage_names_the_onnxscript_rule(sample_runs: Any) -> None:
    """Issue #21 item 3: locate's stage check names the rule, not only "the exporter's optimizer": the onnxscript
    knob search (``--transform onnxscript``) on the optimize=False export of samples/divergent.py ConvBnCancellation,
    where FuseBatchNormIntoConv folds BatchNorm's irrational scale into weights whose products then cancel."""
    fd = sample_runs["ConvBnCancellation"].result.first_divergent
    assert fd is not None and fd.stage == "graph_optimization"
    assert fd.optimizer["exporter_rule"] == "FuseBatchNormIntoConv"
    assert fd.optimizer["exporter_optimizer"].startswith("onnxscript ")
    assert "FuseBatchNormIntoConv alone makes the optimized graph right" in fd.explanation


# -- sweep --transform fp16 (issue #21 item 4) ----------------------------------------------------

_OUTLIER = """
import torch


class Outlier(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.a = torch.nn.Linear(32, 32, bias=False)
        self.b = torch.nn.Linear(32, 16, bias=False)
        with torch.no_grad():
            self.a.weight[5, 3] = 400.0  # int8's per-tensor scale then rounds every other weight of `a` to 0

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def build():
    x = torch.randn(8, 32, generator=torch.Generator().manual_seed(0))
    x[:, 3] *= 0.001
    return Outlier().eval(), (x,)

"""


@pytest.mark.slow
def test_sweep_transform_tables_which_models_break_and_what_to_keep_out(tmp_path: Path) -> None:
    """Issue #21 item 4: export, then the transformation, on every model; sweep.md gets a table per transformation."""
    pytest.importorskip("onnxruntime.quantization")
    from clirun import run_cli

    from nodebisect.sweep.results import load_rows

    (tmp_path / "outlier.py").write_text(_OUTLIER)
    fleet = tmp_path / "fleet.txt"
    fleet.write_text(f"{tmp_path / 'outlier.py'}:build name=outlier\n")
    run = run_cli("sweep", fleet, "--out", tmp_path / "out", "--jobs", "1", "--transform", "quantize-dynamic", "-q")
    assert run.code in (0, 1), run.err
    [row] = load_rows(tmp_path / "out")
    broken = row["transform"]
    assert not broken["matched"] and broken["rechecked"] and broken["keep_nodes"] == ["node_linear"]
    assert broken["tool_kwargs"] == {"nodes_to_exclude": ["node_linear_MatMul"]}  # the Gemm's name after the quantizer's rewrite
    md = (tmp_path / "out" / "sweep.md").read_text()
    assert "## Transformation quantize-dynamic" in md and "1 of 1 model(s) depart after quantize-dynamic" in md
    assert "| outlier | breaks |" in md and "keep out (nodes_to_exclude): `node_linear`" in md


# -- the CLI: one line and exit 2 for an unknown name or a missing tool ------------------------


@pytest.fixture(scope="module")
def saved_overflow(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("cli")
    model, feeds = tm.fp16_layernorm_overflow()
    onnx.save(model, str(folder / "ln.onnx"))
    np.savez(folder / "ln.npz", **feeds)
    return folder / "ln.onnx", folder / "ln.npz"


def test_cli_fp16_writes_the_record_and_the_fixed_candidate(cli: Any, saved_overflow: tuple[Path, Path], tmp_path: Path) -> None:
    pytest.importorskip("onnxconverter_common")
    model, inputs = saved_overflow
    before = model.read_bytes()
    run = cli("diff", model, "--transform", "fp16", "--inputs", inputs, "--report", tmp_path / "rep", "--json", "-")
    assert run.code == 1, run.err
    record = json.loads(run.out)["transform"]
    assert record["keep_nodes"] == ["layer_norm"] and record["rechecked"] is True
    assert Path(record["fixed_candidate"]).is_file() and Path(record["fixed_candidate"]).parent == tmp_path / "rep" / "transform"
    assert "keep out of fp16 (node_block_list, most helpful first): layer_norm" in run.err
    assert model.read_bytes() == before  # nothing the user owns is modified
    report_md = (tmp_path / "rep" / "report.md").read_text()
    assert "## The transformation: `--transform fp16`" in report_md and "node_block_list=['layer_norm']" in report_md
    assert "DIVERGED at scale_up (Mul)" in run.err  # diff's own verdict on the candidate as converted
    saved = json.loads((tmp_path / "rep" / "report.json").read_text())
    from nodebisect.records import LocateResult

    assert LocateResult.from_dict(saved).transform["keep_nodes"] == ["layer_norm"]


def test_cli_unknown_transform_is_one_line_exit_2(cli: Any, saved_overflow: tuple[Path, Path]) -> None:
    run = cli("diff", saved_overflow[0], "--transform", "fp8")
    assert run.code == 2
    assert run.err.strip().count("\n") == 0 and "unknown --transform 'fp8'" in run.err and "fp16" in run.err


def test_cli_missing_tool_names_the_extra(cli: Any, saved_overflow: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxconverter_common", None)  # as if not installed: importing it fails
    run = cli("diff", saved_overflow[0], "--transform", "fp16")
    assert run.code == 2
    assert run.err.strip().count("\n") == 0 and "nodebisect[transforms]" in run.err and "onnxconverter-common" in run.err


def test_cli_diff_needs_a_candidate_or_a_transform(cli: Any, saved_overflow: tuple[Path, Path]) -> None:
    run = cli("diff", saved_overflow[0])
    assert run.code == 2 and "--transform NAME" in run.err and run.err.strip().count("\n") == 0
    both = cli("diff", saved_overflow[0], saved_overflow[0], "--transform", "fp16")
    assert both.code == 2 and "not both" in both.err


def test_cli_a_tool_that_refuses_the_model_is_one_line_exit_2(cli: Any, tmp_path: Path) -> None:
    """onnxconverter-common refuses a model that is float16 already: said in one line, no traceback."""
    pytest.importorskip("onnxconverter_common")
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [2])], [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(tmp_path / "half.onnx"))
    run = cli("diff", tmp_path / "half.onnx", "--transform", "fp16")
    assert run.code == 2, run.err
    assert run.err.strip().count("\n") == 0 and "onnxconverter-common could not apply --transform fp16" in run.err
    assert "already converted to float16" in run.err


def test_the_transform_field_is_in_the_json_only_when_set() -> None:
    from nodebisect.records import LocateResult

    plain = LocateResult(verdict="match")
    assert "transform" not in plain.to_dict()  # locate's JSON stays as it was
    with_record = LocateResult(verdict="diverged", transform={"name": "fp16", "keep_nodes": ["a"]})
    assert LocateResult.from_dict(json.loads(with_record.to_json())).transform == {"name": "fp16", "keep_nodes": ["a"]}


# -- the searches, pure (a fake oracle) --------------------------------------------------------


def test_rules_to_disable_finds_the_one_bad_rule_among_many() -> None:
    rules = [f"r{i}" for i in range(20)]
    calls: list[frozenset[str]] = []

    def matches(disabled: frozenset[str]) -> bool:
        calls.append(disabled)
        return "r13" in disabled

    assert search.rules_to_disable(rules, matches) == ["r13"]
    assert len(set(calls)) < 20  # fewer applications than switching each rule off in turn


def test_rules_to_disable_two_rules_that_break_only_together() -> None:
    def matches(disabled: frozenset[str]) -> bool:
        return "a" in disabled or "c" in disabled  # a and c together break it

    answer = search.rules_to_disable(["a", "b", "c", "d"], matches)
    assert answer is not None and len(answer) == 1 and answer[0] in {"a", "c"}


def test_rules_to_disable_none_when_the_fixed_part_breaks_it() -> None:
    assert search.rules_to_disable(["a", "b"], lambda disabled: False) is None


def test_keep_list_is_minimal_and_ordered_by_help() -> None:
    need = {"n3": 5.0, "n7": 9.0}  # both must be kept; without n7 it is worse

    def score(keep: frozenset[str]) -> float:
        return sum(v for k, v in need.items() if k not in keep)

    order = ["n3", "n1", "n2", "n7", "n4", "n5", "n6"]
    assert search.keep_list(order, lambda keep: score(keep) == 0, score) == ["n7", "n3"]
    assert search.keep_list(order, lambda keep: False, score) is None


def test_keep_list_past_its_budget_keeps_the_fix_it_found_and_says_it_is_not_minimal() -> None:
    """Applications of a tool on a large graph cost seconds each: past the budget, no minimization, no ordering."""
    from nodebisect.report.transform_wording import transform_lines

    need = {"n3", "n7"}
    asked: list[frozenset[str]] = []

    def matches(keep: frozenset[str]) -> bool:
        asked.append(keep)
        return need <= keep

    order = ["n3", "n1", "n2", "n7", "n4", "n5", "n6"]
    budget = search.Budget(seconds=0.0)
    assert search.keep_list(order, matches, lambda keep: 0.0, budget) == ["n3", "n1", "n2", "n7"]  # the doubling's fix
    assert budget.cut and len(asked) == 4  # {}, 1, 2, 4 nodes: nothing after the fix was found
    roomy = search.Budget(seconds=60.0)
    assert search.keep_list(order, matches, lambda keep: 0.0, roomy) == ["n3", "n7"] and not roomy.cut
    record = {"name": "quantize-static", "tool": "onnxruntime", "version": "1.32.0", "knob": "nodes_to_exclude", "precision": "int8",
              "score": 0.4, "limit": 0.05, "keep_nodes": ["n3", "n1", "n2", "n7"], "minimized": False, "budget_s": 240.0,
              "applications": 17, "rechecked": True, "tool_kwargs": {"nodes_to_exclude": ["n3", "n1", "n2", "n7"]}}
    text = "\n".join(transform_lines(record))
    assert "a fix, not the smallest: the search's 240 s for minimizing ran out after 17 applications of onnxruntime" in text, text
    assert "--transform-budget SECONDS" in text and "most helpful first" not in text


# -- float16 by onnxruntime's transformers converter (fp16-ort) -------------------------------


def test_fp16_ort_cannot_keep_an_overflowing_value_float32_and_says_why(tmp_path: Path) -> None:
    """The same overflow through onnxruntime.transformers.float16: it casts a kept node's output to float16 too (it types
    every float value float16 first), so `xs` overflows between kept nodes; no keep-list fixes it, and the lines say why."""
    from nodebisect.report.transform_wording import transform_lines

    record = _bisect(tm.fp16_layernorm_overflow(), "fp16-ort", tmp_path)
    assert record.tool == "onnxruntime" and record.knob == "node_block_list" and record.precision == "float16"
    assert not record.matched and not record.fixable and not record.keep_nodes
    assert record.headroom[0]["value"] == "xs" and record.headroom[0]["kind"] == "over_range"
    text = "\n".join(transform_lines(record.to_dict()))
    assert "no keep-list fixes it" in text and "'xs' overflows between kept nodes" in text and "--transform fp16" in text, text


def test_fp16_ort_clamps_constants_to_float16_s_own_range(tmp_path: Path) -> None:
    """onnxruntime's converter clamps at 65504 where onnxconverter-common clamps at 1e4: the change named is its own."""
    record = _bisect(tm.fp16_clamped_constant("constant_node"), "fp16-ort", tmp_path)
    assert not record.matched and not record.fixable
    [constant] = record.unfixable_constants
    assert constant["constant"] == "divisor" and constant["before"] == 1e5 and constant["after"] == 65504.0, constant


@pytest.mark.parametrize("depth", [2, 4])
def test_a_candidate_left_unsorted_by_its_tool_is_read_in_dataflow_order(depth: int) -> None:
    """onnxruntime.transformers.float16 appends its graph input/output Casts after every other node. Read in file order,
    the output Cast looked float32-computed and its float16 error a defect (a false alarm at graph_output_cast0 or mm3)."""
    import nodebisect
    from nodebisect.onnxgraph import topological_order
    from nodebisect.transforms.registry import lookup

    model, feeds = tm.deep_matmul_chain(depth=depth)
    candidate = lookup("fp16-ort").apply(model, frozenset(), feeds)
    order = [n.name for n in candidate.graph.node]
    assert topological_order(candidate) is not None, "precondition: the tool leaves the graph unsorted"
    result = nodebisect.diff(model, candidate, feeds)
    assert result.verdict == "match", (result.verdict, result.first_divergent and result.first_divergent.onnx_node)
    assert [n.name for n in candidate.graph.node] == order, "the caller's ModelProto is not reordered"


def test_topological_order_keeps_the_file_s_order_where_it_can() -> None:
    from onnx import TensorProto as T, helper as h

    from nodebisect.onnxgraph import topological_order, topologically_sorted

    nodes = [h.make_node("Relu", ["a"], ["b"], name="relu"), h.make_node("Neg", ["b"], ["c"], name="neg"),
             h.make_node("Cast", ["x"], ["a"], name="cast_in", to=T.FLOAT), h.make_node("Abs", ["x"], ["d"], name="abs")]
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, [2])],
                         [h.make_tensor_value_info("c", T.FLOAT, [2]), h.make_tensor_value_info("d", T.FLOAT, [2])])
    model = h.make_model(graph)
    assert topological_order(model) == [2, 0, 1, 3]
    assert [n.name for n in topologically_sorted(model).graph.node] == ["cast_in", "relu", "neg", "abs"]
    assert topological_order(topologically_sorted(model)) is None


@pytest.mark.parametrize("name", ["fp16", "fp16-ort", "quantize-dynamic"])
def test_a_reference_already_in_float16_is_bad_input_for_a_float16_or_int8_conversion(name: str, cli: Any, tmp_path: Path) -> None:
    """onnxconverter-common refuses it, onnxruntime's converter passes it through unchanged, and the quantizer writes
    DynamicQuantizeLinear on float16 values that onnxruntime rejects: said once, as the user's input, exit 2."""
    from onnxconverter_common import float16

    model, feeds = tm.two_matmuls()
    half = float16.convert_float_to_float16(model)
    onnx.save(half, tmp_path / "half.onnx")
    np.savez(tmp_path / "x.npz", x=feeds["x"].astype(np.float16))
    run = cli("diff", tmp_path / "half.onnx", "--transform", name, "--inputs", tmp_path / "x.npz", "-q")
    assert run.code == 2, (run.code, run.out, run.err)
    assert "this reference's weights are float16 already" in run.err and "Traceback" not in run.err


def test_a_long_keep_list_is_counted_not_listed_in_lines_and_tables() -> None:
    """A fix keeping 798 of a GPT-Neo's 824 quantizable nodes out: the lines name 12, count the rest, and say what
    it means; the call points to the JSON; sweep.md's cell stays one line."""
    from nodebisect.report.transform_wording import transform_lines, transform_tables

    nodes = [f"node_{i}" for i in range(798)]
    t = {"name": "quantize-static", "tool": "onnxruntime", "version": "1.32.0", "knob": "nodes_to_exclude", "precision": "int8",
         "score": 0.97, "limit": 0.05, "keep_nodes": nodes, "minimized": False, "budget_s": 240.0, "applications": 105,
         "candidates": 824, "rechecked": True, "tool_kwargs": {"nodes_to_exclude": nodes}, "culprit": {"node": "node_0"}}
    text = "\n".join(transform_lines(t))
    assert "node_11 and 786 more" in text and "node_12," not in text, text
    assert "nodes_to_exclude=[798 names: the JSON's transform.tool_kwargs]" in text
    assert "it keeps 798 of the 824 nodes quantize-static would convert" in text
    cell = [line for line in transform_tables([{"name": "neo", "transform": t}]) if line.startswith("| neo")][0]
    assert "and 786 more (not minimized: budget)" in cell and len(cell) < 400, cell
