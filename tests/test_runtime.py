"""The onnxruntime runner: prefix models, weights written once, in-process and sandboxed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import nodebisect
import nodebisect.runtime.runner as runtime
from nodebisect.frontends.dynamo import export_onnx
from nodebisect.frontends.loading.load import build_loaded_model


class Stack(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = torch.nn.ModuleList(torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.LayerNorm(16), torch.nn.GELU()) for _ in range(6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = x + layer(x)
        return x


ARGS = (torch.randn(4, 16, generator=torch.Generator().manual_seed(0)),)


@pytest.fixture(scope="module")
def faulted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    proto = export_onnx(build_loaded_model(Stack().eval(), ARGS)).model
    norms = [n for n in proto.graph.node if n.op_type == "LayerNormalization"]
    edited = norms[3]
    for attr in edited.attribute:
        if attr.name == "epsilon":
            attr.f = 0.5
    path = tmp_path_factory.mktemp("rt") / "faulted.onnx"
    onnx.save(proto, path)
    return path, edited.name


@pytest.fixture(scope="module")
def prepared(faulted: tuple[Path, str]) -> object:
    """The faulted file loaded and PyTorch's values captured once; each test only searches it (onnxruntime)."""
    return nodebisect.prepare(Stack().eval(), ARGS, onnx_path=str(faulted[0]))


@pytest.mark.parametrize("isolate_crashes", [pytest.param(True, id="sandbox"), pytest.param(False, id="in-process", marks=pytest.mark.slow)])
def test_weights_written_once_give_the_same_answer(
    faulted: tuple[Path, str], prepared: object, isolate_crashes: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    _path, edited = faulted
    plain = nodebisect.locate(prepared, strategy="bisect", isolate_crashes=isolate_crashes)
    monkeypatch.setattr(runtime, "EXTERNALIZE_BYTES", 0)  # every weight goes through the shared file
    external = nodebisect.locate(prepared, strategy="bisect", isolate_crashes=isolate_crashes)
    assert plain.first_divergent is not None and external.first_divergent is not None
    assert external.first_divergent.onnx_node == plain.first_divergent.onnx_node == edited
    assert external.first_divergent.metrics.max_abs == pytest.approx(plain.first_divergent.metrics.max_abs)
    assert external.stats["ort_sessions"] == plain.stats["ort_sessions"]


def test_prefix_runs_only_what_the_values_need(faulted: tuple[Path, str]) -> None:
    path, _ = faulted
    model = onnx.load(path)
    feeds = {model.graph.input[0].name: ARGS[0].numpy()}
    runner = runtime.OrtRunner(model, feeds)
    first = model.graph.node[0].output[0]
    prefix = runner.prefix([first])
    assert [n.name for n in prefix.graph.node] == [model.graph.node[0].name]
    got = runner.run([first])[first]
    assert runner.sessions == 1
    full = runner.run([model.graph.output[0].name])
    assert np.isfinite(got).all() and np.isfinite(next(iter(full.values()))).all()


@pytest.mark.slow
def test_spilled_reference_activations_give_the_same_answer(faulted: tuple[Path, str]) -> None:
    path, edited = faulted
    result = nodebisect.locate(Stack().eval(), ARGS, onnx_path=str(path), strategy="bisect", memory_budget=0)
    assert result.first_divergent is not None
    assert result.first_divergent.onnx_node == edited
    assert any("spilled to disk" in note for note in result.notes)


def test_the_sandbox_child_imports_nodebisect_from_where_the_parent_did() -> None:
    """The child's PYTHONPATH holds the folder *containing* the nodebisect package.

    It was computed from sandbox.py's depth, which pointed inside the package once the
    file moved to runtime/: an uninstalled checkout's child could not import nodebisect.
    """
    from nodebisect.runtime.sandbox import import_root

    root = Path(import_root())
    assert (root / "nodebisect" / "runtime" / "sandbox.py").is_file()
    assert root / "nodebisect" == Path(nodebisect.__file__).resolve().parent


def test_an_answer_kept_from_an_identical_request_stands_for_the_session(faulted: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A re-run asks onnxruntime the same questions: the warm state answers them, the child is not asked again."""
    from nodebisect.runtime.handle import WarmOrt

    path, _ = faulted
    model = onnx.load(path)
    feeds = {model.graph.input[0].name: ARGS[0].numpy()}
    out = model.graph.output[0].name
    monkeypatch.setattr(runtime, "EXTERNALIZE_BYTES", 0)  # the weights file is kept too
    warm = WarmOrt(isolate_crashes=True, timeout_s=60)
    try:
        warm.write_weights(model)
        first_run, second_run = warm.handle("cpu", "all", True, 60, None), warm.handle("cpu", "all", True, 60, None)
        first = first_run.runner(model, feeds).run([out])
        assert first_run.child is not None and first_run.child.requests == 1
        again_runner = second_run.runner(model, feeds)
        again = again_runner.run([out])
        assert again_runner.sessions == 1, "a kept answer still counts as the session it stands for"
        assert second_run.child is first_run.child and first_run.child.requests == 1 and warm.answers.hits == 1
        assert again_runner.weights is warm.weights_for(model) and again_runner.weights is not None
        np.testing.assert_array_equal(again[out], first[out])
        assert not again[out].flags.writeable, "kept arrays are shared by every later reader"
        # Another level, or other feed values, is another question.
        second_run.runner(model, feeds, opt_level="disabled").run([out])
        second_run.runner(model, {k: v + 1 for k, v in feeds.items()}).run([out])
        assert first_run.child.requests == 3 and warm.answers.hits == 1
        folder = warm.weights_for(model).dir
        assert Path(folder, "weights.bin").is_file()
    finally:
        warm.close()
    assert not Path(folder).exists() and first_run.child.pid is None
