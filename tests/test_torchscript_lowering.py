"""Inside one function's lowering on the TorchScript path: the node that departs is named (issue #22, point 4).

A function call between modules that the TorchScript exporter writes out as several
ONNX nodes has one reference value, on its last node. A node in the middle that
computes something else makes that value wrong, and the carrier used to be blamed
(``/Mul_5`` for a gelu whose Tanh became a Sigmoid). The reference now answers
about the traced call (``frontends.torchscript.calls``): its op, and PyTorch's own
decomposition of it run alone on the values it read, in float64; the diagnosis walks
the lowering back to the first node whose inputs match PyTorch's intermediates and
whose output matches none.

One real export (opset 16, where ``layer_norm`` is written out as nine nodes), one
node edited per case, the real onnxruntime.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import onnx
import pytest
from onnx import numpy_helper
import torch
from torch import nn
from torch.nn import functional as F

from nodebisect import locate
from nodebisect.frontends.torchscript.export import export_torchscript

OPSET = 16  # no LayerNormalization yet: layer_norm is ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div, Mul, Add


class Lowerings(nn.Module):
    """Two functions between Linear modules, each lowered to several nodes by the TorchScript exporter."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 8)
        self.fc2 = nn.Linear(8, 8)
        self.fc3 = nn.Linear(8, 4)
        self.weight = nn.Parameter(torch.rand(8) + 0.5)
        self.bias = nn.Parameter(torch.rand(8) - 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.fc1(x), approximate="tanh")
        h = F.layer_norm(self.fc2(h), (8,), self.weight, self.bias)
        return self.fc3(h)


@pytest.fixture(scope="module")
def clean() -> tuple[nn.Module, tuple[torch.Tensor, ...], onnx.ModelProto]:
    torch.manual_seed(0)
    model, args = Lowerings().eval(), (torch.randn(4, 8),)
    return model, args, export_torchscript(model, args, {}, OPSET)


def _edited(clean: tuple[Any, ...], tmp_path: Path, edit: Callable[[onnx.ModelProto], str]) -> tuple[Any, str]:
    """The clean export with one node edited (``edit`` returns its name), located against the model."""
    model, args, exported = clean
    faulted = copy.deepcopy(exported)
    name = edit(faulted)
    path = tmp_path / "edited.onnx"
    onnx.save(faulted, str(path))
    return locate(model, args, exporter="torchscript", onnx_path=str(path)), name


def _only(model: onnx.ModelProto, op_type: str, after: str = "") -> onnx.NodeProto:
    """The first node of ``op_type`` (after the node named ``after``, if given)."""
    nodes = list(model.graph.node)
    start = next(i for i, n in enumerate(nodes) if n.name == after) + 1 if after else 0
    return next(n for n in nodes[start:] if n.op_type == op_type)


def tanh_to_sigmoid(model: onnx.ModelProto) -> str:
    node = _only(model, "Tanh")
    node.op_type = "Sigmoid"
    return node.name


def centring_sub_to_add(model: onnx.ModelProto) -> str:
    """layer_norm's ``x - mean`` (the Sub right after the first ReduceMean) becomes ``x + mean``."""
    node = _only(model, "Sub", after=_only(model, "ReduceMean").name)
    node.op_type = "Add"
    return node.name


def normalising_div_to_mul(model: onnx.ModelProto) -> str:
    """layer_norm's ``(x - mean) / sqrt(var + eps)`` multiplies instead. Its Sqrt is right although PyTorch never
    holds ``sqrt(var + eps)`` (it takes rsqrt and multiplies): the Sqrt must not be blamed."""
    node = _only(model, "Div", after=_only(model, "Sqrt").name)
    node.op_type = "Mul"
    return node.name


def halving_constant_changed(model: onnx.ModelProto) -> str:
    """gelu's last node, ``0.5 * (x * (1 + tanh(...)))``, halves by 0.6 instead: the node before it holds twice
    the right result (PyTorch halves ``x`` first), a right value PyTorch never holds, which must not be blamed."""
    gemm = next(n for n in model.graph.node if n.name == "/fc2/Gemm")
    last = next(n for n in model.graph.node if gemm.input[0] in n.output)
    constant = next(n for n in model.graph.node if n.op_type == "Constant" and n.output[0] in last.input)
    attr = next(a for a in constant.attribute if a.name == "value")
    attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t) * 1.2))
    return last.name


@pytest.mark.parametrize(
    "edit, target, call, inside",
    [
        pytest.param(tanh_to_sigmoid, "aten.gelu", "gelu", True, id="gelu_tanh-tanh_to_sigmoid"),
        pytest.param(centring_sub_to_add, "aten.layer_norm", "layer_norm", True, id="layer_norm-centring_sub_to_add"),
        pytest.param(normalising_div_to_mul, "aten.layer_norm", "layer_norm", True, id="layer_norm-div_after_sqrt_to_mul"),
        pytest.param(halving_constant_changed, "aten.gelu", "gelu", False, id="gelu_tanh-last_constant"),
    ],
)
def test_the_edited_node_inside_a_lowering_is_named(
    clean: tuple[Any, ...], tmp_path: Path, edit: Any, target: str, call: str, inside: bool
) -> None:
    from nodebisect.report.filing import issue_title

    result, edited = _edited(clean, tmp_path, edit)
    assert result.verdict == "diverged" and result.exit_code == 1, result.notes
    fd = result.first_divergent
    assert (fd.framework.target, fd.framework.fx_node, fd.cause) == (target, call, "conversion")
    assert (fd.onnx_node != edited) == inside  # the carrier is the lowering's last node
    lead = fd.suspects[0]
    assert lead.onnx_node == edited and fd.segment[0] == edited, [(s.onnx_node, s.score, s.reason) for s in fd.suspects]
    assert lead.reason.startswith(f"first node to leave PyTorch's own decomposition of {target}")
    op_type = next(n.op_type for n in onnx.load(str(tmp_path / "edited.onnx")).graph.node if n.name == edited)
    assert f"its {op_type} computes something else" in issue_title(result) or not inside


def test_real_atan2_defect_is_named_where_the_dynamo_path_names_it() -> None:
    """A real TorchScript-exporter defect inside a lowering: one culprit per bug, whichever exporter.

    ``atan2`` is written out as Div/Atan/Greater/Add/Sub/Where/Less/Where; for y == +0 and
    x < 0 its Greater(y, 0) is False, so the first Where picks atan(y/x) - pi where PyTorch
    says +pi. The carrier is the last Where; the dynamo path names the first one
    (tests/test_repair_evidence.py), and so does this path now (it named the carrier).
    """
    result = locate(f"{Path(__file__).resolve().parents[1]}/samples/divergent.py:Atan2ZeroY", exporter="torchscript")
    assert result.verdict == "diverged", result.notes
    fd = result.first_divergent
    assert (fd.onnx_node, fd.framework.target, fd.cause) == ("/Where_1", "aten.atan2", "conversion")
    lead = fd.suspects[0]
    assert (lead.onnx_node, lead.op_type) == ("/Where", "Where"), [(s.onnx_node, s.score) for s in fd.suspects]
    assert "holds PyTorch's value" in lead.reason and "(/Greater, Greater) is wrong there" in lead.reason
