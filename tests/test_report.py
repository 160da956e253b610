"""The report folder: Markdown, pictures, the standalone repro, redaction, `nodebisect report`."""

from __future__ import annotations

import ast
import copy
import getpass
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nodebisect.records import (
    EXPORT_FAILED,
    MATCH,
    STAGE_CAPTURE,
    ExportFailure,
    FirstDivergent,
    FrameworkRef,
    LocateResult,
    Metrics,
)

REPO = Path(__file__).resolve().parents[1]
CULPRIT = "node_layer_norm"
REPRO_IMPORTS = {"sys", "pathlib", "numpy", "onnxruntime"}


@pytest.fixture(scope="module")
def located(broken_block: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[LocateResult, Path]:
    """models.Block with its LayerNorm epsilon broken (conftest), located once per module, and its report folder."""
    import nodebisect
    from nodebisect.report.bundle import write_report

    assert broken_block.node == CULPRIT
    result = nodebisect.locate(broken_block.model, broken_block.args, onnx_path=str(broken_block.path))
    assert result.verdict == "diverged" and result.first_divergent.onnx_node == CULPRIT
    out = write_report(result, tmp_path_factory.mktemp("report") / "report")
    return result, out


def _run_repro(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(folder / "repro.py")], capture_output=True, text=True, timeout=120)


@pytest.mark.subprocess
def test_repro_reproduces_and_passes_once_fixed(located, tmp_path: Path) -> None:
    import onnx

    from models import set_layernorm_epsilon

    _, out = located
    repro = out / "repro"
    source = (repro / "repro.py").read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported <= REPRO_IMPORTS, f"repro.py imports {sorted(imported - REPRO_IMPORTS)}"
    assert {"model.onnx", "inputs.npz", "expected.npz"} <= {p.name for p in repro.iterdir()}
    assert {"input_0.pb", "output_0.pb"} <= {p.name for p in (repro / "test_data_set_0").iterdir()}

    proc = _run_repro(repro)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    printed = float(re.search(r"max abs error ([-+0-9.eE]+|inf|nan)", proc.stdout).group(1))
    expected = json.loads((out / "report.json").read_text())["first_divergent"]["metrics"]["max_abs"]
    assert printed == pytest.approx(expected, rel=1e-5)

    fixed = tmp_path / "repro"
    shutil.copytree(repro, fixed)
    proto = onnx.load(str(fixed / "model.onnx"))
    set_layernorm_epsilon(proto, 1e-5)
    onnx.save(proto, str(fixed / "model.onnx"))
    proc = _run_repro(fixed)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.subprocess
