"""Planning and starting a sweep: the worker's Python, list files, per-model settings, sweep.md's remedies.

Fast checks of what a user types before any model runs (real list files, real child
processes, a real onnxruntime child); the sweeps that run models are in ``test_sweep.py``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from nodebisect.errors import BadInputError
from nodebisect.sweep import summary
from nodebisect.sweep.cli import configure, write_summary
from nodebisect.sweep.sources import tasks_from_sources
from nodebisect.sweep.tasks import ModelTask, SweepOptions
from nodebisect.sweep.worker import locate_command, run_task

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "tests" / "sweep_models.py"


@pytest.fixture
def decoy_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding a folder named ``nodebisect`` (as the folder holding a checkout does).

    Its ``__init__`` fails loudly, so a child that imports it instead of the package says so.
    """
    (tmp_path / "nodebisect").mkdir()
    (tmp_path / "nodebisect" / "__init__.py").write_text("raise ImportError('the decoy nodebisect/ folder was imported')\n")
    (tmp_path / "cwd_models.py").write_text("def build():\n    raise RuntimeError('built from the working directory')\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.slow  # a full locate (or a fresh Python): the fast tier stays under 3 minutes
def test_worker_is_not_shadowed_by_a_nodebisect_folder_in_the_cwd(decoy_cwd: Path) -> None:
    """The worker imports the package, not the folder; the user's modules in the cwd still import."""
    row = run_task(ModelTask(name="cwd", spec="cwd_models:build"), SweepOptions(timeout=120))
    assert (row["status"], row["reason"]) == ("bad_input", "calling build() failed: built from the working directory")


def test_onnxruntime_child_is_not_shadowed_by_a_nodebisect_folder_in_the_cwd(decoy_cwd: Path) -> None:
    import numpy as np
    from onnx import TensorProto, helper

    from nodebisect.runtime.sandbox import OrtChild

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    child = OrtChild(timeout_s=60)
    try:
        (y,) = child.run(model.SerializeToString(),
                         {"x": np.array([-1.0, 0.5, 2.0], np.float32)}, ["y"], ["CPUExecutionProvider"], "disabled")
    finally:
        child.close()
    assert y.tolist() == [0.0, 0.5, 2.0]


def _write(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_list_settings_reach_the_locate_command(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text("")
    txt = _write(tmp_path / "fleet.txt", "m.py:build model_setting=use_cache=False model_setting=attn_implementation=eager rtol=1e-2")
    toml = _write(tmp_path / "fleet.toml", "[[model]]", 'spec = "m.py:build"', 'model_settings = ["use_cache=False"]')
    tasks = tasks_from_sources([str(txt), str(toml)])
    base = SweepOptions(model_settings=("use_cache=True", "output_hidden_states=False"))
    first, second = (base.merged(t.options) for t in tasks)
    # The list's own value wins for the same key; the sweep's other settings stay.
    assert first.model_settings == ("output_hidden_states=False", "use_cache=False", "attn_implementation=eager")
    assert first.rtol == 1e-2 and second.model_settings == ("output_hidden_states=False", "use_cache=False")
    cmd = locate_command(tasks[0].spec, (), first, tmp_path / "r.json", None)
    flags = [cmd[i + 1] for i, word in enumerate(cmd) if word == "--model-setting"]
    assert flags == ["output_hidden_states=False", "use_cache=False", "attn_implementation=eager"]


def _sweep(*argv: object) -> int:
    parser = argparse.ArgumentParser(prog="nodebisect sweep")
    configure(parser)
    return parser.parse_args([str(a) for a in argv]).func(parser.parse_args([str(a) for a in argv]))


@pytest.mark.parametrize(("lines", "message"), [
    pytest.param(("missing.py:build",), "fleet.txt:1: model file not found: {tmp}/missing.py", id="missing-model"),
    pytest.param(("# a comment", "", "m.py:build inputs=x.pt",), "fleet.txt:3: inputs file not found: {tmp}/x.pt", id="missing-inputs"),
    pytest.param(("m.py:build rtoll=1e-2",), "fleet.txt:1: unknown per-model option 'rtoll' (did you mean 'rtol'?)", id="unknown-option"),
    pytest.param(("m.py:build model_setting=nonsense",), "fleet.txt:1: bad model setting 'nonsense'", id="bad-setting"),
])
def test_list_refuses_missing_paths_and_unknown_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     lines: tuple[str, ...], message: str) -> None:
    (tmp_path / "m.py").write_text("")
    fleet = _write(tmp_path / "fleet.txt", *lines)
    with pytest.raises(BadInputError) as err:
        _sweep(fleet, "--list")
    assert err.value.exit_code == 2
    assert message.format(tmp=tmp_path) in err.value.message
    assert capsys.readouterr().out == ""  # nothing listed


def test_toml_unknown_key_gets_a_did_you_mean_and_paths_are_relative_to_the_list(tmp_path: Path,
                                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "m.py").write_text("")
    monkeypatch.chdir(tmp_path)  # not the list's folder
    bad = _write(tmp_path / "lists" / "bad.toml", "[[model]]", 'spec = "m.py:build"', 'input = "x.pt"')
    with pytest.raises(BadInputError, match=r"bad.toml: entry 1: unknown key 'input' \(did you mean 'inputs'\?\)"):
        _sweep(bad, "--list")
    good = _write(tmp_path / "lists" / "good.toml", "[[model]]", 'spec = "m.py:build"', 'name = "m"',
                  'model_settings = ["use_cache=False"]')
    assert _sweep(good, "--list", "--model-setting", "attn_implementation=eager") == 0
    assert capsys.readouterr().out == f"m\t{tmp_path / 'lists' / 'm.py'}:build\t--model-setting use_cache=False\n"
    wrong_base = _write(tmp_path / "lists" / "wrong.txt", "lists/m.py:build")  # written as if relative to the cwd
    with pytest.raises(BadInputError, match="relative paths in a list are relative to its folder"):
        _sweep(wrong_base, "--list")


def test_help_says_list_paths_are_relative_to_the_list_and_offers_model_setting() -> None:
    parser = argparse.ArgumentParser(prog="nodebisect sweep")
    configure(parser)
    text = " ".join(parser.format_help().split())
    assert "Relative paths in a list file are relative to the list file's folder" in text
    assert "--model-setting KEY=VALUE" in text


def test_bad_model_setting_flag_is_exit_2(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text("")
    fleet = _write(tmp_path / "fleet.txt", "m.py:build")
    with pytest.raises(BadInputError, match="--model-setting: bad model setting 'use_cache'"):
        _sweep(fleet, "--out", tmp_path / "o", "--model-setting", "use_cache")


def test_sweep_md_export_failure_table_shows_the_remedy(tmp_path: Path) -> None:
    remedy = "the model returns a DynamicCache (its key/value cache), which the exporter cannot flatten: set use_cache=False"
    rows = [{"name": f"llm{i}", "status": "export_failed", "export_failure": {
        "step": "export", "target": "", "message": "ONNX export failed at step 'export': Unsupported output type DynamicCache",
        "remedy": remedy, "settings": ["use_cache=False"]}} for i in range(2)]
    rows.append({"name": "branchy", "status": "export_failed", "export_failure": {
        "step": "export", "target": "aten.gt", "message": "GuardOnDataDependentSymNode: Could not guard",
        "remedy": "rewrite it without Python control flow on tensor values", "settings": []}})
    md = summary.to_markdown(rows, tmp_path)
    assert "| failing op / step | message | remedy | models |" in md
    assert f"| {remedy}; add `--model-setting use_cache=False` | 2: llm0, llm1 |" in md
    assert "| rewrite it without Python control flow on tensor values | 1: branchy |" in md
    data = write_summary(tmp_path, rows)["json"]
    assert data["export_failures"][0]["remedy"] == remedy and data["export_failures"][0]["settings"] == ["use_cache=False"]
    assert json.loads((tmp_path / "sweep.json").read_text())["export_failures"][1]["settings"] == []


@pytest.mark.slow
def test_a_warm_worker_gives_each_model_torchs_fresh_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One model's set_default_dtype / set_grad_enabled(False) does not reach the next model of its worker."""
    from nodebisect.sweep.warm import WarmWorker

    (tmp_path / "leaky_models.py").write_text(
        "import torch\n"
        "def build():\n"
        "    seen = (torch.get_default_dtype(), torch.is_grad_enabled())\n"
        "    torch.set_default_dtype(torch.float64)  # left behind for the next model\n"
        "    torch.set_grad_enabled(False)\n"
        "    raise RuntimeError(f'saw {seen}')\n")
    monkeypatch.chdir(tmp_path)
    task = ModelTask(name="leaky", spec="leaky_models:build")
    worker = WarmWorker()
    try:
        rows = [run_task(task, SweepOptions(timeout=120), worker=worker) for _ in range(2)]
    finally:
        worker.close()
    assert [r["reason"] for r in rows] == ["calling build() failed: saw (torch.float32, True)"] * 2
    assert [r["worker"]["model"] for r in rows] == [1, 2] and rows[0]["worker"]["pid"] == rows[1]["worker"]["pid"]
