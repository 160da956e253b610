"""The text a user and a maintainer read (issue #12 items 2-4): run on the real samples.

Each sample is located once per session through the CLI, as a user runs it
(``--report DIR``; conftest's ``sample_runs``); the tests read its terminal output,
report.md, report.json and growth.svg. Item 3's values are computed with
``values.worst`` on the repro bundle's real arrays run through onnxruntime.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clirun import SampleRun as Run
from clirun import SampleRuns
from nodebisect.cli.main import main
from nodebisect.records import NAMED_SUSPECT_SCORE, LocateResult, NodeRecord

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "samples" / "build"
SAMPLES = ["Atan2ZeroY", "AvgPoolDivisorOverride", "ConvBnCancellation", "Fp16RoundingElided", "NanIgnoringMax", "SdpaFullyMaskedRow"]


@pytest.fixture(scope="module")
def runs(sample_runs: SampleRuns) -> dict[str, Run]:
    return {name: sample_runs[name] for name in SAMPLES}


def _summary_line(run: Run, key: str) -> str:
    return next((line.strip() for line in run.out.splitlines() if line.strip().startswith(key)), "")


# -- item 2: no sentence contradicts another ---------------------------------------


def test_every_sample_diverges_and_names_where_to_file_it(runs: dict[str, Run]) -> None:
    expected = {
        "Atan2ZeroY": "pytorch/pytorch",
        "AvgPoolDivisorOverride": "pytorch/pytorch",
        "ConvBnCancellation": "microsoft/onnxscript",
        "Fp16RoundingElided": "microsoft/onnxruntime",
        "NanIgnoringMax": "microsoft/onnxruntime",
        "SdpaFullyMaskedRow": "pytorch/pytorch",
    }
    for name, repo in expected.items():
        run = runs[name]
        assert run.code == (0 if name == "SdpaFullyMaskedRow" else 1), (name, run.out)  # only a fully masked row differs
        assert _summary_line(run, "file at:").split()[2].rstrip(":") == repo, (name, run.out)
        assert f"[`{repo}`](https://github.com/{repo}/issues)" in run.md, name
        assert f"gh issue create --repo {repo} --title '" in run.md and "--body-file report.md" in run.md, name


def test_optimizer_stage_reads_as_one_cause(runs: dict[str, Run]) -> None:
    run = runs["ConvBnCancellation"]
    stage = _summary_line(run, "stage:")
    assert stage.startswith("stage:     graph_optimization (cause conversion): the exporter's ONNX graph optimizer"), run.out
    # The stock "a conversion defect" clause contradicted the optimizer verdict: it is gone everywhere.
    for text in (run.out, run.md):
        assert "conversion defect" not in text and "defect is in the op's conversion" not in text
    assert "optimize=False" in stage


def test_fp16_node_alone_and_with_producers_each_have_their_number(runs: dict[str, Run]) -> None:
    run = runs["Fp16RoundingElided"]
    line = _summary_line(run, "isolated:")
    assert re.search(r"node alone on PyTorch's inputs: right .*; with the ops producing its inputs: max_abs=[0-9.]+", line), run.out
    assert "Run alone on PyTorch's own inputs it gives" not in run.md
    assert "node alone on PyTorch's inputs: right" in run.md
    # "right when run alone ... but wrong together" is said once, by the isolated line, not again in why.
    assert "right when run alone" not in run.out


def test_precision_caution_is_its_own_line_not_a_why(runs: dict[str, Run]) -> None:
    run = runs["Fp16RoundingElided"]
    # PyTorch's fp16 rounding is the model's intent here; the float64 oracle must flag it, not hide it.
    assert run.result.first_divergent.metrics.criterion == "fixed, within noise"
    assert _summary_line(run, "precision:").startswith("precision: PyTorch's own float16 result is already"), run.out
    assert "legitimate precision drift" not in run.out and "legitimate precision drift" not in run.md
    assert "- precision: PyTorch's own float16 result" in run.md


def test_nan_placement_in_words_and_no_cosine_over_agreeing_positions(runs: dict[str, Run]) -> None:
    run = runs["NanIgnoringMax"]
    metrics = _summary_line(run, "metrics:")
    assert "onnxruntime is finite at 10 position(s) where PyTorch is NaN" in metrics, run.out
    assert "cosine" not in metrics and "max_abs=inf" not in metrics
    summary_paragraph = next(p for p in run.md.split("\n\n") if p.startswith("**Summary.**"))
    assert "onnxruntime is finite at 10 position(s) where PyTorch is NaN" in summary_paragraph
    assert "cosine" not in summary_paragraph
    first_row = next(r for r in run.md.splitlines() if r.startswith("| **first divergent**"))
    assert "1.0000" not in first_row and "—" in first_row


def test_suspect_sentence_printed_once(runs: dict[str, Run]) -> None:
    run = runs["SdpaFullyMaskedRow"]
    suspect = _summary_line(run, "suspect:")
    assert suspect.startswith("suspect:   node_Softmax_56 (Softmax)"), run.out
    reason = suspect.split(": ", 2)[-1]
    assert run.out.count(reason) == 1, run.out
    # The carrier with evidence of its own (a contradicted attribute) is printed, once.
    pool = _summary_line(runs["AvgPoolDivisorOverride"], "suspect:")
    assert pool.startswith("suspect:   node_avg_pool2d (AveragePool): AveragePool has no divisor_override"), pool
    assert runs["AvgPoolDivisorOverride"].out.count("passes divisor_override=3") == 1
    # A carrier with nothing but "carries the divergent framework value" restates the culprit line: not printed.
    bare = [
        name
        for name, r in runs.items()
        if r.result.first_divergent is not None
        and r.result.first_divergent.suspects[:1]
        and r.result.first_divergent.suspects[0].onnx_node == r.result.first_divergent.onnx_node
        and r.result.first_divergent.suspects[0].score < NAMED_SUSPECT_SCORE
    ]
    assert bare, "no sample has a bare carrier suspect: the test cannot see this rule"
    for name in bare:
        assert "suspect:" not in runs[name].out, (name, runs[name].out)


def test_next_points_into_the_written_report(runs: dict[str, Run]) -> None:
    run = runs["Atan2ZeroY"]
    d = str(run.folder)
    assert f"next:      read {d}/report.md" in run.out, run.out
    assert f"nodebisect tui {d}/report.json" in run.out
    assert f"python {d}/repro/repro.py" in run.out
    assert "--report DIR" not in run.out


def test_progress_of_strategy_all_has_no_fake_step_counts_and_no_mechanics_note(runs: dict[str, Run]) -> None:
    for name, run in runs.items():
        assert not re.search(r"step (\d+)/\1\b", run.err), (name, run.err)
        assert "[nodebisect] bisect..." not in run.err, (name, run.err)
        assert "marking probes changed" not in run.out and "marking probes changed" not in run.md, name
    notes = [n for r in runs.values() for n in r.result.notes]
    assert any(n.startswith("marking probes changed") for n in notes), "the note stays in the JSON"


def test_verbose_shows_the_mechanics_note(runs: dict[str, Run]) -> None:
    from nodebisect.report.summary import summary

    result = next(r.result for r in runs.values() if any(n.startswith("marking probes") for n in r.result.notes))
    assert "marking probes changed" in summary(result, verbose=True)
    assert "marking probes changed" not in summary(result)


def test_capture_verdict_says_it_once_and_files_at_torch_export(sample_runs: SampleRuns) -> None:
    run = sample_runs.factory("TransformerFastPath")
    folder = run.folder
    assert run.code == 1 and _summary_line(run, "stage:").startswith("stage:     capture"), run.out
    assert _summary_line(run, "file at:") == "file at:   pytorch/pytorch: torch.export"
    for text in (run.out, run.md):
        assert text.count("already differ") == 1, text  # the stage sentence, not again in why
    assert "python" not in _summary_line(run, "next:") and "repro/repro.py" not in run.out  # no ONNX repro for a capture verdict
    from nodebisect.report.summary import summary

    assert "minimal repro" not in summary(run.result)  # nor promised without --report
    assert run.md.splitlines()[0].startswith("## torch.export: the exported program differs from eager PyTorch")
    assert "Capture: max |torch.export − eager PyTorch| per module" in (folder / "growth.svg").read_text()


# -- item 3: the values behind the bug ----------------------------------------------


def _worst_from_repro(run: Run) -> dict:
    """values.worst on the repro bundle's arrays, run through onnxruntime (what the diagnosis will record)."""
    import onnx
    import onnxruntime as ort

    from nodebisect.values.worst import small_constants, worst_element

    repro = run.folder / "repro"
    inputs = dict(np.load(repro / "inputs.npz"))
    expected = dict(np.load(repro / "expected.npz"))
    name = next(iter(expected))
    session = ort.InferenceSession(str(repro / "model.onnx"), providers=["CPUExecutionProvider"])
    actual = session.run([name], {i.name: inputs[i.name] for i in session.get_inputs()})[0]
    worst = worst_element(expected[name], actual, inputs)
    model = onnx.load(str(repro / "model.onnx"))
    worst["constants"] = small_constants(model, [n.name for n in model.graph.node])
    return worst


