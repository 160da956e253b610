"""The faulty node inside a lowering no intermediate of PyTorch's decomposition anchors (issue #11.3).

``silu`` lowers to Sigmoid + Mul. With the Sigmoid edited into a Tanh, no internal
value matches PyTorch's decomposition (sigmoid, mul), so the departure rule has
nothing to go on and the carrier Mul was ranked first (the accuracy benchmark's
miss on Llama). Feeding the Mul PyTorch's own sigmoid in place of the Tanh's
output makes it right: the Tanh/Sigmoid node is the one to name.
"""

from __future__ import annotations

import sys
from pathlib import Path

import onnx
import pytest
import torch

import nodebisect

sys.path.insert(0, str(Path(__file__).resolve().parent))
import faults  # noqa: E402


class SiluMlp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.up = torch.nn.Linear(16, 32)
        self.down = torch.nn.Linear(32, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.nn.functional.silu(self.up(x)))


@pytest.fixture(scope="module")
def silu_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, tuple[torch.Tensor], onnx.ModelProto, Path]:
    from nodebisect.frontends.dynamo import export_onnx
    from nodebisect.frontends.loading.load import build_loaded_model

    model = SiluMlp().eval()
    x = torch.randn(4, 16, generator=torch.Generator().manual_seed(0))
    return model, (x,), export_onnx(build_loaded_model(model, (x,))).model, tmp_path_factory.mktemp("silu")


def test_the_edited_node_inside_silu_leads_the_segment(silu_model, quick_locate) -> None:  # type: ignore[no-untyped-def]
    model, args, clean, tmp = silu_model
    sigmoid = next(n.name for n in clean.graph.node if n.op_type == "Sigmoid")
    faulted, edited = faults.swap_op(clean, sigmoid, "Tanh")
    path = tmp / "tanh.onnx"
    onnx.save(faulted, str(path))
    fd = quick_locate(model, args, onnx_path=str(path)).first_divergent
    assert fd is not None and fd.op_type == "Mul"  # the carrier of silu's value
    assert fd.segment[0] == edited, fd.suspects
    assert "makes the op right" in fd.suspects[0].reason


def test_a_wrong_carrier_is_not_blamed_on_the_node_before_it(silu_model, quick_locate) -> None:  # type: ignore[no-untyped-def]
    model, args, clean, tmp = silu_model
    mul = next(n.name for n in clean.graph.node if n.op_type == "Mul")
    faulted, edited = faults.swap_op(clean, mul, "Add")
    path = tmp / "add.onnx"
    onnx.save(faulted, str(path))
    fd = quick_locate(model, args, onnx_path=str(path)).first_divergent
    assert fd is not None and fd.onnx_node == edited
    assert fd.segment[0] == edited, fd.suspects


# -- atan2: one prim, so PyTorch's only value is the op's own output --------------------------

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "samples"))
from divergent import Atan2ZeroY  # noqa: E402


def test_atan2_names_the_where_that_drops_the_right_branch(sample_runs) -> None:  # type: ignore[no-untyped-def]
    """y == +0, x < 0: the lowering's Greater(y, 0) is False, so its Where picks atan(y/x) - pi
    although its other input (atan(y/x) + pi) holds PyTorch's +pi at exactly those elements."""
    fd = sample_runs["Atan2ZeroY"].result.first_divergent  # the sample located once per session (conftest)
    assert fd is not None and fd.onnx_node == "node_atan2" and fd.cause == "conversion"
    lead = fd.suspects[0]
    assert lead.onnx_node == fd.segment[0] and lead.op_type == "Where", fd.suspects
    assert "Greater" in lead.reason and "holds PyTorch's value" in lead.reason, lead.reason
    # the Where the Greater feeds, not the last Where selecting on x < 0
    assert lead.onnx_node == "node_Where_7", [s.onnx_node for s in fd.suspects]


def test_atan2_without_zeros_is_a_match() -> None:
    """The same lowering is right away from y == 0: no false alarm on the clean inputs."""
    model = Atan2ZeroY().eval()
    with torch.no_grad():
        model.fy.bias += 5.0  # relu(y) > 0 everywhere: no +0.0 reaches atan2
    result = nodebisect.locate(model, Atan2ZeroY.example_inputs(), check_capture=False)
    assert result.verdict == "match", result.first_divergent
