"""The ``--zoo`` families: a registry, listings that build nothing, and one or two real models of each through a sweep."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from nodebisect.errors import BadInputError
from nodebisect.sweep import zoos
from nodebisect.sweep.cli import configure
from nodebisect.sweep.results import load_rows

ROOT = Path(__file__).resolve().parents[1]
VERDICTS = ("match", "diverged", "export_failed", "runtime_failed")


def _sweep(*argv: object) -> int:
    parser = argparse.ArgumentParser()
    configure(parser)
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


@pytest.mark.subprocess
def test_zoos_list_their_models_without_importing_their_libraries() -> None:
    """``--list`` names every model of diffusers, monai and keras without importing torch, the libraries or TensorFlow."""
    code = (
        "import sys\n"
        "from nodebisect.sweep.cli import main\n"
        "rc = main(['--zoo', 'diffusers', '--zoo', 'monai,keras', '--list'])\n"
        "heavy = [m for m in ('torch', 'diffusers', 'monai', 'tensorflow', 'keras') if m in sys.modules]\n"
        "print('HEAVY', heavy, rc, file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "HEAVY [] 0" in proc.stderr, proc.stderr[-2000:]
    names = [line.split("\t")[0] for line in proc.stdout.splitlines()]
    specs = [line.split("\t")[1] for line in proc.stdout.splitlines()]
    by_family = {f: sum(f"/zoo/{f}/" in s for s in specs) for f in ("diffusers", "monai", "keras")}
    assert by_family["diffusers"] >= 15 and by_family["monai"] >= 30 and by_family["keras"] >= 20, by_family
    # Popular ones first, 3D and 2D MONAI as users run them.
    assert names[:2] == ["UNet2DConditionModel.default", "AutoencoderKL.default"]
    assert {"UNet.3d", "UNet.2d", "SwinUNETR.3d", "UNETR.3d", "DenseNet121.2d", "MobileNetV2.default"} <= set(names)
    assert len(set(names)) == len(names)


def test_the_zoo_choice_is_a_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A family registered at run time is a --zoo choice; unknown families and variants are exit-2 errors naming the choices."""
    package = tmp_path / "extra_zoo_pkg"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from nodebisect.sweep.zoos import factory_task, generated_factory\n"
        "VARIANTS = DEFAULT_VARIANTS = ('tiny',)\n"
        "REQUIRES = ('json', 'none')\n"
        "def zoo_entries():\n    return ['Toy.tiny']\n"
        "def zoo_tasks(directory, variants=None, write=True):\n"
        "    return [factory_task(directory, 'toys', 'Toy', 'tiny', generated_factory('toys', __name__, 'Toy', 'tiny'), write)]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(zoos.ZOOS, "toys", "extra_zoo_pkg")
    tasks = zoos.tasks_for(zoos.parse_families(["toys,monai"]), tmp_path / "zoo", ["2d"], write=True)
    assert [t.name for t in tasks][:1] == ["Toy.tiny"] and {t.meta["variant"] for t in tasks[1:]} == {"2d"}
    assert (tmp_path / "zoo" / "toys" / "Toy.tiny.py").is_file() and tasks[1].meta["family"] == "monai"
    assert zoos.parse_families(["all"])[:4] == ["transformers", "diffusers", "monai", "keras"]
    with pytest.raises(BadInputError, match="unknown zoo 'nope'"):
        zoos.parse_families(["nope"])
    with pytest.raises(BadInputError, match="unknown zoo variant '4d'"):
        zoos.tasks_for(["monai"], tmp_path, ["4d"], write=False)


@pytest.mark.slow
def test_curated_builders_feed_what_users_feed(tmp_path: Path) -> None:
    pytest.importorskip("diffusers")
    pytest.importorskip("monai")
    import torch

    from nodebisect.sweep import zoo_diffusers, zoo_monai

    record = tmp_path / "sd3.json"
    module, inputs = zoo_diffusers.build_model("SD3Transformer2DModel", record=str(record))
    info = json.loads(record.read_text())
    assert info["inputs"] == {"hidden_states": [2, 4, 16, 16], "encoder_hidden_states": [2, 8, 32],
                              "pooled_projections": [2, 64], "timestep": [2]}
    assert inputs[3].dtype == torch.int64 and info["params"] < 200_000
    (out,) = module(*inputs)
    assert out.shape == inputs[0].shape
    module, inputs = zoo_diffusers.build_model("Transformer2DModel", "masked")
    assert inputs[-1].tolist() == [[1] * 8, [1] * 5 + [0] * 3]  # the second prompt's last tokens are padding
    module, inputs = zoo_monai.build_model("UNet", "2d")
    assert module(*inputs)[0].shape == (2, 2, 64, 64)


