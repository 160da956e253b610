"""The repro reproduces (issue #12 item 1): widen the window until the mismatch shows; never write one that passes.

Fp16RoundingElided is the case: its culprit ``sub`` alone, fed with PyTorch's
``add``, is right; onnxruntime's fusion across Add/Cast/Sub shows only with
the ``add`` node in the subgraph.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nodebisect.prepared import ReproData
from nodebisect.records import LocateResult
from nodebisect.runtime.handle import Ort

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "samples" / "build"


@pytest.fixture(scope="module")
def fp16(built_samples: Path) -> tuple:
    import nodebisect
    from nodebisect.run import make_options
    from nodebisect.search.strategy import map_graph

    prepared = nodebisect.prepare(str(BUILD / "Fp16RoundingElided.pt2"), inputs_file=str(BUILD / "Fp16RoundingElided.inputs.pt"))
    prep = prepared.prep
    return prep, map_graph(prep), make_options({})


def _write_and_run(data: ReproData, folder: Path) -> subprocess.CompletedProcess[str]:
    from nodebisect.report.repro import build_repro

    for rel, blob in build_repro(data, {}).items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)
    return subprocess.run([sys.executable, str(folder / "repro.py")], capture_output=True, text=True, timeout=120)


@pytest.mark.subprocess
def test_the_culprit_alone_passes_so_the_window_widens_to_its_producers(fp16: tuple, tmp_path: Path) -> None:
    from nodebisect.diagnose.isolate import local_graph
    from nodebisect.diagnose.repro_check import reproducing_window

    prep, gm, opts = fp16
    alone = local_graph(prep.onnx_model, gm, "sub")
    assert alone.nodes == ["node_sub"]
    naive = ReproData(alone.model.SerializeToString(), {n: prep.acts.values[gm.mapped[n]] for n in alone.inputs}, {"sub": prep.acts.values[gm.mapped["sub"]]})
    assert _write_and_run(naive, tmp_path / "naive").returncode == 0  # the repro issue #12 saw: it passes

    check = reproducing_window(prep.onnx_model, gm, "sub", prep, opts, Ort(opts.ep, opts.opt_level))
    assert check.repro.reproduces and check.depth == 1
    assert check.repro.nodes == ["node_add", "node_sub"]
    assert "node_sub alone is right" in check.repro.note and "node_add (Add)" in check.repro.note
    done = _write_and_run(check.repro, tmp_path / "widened")
    assert done.returncode == 1, done.stdout
    assert "MISMATCH REPRODUCED" in done.stdout
    assert "node_sub alone is right" in (tmp_path / "widened" / "repro.py").read_text()
    # The values behind it, from the arrays of the window that reproduces (FirstDivergent.worst).
    worst = check.worst
    assert worst["index"] and worst["expected"] != worst["actual"]
    assert set(worst["inputs"]) <= set(check.repro.inputs) and worst["inputs"]
    assert 1024.0 in [abs(v) for v in worst["constants"].values() if isinstance(v, float)], worst["constants"]
    assert any(k.endswith("(into Add)") or k.endswith("(into Sub)") for k in worst["constants"])


def test_no_window_reproduces_means_no_repro_bundle(fp16: tuple, tmp_path: Path) -> None:
    from nodebisect.diagnose.repro_check import reproducing_window
    from nodebisect.report.bundle import write_report
    from nodebisect.report.summary import summary

    prep, gm, opts = fp16
    check = reproducing_window(prep.onnx_model, gm, "add", prep, opts, Ort(opts.ep, opts.opt_level))  # `add` matches PyTorch everywhere
    assert not check.repro.reproduces and check.depth == -1
    assert "no subgraph ending at add reproduces" in check.repro.note
    result = LocateResult.from_dict(
        {
            "schema": "nodebisect.report/1",
            "verdict": "diverged",
            "model": "samples/build/Fp16RoundingElided.pt2",
            "first_divergent": {"onnx_node": "node_add", "op_type": "Add", "onnx_value": "add", "stage": "runtime", "cause": "runtime",
                                "segment": ["node_add"], "segment_op_types": ["Add"]},
        }
    )
    result.repro = check.repro
    (tmp_path / "repro").mkdir()
    (tmp_path / "repro" / "repro.py").write_text("print('a stale repro of another run')\n")
    out = write_report(result, tmp_path)
    assert not (out / "repro").exists()
    md = (out / "report.md").read_text()
    assert "No repro bundle: no subgraph ending at add reproduces" in md and "nodebisect locate samples/build/Fp16RoundingElided.pt2" in md
    assert "repro:     none: no subgraph ending at add" in summary(result)


def test_sdpa_worst_keeps_the_mask_fill_and_no_per_element_inputs_through_matmul(built_samples: Path) -> None:
    import nodebisect
    from nodebisect.diagnose.repro_check import reproducing_window
    from nodebisect.run import make_options
    from nodebisect.search.strategy import map_graph

    prep = nodebisect.prepare(str(BUILD / "SdpaFullyMaskedRow.pt2"), inputs_file=str(BUILD / "SdpaFullyMaskedRow.inputs.pt")).prep
    check = reproducing_window(prep.onnx_model, map_graph(prep), "scaled_dot_product_attention", prep, make_options({}), Ort())
    assert check.repro.reproduces and check.depth == 0
    worst = check.worst
    assert worst["expected"] == 0.0 and worst["actual"] != 0.0  # torch: zeros for a fully masked row
    assert worst["inputs"] == {}  # q/k/v elements at the output's index do not make that output (MatMul)
    fills = [k for k, v in worst["constants"].items() if isinstance(v, float) and v == pytest.approx(-3.4028234663852886e38)]
    assert fills and fills[0].endswith("(into Where)"), worst["constants"]
    assert not any(k.endswith("(into Reshape)") for k in worst["constants"])  # shapes are plumbing
