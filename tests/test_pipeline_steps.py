"""The pipeline's steps take their inputs explicitly: two defects of the shared-state design, and
"prepare once, search many"."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import nodebisect
from nodebisect.diagnose.stages import check_capture
from nodebisect.frontends.loading.load import build_loaded_model
from nodebisect.frontends.export_capture import export_and_capture
from nodebisect.run import Options, RunLog

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
sys.path.insert(0, str(SAMPLES))
from divergent import Atan2ZeroY, ConvBnCancellation, Fp16RoundingElided, SdpaFullyMaskedRow, TransformerFastPath  # noqa: E402


@pytest.mark.slow
def test_trials_do_not_feed_the_optimizer_check_another_input_set() -> None:
    """With --trials the exporter-optimizer check once ran the last trial's inputs against the
    given inputs' reference values, and blamed the op's conversion instead of the optimizer."""
    result = nodebisect.locate(ConvBnCancellation().eval(), ConvBnCancellation.example_inputs(), trials=2)
    assert [row["inputs"] for row in result.trials][0] == "given"
    assert result.trials[0]["verdict"] == "diverged"
    fd = result.first_divergent
    assert fd is not None and fd.op_type == "Conv"
    assert fd.stage == "graph_optimization", fd.explanation


class _Bf16Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(x))


def test_capture_check_judges_bfloat16_values_with_bfloat16_tolerance() -> None:
    """Eager vs export one bf16 ulp apart is legitimate bf16 drift, not a capture defect.

    The captured values are widened to float32 (numpy has no bfloat16); without
    the dtype the check judged them with the float32 tolerance and raised an alarm.
    """
    model = _Bf16Block().to(torch.bfloat16).eval()
    x = torch.randn(4, 16, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    opts = Options()
    log = RunLog()
    loaded = build_loaded_model(model, (x,))
    prep = export_and_capture(loaded, opts, log)
    out = prep.acts.outputs[0]
    assert prep.acts.dtypes[out] == "bfloat16"
    info, culprit = check_capture(loaded, prep, opts, log)
    assert info["eager_matches_export"] and culprit is None
    # One bf16 ulp of drift on every output element (eps = 2**-7 relative).
    value = prep.acts.values[out]
    prep.acts.values[out] = (value + np.sign(value) * np.abs(value) * 2.0**-7).astype(np.float32)
    info, culprit = check_capture(loaded, prep, opts, log)
    assert info["eager_matches_export"], "one bf16 ulp judged with the float32 tolerance"
    assert culprit is None
    # Ten percent is no drift: the check still sees it (the exported program computing it,
    # so its own float64 oracle agrees: eager alone is off).
    prep.acts.values[out] = (value * 1.1 + 0.1).astype(np.float32)
    if out in prep.oracle:
        prep.oracle[out] = prep.acts.values[out].astype(np.float64)
    info, culprit = check_capture(loaded, prep, opts, log)
    assert not info["eager_matches_export"] and culprit is not None and culprit.stage == "capture"


def test_a_prepared_model_is_searched_again_without_exporting(monkeypatch: pytest.MonkeyPatch) -> None:
    import nodebisect.frontends.dynamo as dynamo

    calls = []
    real_export = dynamo.export_onnx

    def counting_export(*args, **kwargs):  # the real exporter, counted
        calls.append(1)
        return real_export(*args, **kwargs)

    monkeypatch.setattr(dynamo, "export_onnx", counting_export)
    prepared = nodebisect.prepare(Atan2ZeroY().eval(), Atan2ZeroY.example_inputs(), check_capture=False)
    assert len(calls) == 1
    first = nodebisect.locate(prepared)
    again = nodebisect.locate(prepared, strategy="bisect", probes_per_step=1)
    assert len(calls) == 2, "locate(prepared) exported again"  # the model, then once without the ONNX optimizer
    assert first.verdict == again.verdict == "diverged"
    assert first.first_divergent.onnx_node == again.first_divergent.onnx_node
    assert first.stats["strategy"] == "all" and again.stats["strategy"] == "bisect"
    # The re-run's timings are its own: no export or capture was redone.
    assert again.stats["reused_preparation"] is True
    assert "export" not in again.stats["timings"] and "capture" not in again.stats["timings"]
    loose = nodebisect.locate(prepared, atol=10.0, rtol=10.0)
    assert loose.verdict == "match"
    with pytest.raises(nodebisect.BadInputError, match="opset"):
        nodebisect.locate(prepared, opset=18)


def test_a_rerun_keeps_the_child_the_weights_file_and_the_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """A re-run under another tolerance started a new onnxruntime child, wrote the weights again and asked
    onnxruntime every question again; the prepared model now keeps all three until it is closed."""
    import nodebisect.runtime.runner as runner

    monkeypatch.setattr(runner, "EXTERNALIZE_BYTES", 0)  # this small model's weights go through the file too
    with nodebisect.prepare(Atan2ZeroY().eval(), Atan2ZeroY.example_inputs(), check_capture=False) as prepared:
        first = nodebisect.locate(prepared)
        child, weights = prepared.warm.child, prepared.warm.weights_for(prepared.prep.onnx_model)
        pid, asked, folder = child.pid, child.requests, weights.dir
        assert pid is not None and (Path(folder) / "weights.bin").is_file()
        again = nodebisect.locate(prepared, rtol=1e-3, atol=1e-4)
        assert child.pid == pid and prepared.warm.weights_for(prepared.prep.onnx_model) is weights
        assert child.requests == asked, "the re-run asked onnxruntime what it had already answered"
        assert again.stats["ort_sessions"] == first.stats["ort_sessions"] and again.stats["extra_sessions"] == first.stats["extra_sessions"]
        assert again.stats["reused_ort_answers"] >= again.stats["ort_sessions"]
        assert again.first_divergent.onnx_node == first.first_divergent.onnx_node
    assert child.pid is None and not Path(folder).exists(), "close() stops the child and removes the weights file"
    # A closed preparation can still be searched; that run starts its own child.
    closed_run = nodebisect.locate(prepared, rtol=1e-3, atol=1e-4)
    assert closed_run.first_divergent.onnx_node == first.first_divergent.onnx_node
    prepared.close()


def test_with_the_users_onnx_file_no_onnx_export_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With --onnx the full dynamo export ran anyway (4.5 s on BERT-base) and its ONNX model was thrown
    away: the mapping needs only the program the exporter translates. Real exports are counted."""
    model, args = Atan2ZeroY().eval(), Atan2ZeroY.example_inputs()
    path = tmp_path / "atan2.onnx"
    torch.onnx.export(model, args, dynamo=True, verbose=False).save(str(path))
    calls = []
    real_export = torch.onnx.export

    def counted_export(*a, **k):  # the real exporter, counted
        calls.append(1)
        return real_export(*a, **k)

    monkeypatch.setattr(torch.onnx, "export", counted_export)
    result = nodebisect.locate(model, args, onnx_path=str(path))
    assert calls == [], "an ONNX export ran although the ONNX file was given"
    assert "export" not in result.stats["timings"] and "torch_export" in result.stats["timings"]
    assert result.verdict == "diverged" and result.first_divergent.onnx_node == "node_atan2"


@pytest.mark.parametrize("model_class", [TransformerFastPath, SdpaFullyMaskedRow, Fp16RoundingElided], ids=lambda c: c.__name__)
def test_the_program_for_a_users_onnx_file_is_the_one_the_exporter_translates(model_class: type) -> None:
    """The decomposition (table, type promotion, assertions removed) must be the exporter's own: the
    FX names of this program are the value names of an ONNX file the user exported."""
    from nodebisect.frontends.dynamo import export_onnx, export_program

    def nodes(program: object) -> list[tuple[str, ...]]:
        return [(n.op, n.name, str(n.target), repr(n.args), repr(n.kwargs)) for n in program.graph.nodes]  # type: ignore[attr-defined]

    model, args = model_class().eval(), model_class.example_inputs()
    full = export_onnx(build_loaded_model(model, args))
    only_program = export_program(build_loaded_model(model, args))
    assert only_program is not None and only_program.model is None
    assert nodes(only_program.program) == nodes(full.program)
    onnx_values = {o for n in full.model.graph.node for o in n.output}
    assert onnx_values & {n.name for n in only_program.program.graph.nodes}
