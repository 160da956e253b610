"""A non-default argument the exporter drops is named (issue #11, "say which attribute contradicts").

``F.cross_entropy(label_smoothing=0.1)`` exports to one SoftmaxCrossEntropyLoss, which
has no label smoothing: the node is found, and ``diagnose/suspects.py`` must also say
*why* (``label_smoothing=0.1`` appears nowhere in the lowering). The same rule must stay
quiet on correct lowerings that hold their arguments as attributes (LeakyRelu alpha,
Elu alpha, LayerNormalization epsilon) or constant inputs (Clip min/max, softplus's
beta and threshold), also when something else in or near them is broken.

Real dynamo exports and real onnxruntime; faults are one-node edits of the clean export.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faults
import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nodebisect import locate
from nodebisect.records import NAMED_SUSPECT_SCORE
from nodebisect.diagnose.suspects import rank_suspects
from nodebisect.frontends.dynamo import export_onnx
from nodebisect.frontends.loading.load import build_loaded_model
from nodebisect.records import LocateResult, Suspect
from nodebisect.report.filing import values_section
from nodebisect.report.summary import summary
from nodebisect.values.graphmap import build_graph_map

DROPPED = "appears nowhere in its lowering"


class CrossEntropy(nn.Module):
    """The reported case (benchmarks/bench_bugreports.py): a loss read by a later Linear."""

    def __init__(self, label_smoothing: float) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.label_smoothing = label_smoothing
        self.pre = nn.Linear(6, 5)
        self.post = nn.Linear(1, 3)

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(self.pre(x), target, label_smoothing=self.label_smoothing, reduction="none")
        return self.post(loss.unsqueeze(-1))


CE_ARGS = (torch.randn(4, 6, generator=torch.Generator().manual_seed(1)), torch.tensor([1, 0, 4, 2]))


class FoldedArguments(nn.Module):
    """Ops whose non-default arguments a correct lowering writes, each followed by a residual Add."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.norm = nn.LayerNorm(8, eps=1e-3)
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.leaky_relu(x, 0.2) + x
        b = F.hardtanh(a, -2.0, 2.0) + a
        c = torch.clamp(b, 0.5, 3.0) + b
        d = F.elu(c, alpha=0.7) + c
        e = self.norm(d) + d
        f = F.softplus(e, beta=2.0, threshold=10.0) + e
        return self.fc(f)


OPS_ARGS = (torch.randn(4, 8, generator=torch.Generator().manual_seed(2)),)
# FX node of each folded op -> the residual Add that reads it (its own one-node segment).
FOLDED = {"leaky_relu": "add", "hardtanh": "add_1", "clamp": "add_2", "elu": "add_3", "layer_norm": "add_4", "softplus": "add_5"}


def export(model: nn.Module, args: tuple[Any, ...]) -> tuple[onnx.ModelProto, Any]:
    exported = export_onnx(build_loaded_model(model.eval(), args))
    return exported.model, exported.program


def fx_args(program: Any) -> dict[str, Any]:
    """What explain.py hands rank_suspects: the reference's ops (FX node -> RefOp) for this program."""
    from nodebisect.frontends.pytorch_reference.program import all_ops

    return all_ops(program)


def named(suspects: list[Suspect]) -> list[tuple[str, float, str]]:
    return [(s.onnx_node, s.score, s.reason) for s in suspects]


@pytest.fixture(scope="module")
def smoothed() -> LocateResult:
    return locate(CrossEntropy(0.1), CE_ARGS)


@pytest.fixture(scope="module")
def folded() -> tuple[onnx.ModelProto, Any]:
    return export(FoldedArguments(), OPS_ARGS)


def test_dropped_label_smoothing_is_named(smoothed: LocateResult) -> None:
    fd = smoothed.first_divergent
    assert fd is not None and fd.onnx_node == "node_cross_entropy_loss" and fd.cause == "conversion"
    top = fd.suspects[0]
    assert top.onnx_node == "node_cross_entropy_loss" and top.op_type == "SoftmaxCrossEntropyLoss"
    assert top.score >= NAMED_SUSPECT_SCORE, named(fd.suspects)
    assert top.reason.split("; ")[0] == (
        "argument label_smoothing=0.1 of aten.cross_entropy_loss.default appears nowhere in its lowering "
        "(no attribute or constant input of SoftmaxCrossEntropyLoss holds it): the exporter dropped or changed it"
    )


