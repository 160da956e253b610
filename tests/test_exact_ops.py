"""Exact ops held to exactness on a match (issue #11: the RMSNorm ``+eps -> -eps`` below float32 noise).

With variances near 16, ``variance - eps`` is one or two ulps from ``variance + eps``:
every value stays inside every tolerance and every noise estimate, so the verdict is
match, as for any locator that compares values. IEEE arithmetic makes float32 add,
sub and mul exact, so fed PyTorch's own inputs the edited node must reproduce
PyTorch's output bit for bit, and does not: ``diagnose/exact_ops.py`` names it in a
note and in ``stats["inexact_ops"]``. The clean export must stay silent, also where
the exporter folds a constant PyTorch computes (a rotary-style ``cos`` table).

Real dynamo export and real onnxruntime; the fault is a one-node edit of the clean export.
"""

from __future__ import annotations

from pathlib import Path

import faults
import onnx
import pytest
import torch
from torch import nn

import nodebisect
from nodebisect import locate
from nodebisect.diagnose.exact_ops import audit_exact_ops, exact_op_candidates
from nodebisect.runtime.runner import OrtRunner
from nodebisect.search.strategy import map_graph
from nodebisect.frontends.dynamo import export_onnx
from nodebisect.frontends.loading.load import build_loaded_model
from nodebisect.records import LocateResult
from nodebisect.report.summary import summary


class RMSNormBlock(nn.Module):
    """Llama's RMSNorm (``x * rsqrt(mean(x^2) + eps) * w``), a folded cos table, then a Linear."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.weight = nn.Parameter(torch.rand(32) + 0.5)
        self.fc = nn.Linear(32, 32)
        self.eps = 1e-6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.pow(2).mean(-1, keepdim=True)
        h = x * torch.rsqrt(variance + self.eps) * self.weight
        angles = torch.arange(32, dtype=torch.float32) * 0.37  # no input: the exporter folds cos into a constant
        return self.fc(h * torch.cos(angles))


X = (4.0 * torch.randn(2, 6, 32, generator=torch.Generator().manual_seed(1)),)  # variances near 16


@pytest.fixture(scope="module")
def clean() -> onnx.ModelProto:
    return export_onnx(build_loaded_model(RMSNormBlock().eval(), X)).model


def eps_add(model: onnx.ModelProto) -> str:
    """The ``variance + eps`` Add: the Add reading the ReduceMean."""
    producer = {o: n for n in model.graph.node for o in n.output}
    return next(
        n.name
        for n in model.graph.node
        if n.op_type == "Add" and any(i in producer and producer[i].op_type == "ReduceMean" for i in n.input)
    )


@pytest.fixture(scope="module")
def edited(clean: onnx.ModelProto, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, LocateResult]:
    faulted, name = faults.swap_op(clean, eps_add(clean), "Sub")
    path = Path(tmp_path_factory.mktemp("exact")) / "faulted.onnx"
    onnx.save(faulted, path)
    return name, locate(RMSNormBlock().eval(), X, onnx_path=str(path), check_capture=False)


def test_clean_export_has_no_inexact_op(clean: onnx.ModelProto, tmp_path: Path) -> None:
    path = tmp_path / "clean.onnx"
    onnx.save(clean, path)
    result = locate(RMSNormBlock().eval(), X, onnx_path=str(path), check_capture=False)
    assert result.verdict == "match", result.first_divergent
    assert "inexact_ops" not in result.stats, result.stats["inexact_ops"]
    assert not any("bit-exact" in n for n in result.notes), result.notes


def test_a_folded_constant_is_fed_pytorchs_value_and_checked() -> None:
    """The Mul by the cos table the exporter folded is audited, on PyTorch's cos, not the folding's."""
    prepared = nodebisect.prepare(RMSNormBlock().eval(), X, check_capture=False)
    prep = prepared.prep
    gm = map_graph(prep)
    names = exact_op_candidates(gm, prep)
    folded = [
        n for n in names if any(x not in gm.mapped and x in prep.acts.values and x not in prep.feeds for x in gm.nodes[n].input)
    ]
    assert folded, [(n, list(gm.nodes[n].input)) for n in names]
    assert audit_exact_ops(gm, prep, lambda model, feeds, values: OrtRunner(model, feeds).run(values)) == []


def test_eps_sign_below_every_tolerance_is_named_on_the_match(edited: tuple[str, LocateResult]) -> None:
    name, result = edited
    assert result.verdict == "match", result.first_divergent  # below every tolerance: no locator sees it in the values
    found = result.stats.get("inexact_ops") or []
    assert [f["node"] for f in found] == [name], found
    f = found[0]
    assert f["op_type"] == "Sub" and f["target"] == "aten.add.Tensor" and f["differing"] > 0, f
    text = summary(result)
    assert name in text and "not bit-exact on PyTorch's own inputs" in text, text


def test_report_md_of_the_match_says_so(edited: tuple[str, LocateResult], tmp_path: Path) -> None:
    """The note reaches report.md too: the summary paragraph and the Notes section name the node."""
    from nodebisect.report.markdown import render_markdown

    name, result = edited
    md = render_markdown(result)
    summary_line = next(line for line in md.splitlines() if line.startswith("**Summary.**"))
    assert "Verdict **match**" in summary_line and f"`{name}`" in summary_line and "not bit-exact" in summary_line, summary_line
    assert "### Notes" in md and "not bit-exact on PyTorch's own inputs" in md.split("### Notes", 1)[1]


def test_the_tui_banner_of_the_match_says_so(edited: tuple[str, LocateResult]) -> None:
    from tui.view import verdict_line

    _, result = edited
    assert verdict_line(result).startswith("MATCH within tolerance, but 1 exact op(s) are not bit-exact"), verdict_line(result)
