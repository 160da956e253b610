"""``nodebisect sweep``: real sweeps over tiny models (real export, real onnxruntime, real children).

The fleet holds one model of each outcome: clean, divergent
(``samples/divergent.py:AvgPoolDivisorOverride``), failing to export (a data-dependent
branch), crashing its worker (SIGSEGV while building) and, for the pool, hanging
(killed by its per-model timeout) and holding too much memory (killed by its limit).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clirun import default_sigint
from nodebisect.records import LocateResult
from nodebisect.sweep import sequences
from nodebisect.sweep.cli import configure, main
from nodebisect.sweep.results import RowWriter, compare, load_rows
from nodebisect.sweep.sources import select, tasks_from_sources

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "tests" / "sweep_models.py"
DIVERGENT = ROOT / "samples" / "divergent.py"


def _fleet(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def _sweep(*argv: str) -> int:
    """Run the sweep in-process through the same parser the main CLI registers."""
    parser = argparse.ArgumentParser()
    configure(parser)
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


def _by_name(out: Path) -> dict[str, dict]:
    return {row["name"]: row for row in load_rows(out)}


# The pool sweep (6 models in child processes, a 6 s hang, a 900 MiB hog), Ray, Ctrl-C/resume and the
# transformers zoo are the slow tier; sequence mining, sources and the row writer are fast.
@pytest.fixture(scope="module")
def pool_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("pool")
    fleet = _fleet(tmp / "fleet.txt",
                   "# one of each outcome",
                   f"{MODELS}:clean name=clean",
                   f"{DIVERGENT}:AvgPoolDivisorOverride name=avgpool",
                   f"{MODELS}:export_fails name=export_fails",
                   f"{MODELS}:switchable name=switched model_setting=branchy=False",  # the remedy, per model
                   f"{MODELS}:crashes name=crashes",
                   f"{MODELS}:hangs name=hangs timeout=6",
                   f"{MODELS}:hogs_memory name=hog memory_mib=900")
    out = tmp / "out"
    # Run from a folder holding a `nodebisect/` folder, as the one holding the checkout does: no model may import it.
    (tmp / "nodebisect").mkdir()
    (tmp / "nodebisect" / "__init__.py").write_text("raise ImportError('the decoy nodebisect/ folder was imported')\n")
    cwd = os.getcwd()
    os.chdir(tmp)
    try:
        code = _sweep(fleet, "--out", out, "--jobs", "2", "--reports", "-q")
    finally:
        os.chdir(cwd)
    assert code == 1  # some model diverged or failed
    return out


@pytest.mark.slow
def test_pool_sweep_gives_every_model_its_verdict(pool_sweep: Path) -> None:
    rows = _by_name(pool_sweep)
    assert {n: r["status"] for n, r in rows.items()} == {
        "clean": "match", "avgpool": "diverged", "export_fails": "export_failed", "crashes": "crashed", "hangs": "timeout",
        "hog": "out_of_memory", "switched": "match",
    }
    assert rows["switched"]["options"]["model_settings"] == ["branchy=False"]
    # Warm workers (the default): a process runs model after model; the one a model crashed, hung or
    # blew up ran nothing after it (each later model got a fresh one), and the rest still got verdicts.
    ended = {rows[n]["worker"]["pid"]: rows[n]["worker"]["model"] for n in ("crashes", "hangs", "hog")}
    assert len(ended) == 3
    assert all(r["worker"]["model"] <= ended.get(r["worker"]["pid"], r["worker"]["model"]) for r in rows.values())
    assert max(r["worker"]["model"] for r in rows.values()) >= 2
    assert rows["hog"]["peak_rss_mib"] > 900 and rows["hog"]["wall_s"] < 60
    assert rows["avgpool"]["first_divergent"]["framework"]["target"] == "aten.avg_pool2d.default"
    assert rows["avgpool"]["exit_code"] == 1 and rows["clean"]["exit_code"] == 0 and rows["export_fails"]["exit_code"] == 3
    assert rows["crashes"]["reason"].startswith("worker killed by SIGSEGV")
    assert "6s" in rows["hangs"]["reason"] and rows["hangs"]["wall_s"] < 30
    assert all(r["peak_rss_mib"] > 50 for n, r in rows.items() if n != "crashes")
    # A row with a result is the locate --json document itself.
    assert LocateResult.from_dict(rows["avgpool"]).first_divergent.op_type == "AveragePool"


@pytest.mark.slow
def test_pool_sweep_writes_summary_sequences_and_reports(pool_sweep: Path) -> None:
    md = (pool_sweep / "sweep.md").read_text()
    assert "7 models: 2 match, 1 diverged, 1 export_failed, 1 crashed, 1 timeout, 1 out_of_memory" in md
    assert "`aten.avg_pool2d.default`" in md and "divergent.py:46" in md
    assert "GuardOnDataDependentSymNode" in md  # export failures grouped with their message
    assert "rewrite it without Python control flow on tensor values" in md  # and the remedy locate named
    assert "[report](reports/avgpool/report.md)" in md
    assert (pool_sweep / "reports" / "avgpool" / "report.md").is_file()
    assert not (pool_sweep / "reports" / "clean").exists()  # bundles only for divergent models
    summary = json.loads((pool_sweep / "sweep.json").read_text())
    assert summary["by_status"]["diverged"] == 1
    top = summary["sequences"]["sequences"][0]
    assert top["sequence"][-1] == "AveragePool" and top["models"] == ["avgpool"]
    assert "AveragePool" in (pool_sweep / "sequences.md").read_text()


@pytest.mark.slow
@pytest.mark.ray
def test_ray_local_sweep_matches_the_pool(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    fleet = _fleet(tmp_path / "fleet.toml",
                   "[[model]]", f'spec = "{MODELS}:clean"', 'name = "clean"',
                   "[[model]]", f'spec = "{DIVERGENT}:AvgPoolDivisorOverride"', 'name = "avgpool"',
                   "[[model]]", f'spec = "{MODELS}:export_fails"', 'name = "export_fails"',
                   "[[model]]", f'spec = "{MODELS}:crashes"', 'name = "crashes"')
    out = tmp_path / "out"
    assert _sweep(fleet, "--out", out, "--executor", "ray", "--jobs", "2", "-q") == 1
    rows = _by_name(out)
    assert {n: r["status"] for n, r in rows.items()} == {
        "clean": "match", "avgpool": "diverged", "export_fails": "export_failed", "crashes": "crashed",
    }
    assert rows["avgpool"]["first_divergent"]["onnx_node"] == "node_avg_pool2d"


@pytest.mark.slow
@pytest.mark.subprocess
def test_resume_runs_only_what_an_interrupted_sweep_left(tmp_path: Path) -> None:
    fleet = _fleet(tmp_path / "fleet.txt", f"{MODELS}:crashes name=crashes", f"{MODELS}:clean name=clean",
                   f"{MODELS}:export_fails name=export_fails")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "nodebisect.sweep.cli", str(fleet), "--out", str(out), "--jobs", "1", "-q", "--workers", "cold"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    rows_file = out / "sweep.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (rows_file.exists() and rows_file.read_text().count("\n") >= 1):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)  # Ctrl-C while `clean` runs
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "--resume" in err
    first = load_rows(out)
    assert [r["name"] for r in first] == ["crashes"]
    with open(rows_file, "a") as fh:
        fh.write('{"name": "clean", "status": "ma')  # a torn line, as a kill mid-write leaves it
    assert _sweep(fleet, "--out", out, "--jobs", "2", "--resume", "-q") == 1
    rows = _by_name(out)
    assert set(rows) == {"crashes", "clean", "export_fails"}
    assert rows["crashes"]["finished_at"] == first[0]["finished_at"]  # not run again
    assert rows["clean"]["status"] == "match"
    # Without --resume an existing sweep is refused, not overwritten.
    assert main([str(fleet), "--out", str(out), "-q"]) == 2


@pytest.mark.slow
def test_compare_names_what_newly_diverges_or_fails(pool_sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The old sweep: the same divergent model under a tolerance that hides its defect.
    fleet = _fleet(tmp_path / "old.txt", f"{MODELS}:clean name=clean", f"{DIVERGENT}:AvgPoolDivisorOverride name=avgpool atol=1.0")
    old = tmp_path / "old"
    assert _sweep(fleet, "--out", old, "--jobs", "2", "-q") == 0
    capsys.readouterr()
    assert main(["--compare", str(old), str(pool_sweep), "--json", str(tmp_path / "diff.json")]) == 1
    text = capsys.readouterr().out
    assert "newly diverged:\n  avgpool: match -> diverged" in text
    diff = json.loads((tmp_path / "diff.json").read_text())
    assert [c["name"] for c in diff["newly_diverged"]] == ["avgpool"]
    assert diff["only_new"] == ["crashes", "export_fails", "hangs", "hog", "switched"] and diff["unchanged"] == 1
    back = compare(load_rows(pool_sweep), load_rows(old))
    assert [c.name for c in back.fixed] == ["avgpool"] and back.regressions == 0


def _node(i: int, op: str, inputs: list[str]) -> dict:
    return {"index": i, "onnx_node": f"n{i}", "op_type": op, "inputs": inputs, "outputs": [f"v{i}"], "status": "ok"}


def _chain_row(name: str, status: str, ops: list[str], culprit_op: str = "") -> dict:
    nodes = [_node(0, "Input", ["x"])] + [_node(i, op, [f"v{i - 1}"]) for i, op in enumerate(ops, 1)]
    row = {"name": name, "status": status, "nodes": nodes, "first_divergent": None}
    if culprit_op:
        index = max(i for i, n in enumerate(nodes) if n["op_type"] == culprit_op)
        row["first_divergent"] = {"onnx_node": f"n{index}", "framework": {"target": "aten.scaled_dot_product_attention.default"}}
    return row


def test_sequence_mining_finds_the_enriched_sequence() -> None:
    sdpa = ["MatMul", "Mul", "Where", "Softmax", "MatMul"]
    fleet = [_chain_row(f"div{i}", "diverged", ["Add"] * i + sdpa + ["Add"], culprit_op="MatMul") for i in range(7)]
    # Divergent models whose culprit has another history (a LayerNorm), for contrast.
    fleet += [_chain_row(f"ln{i}", "diverged", ["MatMul", "Add", "LayerNormalization"], "LayerNormalization") for i in range(3)]
    # Matching models hold Softmax→MatMul (plain attention) but never Where→Softmax→MatMul.
    fleet += [_chain_row(f"ok{i}", "match", ["MatMul", "Mul", "Softmax", "MatMul", "Add", "LayerNormalization"]) for i in range(10)]
    mined = sequences.mine(fleet)
    top = mined.sequences[0]
    assert top.text == "Where→Softmax→MatMul"
    assert (top.divergent, top.matching, top.models) == (7, 0, [f"div{i}" for i in range(7)])
    assert top.targets == {"aten.scaled_dot_product_attention.default": 7}
    by_text = {s.text: s for s in mined.sequences}
    assert by_text["Softmax→MatMul"].matching == 10  # present in matching models: not enriched
    assert by_text["Softmax→MatMul"].enrichment < top.enrichment
    assert "Mul→Where→Softmax→MatMul" not in by_text  # same split as its suffix: redundant
    assert "`Where→Softmax→MatMul` (inside `aten.scaled_dot_product_attention.default` lowerings) ends the culprit of 7" \
        in sequences.to_markdown(mined)


def _attention_row(name: str, status: str, gqa: bool, masked: bool) -> dict:
    """A causal-LM-like graph: q·k (MatMul, Mul), the mask (Where, when ``masked``), Softmax, ·v (MatMul).

    ``gqa``: the key/value path repeats heads (Expand→Reshape) into both MatMuls, as grouped-query
    attention does. A divergent row's culprit is the last MatMul, its segment the attention lowering.
    """
    nodes = [_node(0, "Input", ["x"])]

    def add(op: str, inputs: list[str]) -> str:
        nodes.append(_node(len(nodes), op, inputs))
        return f"v{len(nodes) - 1}"

    kv = add("Reshape", [add("Expand", ["v0"])]) if gqa else "v0"
    scores = add("Mul", [add("MatMul", ["v0", kv])])
    first = len(nodes) - 2
    scores = add("Where", [scores]) if masked else scores
    out = add("MatMul", [add("Softmax", [scores]), kv])
    add("Add", [out])
    segment = [n["onnx_node"] for n in nodes[first:-1]]
    row = {"name": name, "status": status, "nodes": nodes, "first_divergent": None}
    if status == "diverged":
        row["first_divergent"] = {"onnx_node": segment[-1], "segment": segment, "cause": "conversion",
                                  "segment_op_types": [nodes[int(n[1:])]["op_type"] for n in segment],
                                  "framework": {"target": "aten.scaled_dot_product_attention.default"}}
    return row


def test_mining_ranks_the_separating_sequence_inside_the_culprits_segment_first() -> None:
    """The zoo's case: every divergent model is a grouped-query causal LM whose masked attention lowering
    departs; a few matching causal LMs share both the GQA chain and the lowering, many matching encoders
    the lowering only. ``(Expand→)Reshape→MatMul`` ends every culprit too and separates better, but it
    reaches the culprit from outside the lowering; ``Softmax→MatMul`` is in every model and scores 0."""
    fleet = [_attention_row(f"llm{i}", "diverged", gqa=True, masked=True) for i in range(6)]
    fleet += [_attention_row(f"ok_llm{i}", "match", gqa=True, masked=True) for i in range(2)]
    fleet += [_attention_row(f"masked_enc{i}", "match", gqa=False, masked=True) for i in range(6)]
    fleet += [_attention_row(f"enc{i}", "match", gqa=False, masked=False) for i in range(6)]
    mined = sequences.mine(fleet)
    top = mined.sequences[0]
    assert top.text == "Where→Softmax→MatMul" and top.inside == 6 and top.matching == 8
    by_text = {s.text: s for s in mined.sequences}
    assert by_text["Softmax→MatMul"].separation == 0  # present in every model
    gqa = by_text["Reshape→MatMul"]  # Expand→Reshape→MatMul splits the fleet the same way: the shorter stays
    assert gqa.inside == 0 and gqa.separation > top.separation  # separates better, but from outside the lowering
    assert gqa.enrichment > top.enrichment  # what the older ranking put first
    assert [(g.target, g.chain, g.models) for g in mined.signatures] == [
        ("aten.scaled_dot_product_attention.default", ("MatMul", "Mul", "Where", "Softmax", "MatMul"), [f"llm{i}" for i in range(6)])]
    md = sequences.to_markdown(mined)
    assert md.splitlines()[2] == ("Culprit signature of 6 of 6 divergent model(s): `aten.scaled_dot_product_attention.default` "
                                  "lowered as `MatMul→Mul→Where→Softmax→MatMul`, cause conversion.")
    assert md.index("| `Where→Softmax→MatMul` |") < md.index("| `Reshape→MatMul` |")


def test_sources_lists_filter_limit_shard(tmp_path: Path) -> None:
    (tmp_path / "a.pt2").write_bytes(b"x")
    (tmp_path / "a.inputs.pt").write_bytes(b"x")
    (tmp_path / "b.pt2").write_bytes(b"x")
    (tmp_path / "m.py").write_text("")  # a list's paths must exist (relative to the list)
    (tmp_path / "x.pt").write_bytes(b"x")
    toml = _fleet(tmp_path / "m.toml", "[[model]]", 'spec = "m.py:build"', 'inputs = "x.pt"', "options = { rtol = 0.01 }")
    yaml_list = _fleet(tmp_path / "m.yaml", "- spec: pkg.mod:factory", "  name: pkg", "- a.pt2")
    tasks = tasks_from_sources([str(tmp_path / "a.pt2"), str(toml), str(yaml_list), str(tmp_path)])
    assert [t.name for t in tasks] == ["a", "m.build", "pkg", "a~2", "a~3", "b"]
    assert tasks[0].inputs == (str(tmp_path / "a.inputs.pt"),)
    assert tasks[1].spec == f"{tmp_path / 'm.py'}:build" and tasks[1].inputs == (str(tmp_path / "x.pt"),)
    assert tasks[1].options == {"rtol": 0.01} and tasks[2].spec == "pkg.mod:factory"
    assert [t.name for t in select(tasks, pattern="a*")] == ["a", "a~2", "a~3"]
    assert [t.name for t in select(tasks, limit=4, shard="2/2")] == ["m.build", "a~2"]
    with pytest.raises(Exception, match="bad --shard"):
        select(tasks, shard="3/2")


@pytest.mark.slow
def test_zoo_builds_small_models_in_both_variants(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    import torch

    from nodebisect.sweep.zoo import build_model, zoo_tasks

    tasks = zoo_tasks(tmp_path, ["default", "export-friendly"])
    assert [t.name for t in tasks[:4]] == ["BertForSequenceClassification.default", "BertForSequenceClassification.export-friendly",
                                           "GPT2LMHeadModel.default", "GPT2LMHeadModel.export-friendly"]
    assert len(tasks) > 200 and (tmp_path / "GPT2LMHeadModel.default.py").is_file()
    record = tmp_path / "rec.json"
    module, inputs = build_model("GPT2LMHeadModel", "export-friendly", record=str(record))
    out = module(*inputs)
    assert isinstance(out, tuple) and all(isinstance(t, torch.Tensor) for t in out)
    info = json.loads(record.read_text())
    assert info["params"] < 1_000_000 and info["inputs"] == {"input_ids": [2, 8], "attention_mask": [2, 8]}
    module, inputs = build_model("GPT2LMHeadModel", "default")
    assert type(module(*inputs).past_key_values).__name__ == "DynamicCache"  # the user's reality, kept


@pytest.mark.subprocess
def test_cli_help_and_bad_input(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="nodebisect sweep")
    configure(parser)
    text = parser.format_help()
    for option in ("--zoo", "--jobs", "--executor", "--address", "--resume", "--compare", "--shard", "--reports"):
        assert option in text
    proc = subprocess.run([sys.executable, "-m", "nodebisect.sweep.cli", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[0].startswith("nodebisect sweep: error: source not found")


def test_row_writer_appends_whole_lines(tmp_path: Path) -> None:
    writer = RowWriter(tmp_path / "sweep.jsonl")
    writer.append({"name": "a", "status": "match"})
    with open(tmp_path / "sweep.jsonl", "a") as fh:
        fh.write('{"name": "b", "sta')
    writer = RowWriter(tmp_path / "sweep.jsonl")  # a resumed sweep: the torn tail ends its line
    writer.append({"name": "b", "status": "diverged"})
    assert [(r["name"], r["status"]) for r in load_rows(tmp_path)] == [("a", "match"), ("b", "diverged")]
    assert os.path.getsize(tmp_path / "sweep.jsonl") == len((tmp_path / "sweep.jsonl").read_bytes())


@pytest.mark.slow
def test_tui_opens_a_sweep_and_a_model(pool_sweep: Path) -> None:
    pytest.importorskip("textual")
    import asyncio

    from textual.widgets import DataTable

    from nodebisect_tui.sweep_screen import SweepApp, SweepScreen

    async def drive() -> None:
        app = SweepApp(pool_sweep)
        async with app.run_test(size=(120, 36)) as pilot:
            await pilot.pause()
            assert isinstance(app.screen, SweepScreen)
            table = app.screen.query_one(DataTable)
            assert table.row_count == 7
            assert table.get_row_at(0)[:2] == ["avgpool", "diverged"]  # worst first
            await pilot.press("enter")
            await pilot.pause()
            assert not isinstance(app.screen, SweepScreen)
            assert app.result is not None and app.result.first_divergent.onnx_node == "node_avg_pool2d"
            await pilot.press("m")
            await pilot.pause()
            assert isinstance(app.screen, SweepScreen)

    asyncio.run(drive())


def test_the_status_line_says_which_divergences_are_only_at_masked_positions() -> None:
    """The zoo's causal LMs diverge only where the attention mask excludes positions (exit 0): the first line a user
    reads must not call them broken without saying so."""
    from nodebisect.sweep.summary import status_line

    masked = {"status": "diverged", "first_divergent": {"scope": "masked_positions"}}
    real = {"status": "diverged", "first_divergent": {"scope": "all_positions"}}
    ok = {"status": "match"}
    assert status_line([ok, masked, masked]) == "3 models: 1 match, 2 diverged (all only at masked positions: exit 0 unless --strict-masked)"
    assert status_line([ok, masked, real]) == "3 models: 1 match, 2 diverged (1 only at masked positions: exit 0 unless --strict-masked)"
    assert status_line([ok, real]) == "2 models: 1 match, 1 diverged"