def test_dropped_argument_is_printed_where_the_user_reads(smoothed: LocateResult) -> None:
    """The carrier's own evidence reaches the terminal and report.md, not only the JSON.

    The suspect is the carrier itself, so the "suspect:" line used to be left out as a
    repeat of the culprit line: the one sentence a bug report needs was never printed.
    """
    text = summary(smoothed)
    line = next((x for x in text.splitlines() if x.strip().startswith("suspect:")), "")
    assert "label_smoothing=0.1" in line and DROPPED in line, text
    assert "label_smoothing=0.1" in values_section(smoothed) and DROPPED in values_section(smoothed)


def test_default_label_smoothing_raises_nothing() -> None:
    """label_smoothing=0.0 is the schema default: SoftmaxCrossEntropyLoss is right, nothing to name."""
    model, program = export(CrossEntropy(0.0), CE_ARGS)
    gm = build_graph_map(model, {}, [])
    node = "node_cross_entropy_loss"
    assert gm.nodes[node].op_type == "SoftmaxCrossEntropyLoss"
    (top,) = rank_suspects(gm, model, [node], node, fx_args(program))
    assert top.score < NAMED_SUSPECT_SCORE and DROPPED not in top.reason, top.reason


@pytest.mark.parametrize("op", list(FOLDED))
def test_folded_arguments_are_found_beside_a_broken_add(folded: tuple[onnx.ModelProto, Any], op: str) -> None:
    """The op's segment ranked together with the Add after it, turned into Sub: the rule stays quiet.

    Each argument is held in its own way (LeakyRelu/Elu alpha and LayerNormalization
    epsilon attributes, Clip's min/max inputs, softplus's Mul/Div/Greater constants):
    a rule that missed any of them would name the clean op's node, ranked first.
    """
    clean, program = folded
    add = next(n.name for n in clean.graph.node if faults.fx_node_of(n) == FOLDED[op])
    model, edited = faults.swap_op(clean, add, "Sub")
    gm = build_graph_map(model, {}, [])
    segment = gm.segments[op]
    suspects = rank_suspects(gm, model, segment, segment[-1], fx_args(program), extra=[edited])
    assert all(DROPPED not in s.reason for s in suspects), named(suspects)
    assert suspects[0].onnx_node == edited, named(suspects)
    assert all(s.score < NAMED_SUSPECT_SCORE for s in suspects if s.onnx_node in segment), named(suspects)


def test_edited_leaky_relu_alpha_names_the_node(folded: tuple[onnx.ModelProto, Any], tmp_path: Path, quick_locate: Any) -> None:
    """Not only cross_entropy: a LeakyRelu whose alpha is no longer 0.2 is named by the same rule."""
    clean, _ = folded
    model, edited = faults.set_attribute(clean, "node_leaky_relu", "alpha", 0.3)
    path = tmp_path / "alpha.onnx"
    onnx.save(model, str(path))
    fd = quick_locate(FoldedArguments(), OPS_ARGS, onnx_path=str(path)).first_divergent
    assert fd is not None and fd.onnx_node == edited
    top = fd.suspects[0]
    assert top.onnx_node == edited and top.score >= NAMED_SUSPECT_SCORE, named(fd.suspects)
    assert top.reason.startswith("argument negative_slope=0.2 of aten.leaky_relu.default appears nowhere"), top.reason


def test_a_fault_inside_softplus_is_not_blamed_on_its_beta(folded: tuple[onnx.ModelProto, Any], tmp_path: Path, quick_locate: Any) -> None:
    """Softplus(beta=2) lowers to Mul, Softplus, Div, Greater, Where; its Div turned into Mul.

    beta (2.0) is still read by the Mul and threshold (10.0) by the Greater, so the
    segment's carrier (the Where) must not be named for a dropped argument.
    """
    clean, _ = folded
    div = next(n.name for n in clean.graph.node if faults.fx_node_of(n) == "softplus" and n.op_type == "Div")
    model, edited = faults.swap_op(clean, div, "Mul")
    path = tmp_path / "softplus.onnx"
    onnx.save(model, str(path))
    fd = quick_locate(FoldedArguments(), OPS_ARGS, onnx_path=str(path)).first_divergent
    assert fd is not None and fd.framework.fx_node == "softplus"
    assert edited in fd.segment and len(fd.segment) >= 4, fd.segment
    assert all(DROPPED not in s.reason for s in fd.suspects), named(fd.suspects)
