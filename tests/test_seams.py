"""The seams other references and outputs plug into: the Reference interface, the typed diagnosis, one verdict view.

* A reference that is not PyTorch (here: an ONNX model's own values from
  onnxruntime) goes through the same search and diagnosis, by the public API.
* The diagnosis is data: the sentences are composed from ``Checks`` in
  ``report.wording``; nothing else writes or parses ``explanation``.
"""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import nodebisect
from nodebisect.pipeline import PreparedModel
from nodebisect.prepared import Prepared
from nodebisect.records import RIGHT, WRONG, Cause, Checks, FirstDivergent, FrameworkRef, LocateResult, Metrics, Stage
from nodebisect.reference import Reference
from nodebisect.run import make_options

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "nodebisect"


# -- a reference that is not PyTorch ------------------------------------------------------


def _mlp() -> onnx.ModelProto:
    """x -> MatMul -> Add -> Relu -> MatMul -> Tanh: a real ONNX graph, no exporter involved."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "b1")
    w2 = numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"], name="mm1"),
        helper.make_node("Add", ["h0", "b1"], ["h1"], name="bias"),
        helper.make_node("Relu", ["h1"], ["h2"], name="act"),
        helper.make_node("MatMul", ["h2", "w2"], ["h3"], name="mm2"),
        helper.make_node("Tanh", ["h3"], ["y"], name="out"),
    ]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])], [w1, b1, w2],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _onnx_reference(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> Reference:
    """Every value of ``model`` as onnxruntime computes it, keyed by its own name."""
    marked = copy.deepcopy(model)
    names = [o for n in marked.graph.node for o in n.output if o not in {g.name for g in marked.graph.output}]
    marked.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names)
    session = ort.InferenceSession(marked.SerializeToString(), providers=["CPUExecutionProvider"])
    out_names = [o.name for o in session.get_outputs()]
    values = dict(zip(out_names, session.run(out_names, feeds)))
    order = [o for n in model.graph.node for o in n.output]
    return Reference(values=values, dtypes={k: "float32" for k in values}, order=order, outputs=[o.name for o in model.graph.output], kind="onnx")


def _locate_against(reference_model: onnx.ModelProto, model: onnx.ModelProto) -> LocateResult:
    x = np.random.default_rng(1).standard_normal((4, 8)).astype(np.float32)
    feeds = {"x": x}
    prep = Prepared(onnx_model=model, acts=_onnx_reference(reference_model, feeds), flat_inputs=[x], feeds=feeds)
    prepared = PreparedModel(opts=make_options({}), source="reference.onnx", environment={}, prep=prep)
    return nodebisect.locate(prepared, isolate_crashes=False)


def test_an_onnx_reference_goes_through_the_same_search_and_diagnosis() -> None:
    clean = _mlp()
    faulty = copy.deepcopy(clean)
    act = next(n for n in faulty.graph.node if n.name == "act")
    act.op_type = "Sigmoid"  # a real operator with other semantics, in the middle of the graph

    result = _locate_against(clean, faulty)

    assert result.verdict == "diverged"
    fd = result.first_divergent
    assert fd is not None and fd.onnx_node == "act"
    assert fd.cause == Cause.CONVERSION and fd.checks.alone == WRONG  # wrong on the reference's own inputs
    assert fd.framework.fx_node == "h2"  # the reference's name for the value, from Reference.describe
    assert fd.explanation.startswith("wrong even when fed the framework's own input values")


def test_an_onnx_reference_finds_no_divergence_in_the_same_model() -> None:
    clean = _mlp()
    result = _locate_against(clean, copy.deepcopy(clean))
    assert result.verdict == "match"
    assert result.first_divergent is None


# -- the diagnosis as data ----------------------------------------------------------------


def _fd(**changes: object) -> FirstDivergent:
    base = dict(
        onnx_node="n", op_type="Add", onnx_value="v", stage=Stage.CONVERSION, cause=Cause.CONVERSION, segment=["n"],
        segment_op_types=["Add"], framework=FrameworkRef(target="aten.add.Tensor", fx_node="add"), metrics=Metrics(max_abs=1.0),
    )
    base.update(changes)
    return FirstDivergent(**base)  # type: ignore[arg-type]


def test_the_report_reads_the_checks_not_the_explanation() -> None:
    """An optimizer culprit right alone and wrong with its producers: the words come from Checks, whatever explanation says."""
    from nodebisect.report.filing import issue_title
    from nodebisect.report.wording import evidence_text, explanation, isolation_text

    fd = _fd(
        stage=Stage.RUNTIME_OPTIMIZER, cause=Cause.OPTIMIZER, isolated_metrics=Metrics(max_abs=0.5),
        checks=Checks(alone=RIGHT, with_producers=WRONG, optimizations_off=RIGHT, opt_level="all"),
        optimizer={"level": "extended", "optimizer": "SomeFusion"}, explanation="",
    )
    result = LocateResult(verdict="diverged", first_divergent=fd)
    assert "together with its producers" in issue_title(result)
    assert "with the ops producing its inputs: max_abs=0.5" in isolation_text(fd)
    words = explanation(fd)
    assert words.startswith("right when run alone on reference inputs but wrong together with the ops producing its inputs: wrong with onnxruntime graph optimizations (all)")
    assert "disabling onnxruntime's 'SomeFusion' alone makes it right" in words
    # The evidence line says only what no other line says: the level and the optimizer, not the isolation again.
    assert evidence_text(fd).startswith("it first goes wrong at optimization level 'extended'")
    assert "right when run alone" not in evidence_text(fd)


def test_checks_survive_the_json_and_unknown_words_stay_readable() -> None:
    fd = _fd(checks=Checks(alone=WRONG, unoptimized_export=RIGHT), stage=Stage.GRAPH_OPTIMIZATION)
    data = fd.to_dict()
    assert data["checks"] == {"alone": "wrong", "unoptimized_export": "right"}
    back = FirstDivergent.from_dict(data)
    assert back is not None and back.checks == fd.checks and back.stage is Stage.GRAPH_OPTIMIZATION
    data.update(stage="a_stage_from_the_future", checks={"alone": "wrong", "new_check": "right"})
    newer = FirstDivergent.from_dict(data)
    assert newer is not None and newer.stage == "a_stage_from_the_future" and newer.checks.alone == "wrong"


def test_a_stage_and_a_cause_are_different_words() -> None:
    assert isinstance(Stage.CONVERSION, Stage) and not isinstance(Stage.CONVERSION, Cause)
    assert Stage.CONVERSION == "conversion" and f"{Cause.INHERITED}" == "inherited"


def _python_files(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (ROOT / f).rglob("*.py") if "__pycache__" not in p.parts)


def test_no_code_parses_the_explanation() -> None:
    """``explanation`` is read whole (for display) or not at all: no prefix, split, search or slice of it."""
    offenders = []
    for path in _python_files("nodebisect", "tui"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and node.attr == "explanation"):
                continue
            parent = parents.get(node)
            parsed = isinstance(parent, (ast.Attribute, ast.Subscript)) and getattr(parent, "value", None) is node
            parsed |= isinstance(parent, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn)) for op in parent.ops)
            if parsed:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, f"code parsing the explanation's prose: {offenders}"


def test_only_the_pipeline_writes_the_explanation() -> None:
    """Steps return typed checks; the pipeline composes the sentence once (report.wording.explanation)."""
    offenders = []
    for path in _python_files("nodebisect", "tui"):
        if path in (PKG / "pipeline.py", PKG / "records.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AugAssign) else []
            if any(isinstance(t, ast.Attribute) and t.attr == "explanation" for t in targets):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            if isinstance(node, ast.Call) and any(k.arg == "explanation" for k in node.keywords):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, f"explanation written outside the pipeline: {offenders}"


@pytest.mark.parametrize("folder", ["diagnose", "search", "values"])
def test_the_diagnosis_asks_the_reference_and_never_runs_torch(folder: str) -> None:
    """Only diagnose/stages.py (the PyTorch stage checks: eager, decomposition, optimize=False) runs the framework."""
    offenders = []
    for path in _python_files(f"nodebisect/{folder}"):
        if path == PKG / "diagnose" / "stages.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n.split(".")[0] == "torch" or n.startswith("nodebisect.frontends") for n in names):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders
