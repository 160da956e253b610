"""Real ``transformers`` models as users pass them (issue #13): default settings, remedies, .pt2 archives.

Tiny configs with random weights (one layer, width 32, vocabulary 100), built
offline; the CLI runs in-process as a user would call it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.slow  # transformers models, two of them in a fresh process

ROOT = Path(__file__).resolve().parent.parent
# --model-setting reaches the model once the pipeline hands Options.model_settings to
# build_loaded_model and ExportFailure.from_error keeps the classified fields.

FACTORIES = '''import torch
import transformers


def gpt2():
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100, n_positions=32, bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(config), (torch.randint(0, 100, (1, 8)),)


class Wrapped(torch.nn.Module):
    """A user's own module around a transformers model, the HF model's outputs returned as they are."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids):
        return self.inner(input_ids=input_ids)


def wrapped_gpt2():
    model, args = gpt2()
    return Wrapped(model), args
'''


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hf")
    (folder / "hf_models.py").write_text(FACTORIES)
    return folder


def test_gpt2_with_its_cache_on_exports_and_compares_the_cache(work: Path, cli: Any) -> None:
    """A *LMHeadModel in its default setting (use_cache=True) returns a DynamicCache: nodebisect
    registers transformers' caches for torch.export, so the model exports as users run it
    (it was an export failure naming use_cache=False) and each cache tensor is an output compared."""
    out_json = work / "gpt2.json"
    code, out, err = cli("locate", f"{work}/hf_models.py:gpt2", "--json", str(out_json), "-q")
    assert code == 0, out + err
    data = json.loads(out_json.read_text())
    assert data["verdict"] == "match" and "applied_settings" not in data["environment"]
    assert len(data["outputs"]) == 3, [o["name"] for o in data["outputs"]]  # logits, the layer's keys and values
    # Each output carries the user's path to it, read from the program's output structure.
    labels = [o.get("label") for o in data["outputs"]]
    assert labels[0] == "logits" and labels[1].endswith("layers[0].keys") and labels[2].endswith("layers[0].values"), labels
    report_md = work / "gpt2-report"
    code, out, err = cli("locate", f"{work}/hf_models.py:gpt2", "--report", str(report_md), "-q")
    assert code == 0 and "output `logits`" in (report_md / "report.md").read_text(), out + err


def test_a_transformers_model_inside_a_users_wrapper_exports_with_its_cache_on(work: Path, cli: Any) -> None:
    """The cache registration looks inside wrappers (the sweep's zoo wrapper, a user's own module):
    it looked at the outermost module only, so every wrapped ``*ForCausalLM`` in its default setting
    was an export failure ("unsupported output type") in the zoo sweep."""
    import importlib.util

    from nodebisect.frontends.loading.settings import register_cache_outputs

    spec = importlib.util.spec_from_file_location("hf_models_wrapped", work / "hf_models.py")
    factories = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(factories)
    assert register_cache_outputs(factories.wrapped_gpt2()[0]) is True
    assert register_cache_outputs(torch.nn.Linear(2, 2)) is False
    out_json = work / "wrapped.json"
    code, out, err = cli("locate", f"{work}/hf_models.py:wrapped_gpt2", "--json", str(out_json), "-q")
    assert code == 0, out + err
    assert len(json.loads(out_json.read_text())["outputs"]) == 3


def test_gpt2_with_the_setting_applied_reaches_a_numeric_verdict(work: Path, cli: Any) -> None:
    out_json = work / "gpt2_nocache.json"
    argv = ["locate", f"{work}/hf_models.py:gpt2", "--model-setting", "use_cache=False", "--json", str(out_json), "-q"]
    code, out, err = cli(*argv)
    assert code == 0, out + err
    data = json.loads(out_json.read_text())
    assert data["verdict"] == "match"
    assert any("use_cache=False" in n for n in data["notes"]), data["notes"]
    assert data["environment"]["applied_settings"] == ["use_cache=False"]


def test_unknown_model_setting_is_bad_input(work: Path, cli: Any) -> None:
    code, _out, err = cli("locate", f"{work}/hf_models.py:gpt2", "--model-setting", "use_cach=False", "-q")
    assert code == 2
    assert "use_cach" in err and "did you mean use_cache" in err and "Traceback" not in err


@pytest.mark.subprocess
def test_bert_pt2_with_a_model_output_loads_and_matches(work: Path) -> None:
    torch.manual_seed(0)
    config = transformers.BertConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=2, intermediate_size=64, vocab_size=100)
    model = transformers.BertForSequenceClassification(config).eval()
    ids = torch.randint(0, 100, (1, 8))
    program = torch.export.export(model, (ids,))
    assert "SequenceClassifierOutput" in str(program.call_spec.out_spec)
    torch.export.save(program, str(work / "bert.pt2"))
    torch.save((ids,), str(work / "bert_inputs.pt"))
    # A fresh process: nothing has imported transformers.modeling_outputs there.
    run = subprocess.run(
        [sys.executable, "-m", "nodebisect", "locate", str(work / "bert.pt2"), "--inputs", str(work / "bert_inputs.pt"), "-q"],
        capture_output=True, text=True, timeout=600, cwd=work,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith("MATCH"), run.stdout


OUTPUT_LIB = '''import dataclasses
import torch
import torch.utils._pytree as pytree


@dataclasses.dataclass
class Out:
    logits: torch.Tensor
    hidden: torch.Tensor


pytree.register_dataclass(Out, serialized_type_name="privatelib.Out")


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        h = torch.relu(self.fc(x))
        return Out(logits=h * 2, hidden=h)
'''


@pytest.mark.subprocess
def test_pt2_with_an_output_type_not_importable_loads_as_a_generic_container(work: Path) -> None:
    lib = work / "privatelib_src"
    lib.mkdir()
    (lib / "privatelib.py").write_text(OUTPUT_LIB)
    save = (
        "import torch, privatelib\n"
        "torch.manual_seed(0)\n"
        "x = torch.randn(2, 4)\n"
        f"torch.export.save(torch.export.export(privatelib.Net().eval(), (x,)), {str(work / 'private.pt2')!r})\n"
        f"torch.save((x,), {str(work / 'private_in.pt')!r})\n"
    )
    subprocess.run([sys.executable, "-c", save], check=True, cwd=lib, timeout=300)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # Without nodebisect's registration, torch refuses it; privatelib is not importable from here.
    probe = subprocess.run([sys.executable, "-c", f"import torch; torch.export.load({str(work / 'private.pt2')!r})"],
                           capture_output=True, text=True, cwd=work, env=env, timeout=300)
    assert probe.returncode != 0 and "privatelib.Out" in probe.stderr
    out_json = work / "private.json"
    run = subprocess.run(
        [sys.executable, "-m", "nodebisect", "locate", str(work / "private.pt2"), "--inputs", str(work / "private_in.pt"),
         "--json", str(out_json), "-q"],
        capture_output=True, text=True, timeout=600, cwd=work, env={**env, "PYTHONPATH": str(ROOT)},
    )
    assert run.returncode == 0, run.stdout + run.stderr
    data = json.loads(out_json.read_text())
    assert data["verdict"] == "match" and len(data["outputs"]) == 2