@pytest.mark.slow
def test_one_or_two_models_of_each_family_get_a_verdict(tmp_path: Path) -> None:
    """A real sweep over a model of diffusers, monai and keras each: every row is a locate verdict, not an error."""
    pytest.importorskip("diffusers")
    pytest.importorskip("monai")
    families = "diffusers,monai" + (",keras" if _has("tf2onnx") and _has("keras") else "")
    out = tmp_path / "out"
    _sweep("--zoo", families, "--filter", r"^(AutoencoderKL\.decode\.default|UNet\.2d|MobileNetV3Small\.default)$",
           "--out", out, "--jobs", "2", "--timeout", "300", "--memory-mib", "6000", "-q")
    rows = {r["name"]: r for r in load_rows(out)}
    expected = {"AutoencoderKL.decode.default", "UNet.2d"} | ({"MobileNetV3Small.default"} if "keras" in families else set())
    assert set(rows) == expected
    assert {n: r["status"] for n, r in rows.items() if r["status"] not in VERDICTS} == {}
    assert {r["meta"]["family"] for r in rows.values()} == set(families.split(","))
    assert all(r["build"].get("params", 0) > 0 for r in rows.values())


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def test_fleet_table_reads_the_culprit_and_masked_scope() -> None:
    """benchmarks/fleet.py's row: family from the zoo's meta, masked-only from first_divergent.scope when present."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("fleet_bench", ROOT / "benchmarks" / "fleet.py")
    fleet = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fleet)
    row = {"name": "GPT2LMHeadModel.export-friendly", "status": "diverged", "wall_s": 6.24, "reason": "r",
           "meta": {"family": "transformers", "class": "GPT2LMHeadModel", "variant": "export-friendly"},
           "first_divergent": {"onnx_node": "node_sdpa", "op_type": "MatMul", "stage": "conversion", "cause": "conversion",
                               "scope": "masked_positions", "framework": {"target": "aten.scaled_dot_product_attention.default"}}}
    line = fleet.table_row(row)
    assert (line["family"], line["architecture"], line["variant"], line["culprit_op"], line["aten_op"], line["masked_only"],
            line["seconds"]) == ("transformers", "GPT2LMHeadModel", "export-friendly", "MatMul",
                                 "aten.scaled_dot_product_attention.default", "yes", "6.2")
    row["first_divergent"]["scope"] = "all_positions"
    assert fleet.table_row(row)["masked_only"] == "no"
    del row["first_divergent"]["scope"]
    assert fleet.table_row(row)["masked_only"] == ""
    assert list(fleet.table_row(row)) == list(fleet.COLUMNS)


def test_a_zoo_whose_library_is_missing_is_exit_2_naming_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from nodebisect.sweep import zoo_keras
    from nodebisect.sweep.cli import main

    monkeypatch.setattr(zoo_keras, "REQUIRES", ("keras,no_such_package_xyz", "keras"))
    assert main(["--zoo", "keras", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["nodebisect sweep: error: --zoo keras needs no_such_package_xyz", "tip: pip install 'nodebisect[keras]'"]


def test_zoo_wrappers_export_their_inputs_under_the_models_own_names() -> None:
    """A zoo model's graph inputs are named as the model names them (``attention_mask``), not ``args_0``:
    the masked-positions verdict finds the mask by that name (issue #22)."""
    import torch

    from nodebisect.sweep.zoo import wrap

    class TwoInputs(torch.nn.Module):
        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return input_ids.float() * attention_mask

    model = wrap(TwoInputs(), ["input_ids", "attention_mask"], True)
    program = torch.export.export(model, (torch.ones(2, 3), torch.zeros(2, 3)))
    assert [spec.arg.name for spec in program.graph_signature.input_specs] == ["input_ids", "attention_mask"]
    assert model(torch.ones(2, 3), torch.ones(2, 3))[0].sum().item() == 6.0  # still positional, still the model