def test_report_command_never_imports_torch(located, tmp_path: Path) -> None:
    _, out = located
    code = (
        "import sys; from nodebisect.cli.main import main; "
        f"rc = main(['report', {str(out / 'report.json')!r}, '--out', {str(tmp_path / 'again')!r}]); "
        "print('TORCH_IMPORTED', 'torch' in sys.modules); sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "TORCH_IMPORTED False" in proc.stdout
    md = (tmp_path / "again" / "report.md").read_text()
    assert CULPRIT in md and "No repro bundle" in md
    assert not (tmp_path / "again" / "repro").exists()


@pytest.mark.parametrize(
    "content",
    [pytest.param(None, id="missing"), pytest.param("{not json", id="invalid"), pytest.param('{"schema": "x"}', id="schema")],
)
def test_report_command_rejects_bad_json(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None) -> None:
    from nodebisect.cli.main import main

    path = tmp_path / "result.json"
    if content is not None:
        path.write_text(content)
    assert main(["report", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nodebisect: error:") and "tip:" in err


def test_graph_svg_with_dot_and_dot_file_without(located, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nodebisect.report.bundle import write_report

    result, out = located
    if shutil.which("dot"):
        svg = (out / "graph.svg").read_text()
        assert svg.lstrip().startswith(("<?xml", "<svg", "<!DOCTYPE")) and CULPRIT in svg
    monkeypatch.setattr("nodebisect.report.neighbourhood.shutil.which", lambda name: None)
    monkeypatch.setattr("nodebisect.report.neighbourhood.dot_fallback", lambda: None)  # nor the graphviz-pure wheel
    saved = LocateResult.from_dict(result.to_dict())
    target = write_report(saved, tmp_path / "nodot")
    assert (target / "graph.dot").read_text().startswith("digraph") and not (target / "graph.svg").exists()
    assert "apt-get install graphviz" in (target / "report.md").read_text()


def test_graph_falls_back_when_graphviz_cannot_run_dot(located, monkeypatch: pytest.MonkeyPatch) -> None:
    import graphviz

    from nodebisect.report.neighbourhood import render_graph

    def missing(*_a, **_k):
        raise graphviz.ExecutableNotFound(("dot",))

    monkeypatch.setattr("nodebisect.report.neighbourhood.shutil.which", lambda name: "/usr/bin/dot")
    monkeypatch.setattr(graphviz.Source, "pipe", missing)
    picture = render_graph(LocateResult.from_dict(located[0].to_dict()))
    assert picture.svg is None and "brew install graphviz" in picture.message and CULPRIT in picture.dot


def test_redact_removes_home_user_and_host(located, tmp_path: Path) -> None:
    from nodebisect.report.bundle import write_report

    result = LocateResult.from_dict(located[0].to_dict())
    home, user, host = os.path.expanduser("~"), getpass.getuser(), socket.gethostname()
    fw = result.first_divergent.framework
    fw.stack_trace = f'File "{home}/proj/model.py", line 7, in forward\n    x = f(x)  # by {user} on {host}'
    fw.source = f"{home}/proj/model.py:7"
    result.environment["host"] = host
    result.notes.append(f"run by {user} in {home}/proj")
    out = write_report(result, tmp_path / "red", redact=True)
    for name in ("report.md", "report.json"):
        text = (out / name).read_text()
        assert f"{home}/" not in text, name
        for word in (user, host):
            assert not re.search(rf"(?<![\w]){re.escape(word)}(?![\w])", text), (name, word)
    assert "model.py:7" in (out / "report.md").read_text()


def test_report_md_names_culprit_environment_and_details(located) -> None:
    result, out = located
    md = (out / "report.md").read_text()
    assert CULPRIT in md and "LayerNormalization" in md and "module `ln`" in md
    assert "<summary>Environment</summary>" in md and "| **torch** |" in md and "| **onnxruntime** |" in md
    assert "<details>" in md and "</details>" in md
    assert "epsilon=0.5" in md  # the suspect's reason and the operator sequence
    assert re.search(r"`repro/` \(\d+(\.\d)? KiB\)", md)
    assert "growth.svg" in md and (out / "growth.svg").read_text().startswith("<svg")


def _synthetic(verdict: str) -> LocateResult:
    env = {"torch": "2.x", "onnx": "1.x", "onnxruntime": "1.x", "python": "3.11"}
    if verdict == MATCH:
        return LocateResult(verdict=MATCH, environment=env)
    if verdict == EXPORT_FAILED:
        return LocateResult(verdict=EXPORT_FAILED, environment=env, export_failure=ExportFailure("translate", "no converter\n" * 80, "aten.foo.default", "m.py:3"))
    fd = FirstDivergent(
        onnx_node="layer_norm_1", op_type="aten.layer_norm.default", onnx_value="layer_norm_1", stage=STAGE_CAPTURE,
        cause="capture", segment=["layer_norm_1"], segment_op_types=["aten.layer_norm.default"],
        framework=FrameworkRef(target="aten.layer_norm.default", fx_node="layer_norm_1", module="enc"), metrics=Metrics(max_abs=1.9),
    )
    return LocateResult(verdict="diverged", first_divergent=fd, environment=env)


@pytest.mark.parametrize("verdict", [MATCH, EXPORT_FAILED, STAGE_CAPTURE])
def test_markdown_for_every_verdict(verdict: str, tmp_path: Path) -> None:
    from nodebisect.report.bundle import write_report

    result = _synthetic(verdict)
    out = write_report(copy.deepcopy(result), tmp_path)
    md = (out / "report.md").read_text()
    assert "<summary>Environment</summary>" in md
    if verdict == EXPORT_FAILED:
        assert "aten.foo.default" in md and "<details>" in md
    if verdict == STAGE_CAPTURE:
        assert "torch.export" in md and "no ONNX sequence" in md
    assert json.loads((out / "report.json").read_text())["verdict"] == result.verdict
