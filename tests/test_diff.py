"""``nodebisect diff``: a transformed ONNX model against the ONNX model it was made from.

Real tools on small models built here: onnxconverter-common's float16 conversion,
onnxruntime's own optimizer (SessionOptions.optimized_model_filepath), ONNX's
reference evaluator. Each defect is a real one of the tool or the runtime; each test
asserts the node nodebisect names.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nodebisect
from nodebisect.vocab import Cause, Stage

float16 = pytest.importorskip("onnxconverter_common.float16")
D = 64


def _model(nodes: list, inits: list, x_shape: list | None = None, y_shape: list | None = None) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape or [4, D])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape or [4, D])], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _const(name: str, value: object) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def _weights(seed: int, scale: float) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((D, D)) * scale).astype(np.float32)


def _fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    with warnings.catch_warnings():  # the converter warns of the very constants it clamps
        warnings.simplefilter("ignore")
        return float16.convert_float_to_float16(model, keep_io_types=True)


def overflow_model() -> onnx.ModelProto:
    """An energy h*h past 65504 feeding a LayerNormalization (which onnxruntime's CPU runs in float16)."""
    return _model(
        [helper.make_node("MatMul", ["x", "w"], ["h"], name="proj"),
         helper.make_node("Mul", ["h", "h"], ["energy"], name="square"),
         helper.make_node("LayerNormalization", ["energy", "gamma", "beta"], ["y"], name="norm", axis=-1)],
        [_const("w", _weights(0, 50.0)), _const("gamma", np.ones(D, np.float32)), _const("beta", np.zeros(D, np.float32))],
    )


def constant_model() -> onnx.ModelProto:
    """A scale of 2e4 that convert_float_to_float16 clamps to its max_finite_val (1e4)."""
    return _model(
        [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
         helper.make_node("Mul", ["h", "big"], ["hb"], name="scale_up"),
         helper.make_node("Mul", ["hb", "small"], ["hs"], name="scale_down"),
         helper.make_node("Tanh", ["hs"], ["y"], name="tanh")],
        [_const("w", _weights(1, 0.125)), _const("big", np.float32(2e4)), _const("small", np.float32(1e-4))],
    )


def clean_model(batch: int | str = 4) -> onnx.ModelProto:
    """MatMul + bias, an erf GELU and a hand-written LayerNorm: onnxruntime fuses them; float16 keeps them in range."""
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"], name="mm1"),
        helper.make_node("Add", ["h0", "b1"], ["h1"], name="bias1"),
        helper.make_node("Div", ["h1", "sqrt2"], ["g0"], name="gelu_div"),
        helper.make_node("Erf", ["g0"], ["g1"], name="gelu_erf"),
        helper.make_node("Add", ["g1", "one"], ["g2"], name="gelu_add"),
        helper.make_node("Mul", ["h1", "g2"], ["g3"], name="gelu_mul"),
        helper.make_node("Mul", ["g3", "half"], ["g4"], name="gelu_half"),
        helper.make_node("ReduceMean", ["g4"], ["mu"], name="ln_mean", axes=[-1]),
        helper.make_node("Sub", ["g4", "mu"], ["d"], name="ln_sub"),
        helper.make_node("Pow", ["d", "two"], ["d2"], name="ln_pow"),
        helper.make_node("ReduceMean", ["d2"], ["var"], name="ln_var", axes=[-1]),
        helper.make_node("Add", ["var", "eps"], ["ve"], name="ln_eps"),
        helper.make_node("Sqrt", ["ve"], ["sd"], name="ln_sqrt"),
        helper.make_node("Div", ["d", "sd"], ["n"], name="ln_div"),
        helper.make_node("MatMul", ["n", "w2"], ["y"], name="mm2"),
    ]
    inits = [_const("w1", _weights(2, 0.125)), _const("b1", np.full(D, 0.1, np.float32)), _const("w2", _weights(3, 0.125)),
             _const("sqrt2", np.float32(np.sqrt(2))), _const("one", np.float32(1)), _const("half", np.float32(0.5)),
             _const("two", np.float32(2)), _const("eps", np.float32(1e-5))]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, D])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, D])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def outlier_model(weight_outlier: bool = True) -> onnx.ModelProto:
    """Two MatMuls; the first one's weight has one outlier (40 among values of 0.125), or reads input feature 5 barely."""
    w = _weights(5, 0.125)
    if weight_outlier:
        w[3, 7] = 40.0
    else:
        w[5, :] = 1e-3  # a feature the weights ignore: an outlier there only spoils x's quantization scale
    return _model(
        [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm1"), helper.make_node("Relu", ["h"], ["r"], name="relu"),
         helper.make_node("MatMul", ["r", "w2"], ["h2"], name="mm2"), helper.make_node("Tanh", ["h2"], ["y"], name="tanh")],
        [_const("w", w), _const("w2", _weights(6, 0.125))],
    )


