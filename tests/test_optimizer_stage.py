"""Graph optimizations that change numerics: the exporter's (stage graph_optimization) and
onnxruntime's (cause optimizer, with the level and the named fusion), on a real model."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import nodebisect

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
sys.path.insert(0, str(SAMPLES))
from divergent import ConvBnCancellation  # noqa: E402


@pytest.fixture(scope="module")
def unoptimized_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = ConvBnCancellation().eval()
    path = tmp_path_factory.mktemp("opt") / "conv_bn_unoptimized.onnx"
    torch.onnx.export(model, ConvBnCancellation.example_inputs(), dynamo=True, optimize=False, verbose=False).save(str(path))
    return path


@pytest.fixture(scope="module")
def folded(sample_runs: Any) -> Any:
    """The sample through the exporter's own optimizer (the default export): `nodebisect locate
    ConvBnCancellation.pt2 --report DIR`, run once per session (conftest's sample_runs)."""
    return sample_runs["ConvBnCancellation"]


@pytest.fixture(scope="module")
def unoptimized(unoptimized_onnx: Path) -> object:
    """The unoptimized export, prepared once: each onnxruntime optimization level only searches it again."""
    return nodebisect.prepare(ConvBnCancellation().eval(), ConvBnCancellation.example_inputs(), onnx_path=str(unoptimized_onnx))


def test_exporter_folding_is_attributed_to_graph_optimization(folded: Any) -> None:
    result = folded.result
    fd = result.first_divergent
    assert result.verdict == "diverged"
    assert fd is not None
    assert fd.op_type == "Conv"  # the BatchNorm was folded into it
    assert fd.framework.fx_node == "_native_batch_norm_legit_no_training"
    assert fd.stage == "graph_optimization"
    assert "optimize=False" in fd.explanation


def test_onnxruntime_fusion_is_named(unoptimized: object) -> None:
    result = nodebisect.locate(unoptimized)
    fd = result.first_divergent
    assert result.verdict == "diverged"
    assert fd is not None
    assert fd.op_type == "BatchNormalization"
    assert fd.cause == "optimizer"
    assert fd.stage == "runtime_optimizer"
    assert fd.optimizer == {"level": "basic", "optimizer": "ConvBNFusion"}
    # Marking every value as an output hides the bug (it breaks the fusion): the guard says so.
    assert any("observer effect" in note for note in result.notes)


def test_without_onnxruntime_optimizations_the_unoptimized_export_matches(unoptimized: object) -> None:
    result = nodebisect.locate(unoptimized, opt_level="disabled")
    assert result.verdict == "match"


@pytest.mark.subprocess
def test_graph_optimization_repro_holds_the_unfused_pair_next_to_the_folded_conv(folded: Any) -> None:
    """Issue #12 item 1: the optimizer's maintainers need the ops before folding beside the folded Conv."""
    import subprocess

    import onnx

    result, folder = folded.result, folded.folder  # the report folder `--report` wrote (report.bundle.write_report)
    assert result.first_divergent is not None and result.first_divergent.stage == "graph_optimization"
    conv = onnx.load(str(folder / "repro" / "model.onnx"))
    unfused = onnx.load(str(folder / "repro" / "unoptimized" / "model.onnx"))
    assert {n.op_type for n in conv.graph.node} == {"Conv"}
    assert {"Conv", "BatchNormalization"} <= {n.op_type for n in unfused.graph.node}
    run = subprocess.run([sys.executable, str(folder / "repro" / "repro.py")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "before the exporter's optimizer" in run.stdout and "matches PyTorch" in run.stdout
    assert "unoptimized/" in (folder / "report.md").read_text()



def test_the_fusion_search_runs_in_the_onnxruntime_child(unoptimized_onnx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """B3: the level and optimizer search opened its sessions in nodebisect's own process, outside the crash
    sandbox. Every real InferenceSession constructed in this process is counted; with crashes isolated, none is."""
    import onnxruntime

    made: list[int] = []
    real_init = onnxruntime.InferenceSession.__init__

    def counted_init(self: object, *args: object, **kwargs: object) -> None:
        made.append(1)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(onnxruntime.InferenceSession, "__init__", counted_init)
    result = nodebisect.locate(ConvBnCancellation().eval(), ConvBnCancellation.example_inputs(), onnx_path=str(unoptimized_onnx))
    fd = result.first_divergent
    assert fd is not None and fd.optimizer == {"level": "basic", "optimizer": "ConvBNFusion"}
    assert made == [], f"{len(made)} onnxruntime session(s) opened in the parent process"