def test_atan2_worst_element_shows_signed_zero_and_both_values(runs: dict[str, Run]) -> None:
    from nodebisect.report.markdown import render_markdown
    from nodebisect.report.summary import summary

    run = runs["Atan2ZeroY"]
    worst = _worst_from_repro(run)
    assert worst["expected"] == pytest.approx(np.pi, abs=1e-6) and worst["actual"] == pytest.approx(-np.pi, abs=1e-6)
    result = run.result
    result.first_divergent.worst = worst
    result = LocateResult.from_dict(json.loads(json.dumps(result.to_dict(), allow_nan=False)))  # survives JSON
    line = next(x for x in summary(result).splitlines() if x.strip().startswith("worst:"))
    assert re.search(r"at \[\d+, \d+\]: relu=\+0\.0, linear_1=-[0-9.]+ -> PyTorch \+3\.1416, onnxruntime -3\.1416", line), line
    md = render_markdown(result)
    assert "PyTorch +3.1416, onnxruntime -3.1416" in md.splitlines()[0]  # the issue title states the symptom
    assert "worst element at [" in md


@pytest.mark.subprocess
def test_repro_script_prints_the_worst_element(runs: dict[str, Run]) -> None:
    repro = runs["Atan2ZeroY"].folder / "repro" / "repro.py"
    done = subprocess.run([sys.executable, str(repro)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout
    assert re.search(r"worst element at \[\d+, \d+\]: relu=\+0\.0, linear_1=-[0-9.]+ -> PyTorch \+3\.1416, onnxruntime -3\.1416", done.stdout), done.stdout


def test_worst_values_are_printed_with_the_digits_that_tell_them_apart(runs: dict[str, Run]) -> None:
    from nodebisect.report.wording import pair_text

    assert pair_text(-707106.78125, -707106.8125) == ("-707106.781", "-707106.812")
    assert pair_text(np.pi, -np.pi) == ("+3.1416", "-3.1416")
    assert pair_text(0.0, -0.0) == ("+0.0", "-0.0")
    line = _summary_line(runs["ConvBnCancellation"], "worst:")
    if line:  # filled by the diagnosis (diagnose.repro_check)
        pytorch, ort = re.search(r"PyTorch (\S+), onnxruntime (\S+)", line).groups()
        assert pytorch != ort, line


@pytest.mark.subprocess
def test_repro_script_names_inputs_only_through_element_wise_nodes(runs: dict[str, Run]) -> None:
    repro = runs["SdpaFullyMaskedRow"].folder / "repro" / "repro.py"
    done = subprocess.run([sys.executable, str(repro)], capture_output=True, text=True, timeout=120)
    line = next(x for x in done.stdout.splitlines() if "worst element at" in x)
    assert " -> " not in line and "PyTorch +0.0, onnxruntime +" in line, line  # q/k/v at the output's index mean nothing


def test_sdpa_constants_include_the_mask_fill(runs: dict[str, Run]) -> None:
    from nodebisect.report.summary import summary

    run = runs["SdpaFullyMaskedRow"]
    worst = _worst_from_repro(run)
    flat = json.dumps(worst["constants"])
    assert "-3.4028234663852886e+38" in flat or "-inf" in flat, worst["constants"]
    result = run.result
    result.first_divergent.worst = worst
    line = next(x for x in summary(result).splitlines() if x.strip().startswith("constants:"))
    assert "e+38" in line or "-inf" in line


def test_culprit_attributes_never_truncated(runs: dict[str, Run]) -> None:
    md = runs["AvgPoolDivisorOverride"].md
    assert "strides=[2, 2], kernel_shape=[2, 2]" in md
    seq_row = next(r for r in md.splitlines() if r.startswith("| ➜"))
    assert "kernel_shape=[2, 2]" in seq_row and "…" not in seq_row


# -- item 4: report.md ready to file -------------------------------------------------


def test_report_md_title_evidence_then_what_to_do_environment_folded(runs: dict[str, Run]) -> None:
    md = runs["AvgPoolDivisorOverride"].md
    title = md.splitlines()[0]
    assert title.startswith("## torch.onnx: aten::avg_pool2d exported as AveragePool computes something else"), title
    assert "nodebisect:" not in title
    # Inside a multi-node lowering the title names the node that departs, not the carrier's MatMul.
    sdpa = runs["SdpaFullyMaskedRow"].md.splitlines()[0]
    assert sdpa.startswith("## torch.onnx: aten::scaled_dot_product_attention exported as ") and "; its Softmax computes something else" in sdpa, sdpa
    order = [md.index(s) for s in ("**Summary.**", "### The values behind it", "### What to do", "### How to reproduce", "### Filing this report")]
    assert order == sorted(order)
    assert "<summary>Environment</summary>" in md and "\n### Environment" not in md
    # The values table leaves the culprit's downstream consequences out, and says how many; the node table numbers rows.
    assert "downstream of the first divergent one also diverge" in md and re.search(r"\| \d+ \| `", md)
    assert not re.search(r"\| #\d+ \|", md)
    assert "drag `growth.svg`" in md


def test_report_command_keeps_the_repro_section(runs: dict[str, Run], tmp_path: Path) -> None:
    folder = tmp_path / "again"
    shutil.copytree(runs["Atan2ZeroY"].folder, folder)
    before = (folder / "report.md").read_text()
    assert "python repro/repro.py" in before
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["report", str(folder / "report.json"), "--out", str(folder)]) == 0
    after = (folder / "report.md").read_text()
    assert "python repro/repro.py" in after and "No repro bundle" not in after
    holds = re.search(r"\. It holds [^:]+", before)
    assert holds and holds.group(0) in after  # what the repro holds survives the rebuild
    assert "No repro bundle" not in err.getvalue()


def test_growth_svg_breaks_the_line_over_unmeasured_nodes_and_labels_above(runs: dict[str, Run]) -> None:
    from nodebisect.report.growth import MARGIN_TOP, growth_svg

    result = runs["SdpaFullyMaskedRow"].result
    measured = [n for n in result.nodes if n.metrics is not None]
    # Forget one measurement on the culprit's path, as a bisection that skipped it would.
    culprit = result.node(result.first_divergent.onnx_node)
    before = max((n for n in measured if n.index < culprit.index and culprit.onnx_value), key=lambda n: n.index)
    before.metrics, before.status = None, "not_run"
    svg = growth_svg(result)
    xs = [float(x) for x in re.findall(r'<circle cx="([0-9.]+)" cy="[0-9.]+" r="3.5"', svg)]
    lines = [[float(p.split(",")[0]) for p in pts.split()] for pts in re.findall(r'<polyline points="([^"]+)"', svg)]
    gap_x = _x_of(svg, before)
    for line in lines:
        assert not (min(line) < gap_x < max(line)), "a line crosses the unmeasured node"
    assert xs
    label_y = float(re.search(r'<text x="[0-9.]+" y="([0-9.]+)" text-anchor="\w+" font-weight="bold">first divergent', svg).group(1))
    assert label_y < MARGIN_TOP  # above the plot: it cannot cover the curve


def _x_of(svg: str, node: NodeRecord) -> float:
    """The x of a node index, from the axis ticks of the picture."""
    ticks = {int(t): float(x) for x, t in re.findall(r'<text x="([0-9.]+)" y="\d+" text-anchor="middle" fill="#555">(\d+)</text>', svg)}
    (i0, x0), (i1, x1) = sorted(ticks.items())[:2]
    return x0 + (node.index - i0) * (x1 - x0) / (i1 - i0)


def test_growth_svg_of_a_capture_verdict_plots_eager_vs_export(runs: dict[str, Run]) -> None:
    from nodebisect.report.growth import growth_svg

    result = runs["AvgPoolDivisorOverride"].result
    fd = result.first_divergent
    fd.stage, fd.framework.module = "capture", "pool"
    result.capture = {"checked": True, "modules": [{"module": "conv", "max_abs": 1e-7}, {"module": "pool", "max_abs": 0.25}]}
    svg = growth_svg(result)
    assert "eager PyTorch" in svg and "ONNX node index" not in svg
    assert "first divergent module: pool" in svg


# -- item 5: graph.svg without the Debian package ----------------------------------------


def test_graph_svg_from_the_wheel_when_dot_is_not_on_path(runs: dict[str, Run], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from nodebisect.report.bundle import write_report
    from nodebisect.report.neighbourhood import dot_fallback

    if dot_fallback() is None:
        pytest.skip("graphviz-pure is not installed")
    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot` anywhere
    out = write_report(runs["Atan2ZeroY"].result, tmp_path / "nodot")
    svg = (out / "graph.svg").read_text()
    assert "<svg" in svg and "node_atan2" in svg and not (out / "graph.dot").exists()
    assert svg.count('class="node"') >= 5


# -- item 8 (CLI part) -------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, needle",
    [
        pytest.param(["--atoll", "1e-3"], "did you mean --atol?", id="did-you-mean"),
        pytest.param(["--atol", "-1"], "--atol -1.0 is not a tolerance", id="negative-atol"),
        pytest.param(["--rtol", "nan"], "--rtol nan is not a tolerance", id="nan-rtol"),
        pytest.param(["--atol", "inf"], "--atol inf is not a tolerance", id="inf-atol"),
    ],
)
def test_bad_flags_exit_2_with_the_locate_usage(argv: list[str], needle: str, built_samples: Path, cli: Any) -> None:
    code, _out, err = cli("locate", built_samples / "Atan2ZeroY.pt2", *argv)
    assert code == 2, err
    assert needle in err and "Traceback" not in err
    if "did you mean" in needle:
        assert err.startswith("usage: nodebisect locate "), err


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_capture_verdict_gets_a_repro_that_compares_eager_with_torch_export(sample_runs: SampleRuns) -> None:
    """Issue #12 item 1: the capture stage has no ONNX repro; its own script must fail the same way."""
    run = sample_runs.factory("TransformerFastPath")  # `locate divergent.py:TransformerFastPath --report rep` from its folder
    assert run.code == 1, run.err
    script = run.folder / "repro" / "capture_repro.py"
    assert script.is_file()
    assert "repro/capture_repro.py" in run.md
    done = subprocess.run([sys.executable, str(script)], cwd=run.folder.parent, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "MISMATCH REPRODUCED" in done.stdout
    # growth.svg plots eager vs export per hooked module, not one point
    modules = json.loads((run.folder / "report.json").read_text())["capture"]["modules"]
    assert len(modules) >= 2 and any(m["max_abs"] > 0.1 for m in modules) and any(m["max_abs"] == 0.0 for m in modules)


def test_reproduce_command_carries_the_settings_the_model_needed(runs: dict[str, Run]) -> None:
    """A model that exported only with --model-setting (a causal LM's cache off) or another exporter:
    the command in "How to reproduce" must repeat them, or it fails at export instead of reproducing."""
    from types import SimpleNamespace

    from nodebisect.report.filing import reproduce_section

    result = runs["Atan2ZeroY"].result
    plain = reproduce_section(result, SimpleNamespace(repro_dir="", repro_note=""))
    assert "--model-setting" not in plain and "--exporter" not in plain
    # The run's own --inputs file is recorded (absolute) and repeated: the command reproduces as written.
    assert f"--inputs {BUILD / 'Atan2ZeroY.inputs.pt'}" in plain and "add the same" not in plain
    result.environment.update(applied_settings=["use_cache=False", "attn_implementation=eager"], exporter="torchscript")
    text = reproduce_section(result, SimpleNamespace(repro_dir="", repro_note=""))
    command = next(line for line in text.splitlines() if line.startswith("nodebisect locate"))
    assert "--exporter torchscript" in command
    assert "--model-setting use_cache=False --model-setting attn_implementation=eager" in command
