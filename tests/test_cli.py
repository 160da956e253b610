"""The command line: exit codes, one-line errors, pickle trust, the samples as a user runs them."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from nodebisect.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"

TINY = '''
import torch

class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(8, 8)
        self.out = torch.nn.Linear(8, 4)

    def forward(self, x):
        return self.out(torch.relu(self.lin(x)))

    @staticmethod
    def example_inputs():
        return (torch.randn(2, 8),)

class Payload:
    """Unpickling this writes a marker file: proof that code from the pickle ran."""
    def __init__(self, marker):
        self.marker = marker
    def __reduce__(self):
        return (open, (self.marker, "w"))

def tiny_with_inputs():
    return Tiny(), (torch.randn(2, 8),)

def not_a_module():
    return 42
'''


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a tiny model saved in every supported form, plus bad files."""
    d = tmp_path_factory.mktemp("cli")
    (d / "tiny.py").write_text(TINY)
    sys.path.insert(0, str(d))
    try:
        import tiny  # noqa: PLC0415

        model = tiny.Tiny().eval()
        args = tiny.Tiny.example_inputs()
        torch.export.save(torch.export.export(model, args), d / "tiny.pt2")
        torch.jit.save(torch.jit.trace(model, args), d / "tiny_ts.pt")
        torch.save(model, d / "tiny_pickle.pt")
        torch.save(tiny.Payload(str(d / "PAYLOAD_RAN")), d / "payload.pt")
    finally:
        sys.path.remove(str(d))
    torch.save(args, d / "inputs.pt")
    torch.save((torch.randn(3, 5),), d / "bad_shape.pt")
    torch.save((torch.randn(2, 8, dtype=torch.float64),), d / "bad_dtype.pt")
    torch.save((torch.randn(2, 8), torch.randn(2, 8)), d / "two_inputs.pt")
    torch.save({"x": torch.randn(2, 8), "note": "hello"}, d / "non_tensor.pt")
    (d / "random.pt2").write_bytes(os.urandom(512))
    (d / "random.onnx").write_bytes(os.urandom(512))
    (d / "empty.pt2").write_bytes(b"")
    good = (d / "tiny.pt2").read_bytes()
    (d / "truncated.pt2").write_bytes(good[: len(good) // 2])
    # An ONNX file of a different model.
    other = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
    prog = torch.onnx.export(other, (torch.randn(1, 3, 8, 8),), dynamo=True, verbose=False)
    prog.save(str(d / "other.onnx"))
    return d


@pytest.mark.parametrize(
    "argv, code, message",
    [
        pytest.param(["missing.pt2"], 2, "model file not found", id="missing-file"),
        pytest.param(["empty.pt2"], 2, "model file is empty", id="empty-file"),
        pytest.param(["random.pt2"], 2, "not a PyTorch archive", id="random-bytes-pt2"),
        pytest.param(["random.onnx"], 2, "is an ONNX file", id="onnx-as-model"),
        pytest.param(["truncated.pt2"], 2, "", id="truncated-pt2"),
        pytest.param(["tiny_pickle.pt"], 2, "--trust-pickle", id="pickle-untrusted"),
        pytest.param(["tiny.pt2", "--inputs", "bad_shape.pt"], 2, "shape [3, 5]", id="wrong-shape"),
        pytest.param(["tiny.pt2", "--inputs", "bad_dtype.pt"], 2, "dtype float64", id="wrong-dtype"),
        pytest.param(["tiny.pt2", "--inputs", "two_inputs.pt"], 2, "input(s)", id="wrong-count"),
        pytest.param(["tiny.pt2", "--inputs", "non_tensor.pt"], 2, "str", id="non-tensor-inputs"),
        pytest.param(["tiny.pt2", "--inputs", "missing.pt"], 2, "inputs file not found", id="missing-inputs"),
        pytest.param(["tiny.py:Tiny", "--input", "nope=2x8"], 2, "not arguments of the model", id="unknown-input-name"),
        pytest.param(["tiny.py:Tiny", "--input", "x=2xq"], 2, "bad shape", id="bad-input-spec"),
        pytest.param(["tiny.py:Missing"], 2, "has no attribute", id="factory-missing"),
        pytest.param(["tiny.py:not_a_module"], 2, "not an nn.Module", id="factory-not-module"),
        pytest.param(["tiny_ts.pt"], 2, "no inputs", id="torchscript-without-inputs"),
        pytest.param(["tiny.pt2", "--onnx", "other.onnx"], 2, "other.onnx expects input", id="onnx-of-other-model"),
        pytest.param(["tiny.pt2", "--onnx", "random.onnx"], 2, "cannot read", id="onnx-random-bytes"),
        pytest.param(["tiny.pt2", "--ep", "cuda"], 2, "CUDAExecutionProvider", id="cuda-ep-missing"),
    ],
)
def test_bad_input_gives_one_line_error_and_exit_2(
    work: Path, argv: list[str], code: int, message: str, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(work)
    if "--ep" in argv and "cuda" in argv:
        import onnxruntime

        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            pytest.skip("this machine has CUDA for onnxruntime")
    got, _out, err = cli("locate", *argv, "-q")
    assert got == code, err
    lines = [line for line in err.strip().splitlines() if line]
    assert lines[0].startswith("nodebisect: error: "), err
    assert message in lines[0], err
    assert "Traceback" not in err
    assert len(lines) <= 2  # the error and at most one tip


def test_untrusted_pickle_payload_never_runs(work: Path, cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(work)
    code, _out, err = cli("locate", "payload.pt", "-q")
    assert code == 2
    assert "--trust-pickle" in err
    assert not (work / "PAYLOAD_RAN").exists()


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["tiny.pt2"], id="pt2-stored-inputs"),
        pytest.param(["tiny.py:Tiny"], id="factory-file"),
        pytest.param(["tiny.py:tiny_with_inputs"], id="factory-returning-inputs"),
        pytest.param(["tiny.py:Tiny", "--input", "x=2x8:float32", "--seed", "3"], id="random-input-spec"),
        pytest.param(["tiny_ts.pt", "--inputs", "inputs.pt"], id="torchscript"),
        pytest.param(["tiny_pickle.pt", "--trust-pickle", "--inputs", "inputs.pt"], id="pickle-trusted"),
    ],
)
def test_clean_models_match_with_exit_0(work: Path, argv: list[str], cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(work)
    monkeypatch.syspath_prepend(str(work))  # the pickled module's class must be importable
    code, out, err = cli("locate", *argv, "-q")
    assert code == 0, err
    assert out.startswith("MATCH"), out


def test_user_files_are_not_modified(work: Path, cli: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(work)
    files = ["tiny.pt2", "inputs.pt", "other.onnx"]
    before = {f: hashlib.sha256((work / f).read_bytes()).hexdigest() for f in files}
    out_json = tmp_path / "result.json"
    cli("locate", "tiny.pt2", "--inputs", "inputs.pt", "--json", str(out_json), "-q")
    cli("locate", "tiny.pt2", "--onnx", "other.onnx", "-q")
    after = {f: hashlib.sha256((work / f).read_bytes()).hexdigest() for f in files}
    assert before == after
    data = json.loads(out_json.read_text())
    assert data["schema"] == "nodebisect.report/1"
    assert data["verdict"] == "match"
    assert not list(tmp_path.glob(".*.tmp")), "a temp file was left behind"


def test_json_to_stdout_keeps_summary_on_stderr(work: Path, cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(work)
    code, out, err = cli("locate", "tiny.pt2", "--json", "-", "-q")
    assert code == 0
    assert json.loads(out)["verdict"] == "match"
    assert "MATCH" in err


def test_every_command_has_help() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert "locate" in subparsers.choices
    for name, sub in subparsers.choices.items():
        assert sub.format_help().strip(), name


def test_export_failure_gives_exit_3(tmp_path: Path, cli: Any) -> None:
    # scaled_dot_product_attention on 3-D tensors: torch runs it, the ONNX lowering refuses it.
    (tmp_path / "sdpa3d.py").write_text(
        "import torch\n"
        "class M(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        return torch.nn.functional.scaled_dot_product_attention(x, x, x)\n"
        "    @staticmethod\n"
        "    def example_inputs():\n"
        "        return (torch.randn(1, 4, 8),)\n"
    )
    out_json = tmp_path / "r.json"
    code, out, err = cli("locate", f"{tmp_path}/sdpa3d.py:M", "--json", str(out_json), "-q")
    assert code == 3, err
    assert "EXPORT FAILED" in out
    data = json.loads(out_json.read_text())
    assert data["verdict"] == "export_failed"
    assert "scaled_dot_product_attention" in data["export_failure"]["target"]
    assert data["export_failure"]["step"] == "translate to ONNX"


@pytest.mark.subprocess
def test_help_is_fast_and_imports_no_torch() -> None:
    code = "import sys; from nodebisect.cli.main import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"


# --- the bundled samples, run as a user would --------------------------------------------------


@pytest.mark.parametrize(
    "name, node, cause, stage",
    [
        pytest.param("AvgPoolDivisorOverride", "node_avg_pool2d", "conversion", "conversion", id="converter-defect"),
        pytest.param("ScatterReduceMean", "node_scatter_reduce", "conversion", "conversion", id="converter-defect-2"),
        pytest.param("NanIgnoringMax", "n0", "runtime", "runtime", id="runtime-semantics"),
        pytest.param("Fp16RoundingElided", "node_sub", "runtime", "runtime", id="runtime-fp16-rounding"),
        pytest.param("SdpaFullyMaskedRow", "node_scaled_dot_product_attention", "conversion", "conversion", id="decomposed-op"),
        pytest.param("Atan2ZeroY", "node_atan2", "conversion", "conversion", id="decomposed-op-2"),
    ],
)
def test_samples_are_located_from_pt2(sample_runs: Any, name: str, node: str, cause: str, stage: str) -> None:
    run = sample_runs[name]
    # A fully masked query row is the only place SdpaFullyMaskedRow differs: exit 0 unless --strict-masked.
    assert run.code == (0 if name == "SdpaFullyMaskedRow" else 1), run.err
    fd = run.data["first_divergent"]
    assert fd["onnx_node"] == node
    assert fd["cause"] == cause
    assert fd["stage"] == stage
    assert fd["framework"]["source"].endswith(".py:" + fd["framework"]["source"].rsplit(":", 1)[1])
    assert "divergent.py" in fd["framework"]["source"]
    assert f"DIVERGED at {node}" in run.out


def test_sdpa_sample_blames_the_softmax_of_the_fully_masked_row(sample_runs: Any) -> None:
    fd = sample_runs["SdpaFullyMaskedRow"].result.first_divergent
    assert fd is not None
    assert len(fd.segment) > 5
    # The -3.4e38 mask fill reads as PyTorch's -inf; the Softmax of a fully masked row
    # (uniform in ONNX, NaN then zeroed in PyTorch) is where the lowering leaves PyTorch's path.
    assert fd.segment_op_types[0] == "Softmax"
    assert "decomposition" in fd.suspects[0].reason


@pytest.mark.parametrize(
    "name, node",
    [
        pytest.param("AvgPoolDivisorOverride", "node_avg_pool2d", id="converter-defect"),
        pytest.param("NanIgnoringMax", "n0", id="runtime-semantics", marks=pytest.mark.slow),
        pytest.param("SdpaFullyMaskedRow", "node_scaled_dot_product_attention", id="decomposed-op", marks=pytest.mark.slow),
    ],
)
def test_samples_are_located_from_factory_spec(name: str, node: str, cli: Any, tmp_path: Path) -> None:
    out_json = tmp_path / "r.json"
    code, _out, err = cli("locate", f"{SAMPLES}/divergent.py:{name}", "--strategy", "bisect", "--strict-masked", "--json", str(out_json), "-q")
    assert code == 1, err
    data = json.loads(out_json.read_text())
    assert data["first_divergent"]["onnx_node"] == node
    assert data["capture"]["eager_matches_export"] is True
    assert data["stats"]["strategy"] == "bisect"


def test_capture_stage_sample_blames_torch_export_not_onnx(sample_runs: Any) -> None:
    run = sample_runs.factory("TransformerFastPath")
    assert run.code == 1, run.err
    data = run.data
    fd = data["first_divergent"]
    assert fd["stage"] == "capture"
    assert fd["framework"]["module"].startswith("enc")
    assert data["capture"]["eager_matches_export"] is False
    # The ONNX graph itself agrees with the exported program.
    assert all(o["ok"] for o in data["outputs"])
    assert "torch.export" in run.out


def test_pt2_with_pickled_example_inputs_never_runs_them(tmp_path: Path, cli: Any) -> None:
    """torch.export.load retries a failed safe load with weights_only=False: a crafted
    .pt2 would run code. nodebisect refuses that retry without --trust-pickle."""
    import io
    import zipfile

    marker = tmp_path / "PAYLOAD_RAN"

    class Payload:
        def __reduce__(self):  # noqa: ANN204
            return (open, (str(marker), "w"))

    class AddOne(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + 1

    base = tmp_path / "base.pt2"
    torch.export.save(torch.export.export(AddOne(), (torch.randn(2),)), base)
    payload = io.BytesIO()
    torch.save((Payload(),), payload)
    evil = tmp_path / "evil.pt2"
    with zipfile.ZipFile(base) as zin, zipfile.ZipFile(evil, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            zout.writestr(item, payload.getvalue() if item.filename.endswith("sample_inputs/model.pt") else data)

    code, _out, err = cli("locate", str(evil), "-q")
    assert code == 2
    assert "--trust-pickle" in err.splitlines()[0]
    assert not marker.exists()
    assert "Traceback" not in err and "Ran into the following error" not in err


@pytest.mark.parametrize(
    "argv, usage, hint",
    [
        pytest.param(["report", "x.json", "--outt", "d"], "usage: nodebisect report ", "--outt (did you mean --out?)", id="report-before-required"),
        pytest.param(["locate", "--atoll", "1", "m.pt2"], "usage: nodebisect locate ", "--atoll (did you mean --atol?)", id="locate"),
        pytest.param(["locate", "m.pt2", "--strategyy=all"], "usage: nodebisect locate ", "--strategyy=all (did you mean --strategy?)", id="with-value"),
    ],
)
def test_unknown_option_gets_did_you_mean_in_the_commands_usage(argv: list[str], usage: str, hint: str, cli: Any) -> None:
    code, _out, err = cli(*argv)  # argparse exits: its code is the command's
    assert code == 2
    assert err.startswith(usage), err
    assert hint in err and "Traceback" not in err


OTHER = '''
import torch

class Model(torch.nn.Module):
    def __init__(self, out, act):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(8, 8)
        self.out = torch.nn.Linear(8, out)
        self.act = act

    def forward(self, x):
        return self.out(self.act(self.lin(x)))

def relu():
    return Model(4, torch.relu), (torch.randn(2, 8),)

def tanh():
    return Model(3, torch.tanh), (torch.randn(2, 8),)
'''


@pytest.mark.slow  # exports a second model
def test_onnx_of_another_model_with_coinciding_node_names_is_bad_input(tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    (tmp_path / "two.py").write_text(OTHER)
    spec = importlib.util.spec_from_file_location("two_models", tmp_path / "two.py")
    two = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(two)
    model, args = two.tanh()
    torch.onnx.export(model.eval(), args, str(tmp_path / "tanh.onnx"), dynamo=True)
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("locate", "two.py:relu", "--onnx", "tanh.onnx")
    assert code == 2, out + err
    assert "not an export of this model" in err and "has shape [2, 3], the model's is [2, 4]" in err
