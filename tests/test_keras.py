"""Keras models through tf2onnx: TensorFlow's frozen graph as the reference, tf2onnx's stages.

Real TensorFlow, real tf2onnx, real onnxruntime (skipped without the ``keras``
extra). The three divergences of issue #24 are real ones of today's tools; the
optimizer defect is a deliberately wrong optimizer registered in tf2onnx's own
optimizer table, the way tf2onnx registers its optimizers.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nodebisect.records import Cause, FirstDivergent, FrameworkRef, Metrics, Stage
from nodebisect.report.wording import explanation, file_at, stage_sentence

ROOT = Path(__file__).resolve().parents[1]
MODELS = Path(__file__).with_name("keras_models.py")


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)


# -- without TensorFlow -------------------------------------------------------------------


def test_nodebisect_imports_no_tensorflow() -> None:
    run = _python(
        "import sys, nodebisect, nodebisect.pipeline, nodebisect.frontends.keras, nodebisect.report.wording\n"
        "assert nodebisect.frontends.keras.is_keras_model(object()) is False\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx')))"
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


@pytest.mark.slow  # a full locate (or a fresh Python): the fast tier stays under 3 minutes
def test_a_keras_model_without_the_extra_exits_2_naming_it(tmp_path: Path) -> None:
    model = tmp_path / "model.keras"
    model.write_bytes(b"PK")
    run = _python(
        "import sys\nsys.modules['tensorflow'] = None  # the extra is not installed\n"
        f"from nodebisect.cli.main import main\nsys.exit(main(['locate', {str(model)!r}]))"
    )
    assert run.returncode == 2, run.stderr
    assert "pip install 'nodebisect[keras]'" in run.stderr and "Traceback" not in run.stderr


def _fd(stage: Stage, cause: Cause, **more: Any) -> FirstDivergent:
    return FirstDivergent(
        onnx_node="n", op_type="Resize", onnx_value="n:0", stage=stage, cause=cause, segment=["n"], segment_op_types=["Resize"],
        framework=FrameworkRef(fx_node="m/resize/ResizeBicubic", target="tf.ResizeBicubic"), metrics=Metrics(max_abs=1e-3), **more,
    )


@pytest.mark.parametrize(
    ("stage", "cause", "optimizer", "repo"),
    [
        pytest.param(Stage.FRAMEWORK, Cause.FRAMEWORK, {}, "tensorflow/tensorflow", id="tf-kernel"),
        pytest.param(Stage.GRAPH_OPTIMIZATION, Cause.CONVERSION, {"tool": "tf2onnx", "optimizer": "fold_constants"}, "onnx/tensorflow-onnx", id="tf2onnx-optimizer"),
        pytest.param(Stage.CONVERSION, Cause.CONVERSION, {}, "onnx/tensorflow-onnx", id="tf2onnx-handler"),
        pytest.param(Stage.TF_OPTIMIZATION, Cause.TF_OPTIMIZATION, {}, "tensorflow/tensorflow", id="grappler"),
    ],
)
def test_a_tensorflow_verdict_is_worded_in_tf2onnx_terms(stage: Stage, cause: Cause, optimizer: dict[str, str], repo: str) -> None:
    fd = _fd(stage, cause, optimizer=optimizer)
    where = file_at(fd, "tf2onnx")
    assert where is not None and where[0] == repo
    assert "PyTorch" not in stage_sentence(fd, "tf2onnx") and "torch" not in stage_sentence(fd, "tf2onnx")
    if optimizer.get("optimizer"):
        assert "fold_constants" in stage_sentence(fd, "tf2onnx")


def test_a_pytorch_verdict_keeps_its_words() -> None:
    fd = FirstDivergent(onnx_node="n", op_type="Add", onnx_value="v", stage=Stage.CONVERSION, cause=Cause.CONVERSION, segment=["n"], segment_op_types=["Add"],
                        framework=FrameworkRef(target="aten.add.Tensor"), metrics=Metrics(max_abs=1.0))
    assert file_at(fd, "dynamo") == ("pytorch/pytorch", "torch.onnx, the dynamo exporter's op translation (torchlib)")
    assert "tf2onnx" not in explanation(fd)


def _conv_relu(defect: bool = False) -> tuple[Any, dict[str, np.ndarray], Any]:
    """tf2onnx's shape of a Conv2D+BiasAdd+Relu: NCHW Conv named after the TF op, the bias folded in, Transposes around."""
    from onnx import helper

    from nodebisect.frontends.keras.graphrun import GraphValues

    rng = np.random.default_rng(0)
    conv = rng.standard_normal((1, 5, 5, 4)).astype(np.float32)  # NHWC, as TensorFlow computes it
    bias = conv + 0.5
    tf = GraphValues(
        values={"m/conv/Conv2D:0": conv, "m/conv/BiasAdd:0": bias, "m/relu/Relu:0": np.maximum(bias, 0), "Identity:0": np.maximum(bias, 0)},
        op_type={"x": "Placeholder", "m/conv/Conv2D": "Conv2D", "m/conv/BiasAdd": "BiasAdd", "m/relu/Relu": "Relu", "Identity": "Identity"},
        consumers={"m/conv/Conv2D:0": ["m/conv/BiasAdd"], "m/conv/BiasAdd:0": ["m/relu/Relu"], "m/relu/Relu:0": ["Identity"]},
        producer_input={"m/conv/BiasAdd": "m/conv/Conv2D:0", "m/relu/Relu": "m/conv/BiasAdd:0", "Identity": "m/relu/Relu:0"},
    )
    nodes = [
        helper.make_node("Transpose", ["x"], ["m/conv/Conv2D__3:0"], name="m/conv/Conv2D__3"),
        helper.make_node("Conv", ["m/conv/Conv2D__3:0", "w", "b"], ["m/conv/Conv2D:0"], name="m/conv/Conv2D"),
        helper.make_node("Transpose", ["m/conv/Conv2D:0"], ["m/conv/Conv2D__5:0"], name="m/conv/Conv2D__5"),
        helper.make_node("Relu", ["m/conv/Conv2D__5:0"], ["Conv__33:0"], name="Conv__33"),
        helper.make_node("Identity", ["Conv__33:0"], ["out"], name="m/relu/Relu"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, None)], [helper.make_tensor_value_info("out", 1, None)])
    nchw = bias.transpose(0, 3, 1, 2) + (1.0 if defect else 0.0)
    x = rng.standard_normal((1, 5, 5, 4)).astype(np.float32)
    onnx_values = {"m/conv/Conv2D__3:0": x.transpose(0, 3, 1, 2), "m/conv/Conv2D:0": nchw, "m/conv/Conv2D__5:0": nchw.transpose(0, 2, 3, 1),
                   "Conv__33:0": np.maximum(nchw.transpose(0, 2, 3, 1), 0), "out": np.maximum(nchw.transpose(0, 2, 3, 1), 0)}
    return helper.make_model(graph), onnx_values, tf


