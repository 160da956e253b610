"""Loading as a user gets it wrong (issue #12 item 8): near misses, fixed .pt2 shapes, unimportable pickles.

Real files: factories and pickles written here, .pt2 archives saved with
torch.export.save; the CLI runs in-process, or in a fresh process where the
import path matters.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent

MODELS = '''import torch


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        return torch.relu(self.fc(x))

    @staticmethod
    def example_inputs():
        return (torch.randn(2, 4),)


def build():
    return Net()


HELPER = 3
'''


def one_line_error(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert lines[0].startswith("nodebisect: error: "), err
    assert "Traceback" not in err
    return err


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("loading")
    (folder / "mymodels.py").write_text(MODELS)
    return folder


def test_near_miss_model_file_says_did_you_mean(work: Path, cli: Any) -> None:
    (work / "resnet_small.pt2").write_bytes(b"x")
    code, _out, err = cli("locate", str(work / "resnet_smal.pt2"), "-q")
    assert code == 2
    assert "did you mean" in one_line_error(err) and "resnet_small.pt2" in err


def test_near_miss_factory_file_says_did_you_mean(work: Path, cli: Any) -> None:
    code, _out, err = cli("locate", f"{work}/mymodel.py:Net", "-q")
    assert code == 2
    assert "factory file not found" in one_line_error(err) and "mymodels.py" in err


def test_missing_factory_name_lists_the_files_modules_and_callables(work: Path, cli: Any) -> None:
    code, _out, err = cli("locate", f"{work}/mymodels.py:Nett", "-q")
    assert code == 2
    one_line_error(err)
    assert "did you mean Net" in err
    assert "build" in err and "HELPER" not in err and "torch" not in err.split("defines", 1)[1]


@pytest.mark.slow
def test_pt2_inputs_are_checked_against_the_archive_before_export(work: Path, cli: Any) -> None:
    sys.path.insert(0, str(work))
    try:
        import mymodels
    finally:
        sys.path.remove(str(work))
    x = torch.randn(2, 4)
    torch.export.save(torch.export.export(mymodels.Net().eval(), (x,)), str(work / "static.pt2"))
    torch.save((torch.randn(5, 4),), str(work / "batch5.pt"))
    code, _out, err = cli("locate", str(work / "static.pt2"), "--inputs", str(work / "batch5.pt"), "-q")
    assert code == 2
    one_line_error(err)
    assert "has shape [5, 4], the .pt2 was exported with [2, 4] (all dimensions fixed)" in err
    assert "--dynamic cannot change" in err
    # A .pt2 saved with a dynamic batch takes the other batch size: the check lets symbolic sizes through.
    batch = torch.export.Dim("batch")
    program = torch.export.export(mymodels.Net().eval(), (x,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(work / "dynamic.pt2"))
    code, out, err = cli("locate", str(work / "dynamic.pt2"), "--inputs", str(work / "batch5.pt"), "-q")
    assert code == 0, out + err


def _save_pickle(folder: Path, target: Path, main_script: bool = False) -> None:
    if main_script:
        code = MODELS + f"\ntorch.save(Net().eval(), {str(target)!r})\n"
    else:
        code = f"import torch, mymodels\ntorch.save(mymodels.Net().eval(), {str(target)!r})\n"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=folder, timeout=300)


def _cli(argv: list[str], cwd: Path, pythonpath: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = pythonpath
    return subprocess.run([sys.executable, "-m", "nodebisect", "locate", *argv, "-q"], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


@pytest.mark.slow
@pytest.mark.subprocess
def test_trusted_pickle_of_an_unimportable_class_says_set_pythonpath(work: Path, tmp_path: Path) -> None:
    _save_pickle(work, tmp_path / "net.pt")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = _cli([str(tmp_path / "net.pt"), "--trust-pickle"], elsewhere, str(ROOT))
    assert run.returncode == 2, run.stderr
    one_line_error(run.stderr)
    assert "module 'mymodels'" in run.stderr and "is not importable" in run.stderr
    assert "PYTHONPATH" in run.stderr
    # With the module on the path it loads, and its class's example_inputs() feed it (no --inputs).
    run = _cli([str(tmp_path / "net.pt"), "--trust-pickle"], elsewhere, f"{ROOT}{os.pathsep}{work}")
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith("MATCH")


@pytest.mark.slow
@pytest.mark.subprocess
def test_trusted_pickle_of_a_class_from_main_says_so(work: Path, tmp_path: Path) -> None:
    _save_pickle(work, tmp_path / "main_net.pt", main_script=True)
    run = _cli([str(tmp_path / "main_net.pt"), "--trust-pickle"], tmp_path, str(ROOT))
    assert run.returncode == 2, run.stderr
    one_line_error(run.stderr)
    assert "__main__" in run.stderr and "class Net" in run.stderr


KEYWORD_FACTORIES = '''
import torch


class Gated(torch.nn.Module):
    """forward(x, gate=None): a keyword input that changes the answer."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x, gate=None):
        y = self.lin(x)
        return y if gate is None else y * gate


def as_dict():
    return Gated().eval(), {"x": torch.randn(2, 4), "gate": torch.zeros(2, 4)}


def as_triple():
    return Gated().eval(), (torch.randn(2, 4),), {"gate": torch.zeros(2, 4)}
'''


@pytest.mark.slow
@pytest.mark.parametrize("factory", ["as_dict", "as_triple"])
def test_factory_may_return_keyword_inputs(factory: str, tmp_path: Path, cli: Any) -> None:
    """(model, {name: tensor}) and (model, args, kwargs), the way transformers models take input_ids=..."""
    import json

    from nodebisect.frontends.loading.load import build_loaded_model

    (tmp_path / "kw.py").write_text(KEYWORD_FACTORIES)
    loaded = build_loaded_model(f"{tmp_path}/kw.py:{factory}")
    assert set(loaded.kwargs) == ({"x", "gate"} if factory == "as_dict" else {"gate"}), loaded.kwargs
    out = tmp_path / "r.json"
    assert cli("locate", f"{tmp_path}/kw.py:{factory}", "--json", str(out), "-q").code == 0
    result = json.loads(out.read_text())
    assert result["verdict"] == "match"
    # The gate was fed: its zeros make the output all zeros, so the match proves nothing and says so.
    assert any("the outputs prove nothing" in n for n in result["notes"]), result["notes"]
