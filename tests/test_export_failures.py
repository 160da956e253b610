"""Export failures answered like a divergence (issue #13): stage, cause class, frames, remedy, repro.

Real exports of tiny models: ``transformers`` models from configs with random
weights, and small modules written to files, so the user's frame is a real file.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.slow  # GPT-2 and T5 exports; each dynamo failure searches for its smallest repro

from nodebisect.errors import BadInputError, ExportFailedError  # noqa: E402
from nodebisect.frontends.dynamo import export_onnx  # noqa: E402
from nodebisect.frontends.export_failure import classify_export_error, frame_kind  # noqa: E402
from nodebisect.frontends.loading.load import build_loaded_model  # noqa: E402
from nodebisect.frontends.loading.settings import apply_model_settings, parse_setting  # noqa: E402
from nodebisect.frontends.torchscript.export import export_torchscript  # noqa: E402
from nodebisect.records import EXPORT_FAILED, ExportFailure, LocateResult  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def gpt2() -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100, n_positions=32, bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(config).eval(), (torch.randint(0, 100, (1, 8)),)


def t5_encoder() -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    config = transformers.T5Config(num_layers=1, d_model=32, d_kv=8, num_heads=2, d_ff=64, vocab_size=100)
    return transformers.T5EncoderModel(config).eval(), (torch.randint(0, 100, (1, 8)),)


def failure(model: torch.nn.Module | str, args: tuple | None = None, settings: list[str] | None = None) -> ExportFailedError:
    loaded = build_loaded_model(model, args, model_settings=settings)
    with pytest.raises(ExportFailedError) as info:
        export_onnx(loaded)
    return info.value


USER_MODELS = '''import torch


class Branch(torch.nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x * 2
        return x - 1

    @staticmethod
    def example_inputs():
        return (torch.randn(4),)


class Eig(torch.nn.Module):
    def forward(self, x):
        return torch.linalg.eigvals(x @ x).real + 1

    @staticmethod
    def example_inputs():
        return (torch.randn(3, 3),)
'''


@pytest.fixture(scope="module")
def user_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("user") / "mymodels.py"
    path.write_text(USER_MODELS)
    return path


@pytest.fixture(scope="module")
def t5_failure() -> ExportFailedError:
    model, args = t5_encoder()
    return failure(model, args)


class ToyCache:
    """A key/value cache class of the model's own, no registered pytree node: what transformers'
    caches were before nodebisect registered them (``loading.settings.register_cache_outputs``)."""

    def __init__(self, keys: torch.Tensor) -> None:
        self.keys = keys


class ReturnsCache(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ToyCache]:
        h = self.proj(x)
        return h, ToyCache(h * 2)


def test_cache_in_the_outputs_is_an_unsupported_output_type_remedied_by_use_cache() -> None:
    err = failure(ReturnsCache().eval(), (torch.randn(2, 4),))
    d = err.details
    assert err.step == "torch.export (capture the graph)" and d["stage"] == "capture (torch.export)"
    assert d["cause"] == "unsupported output type" and "ToyCache" in err.message
    assert d["settings"] == ["use_cache=False"]
    assert "--model-setting use_cache=False" in err.tip and "no branching" not in err.tip


def test_the_setting_named_makes_the_same_model_export() -> None:
    model, args = gpt2()
    loaded = build_loaded_model(model, args, model_settings=["use_cache=False"])
    assert loaded.applied_settings == ["use_cache=False"] and model.config.use_cache is False
    exported = export_onnx(loaded)
    assert len(exported.model.graph.output) == 1  # logits only: no cache tensors


def test_data_dependent_branch_names_the_users_line(user_file: Path) -> None:
    err = failure(f"{user_file}:Branch")
    d = err.details
    assert d["cause"] == "data-dependent control flow"
    assert err.source == f"{user_file}:6" and d["code"] == "if x.sum() > 0:"
    assert d["library_source"] == "" and d["settings"] == []
    assert "torch.cond" in d["remedy"]


@pytest.mark.subprocess
def test_op_without_translation_is_unsupported_op_with_a_repro_that_fails_alone(user_file: Path, tmp_path: Path) -> None:
    err = failure(f"{user_file}:Eig")
    d = err.details
    assert d["stage"] == "translation to ONNX" and err.step == "translate to ONNX"
    assert d["cause"] == "unsupported op" and err.target == "aten.linalg_eig.default"
    # The failing node was made by decomposition; its stack trace still names the user's line.
    assert err.source == f"{user_file}:17" and "eigvals" in d["code"]
    script = d["repro_script"]
    assert "class Repro" in script and "torch.Size" not in script
    assert "linalg_eigvals" in script and "@" not in script.split("class Repro", 1)[1]  # one op, not the matmul before it
    path = tmp_path / "export_repro.py"
    path.write_text(script)
    run = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode != 0
    assert "No ONNX function found for <OpOverload(op='aten.linalg_eig'" in run.stderr


def test_t5_attention_view_is_a_decomposition_failure_remedied_by_eager_attention(t5_failure: ExportFailedError) -> None:
    d = t5_failure.details
    assert d["stage"] == "decomposition" and t5_failure.target == "aten.view.default"
    assert d["cause"] == "decomposition failure"
    assert d["settings"] == ["attn_implementation=eager"]
    # Frames inside transformers are named, not filtered away.
    file, line = d["library_source"].rsplit(":", 1)
    assert file.endswith("transformers/models/t5/modeling_t5.py") and int(line) > 0
    assert "reshape" in d["library_code"]
    assert t5_failure.source == d["library_source"]


@pytest.mark.subprocess
def test_t5_repro_script_fails_the_same_way_alone(t5_failure: ExportFailedError, tmp_path: Path) -> None:
    script = t5_failure.details["repro_script"]
    assert "scaled_dot_product_attention" in script and "transformers" not in script.split('"""', 2)[2]
    path = tmp_path / "export_repro.py"
    path.write_text(script)
    run = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode != 0
    assert "Cannot view a tensor with shape" in run.stderr