def test_tf2onnx_names_map_through_chains_layouts_and_fused_segments() -> None:
    from nodebisect.frontends.keras.mapping import map_values

    model, onnx_values, tf = _conv_relu()
    mapped = map_values(model, onnx_values, tf, {"Identity:0": "out"}, lambda _n, a, b: bool(np.allclose(a, b, atol=1e-5)))
    assert mapped.tensor["m/conv/Conv2D:0"] == "m/conv/BiasAdd:0" and mapped.layout["m/conv/Conv2D:0"] == "perm(0, 3, 1, 2)"  # rules 1, 2
    assert mapped.tensor["out"] == "Identity:0"
    assert "Conv__33:0" not in mapped.values and "m/conv/Conv2D__5:0" not in mapped.values  # rule 3; one ONNX value per tensor
    assert mapped.base["m/conv/Conv2D__5"] == "m/conv/Conv2D" and mapped.base["Conv__33"] == ""


def test_a_wrong_value_still_maps_where_its_consumers_read_it() -> None:
    from nodebisect.frontends.keras.mapping import map_values

    model, onnx_values, tf = _conv_relu(defect=True)
    mapped = map_values(model, onnx_values, tf, {"Identity:0": "out"}, lambda _n, a, b: bool(np.allclose(a, b, atol=1e-5)))
    assert mapped.tensor.get("m/conv/Conv2D__5:0") == "m/conv/BiasAdd:0"  # the group's exit, the last absorbed tensor
    assert not np.allclose(mapped.values["m/conv/Conv2D__5:0"], onnx_values["m/conv/Conv2D__5:0"])  # so the search sees the defect