def quantized(source: Path, target: Path) -> None:
    """onnxruntime.quantization.quantize_dynamic, int8 weights, per tensor (its defaults)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)


def quantized_qdq(source: Path, target: Path) -> None:
    """onnxruntime.quantization.quantize_static in QDQ format, int8, calibrated on 8 random input sets."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.sets = iter([{"x": rng.standard_normal((4, D)).astype(np.float32)} for _ in range(8)])

        def get_next(self) -> dict | None:
            return next(self.sets, None)

    quantize_static(str(source), str(target), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)


def ort_optimized(model: onnx.ModelProto, path: Path) -> onnx.ModelProto:
    """The model as onnxruntime's own optimizer saves it (level all: its fusions, com.microsoft ops)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(path)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return onnx.load(str(path))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every test model, written once for the module."""
    folder = tmp_path_factory.mktemp("diff_models")
    made = {
        "overflow": overflow_model(), "overflow16": _fp16(overflow_model()),
        "constant": constant_model(), "constant16": _fp16(constant_model()),
        "clean": clean_model(), "clean16": _fp16(clean_model()),
        "dynamic": clean_model("batch"),
        "logsoftmax": _model([helper.make_node("Mul", ["x", "s"], ["xs"], name="scale"),
                              helper.make_node("LogSoftmax", ["xs"], ["ls"], name="logsoftmax", axis=-1),
                              helper.make_node("Neg", ["ls"], ["y"], name="neg")], [_const("s", np.float32(60.0))]),
    }
    paths = {name: folder / f"{name}.onnx" for name in made}
    for name, model in made.items():
        onnx.save(model, paths[name])
    ort_optimized(made["clean"], folder / "clean_ort.onnx")
    paths["clean_ort"] = folder / "clean_ort.onnx"
    broken = onnx.load(str(paths["clean_ort"]))  # onnxruntime's fused Gemm, edited: its bias counted twice
    gemm = next(n for n in broken.graph.node if n.op_type == "Gemm")
    next(a for a in gemm.attribute if a.name == "beta").f = 2.0
    paths["broken_ort"] = folder / "broken_ort.onnx"
    onnx.save(broken, paths["broken_ort"])
    made["outlier"], made["feature"] = outlier_model(), outlier_model(weight_outlier=False)
    onnx.save(made["outlier"], folder / "outlier.onnx")
    onnx.save(made["feature"], folder / "feature.onnx")
    for name in ("clean", "outlier", "feature"):
        paths[name] = folder / f"{name}.onnx"
        quantized(paths[name], folder / f"{name}_int8.onnx")
        paths[f"{name}_int8"] = folder / f"{name}_int8.onnx"
    for name in ("clean", "outlier"):
        quantized_qdq(paths[name], folder / f"{name}_qdq.onnx")
        paths[f"{name}_qdq"] = folder / f"{name}_qdq.onnx"
    return paths


def test_float16_overflow_is_named_at_the_node_that_overflows(models: dict[str, Path]) -> None:
    result = nodebisect.diff(models["overflow"], models["overflow16"])
    fd = result.first_divergent
    assert result.verdict == "diverged" and fd is not None
    assert fd.onnx_node == "square"  # h*h passes 65504; proj before it only drifts within float16's precision
    assert fd.stage == Stage.TRANSFORMATION and fd.cause == Cause.PRECISION_OVERFLOW
    from nodebisect.report.wording import what_to_do

    assert "node_block_list=['square']" in what_to_do(fd)


def test_a_constant_the_float16_conversion_clamps_is_named(models: dict[str, Path]) -> None:
    result = nodebisect.diff(models["constant"], models["constant16"])
    fd = result.first_divergent
    assert fd is not None and fd.onnx_node == "scale_up" and fd.cause == Cause.CONSTANT_CHANGED
    assert fd.checks.constant == "big: 20000 -> 10000"
    assert fd.checks.transformed_by.startswith("onnxconverter-common")  # seen in the Casts it names, not the producer_name


@pytest.mark.parametrize("candidate", ["clean16", "clean_ort", "clean_int8", "clean_qdq"])
def test_clean_transformations_match(models: dict[str, Path], candidate: str) -> None:
    result = nodebisect.diff(models["clean"], models[candidate])
    assert result.verdict == "match", result.first_divergent
    mapping = result.stats["mapping"]
    assert mapping["coverage"] >= 0.5
    if candidate == "clean_qdq":  # compared through the QuantizeLinear/DequantizeLinear pairs
        assert mapping["through_qdq"] > 0
    if candidate == "clean_ort":  # onnxruntime fused the hand-written GELU / LayerNorm: named by the nodes they replaced
        assert any("gelu_erf" in nodes or "ln_sqrt" in nodes for nodes in mapping["fused_nodes"].values()), mapping


