"""The verdict must not contradict itself (issue #11 follow-up).

Two contradictions the held-out bug reports showed:

* a -0.0 that onnxruntime's ``Where`` turns into +0.0 was found by the search and
  "still wrong" in isolation (both compare sign-sensitive values with signed zeros),
  and then "repro: none: no subgraph ... reproduces" because the repro check compared
  without the sign;
* a carrier node the exporter's optimizer made (a Cast with no ``pkg.torch.onnx``
  metadata) printed "framework: ? (FX node div)" although the exported program names
  the op, its module and its source line.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nodebisect.records import LocateResult
from nodebisect.report.summary import summary


class NegZeroFill(nn.Module):
    """masked_fill(h < 0, -0.0), then 1 / g: PyTorch's -inf becomes onnxruntime's +inf."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.pre = nn.Linear(4, 4)
        self.post = nn.Linear(4, 2)
        with torch.no_grad():  # h == x: the inputs place the negatives exactly
            self.pre.weight.copy_(torch.eye(4))
            self.pre.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pre(x)
        g = h.masked_fill(h < 0, -0.0)
        return self.post(torch.atan(1.0 / g))


class TruncDiv(nn.Module):
    """torch.div(t, 1000, rounding_mode="trunc") on int64 near 1.7e12: the lowering goes through float32."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.post = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        q = torch.div(t, 1000, rounding_mode="trunc")
        return self.post(x) + torch.remainder(q, 60).to(torch.float32).unsqueeze(-1)


@pytest.fixture(scope="module")
def neg_zero() -> LocateResult:
    import nodebisect

    x = torch.tensor([[0.3, -0.5, 1.2, -1.0], [-1.5, 0.2, -0.4, 1.1]])
    return nodebisect.locate(NegZeroFill().eval(), (x,))


@pytest.fixture(scope="module")
def trunc_div() -> LocateResult:
    import nodebisect

    base = 1_700_000_000_000
    t = torch.tensor([base + 123, base + 98_765, base + 5_000_321], dtype=torch.int64)
    return nodebisect.locate(TruncDiv().eval(), (torch.ones(3, 2), t))


def test_a_lost_negative_zero_is_reproduced_by_the_where_alone(neg_zero: LocateResult) -> None:
    fd = neg_zero.first_divergent
    assert neg_zero.verdict == "diverged" and fd is not None
    assert (fd.onnx_node, fd.op_type) == ("node_masked_fill", "Where")
    assert "where PyTorch has -0.0" in fd.metrics.reason
    repro = neg_zero.repro
    assert repro is not None and repro.reproduces, repro.note if repro else None
    assert repro.nodes == ["node_masked_fill"]  # the node alone, as isolation found it
    text = summary(neg_zero)
    assert "no subgraph ending at" not in text and "none:" not in text, text


def test_the_worst_element_is_a_flipped_zero(neg_zero: LocateResult) -> None:
    """Every difference is 0 there: by magnitude alone element [0, 0] (0.3 vs 0.3) would be 'worst'."""
    worst = neg_zero.first_divergent.worst
    assert worst["index"] == [0, 1]  # x[0, 1] = -0.5: the first filled position
    assert worst["expected"] == 0.0 and np.signbit(worst["expected"])
    assert worst["actual"] == 0.0 and not np.signbit(worst["actual"])
    assert "PyTorch -0.0, onnxruntime +0.0" in summary(neg_zero)


@pytest.mark.subprocess
def test_the_written_repro_fails_on_the_sign(neg_zero: LocateResult, tmp_path: Path) -> None:
    from nodebisect.report.repro import build_repro

    for rel, blob in build_repro(neg_zero.repro, neg_zero.tolerance).items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)
    done = subprocess.run([sys.executable, str(tmp_path / "repro.py")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout


def test_a_carrier_without_metadata_is_named_from_the_exported_program(trunc_div: LocateResult) -> None:
    fd = trunc_div.first_divergent
    assert trunc_div.verdict == "diverged" and fd is not None
    assert fd.op_type == "Cast" and fd.onnx_node.startswith("node_Cast_")
    ref = fd.framework
    assert (ref.fx_node, ref.target) == ("div", "aten.div.Tensor_mode")
    assert ref.source.endswith(f"{Path(__file__).name}:{TruncDiv.forward.__code__.co_firstlineno + 1}")
    assert ref.code == 'q = torch.div(t, 1000, rounding_mode="trunc")'
    assert (ref.module, ref.module_type) == ("", f"{__name__}.TruncDiv")
    text = summary(trunc_div)
    assert "framework: ?" not in text and "aten.div.Tensor_mode (FX node div)" in text, text


def test_a_signed_zero_verdict_writes_its_report(neg_zero: LocateResult, tmp_path: Path) -> None:
    """The graph picture shades nodes by log10(max_abs / worst): max_abs 0 against an inf worst underflowed."""
    from nodebisect.report.bundle import write_report

    folder = write_report(neg_zero, tmp_path / "report")
    md = (folder / "report.md").read_text()
    assert "node_masked_fill" in md and "python repro/repro.py" in md
