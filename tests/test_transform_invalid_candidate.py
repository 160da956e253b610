"""A transformation tool that writes a model onnxruntime rejects: the tool's defect (exit 4), not bad input (exit 2).

Real case: onnxconverter-common's convert_float_to_float16 on a transformers causal LM with its
cache on (the default): the dynamo export runs, its float16 candidate does not load (a Reshape's
output typed float16 where its consumer expects float). The user's model and inputs are fine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

pytestmark = pytest.mark.slow  # one transformers export


def test_an_invalid_float16_candidate_is_the_tools_runtime_failure_in_one_line(cli: Any, tmp_path: Path) -> None:
    pytest.importorskip("onnxconverter_common")
    transformers = pytest.importorskip("transformers")
    from nodebisect.frontends.loading.settings import register_cache_outputs

    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100, n_positions=32, bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config).eval()
    register_cache_outputs(model)
    path = tmp_path / "gpt2.onnx"
    torch.onnx.export(model, (torch.randint(0, 100, (1, 8)),), str(path), dynamo=True, input_names=["input_ids"])
    run = cli("diff", path, "--transform", "fp16", "-q")
    assert run.code == 4, (run.code, run.err)
    lines = run.err.strip().splitlines()  # the error, then what to do
    assert len(lines) == 2 and lines[0].startswith("nodebisect: error:") and "Traceback" not in run.err
    assert "does not run in onnxruntime" in run.err and "onnxconverter-common" in run.err
    assert "report it to onnxconverter-common" in run.err and "--transform fp16-ort" in run.err


gpt2_factory = '''import torch
import transformers


def build():
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100, n_positions=32, bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(config).eval(), (torch.randint(0, 100, (1, 8)),)
'''


def test_locate_keeps_its_verdict_when_the_transformation_s_candidate_is_invalid(cli: Any, tmp_path: Path) -> None:
    """locate --transform: the export's verdict is written and said; the transformation's failure beside it, exit 4.

    A sweep used to lose the row (exit 4 without a result JSON) for 6 of the zoo's causal LMs."""
    pytest.importorskip("onnxconverter_common")
    pytest.importorskip("transformers")
    import json

    (tmp_path / "gpt2_model.py").write_text(gpt2_factory)
    run = cli("locate", f"{tmp_path}/gpt2_model.py:build", "--transform", "fp16", "--json", tmp_path / "r.json", "-q")
    assert run.code == 4, (run.code, run.out, run.err)
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["verdict"] == "match" and data["transform"]["failed_exit"] == 4, data.get("transform")
    assert "does not run in onnxruntime" in data["transform"]["failed"]
    assert "fp16 (onnxconverter-common" in run.out and "could not be judged" in run.out and "Traceback" not in run.err + run.out
    from nodebisect.report.transform_wording import transform_tables

    table = "\n".join(transform_tables([{"name": "gpt2", "transform": data["transform"]}]))
    assert "| gpt2 | invalid candidate |" in table and "0 of 1 model(s) depart" in table, table
    assert "onnxruntime rejects it: Type Error: Type (tensor(float16))" in table, table


def test_onnxruntime_s_float16_converter_makes_a_valid_candidate_of_the_same_model(cli: Any, tmp_path: Path) -> None:
    """--transform fp16-ort: the model onnxconverter-common 1.16 cannot convert validly converts, runs and matches."""
    pytest.importorskip("transformers")
    import json

    (tmp_path / "gpt2_model.py").write_text(gpt2_factory)
    run = cli("locate", f"{tmp_path}/gpt2_model.py:build", "--transform", "fp16-ort", "--json", tmp_path / "r.json", "-q")
    assert run.code == 0, (run.code, run.out, run.err)
    t = json.loads((tmp_path / "r.json").read_text())["transform"]
    assert t["matched"] and not t["failed"] and t["tool"] == "onnxruntime" and t["judged_by"] == "diff", t


square_factory = '''import torch


class Square(torch.nn.Module):
    def forward(self, x):
        h = x * 300.0
        return torch.tanh(h * h / 1e6)  # h * h passes float16's 65504 where |x| > 0.85


def build():
    return Square().eval(), (torch.linspace(-2.0, 2.0, 32).reshape(4, 8),)
'''


def test_locate_transform_writes_the_departing_candidate_s_diff_report_beside_it(cli: Any, tmp_path: Path) -> None:
    """locate's report is about the export; the transformation's tool needs the candidate's own: diff's report.md,
    its repro/ and a command on files written beside it (the export, its inputs), runnable without the model."""
    pytest.importorskip("onnxconverter_common")
    import json
    import subprocess
    import sys

    import nodebisect

    (tmp_path / "square.py").write_text(square_factory)
    rep = tmp_path / "rep"
    run = cli("locate", f"{tmp_path}/square.py:build", "--transform", "fp16", "--report", rep, "--json", tmp_path / "r.json", "-q")
    data = json.loads((tmp_path / "r.json").read_text())
    t = data["transform"]
    assert data["verdict"] == "match" and not t["matched"] and t["report"] == str(rep / "transform" / "report.md"), (run.out, t)
    assert f"diff's report): {rep / 'transform' / 'report.md'}" in run.out
    folder = rep / "transform"
    assert {"reference.onnx", "candidate.onnx", "inputs.npz", "report.md", "report.json"} <= {p.name for p in folder.iterdir()}
    text = (folder / "report.md").read_text()
    command = f"nodebisect diff {folder / 'reference.onnx'} {folder / 'candidate.onnx'} --inputs {folder / 'inputs.npz'}"
    assert command in text, text
    again = nodebisect.diff(folder / "reference.onnx", folder / "candidate.onnx", str(folder / "inputs.npz"))
    assert again.verdict == "diverged" and again.first_divergent.onnx_node == t["culprit"]["node"]
    repro = subprocess.run([sys.executable, str(folder / "repro" / "repro.py")], capture_output=True, text=True, timeout=120)
    assert repro.returncode == 1 and "MISMATCH REPRODUCED" in repro.stdout, repro.stdout + repro.stderr