def test_eager_attention_makes_t5_export() -> None:
    model, args = t5_encoder()
    loaded = build_loaded_model(model, args, model_settings=["attn_implementation=eager"])
    assert loaded.applied_settings == ["attn_implementation=eager"]
    assert export_onnx(loaded).model.graph.node


def test_dynamic_shape_constraint_is_classified() -> None:
    class Fixed(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.reshape(2, 4)

    batch = torch.export.Dim("batch")
    with pytest.raises(Exception) as info:
        torch.export.export(Fixed(), (torch.randn(8),), dynamic_shapes=({0: batch},))
    err = classify_export_error(info.value)
    assert err.details["cause"] == "dynamic shape constraint", err.message
    assert "--dynamic" in err.details["remedy"]


def test_torchscript_exporter_failures_share_the_classifier() -> None:
    model, args = gpt2()
    with pytest.raises(ExportFailedError) as info:
        export_torchscript(model, args, {}, 17)
    d = info.value.details
    assert info.value.step == "torchscript export" and d["exporter"] == "torchscript"
    assert d["cause"] == "unsupported output type" and d["settings"] == ["use_cache=False"]
    assert d["library_source"].rsplit(":", 1)[0].endswith("modeling_gpt2.py")

    class NearestExact(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.interpolate(x, size=7, mode="nearest-exact")

    with pytest.raises(ExportFailedError) as info:
        export_torchscript(NearestExact(), (torch.randn(1, 1, 10),), {}, 17)
    assert info.value.details["cause"] == "unsupported op"
    assert info.value.target == "aten._upsample_nearest_exact1d"
    assert "no symbolic for aten._upsample_nearest_exact1d at any opset: use --exporter dynamo" in info.value.tip

    class Tril(torch.nn.Module):  # aten::tril converts from opset 14
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tril(x)

    with pytest.raises(ExportFailedError) as info:
        export_torchscript(Tril(), (torch.randn(3, 4),), {}, 9)
    assert info.value.details["cause"] == "unsupported op" and info.value.target == "aten.tril"
    assert "pass --opset 14" in info.value.tip


def test_classified_failure_survives_the_json_contract_and_the_reports(t5_failure: ExportFailedError, tmp_path: Path) -> None:
    from nodebisect.report.bundle import write_report
    from nodebisect.report.summary import summary

    record = ExportFailure.from_error(t5_failure)
    assert record.cause == "decomposition failure" and record.settings == ["attn_implementation=eager"]
    result = LocateResult(verdict=EXPORT_FAILED, export_failure=record)
    back = LocateResult.from_dict(result.to_dict())
    assert back.export_failure == record
    # An older report without the new fields still reads.
    old = {k: v for k, v in result.to_dict()["export_failure"].items() if k in ("step", "message", "target", "source", "tip")}
    assert LocateResult.from_dict({**result.to_dict(), "export_failure": old}).export_failure.cause == ""

    out = write_report(result, tmp_path / "rep")
    assert (out / "repro" / "export_repro.py").read_text() == record.repro_script
    md = (out / "report.md").read_text()
    assert "decomposition failure" in md and "--model-setting attn_implementation=eager" in md and "modeling_t5.py" in md
    text = summary(result, report_dir=str(out))
    assert "cause: decomposition failure" in text
    assert "--model-setting attn_implementation=eager" in text
    assert "repro/export_repro.py" in text


def test_model_setting_specs() -> None:
    assert parse_setting("use_cache=False") == ("use_cache", False)
    assert parse_setting("attn_implementation=eager") == ("attn_implementation", "eager")
    assert parse_setting("num_labels=3") == ("num_labels", 3)
    with pytest.raises(BadInputError, match="bad --model-setting"):
        parse_setting("use_cache")
    model, _args = gpt2()
    with pytest.raises(BadInputError, match="use_cach") as info:
        apply_model_settings(model, ["use_cach=False"])
    assert "use_cache" in info.value.tip  # did you mean
    with pytest.raises(BadInputError, match="needs the eager model"):
        apply_model_settings(None, ["use_cache=False"])


def test_frame_kinds() -> None:
    assert frame_kind("/x/site-packages/transformers/models/t5/modeling_t5.py") == "library"
    assert frame_kind("/x/site-packages/torch/export/_trace.py") == "internal"
    assert frame_kind("<string>") == "internal"
    assert frame_kind(str(ROOT / "mymodel.py")) == "user"


NEAREST_EXACT = '''import torch


class NearestExact(torch.nn.Module):
    def forward(self, x):
        return torch.nn.functional.interpolate(x, size=7, mode="nearest-exact")

    @staticmethod
    def example_inputs():
        return (torch.randn(1, 1, 10),)
'''


def test_torchscript_export_failure_records_the_exporter_it_ran(tmp_path: Path) -> None:
    """The result and report.md's reproduce command say --exporter torchscript (the failure was recorded as dynamo)."""
    import json

    from nodebisect.cli.main import main

    (tmp_path / "nearest.py").write_text(NEAREST_EXACT)
    spec = f"{tmp_path / 'nearest.py'}:NearestExact"
    out, report = tmp_path / "result.json", tmp_path / "report"
    assert main(["locate", spec, "--exporter", "torchscript", "--json", str(out), "--report", str(report)]) == 3
    saved = json.loads(out.read_text())
    assert saved["verdict"] == EXPORT_FAILED and saved["export_failure"]["exporter"] == "torchscript"
    assert saved["environment"]["exporter"] == "torchscript"
    reproduce = (report / "report.md").read_text().split("### How to reproduce", 1)[1]
    assert f"nodebisect locate {spec}" in reproduce and "--exporter torchscript" in reproduce
    md = (report / "report.md").read_text()
    # Ready to file (issue #22, point 8): the TorchScript exporter's repository, a title without the local path.
    assert md.startswith("## torch.onnx.export(dynamo=False) fails on aten._upsample_nearest_exact1d: unsupported op\n"), md[:200]
    assert "gh issue create --repo pytorch/pytorch --title 'torch.onnx.export(dynamo=False) fails on" in md
    assert "the TorchScript exporter" in md.split("### What to do", 1)[1].split("###", 1)[0]


@pytest.mark.subprocess
def test_export_failure_report_is_ready_to_file_and_its_repro_runs_from_anywhere(user_file: Path, tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue #22, point 8: file at, a gh command, a title without the user's path, a repro independent of the cwd."""
    monkeypatch.chdir(user_file.parent)  # a relative spec, as typed in the model's folder
    report = tmp_path / "report"
    code, out, _err = cli("locate", f"{user_file.name}:Branch", "--report", str(report), "-q")
    assert code == 3
    assert "file at: pytorch/pytorch: torch.export" in out
    md = (report / "report.md").read_text()
    title = md.splitlines()[0]
    assert title == "## torch.export fails in capture (torch.export): data-dependent control flow"
    assert user_file.name not in title and str(user_file.parent) not in title
    assert "- **File at:** [`pytorch/pytorch`](https://github.com/pytorch/pytorch/issues) — torch.export" in md
    assert "gh issue create --repo pytorch/pytorch --title 'torch.export fails in capture (torch.export): data-dependent control flow' --body-file report.md" in md
    # A capture failure has no smaller piece: the script rebuilds the model from its factory.
    script = (report / "repro" / "export_repro.py").read_text()
    assert "no smaller piece" in script and f"model_file = os.path.join(RAN_IN, '{user_file.name}')" in script
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = subprocess.run([sys.executable, str(report / "repro" / "export_repro.py")], capture_output=True, text=True, timeout=300, cwd=elsewhere)
    assert run.returncode != 0 and "data-dependent" in run.stderr, run.stderr[-2000:]
    assert "No such file" not in run.stderr


class NeedsAbsentPackage(torch.nn.Module):
    """A model whose code imports a package this machine lacks (as monai's SwinUNETR needs einops)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import nodebisect_test_absent_package  # noqa: F401

        return x + 1


def test_a_package_the_models_code_imports_is_bad_input_naming_it_not_an_export_failure() -> None:
    """Nothing an exporter could fix: exit 2 naming the package and the pip line, not "file at pytorch"."""
    loaded = build_loaded_model(NeedsAbsentPackage().eval(), (torch.randn(2),))
    with pytest.raises(BadInputError) as info:
        export_onnx(loaded)
    assert "'nodebisect_test_absent_package'" in info.value.message and "not installed" in info.value.message
    assert info.value.tip.startswith("pip install nodebisect_test_absent_package")