def test_a_quantized_matmul_whose_weight_has_an_outlier_stands_out(models: dict[str, Path]) -> None:
    """Every int8 node differs; mm1's per-tensor scale (set by the outlier 40) rounds its other weights away."""
    from nodebisect.report.wording import what_to_do

    result = nodebisect.diff(models["outlier"], models["outlier_int8"])
    fd = result.first_divergent
    assert result.verdict == "diverged" and fd is not None and fd.cause == Cause.QUANTIZATION_ERROR
    assert fd.framework.module == "mm1"  # the reference's node; the candidate's is the quantizer's rescaling Mul
    assert "nodes_to_exclude=['mm1']" in what_to_do(fd)


def test_a_quantized_node_that_stands_out_gets_a_repro_that_reproduces(models: dict[str, Path], tmp_path: Path) -> None:
    """The search sees int8 drift; diff names the node whose quantization stands out: its repro is that node's
    window fed with the reference's values (it used to have none, and the report told the user to re-run locate)."""
    import subprocess
    import sys

    result = nodebisect.diff(models["outlier"], models["outlier_int8"], report=tmp_path / "rep")
    fd = result.first_divergent
    assert fd is not None and fd.cause == Cause.QUANTIZATION_ERROR and result.repro is not None and result.repro.reproduces
    assert fd.onnx_value in result.repro.expected
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "Re-run `nodebisect locate" not in report and "repro/" in report
    run = subprocess.run([sys.executable, str(tmp_path / "rep" / "repro" / "repro.py")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "MISMATCH REPRODUCED" in run.stdout, run.stdout + run.stderr


def test_a_qdq_model_names_the_matmul_whose_weight_has_an_outlier(models: dict[str, Path]) -> None:
    """quantize_static (QDQ) folds mm1's Relu into its quantization: mm1 still is the node named, by its own name."""
    from nodebisect.report.wording import what_to_do

    fd = nodebisect.diff(models["outlier"], models["outlier_qdq"]).first_divergent
    assert fd is not None and fd.onnx_node == "mm1" and fd.cause == Cause.QUANTIZATION_ERROR
    assert "nodes_to_exclude=['mm1']" in what_to_do(fd)


def test_an_activation_with_an_outlier_feature_names_the_matmul_reading_it(models: dict[str, Path]) -> None:
    """Input feature 5 at 300 (which mm1's weights ignore): dynamic quantization's per-tensor scale of x rounds the rest away."""
    x = np.random.default_rng(7).standard_normal((4, D)).astype(np.float32)
    assert nodebisect.diff(models["feature"], models["feature_int8"], {"x": x}).verdict == "match"  # the same model, no outlier
    x[:, 5] = 300.0
    result = nodebisect.diff(models["feature"], models["feature_int8"], {"x": x})
    fd = result.first_divergent
    assert fd is not None and fd.cause == Cause.QUANTIZATION_ERROR and fd.framework.module == "mm1", fd


def test_a_wrong_fused_node_is_named_with_the_reference_nodes_it_replaced(models: dict[str, Path]) -> None:
    fd = nodebisect.diff(models["clean"], models["broken_ort"]).first_divergent
    assert fd is not None and fd.op_type == "Gemm" and fd.stage == Stage.TRANSFORMATION and fd.cause == Cause.CONVERSION
    assert fd.checks.replaced == "mm1, bias1"  # onnxruntime's MatMulAddFusion: the MatMul and its bias Add


def test_onnxruntime_against_the_reference_evaluator_names_logsoftmax(models: dict[str, Path]) -> None:
    """Same file: onnxruntime's LogSoftmax is stable (x - max - log-sum), the evaluator's log(softmax) gives -inf."""
    result = nodebisect.diff(models["logsoftmax"], models["logsoftmax"], reference_ep="reference")
    fd = result.first_divergent
    assert fd is not None and fd.onnx_node == "logsoftmax" and fd.stage == Stage.RUNTIME
    assert fd.checks.closer_to_exact == "candidate"  # the float64 run agrees with onnxruntime: the evaluator is off
    from nodebisect.report.wording import file_at

    assert file_at(fd)[0] == "onnx/onnx"


def test_a_candidate_not_derived_from_the_reference_is_refused(models: dict[str, Path], cli) -> None:
    run = cli("diff", str(models["clean"]), str(models["logsoftmax"]), "-q")
    assert run.code == 2
    lines = [line for line in run.err.splitlines() if line.startswith("nodebisect: error:")]
    assert len(lines) == 1 and "does not look derived from the reference" in lines[0]
    assert "Traceback" not in run.err


def test_inputs_that_fit_one_model_only_name_what_each_takes(models: dict[str, Path], cli) -> None:
    run = cli("diff", str(models["dynamic"]), str(models["clean"]), "--input", "x=2x64", "-q")
    assert run.code == 2
    assert "the reference takes x (float32 [batchx64]); the candidate takes x (float32 [4x64])" in run.err


def test_the_same_model_on_the_same_backend_is_refused(models: dict[str, Path], cli) -> None:
    run = cli("diff", str(models["clean"]), str(models["clean"]), "-q")
    assert run.code == 2 and "the candidate is the reference, run on the same backend (cpu)" in run.err


def test_trials_scale_the_inputs_until_float16_overflows(models: dict[str, Path]) -> None:
    """The overflow model at 1/30 of its inputs' magnitude stays in float16's range; --trials 2 tries x10: overflow."""
    x = np.random.default_rng(3).standard_normal((4, D)).astype(np.float32) / 30
    assert nodebisect.diff(models["overflow"], models["overflow16"], {"x": x}).verdict == "match"
    result = nodebisect.diff(models["overflow"], models["overflow16"], {"x": x}, trials=2)
    assert [(t["scale"], t["verdict"]) for t in result.stats["trials"]] == [(1.0, "match"), (10.0, "diverged")]
    assert result.first_divergent.onnx_node == "square" and result.first_divergent.cause == Cause.PRECISION_OVERFLOW


def test_cli_json_and_report(models: dict[str, Path], cli, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    run = cli("diff", str(models["constant"]), str(models["constant16"]), "--json", str(out), "--report", str(tmp_path / "rep"), "-q")
    assert run.code == 1
    back = nodebisect.load_result(out)
    assert back.first_divergent.onnx_node == "scale_up" and back.first_divergent.cause == "constant_changed"
    report = (tmp_path / "rep" / "report.md").read_text()
    assert report.startswith("## onnxconverter-common: Mul node scale_up reads a changed constant (big: 20000 -> 10000)")
    assert "nodebisect diff " in report and "PyTorch" not in report


def test_the_tui_opens_a_diff_result(models: dict[str, Path], cli, tmp_path: Path) -> None:
    """The TUI is a client of the saved result: a diff's JSON opens on its culprit like locate's."""
    pytest.importorskip("textual")
    import asyncio

    from nodebisect_tui import create_app
    from nodebisect_tui.widgets import VerdictBanner

    out = tmp_path / "overflow.json"
    assert cli("diff", str(models["overflow"]), str(models["overflow16"]), "--json", str(out), "-q").code == 1

    async def banner() -> str:
        app = create_app(str(out))
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            return str(app.screen.query_one(VerdictBanner).render())

    assert "DIVERGED at square" in asyncio.run(banner())


def test_external_data_and_values_spilled_to_disk(models: dict[str, Path], tmp_path: Path) -> None:
    """A reference saved with its weights as external data; its values past a tiny memory budget memory-mapped."""
    onnx.save(onnx.load(str(models["clean"])), tmp_path / "clean.onnx", save_as_external_data=True, location="clean.data", size_threshold=0)
    assert (tmp_path / "clean.data").is_file()
    result = nodebisect.diff(tmp_path / "clean.onnx", models["clean16"], memory_budget=0.001)
    assert result.verdict == "match"
    assert any("spilled to disk" in note for note in result.notes)


def test_no_isolate_crashes_runs_the_candidate_in_process_with_the_same_answer(models: dict[str, Path], cli, tmp_path: Path) -> None:
    """diff --no-isolate-crashes: the same verdict and culprit as with onnxruntime's child, and no child asked."""
    from nodebisect.runtime import sandbox

    started: list[int] = []
    start = sandbox.OrtChild._start

    def counting(self) -> None:  # type: ignore[no-untyped-def]
        started.append(1)
        start(self)

    args = (str(models["clean"]), str(models["broken_ort"]), "-q")
    isolated = cli("diff", *args, "--json", str(tmp_path / "a.json"))
    sandbox.OrtChild._start = counting
    try:
        inproc = cli("diff", *args, "--no-isolate-crashes", "--json", str(tmp_path / "b.json"))
    finally:
        sandbox.OrtChild._start = start
    assert isolated.code == inproc.code == 1, (isolated, inproc)
    a, b = (json.loads((tmp_path / f).read_text())["first_divergent"] for f in ("a.json", "b.json"))
    assert a["onnx_node"] == b["onnx_node"] and a["cause"] == b["cause"]
    assert not started, "no onnxruntime child process was started"
