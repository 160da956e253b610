"""Divergences only at masked positions, one culprit per missing guard, the torch-level repro (issue #22.2, .3, .9).

The fast tier reads the bundled SdpaFullyMaskedRow sample (located once per session)
and checks the mask reading on arrays; the slow tier locates a real left-padded
``transformers`` LlamaForCausalLM in float32 and float16, and one attention block with
a bool and an additive ``-inf`` mask, each once per module.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nodebisect.values.masks import kept_positions, output_keep, output_masks

# -- reading masks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, mask, kept",
    [
        pytest.param("attention_mask", np.array([[1, 1, 1], [0, 1, 1]]), [[1, 1, 1], [0, 1, 1]], id="0/1 int per token"),
        pytest.param("attention_mask", np.array([[True, True], [False, True]]), [[1, 1], [0, 1]], id="bool per token"),
        pytest.param("src_key_padding_mask", np.array([[False, False], [True, False]]), [[1, 1], [0, 1]], id="padding: True excludes"),
        pytest.param("mask", np.array([[0.0, -np.inf], [-np.inf, -np.inf]]), [1, 0], id="additive -inf, query x key"),
        pytest.param("attn_mask", np.array([[0.0, 0.0], [-3.4028e38, -3.4028e38]], np.float32), [1, 0], id="additive finfo.min"),
        pytest.param("attention_mask", np.array([[[[1, 0], [1, 1]]], [[[0, 0], [1, 1]]]]), [[1, 1], [0, 1]], id="4-D [B, 1, Q, K]"),
    ],
)
def test_a_mask_input_keeps_the_positions_it_attends(name: str, mask: np.ndarray, kept: list[Any]) -> None:
    got = kept_positions(name, mask)
    assert got is not None and got.tolist() == np.asarray(kept, bool).tolist()


def test_inputs_that_are_no_masks_or_exclude_nothing_are_not_read() -> None:
    assert kept_positions("input_ids", np.array([[0, 1]])) is None  # not named as a mask
    assert kept_positions("attention_mask", np.ones((2, 3), np.int64)) is None  # keeps everything
    assert kept_positions("attention_mask", np.array([[3, 1]])) is None  # not a 0/1 mask
    assert kept_positions("mask", np.zeros((2, 2), np.float32)) is None  # additive, nothing excluded


def test_kept_positions_apply_to_outputs_holding_them() -> None:
    keep = np.array([[False, True, True], [True, True, True]])
    logits = output_keep(keep, (2, 3, 5))
    assert logits is not None and logits.shape == (2, 3, 5) and not logits[0, 0].any() and logits[0, 1].all()
    assert output_keep(np.array([True, False]), (1, 2, 8)) is not None  # [Q] in a [1, Q, D] output
    assert output_keep(keep, (2, 5)) is None  # a pooled output: not split
    kv = output_keep(keep, (2, 4, 3, 6))  # a layer's keys/values [B, H, S, D]: the token axis is 2
    assert kv is not None and not kv[0, :, 0].any() and kv[0, :, 1:].all() and kv[1].all()
    first = output_keep(keep, (2, 3, 3, 6))  # [B, S, ...] first: S next to the batch
    assert first is not None and not first[0, 0].any() and first[0, 1].all()
    assert output_keep(keep, (2, 4, 5, 6)) is None  # no axis of S tokens
    feeds = {"ids": np.zeros((2, 3), np.int64), "attention_mask": keep.astype(np.int64)}
    assert set(output_masks(feeds, {"logits": (2, 3, 5), "pooled": (2, 5)})) == {"logits"}


# -- one culprit per missing guard: the decomposition evidence reads fills alike in every dtype --


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["float32", "float16"])
def test_a_mask_fill_at_finfo_min_is_pytorchs_minus_inf_in_every_dtype(dtype: type) -> None:
    from nodebisect.diagnose.decomposition import has_counterpart

    fill = np.finfo(dtype).min  # what the lowering's Where writes
    lowering = np.array([[0.5, fill], [fill, fill]], dtype)
    pytorch = np.array([[0.5, -np.inf], [-np.inf, -np.inf]], dtype)  # PyTorch's decomposition
    assert has_counterpart(lowering, [pytorch])
    assert not has_counterpart(np.array([[0.5, -1000.0], [fill, fill]], dtype), [pytorch])


def test_an_intermediate_pytorch_mends_later_anchors_nothing() -> None:
    from nodebisect.diagnose.decomposition import guarded_later

    softmax = np.array([[0.5, 0.5], [np.nan, np.nan]], np.float32)  # a -inf row's softmax, before the safe-softmax guard
    scores = np.array([[1.0, 1.0], [-np.inf, -np.inf]], np.float32)
    assert [c is scores for c in guarded_later([softmax, scores], np.zeros((2, 2), np.float32))] == [True]
    # When PyTorch's own answer holds NaN too, the NaN is no mended error: it stays a counterpart.
    assert len(guarded_later([softmax, scores], np.full((2, 2), np.nan, np.float32))) == 2


# -- the bundled sample: a fully masked query row -------------------------------------------


def test_the_sdpa_sample_diverges_only_at_masked_positions_and_exits_0(sample_runs: Any) -> None:
    run = sample_runs["SdpaFullyMaskedRow"]
    assert run.code == 0, run.err  # the default: what no user reads is no failure
    data = run.data
    assert data["verdict"] == "diverged" and data["first_divergent"]["scope"] == "masked_positions"
    output = data["outputs"][0]
    assert output["ok"] is False and output["ok_attended"] is True
    assert output["max_abs_attended"] < 1e-5 < output["metrics"]["max_abs"]
    assert run.out.splitlines()[0] == "DIVERGED at node_scaled_dot_product_attention (MatMul), only at masked positions"
    assert "diverges only at masked positions" in run.out and "--strict-masked" in run.out
    md = run.md
    assert md.splitlines()[0].endswith("its Softmax computes something else only at masked positions"), md.splitlines()[0]
    assert "**Scope:** diverges only at masked positions" in md
    assert "max_abs where the mask keeps positions" in md
    # The mechanism the evidence shows: the finite fill feeding the Softmax.
    assert "mechanism: the lowering fills masked scores with -3.4028e+38" in md
    # Meanwhile: nothing for a user who reads kept positions only, the op's remedy otherwise.
    meanwhile = next(line for line in md.splitlines() if line.startswith("- **Meanwhile:**"))
    assert "nothing if what reads the outputs keeps to the positions the mask keeps" in meanwhile
    assert "custom_translation_table" in meanwhile


@pytest.mark.slow  # one more locate of the sample; the fast tier checks the default through the shared run
def test_strict_masked_exits_1(built_samples: Path, cli: Any) -> None:
    name = "SdpaFullyMaskedRow"
    code, out, err = cli("locate", built_samples / f"{name}.pt2", "--inputs", built_samples / f"{name}.inputs.pt", "--strict-masked", "-q")
    assert code == 1, out + err
    assert "only at masked positions" in out


def test_the_values_table_leaves_out_the_culprits_downstream_consequences(sample_runs: Any) -> None:
    run = sample_runs["SdpaFullyMaskedRow"]
    result, md = run.result, run.md
    table = md.split("### Where the values depart", 1)[1].split("\n### ", 1)[0]
    downstream = [n.onnx_node for n in result.nodes if n.status == "diverged" and n.onnx_node != result.first_divergent.onnx_node]
    assert downstream  # the out-projection and the output diverge too ...
    assert not any(f"`{n}`" in table for n in downstream), table  # ... but are consequences, not listed as departures
    assert re.search(r"\d+ more value\(s\) downstream of the first divergent one also diverge", table), table


def test_sweep_md_groups_masked_only_divergences_apart(tmp_path: Path) -> None:
    from nodebisect.sweep.summary import to_markdown

    def row(name: str, scope: str) -> dict[str, Any]:
        fd = {"onnx_node": "node_sdpa", "op_type": "MatMul", "stage": "conversion", "cause": "conversion", "metrics": {"max_abs": 0.3}}
        outputs = [{"name": "logits", "ok": False, "metrics": {"max_abs": 0.3}, "max_abs_attended": 1e-7, "ok_attended": scope == "masked_positions"}]
        return {"name": name, "status": "diverged", "first_divergent": {**fd, "scope": scope}, "outputs": outputs}

    md = to_markdown([row("llama", "masked_positions"), row("real-bug", "attended")], tmp_path)
    divergent, masked = md.split("## Divergent models", 1)[1].split("## Divergent only at masked positions", 1)
    masked = masked.split("\n\n## ", 1)[0].split("\n\nSlowest", 1)[0]
    assert "real-bug" in divergent and "llama" not in divergent
    assert "llama" in masked and "real-bug" not in masked and "1e-07" in masked


# -- a real left-padded LlamaForCausalLM, float32 and float16 --------------------------------

transformers_factories = '''import torch
import torch.nn.functional as F
import transformers


class Logits(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


def _llama(dtype):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                                      pad_token_id=0, attn_implementation="sdpa")
    model = transformers.LlamaForCausalLM(config).eval().to(dtype)
    ids = torch.randint(1, 100, (2, 8), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, :3] = 0  # left padding
    ids[1, :3] = 0
    return Logits(model), (ids, mask)


def llama_float32():
    return _llama(torch.float32)


def llama_float16():
    return _llama(torch.float16)


class Attention(torch.nn.Module):
    """One causal attention block over a left-padded batch, its mask given as additive -inf (or bool)."""

    def __init__(self, additive):
        super().__init__()
        torch.manual_seed(0)
        self.additive = additive
        self.qkv = torch.nn.Linear(8, 24)
        self.out = torch.nn.Linear(8, 8)

    def forward(self, x, attention_mask):
        b, t, _ = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q, k, v = (z.reshape(b, t, 2, 4).transpose(1, 2) for z in (q, k, v))
        keep = attention_mask[:, None, None, :].bool() & torch.ones(t, t, dtype=torch.bool).tril()
        mask = torch.zeros(keep.shape, dtype=x.dtype).masked_fill(~keep, float("-inf")) if self.additive else keep
        return self.out(F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(b, t, 8))


def _attention(additive):
    mask = torch.ones(2, 5, dtype=torch.long)
    mask[1, :2] = 0
    return Attention(additive).eval(), (torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(1)), mask)


def attention_additive():
    return _attention(True)


def llama_with_cache():
    """A *ForCausalLM as users run it: use_cache left on (its DynamicCache among the outputs)."""
    model, (ids, mask) = _llama(torch.float32)
    return model.model, {"input_ids": ids, "attention_mask": mask}
'''


class Located:
    """One model located once through the CLI with ``--json`` and ``--report``."""

    def __init__(self, code: int, out: str, err: str, folder: Path) -> None:
        self.code, self.out, self.err, self.folder = code, out, err, folder
        self.data = json.loads((folder / "r.json").read_text())
        self.title = (folder / "report" / "report.md").read_text().splitlines()[0]


@pytest.fixture(scope="module")
def located(tmp_path_factory: pytest.TempPathFactory, cli: Any) -> Any:
    pytest.importorskip("transformers")
    base = tmp_path_factory.mktemp("masked")
    (base / "masked_models.py").write_text(transformers_factories)
    runs: dict[str, Located] = {}

    def run(name: str) -> Located:
        if name not in runs:
            folder = base / name
            folder.mkdir()
            code, out, err = cli("locate", f"{base}/masked_models.py:{name}", "--json", str(folder / "r.json"), "--report", str(folder / "report"), "-q")
            runs[name] = Located(code, out, err, folder)
        return runs[name]

    return run


@pytest.mark.slow  # a transformers model, located in two dtypes
def test_a_left_padded_llama_diverges_only_at_padded_positions_with_one_culprit_in_both_dtypes(located: Any) -> None:
    runs = [located("llama_float32"), located("llama_float16")]
    for run in runs:
        assert run.code == 0, run.out + run.err
        fd = run.data["first_divergent"]
        assert fd["scope"] == "masked_positions", fd.get("scope")
        assert fd["framework"]["target"] == "aten.scaled_dot_product_attention.default"
        # One missing guard, one culprit: the Softmax in float32 and in float16 (was the mask-filling Where in float16).
        assert fd["segment_op_types"][0] == "Softmax", fd["segment_op_types"]
        logits = run.data["outputs"][0]
        assert logits["ok_attended"] is True and logits["max_abs_attended"] < 1e-3 < logits["metrics"]["max_abs"], logits
        assert "only at masked positions" in run.out.splitlines()[0]
    assert runs[0].title == runs[1].title, (runs[0].title, runs[1].title)


@pytest.mark.slow
def test_bool_and_additive_masks_name_the_same_culprit_and_title(located: Any, sample_runs: Any) -> None:
    """The bool mask is the bundled sample's (and the Llama's); the additive ``-inf`` mask an attention block's."""
    additive, bool_mask = located("attention_additive"), sample_runs["SdpaFullyMaskedRow"]
    # The additive -inf mask makes the Softmax NaN (PyTorch: 0); it used to name the final MatMul after it.
    fd = additive.data["first_divergent"]
    assert fd["segment_op_types"][0] == "Softmax" and fd["scope"] == "masked_positions", fd
    assert "nan" in additive.out and "mechanism: a row where every score is -inf" in additive.out
    # The bool mask's finite fill makes the same Softmax uniform: the same culprit op, the same title.
    assert bool_mask.result.first_divergent.segment_op_types[0] == "Softmax"
    title = bool_mask.md.splitlines()[0]
    assert additive.title == title == located("llama_float32").title, (additive.title, title)


@pytest.mark.slow
@pytest.mark.subprocess
def test_the_torch_repro_prints_pytorchs_and_onnxruntimes_answers_side_by_side(located: Any) -> None:
    run = located("llama_float32")
    script = run.folder / "report" / "repro" / "torch_repro.py"
    assert script.is_file() and (script.parent / "torch_args.npz").is_file()
    text = script.read_text()
    assert "torch.ops.aten.scaled_dot_product_attention.default(" in text and "Mechanism: the lowering fills masked scores" in text
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=script.parent.parent.parent)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split() == ["element", "PyTorch", "onnxruntime"])
    torch_answer, ort_answer = (float(v) for v in lines[header + 1].split()[-2:])
    assert torch_answer == 0.0 and abs(ort_answer) > 0.01, lines[header + 1]  # PyTorch's 0 for the padded row, onnxruntime's mean
    assert "python repro/torch_repro.py" in (run.folder / "report" / "report.md").read_text()


@pytest.mark.slow  # a transformers model with its cache on
def test_a_causal_lm_with_its_cache_on_diverges_only_at_masked_positions_in_every_output(located: Any) -> None:
    """The default setting exports (transformers' caches registered) and the cache's keys and values,
    laid out [B, H, S, D], are split by the mask like the logits: padding differs, real tokens agree."""
    run = located("llama_with_cache")
    assert run.code == 0, run.out + run.err
    assert run.data["first_divergent"]["scope"] == "masked_positions"
    outputs = run.data["outputs"]
    assert len(outputs) == 3, [o["name"] for o in outputs]  # logits, the layer's keys and values
    diverged = [o for o in outputs if not o["ok"]]
    assert diverged and all(o.get("ok_attended") is True for o in diverged), diverged
