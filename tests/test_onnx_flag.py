"""``--onnx FILE`` as a new user meets it (issue #22, point 10).

A bad path is refused before torch is imported; an export failure with ``--onnx``
names the export nodebisect ran for the reference (the user's own export worked)
and still writes the report; a conversion verdict on a given file does not claim a
graph-optimizer check that ``--onnx`` skipped; another model's file gets
nodebisect's one-line error, not torch's warnings around it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import onnx
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent

MODELS = '''import torch


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)  # the same weights in the test's export and in the run's fresh instance
        self.lin = torch.nn.Linear(8, 4)

    def forward(self, x):
        return torch.relu(self.lin(x)) * 2

    @staticmethod
    def example_inputs():
        return (torch.randn(2, 8),)


class Branch(torch.nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x * 2
        return x - 1

    @staticmethod
    def example_inputs():
        return (torch.randn(2, 8),)


class Other(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return torch.relu(self.conv(x))

    @staticmethod
    def example_inputs():
        return (torch.randn(1, 3, 8, 8),)
'''


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The models file, a dynamo export of Tiny, the same with its Relu edited to Sigmoid, and Other's export."""
    import importlib.util

    d = tmp_path_factory.mktemp("onnx_flag")
    (d / "models.py").write_text(MODELS)
    spec = importlib.util.spec_from_file_location("onnx_flag_models", d / "models.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    tiny = mod.Tiny().eval()
    model = torch.onnx.export(tiny, mod.Tiny.example_inputs(), dynamo=True, verbose=False, external_data=False).model_proto
    onnx.save(model, str(d / "tiny.onnx"))
    relu = [n for n in model.graph.node if n.op_type == "Relu"]
    assert len(relu) == 1
    relu[0].op_type = "Sigmoid"  # a real graph, one node's translation made wrong
    onnx.save(model, str(d / "tiny_sigmoid.onnx"))
    other = torch.onnx.export(mod.Other().eval(), mod.Other.example_inputs(), dynamo=True, verbose=False, external_data=False)
    other.save(str(d / "other.onnx"))
    return d


@pytest.mark.subprocess
def test_missing_onnx_file_is_refused_before_torch_is_imported(work: Path) -> None:
    code = (
        "import sys\n"
        "from nodebisect.cli.main import main\n"
        "rc = main(['locate', 'models.py:Tiny', '--onnx', 'missing.onnx', '-q'])\n"
        "print(rc, 'torch' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=work, env=env)
    assert run.stdout.split() == ["2", "False"], run.stdout + run.stderr
    assert run.stderr.strip().splitlines() == ["nodebisect: error: ONNX file not found: missing.onnx"]


def test_a_folder_as_onnx_is_one_line(work: Path, cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(work)
    code, _out, err = cli("locate", "models.py:Tiny", "--onnx", ".", "-q")
    assert code == 2 and err.startswith("nodebisect: error: --onnx . is not a file"), err


@pytest.mark.slow  # a full locate (or a fresh Python): the fast tier stays under 3 minutes
def test_export_failure_with_onnx_names_the_reference_export_and_writes_the_report(work: Path, cli: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(work)
    code, out, err = cli("locate", "models.py:Branch", "--onnx", "tiny.onnx", "--report", str(tmp_path / "rep"), "-q")
    assert code == 3, out + err
    assert "ONNX export failed" not in out + err
    assert "torch.export of the model (the reference values for the --onnx file" in out
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "data-dependent control flow" in md and "torch.export of the model" in md


def test_conversion_verdict_on_a_given_file_does_not_claim_the_skipped_optimizer_check(work: Path, cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(work)
    code, out, err = cli("locate", "models.py:Tiny", "--onnx", "tiny_sigmoid.onnx", "-q")
    assert code == 1, out + err
    assert out.startswith("DIVERGED at node_relu (Sigmoid)"), out
    stage = next(line for line in out.splitlines() if line.strip().startswith("stage:"))
    assert "conversion" in stage and "also without the graph optimizer" not in stage
    assert "graph optimizer was not ruled out" in stage


@pytest.mark.slow  # a fresh Python: torch's warnings go to the real stderr once per process
@pytest.mark.subprocess
def test_onnx_of_another_model_is_nodebisects_line_only(work: Path) -> None:
    """torch's own warnings (the exporter's registry, the capture) must not surround the error."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(
        [sys.executable, "-m", "nodebisect", "locate", "models.py:Tiny", "--onnx", "other.onnx"],
        capture_output=True, text=True, timeout=300, cwd=work, env=env,
    )
    assert run.returncode == 2, run.stderr
    foreign = [line for line in run.stderr.splitlines() if line and not line.startswith(("[nodebisect]", "nodebisect: error:", "tip:"))]
    assert foreign == [], run.stderr
    assert "nodebisect: error: other.onnx expects input 'x' of shape [1, 3, 8, 8], got [2, 8]" in run.stderr
    assert "[nodebisect] capture" not in run.stderr  # refused before torch.export and the capture ran