# -- real TensorFlow ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def km() -> Any:
    """tests/keras_models.py, imported once TensorFlow is known to be there."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("tf2onnx")
    sys.path.insert(0, str(MODELS.parent))
    try:
        import keras_models
    finally:
        sys.path.remove(str(MODELS.parent))
    return keras_models


def _locate(built: tuple[Any, np.ndarray], **options: Any) -> Any:
    import nodebisect

    model, x = built
    return nodebisect.locate(model, x, isolate_crashes=False, **options)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cnn", "mobilenet", "transformer", "lstm"])
def test_clean_models_match_with_and_without_tf2onnx_optimizers(km: Any, name: str) -> None:
    built = getattr(km, name)()
    for optimizers in (None, "baseline"):
        result = _locate(built, tf2onnx_optimizers=optimizers)
        assert result.verdict == "match", (name, optimizers, result.first_divergent)
        assert result.stats["compared_values"] >= 10 and not any(n.status == "diverged" for n in result.nodes)
        assert result.environment["exporter"] == "tf2onnx"


@pytest.mark.slow
def test_conv3d_transpose_with_a_dynamic_depth_is_tf2onnx_cropping_one_axis(km: Any, tmp_path: Path) -> None:
    result = _locate(km.conv3d_transpose())
    fd = result.first_divergent
    assert result.verdict == "diverged" and fd is not None
    assert fd.op_type == "Slice" and fd.stage == Stage.CONVERSION and fd.cause == Cause.CONVERSION
    assert fd.framework.target == "tf.Conv3DBackpropInputV2" and fd.framework.module == "conv3d_transpose"
    assert fd.metrics.shape == [1, 3, 4, 12, 13] and fd.metrics.expected_shape == [1, 3, 4, 12, 12]
    assert file_at(fd, "tf2onnx")[0] == "onnx/tensorflow-onnx"
    # The report speaks of TensorFlow's values and lists the TF stack's versions (it said PyTorch, and had neither).
    from nodebisect.report.bundle import write_report

    out = write_report(result, tmp_path / "report")
    md, script = (out / "report.md").read_text(), (out / "repro" / "repro.py").read_text()
    assert "PyTorch" not in md and "torch.save" not in md and "fed with TensorFlow's own values" in md, md
    assert "**tf2onnx**" in md and "**tensorflow**" in md and "**keras**" in md
    assert "PyTorch" not in script and "differently from TensorFlow" in script
    assert _locate(km.conv3d_transpose(depth=4)).verdict == "match"  # a static depth converts right


@pytest.mark.slow
def test_exact_gelu_is_an_export_failure_naming_erfc(cli: Any) -> None:
    pytest.importorskip("tf2onnx")
    run = cli("locate", f"{MODELS}:gelu", "--no-isolate-crashes")
    assert run.code == 3, run.err
    assert "Erfc" in run.out + run.err and "Traceback" not in run.out + run.err


@pytest.mark.slow
def test_bicubic_resizing_is_tensorflows_approximation_not_tf2onnx(km: Any) -> None:
    result = _locate(km.bicubic())
    fd = result.first_divergent
    assert result.verdict == "diverged" and fd is not None
    assert fd.op_type == "Resize" and fd.stage == Stage.FRAMEWORK and fd.cause == Cause.FRAMEWORK
    assert fd.framework.target == "tf.ResizeBicubic" and fd.framework.module == "resizing"
    assert fd.op_noise["onnxruntime"] * 10 < fd.op_noise["tensorflow"]
    assert file_at(fd, "tf2onnx")[0] == "tensorflow/tensorflow"


@pytest.mark.slow
def test_a_wrong_tf2onnx_optimizer_is_blamed_by_name(km: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from tf2onnx import optimizer as tf2onnx_optimizer
    from tf2onnx.optimizer.optimizer_base import GraphOptimizerBase

    class LeakyReluOptimizer(GraphOptimizerBase):
        """Deliberately wrong: turns the first Relu into a LeakyRelu (a real op with other semantics)."""

        def _optimize(self, graph: Any) -> Any:
            return self._apply_optimization(graph, self._at_level)

        def _at_level(self, graph: Any) -> Any:
            relu = next((n for n in graph.get_nodes() if n.type == "Relu"), None)
            if relu is not None:
                relu.type = "LeakyRelu"
                relu.set_attr("alpha", 0.5)
                self.graph_been_opt = True
            return graph

    monkeypatch.setitem(tf2onnx_optimizer._optimizers, "leaky_relu_defect", LeakyReluOptimizer)
    result = _locate(km.cnn())
    fd = result.first_divergent
    assert result.verdict == "diverged" and fd is not None
    assert fd.op_type == "LeakyRelu" and fd.stage == Stage.GRAPH_OPTIMIZATION
    assert fd.optimizer["optimizer"] == "leaky_relu_defect" and fd.checks.unoptimized_export == "right"
    assert file_at(fd, "tf2onnx")[1].startswith("tf2onnx's ONNX optimizers")
    assert "leaky_relu_defect" in explanation(fd)
    from nodebisect.report.filing import issue_title

    assert issue_title(result).startswith("tf2onnx optimizer leaky_relu_defect: rewriting tf.Relu")
    from nodebisect.report.verdict import verdict_view

    facts = " | ".join(f"{f.label}: {f.text}" for f in verdict_view(result).facts)
    assert "TensorFlow" in facts and "PyTorch" not in facts, facts


@pytest.mark.slow
def test_the_conversion_is_tf2onnxs_own(km: Any) -> None:
    """The same nodes as ``tf2onnx.convert.from_keras`` makes: nodebisect debugs what users get."""
    import tf2onnx

    from nodebisect.frontends.keras.convert import convert, freeze

    model, _ = km.cnn()
    ours = convert(freeze(model))
    theirs, _ = tf2onnx.convert.from_keras(model)
    fresh = re.compile(r"__\d+")  # tf2onnx numbers the names it makes with a process-wide counter
    assert [(n.op_type, fresh.sub("", n.name)) for n in ours.graph.node] == [(n.op_type, fresh.sub("", n.name)) for n in theirs.graph.node]


@pytest.mark.slow
def test_bad_keras_input_is_one_line_and_exit_2(km: Any, tmp_path: Path) -> None:
    import keras

    import nodebisect
    from nodebisect.errors import BadInputError, UntrustedPickleError

    class Subclassed(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x: Any) -> Any:
            return self.dense(x)

    with pytest.raises(BadInputError, match="no input signature"):
        nodebisect.locate(Subclassed(), np.zeros((1, 3), np.float32), isolate_crashes=False)

    inp = keras.Input((3,), name="x")
    lam = keras.Model(inp, keras.layers.Lambda(lambda t: t * 2.0)(keras.layers.Dense(3)(inp)))
    path = tmp_path / "lambda.keras"
    lam.save(path)
    np.savez(tmp_path / "x.npz", x=np.ones((2, 3), np.float32))
    with pytest.raises(UntrustedPickleError, match="carries Python code"):
        nodebisect.locate(str(path), inputs_file=str(tmp_path / "x.npz"), isolate_crashes=False)
    assert nodebisect.locate(str(path), inputs_file=str(tmp_path / "x.npz"), trust_pickle=True, isolate_crashes=False).verdict == "match"

    class Custom(keras.layers.Layer):
        def call(self, x: Any) -> Any:
            return x + 1.0

    custom = keras.Model(inp, Custom()(inp))
    custom.save(tmp_path / "custom.keras")
    with pytest.raises(BadInputError, match="custom objects"):
        nodebisect.locate(str(tmp_path / "custom.keras"), inputs_file=str(tmp_path / "x.npz"), isolate_crashes=False)


@pytest.mark.slow
def test_a_torch_locate_imports_no_tensorflow() -> None:
    run = _python(
        "import sys, torch, nodebisect\n"
        "r = nodebisect.locate(torch.nn.Linear(3, 2), torch.ones(1, 3), isolate_crashes=False, check_capture=False, oracle='off')\n"
        "assert r.verdict == 'match', r.verdict\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx')))"
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow
def test_the_stages_before_onnx_name_the_changed_tf_op(km: Any) -> None:
    """Edit one op of a real frozen graph: in the graph tf2onnx converts, capture; in the graph before grappler, tf_optimization."""
    import copy

    from nodebisect.frontends.keras.convert import freeze
    from nodebisect.frontends.keras.graphrun import run_graph
    from nodebisect.frontends.keras.load import KerasLoaded
    from nodebisect.frontends.keras.stages import KerasStages, check_capture_and_grappler
    from nodebisect.run import RunLog, make_options

    model, x = km.cnn()
    frozen = freeze(model)

    def edited(graph_def: Any) -> tuple[Any, str]:
        graph_def = copy.deepcopy(graph_def)
        relu = next(n for n in graph_def.node if n.op == "Relu")
        relu.op = "Elu"  # a real TF op with other semantics
        return graph_def, relu.name

    def stage_of(after: Any, before: Any) -> Any:
        changed = type(frozen)(**{**frozen.__dict__, "after": after, "before": before})
        ctx = KerasStages(loaded=KerasLoaded(model, [x]), frozen=changed, tf_values=run_graph(after, frozen.input_names, [x]),
                          onnx_values={}, convert=lambda *a: None)
        return check_capture_and_grappler(ctx, make_options({}), RunLog(emit=lambda _e: None))

    assert stage_of(frozen.after, frozen.before) is None
    after, op = edited(frozen.after)
    fd = stage_of(after, frozen.before)
    assert fd is not None and fd.stage == Stage.CAPTURE
    before, op = edited(frozen.before)
    fd = stage_of(frozen.after, before)
    assert fd is not None and fd.stage == Stage.TF_OPTIMIZATION and fd.onnx_node == op and fd.framework.target == "tf.Elu"
    assert file_at(fd, "tf2onnx")[0] == "tensorflow/tensorflow"
