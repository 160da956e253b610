"""``--exporter both`` (issue #22, point 11): the two exporters' verdicts side by side, on real exports.

``x >> 1`` on negative ints is a real TorchScript-exporter divergence (it becomes a
truncating Div by 2); the dynamo exporter lowers it right. A plain Linear + ReLU
matches with both.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nodebisect.both import BothResult
from nodebisect.records import DIVERGED, EXPORT_FAILED, MATCH, ExportFailure, LocateResult

MODELS = '''import torch
from torch import nn


class Shift(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(6, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        q = (self.proj(x) * 8).long()
        return self.head((q >> 1).float())

    @staticmethod
    def example_inputs():
        return (torch.randn(4, 6, generator=torch.Generator().manual_seed(1)),)


class Clean(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(6, 3)

    def forward(self, x):
        return torch.relu(self.lin(x))

    @staticmethod
    def example_inputs():
        return (torch.randn(4, 6, generator=torch.Generator().manual_seed(1)),)
'''


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("both")
    (d / "models.py").write_text(MODELS)
    return d


@pytest.mark.slow  # two locates and two report folders
def test_one_exporter_diverges_the_other_matches(models: Path, cli: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(models)
    code, out, err = cli("locate", "models.py:Shift", "--exporter", "both", "--json", str(tmp_path / "both.json"), "--report", str(tmp_path / "rep"), "-q")
    assert code == 1, out + err  # the worse of match (0) and diverged (1)
    assert "== dynamo exporter ==\nMATCH" in out and "== torchscript exporter ==\nDIVERGED at /Div (Div)" in out
    comparison = out.split("EXPORTERS DIFFER: dynamo MATCH, torchscript DIVERGED\n", 1)[1].splitlines()
    assert comparison[0].split() == ["dynamo", "MATCH", "-"]
    assert comparison[1].split()[:4] == ["torchscript", "DIVERGED", "/Div", "(Div)"]
    assert comparison[2].startswith("  so: only the TorchScript exporter (dynamo=False) departs from PyTorch, the dynamo exporter (dynamo=True) agrees")
    assert "meanwhile export with torch.onnx.export(..., dynamo=True)" in comparison[2]
    data = json.loads((tmp_path / "both.json").read_text())
    assert data["schema"] == "nodebisect.both/1" and data["exit_code"] == 1
    assert {k: v["verdict"] for k, v in data["results"].items()} == {"dynamo": MATCH, "torchscript": DIVERGED}
    assert data["results"]["torchscript"]["first_divergent"]["onnx_node"] == "/Div"
    assert data["results"]["torchscript"]["environment"]["exporter"] == "torchscript"
    md = (tmp_path / "rep" / "report.md").read_text()
    assert md.startswith("## nodebisect: ONNX exporters differ: dynamo match, torchscript diverged")
    assert "| `torchscript` | DIVERGED | /Div (Div) from aten.__rshift__ |" in md and "[torchscript/report.md](torchscript/report.md)" in md
    assert (tmp_path / "rep" / "torchscript" / "report.md").is_file() and (tmp_path / "rep" / "dynamo" / "report.md").is_file()


@pytest.mark.slow  # a full locate (or a fresh Python): the fast tier stays under 3 minutes
def test_clean_model_matches_with_both(models: Path, cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(models)
    code, out, err = cli("locate", "models.py:Clean", "--exporter", "both", "-q")
    assert code == 0, out + err
    assert "BOTH EXPORTERS MATCH" in out and "so: both exporters give ONNX models that agree with PyTorch: nothing to file" in out


def test_onnx_file_with_both_is_one_line(models: Path, cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(models)
    code, out, err = cli("locate", "models.py:Clean", "--exporter", "both", "--onnx", "model.onnx", "-q")
    assert code == 2 and err.startswith("nodebisect: error: --exporter both exports the model twice"), err


def test_exit_code_is_the_worse_of_the_two() -> None:
    failed = LocateResult(verdict=EXPORT_FAILED, export_failure=ExportFailure(step="x", message="m"))
    assert BothResult({"dynamo": failed, "torchscript": LocateResult(verdict=MATCH)}).exit_code == 3
    assert BothResult({"dynamo": LocateResult(verdict=DIVERGED), "torchscript": failed}).exit_code == 3
    assert BothResult({"dynamo": LocateResult(verdict=MATCH), "torchscript": LocateResult(verdict=MATCH)}).exit_code == 0


def test_tui_refuses_both_in_one_line(cli: Any) -> None:
    code, _out, err = cli("tui", "models.py:Clean", "--exporter", "both")
    assert code == 2 and err.startswith("nodebisect: error: the TUI shows one exporter's result"), err


def _diverged_at(target: str, node: str, exporter: str) -> LocateResult:
    from nodebisect.records import FirstDivergent, FrameworkRef, Metrics

    fd = FirstDivergent(
        onnx_node=node, op_type="AveragePool", onnx_value=node, stage="conversion", cause="conversion",
        segment=[node], segment_op_types=["AveragePool"], metrics=Metrics(max_abs=1.0), framework=FrameworkRef(target=target),
    )
    return LocateResult(verdict=DIVERGED, first_divergent=fd, environment={"exporter": exporter})


def test_both_departing_at_the_same_op_say_so() -> None:
    """AvgPoolDivisorOverride diverges with both exporters (each drops divisor_override): one op, two places to file."""
    from nodebisect.report.both import headline, which_to_file

    results = {
        "dynamo": _diverged_at("aten.avg_pool2d.default", "node_avg_pool2d", "dynamo"),
        "torchscript": _diverged_at("aten.avg_pool2d", "/AveragePool", "torchscript"),
    }
    assert headline(results) == "BOTH EXPORTERS DIVERGED"
    assert which_to_file(results) == "neither exporter's model agrees with PyTorch, both at aten.avg_pool2d: file each where its row says"
