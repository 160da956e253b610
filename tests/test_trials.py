"""Several input sets (--trials, several --inputs), NaN provenance and half-precision headroom."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import nodebisect
from models import Block
from nodebisect.cli.main import main
from nodebisect.values.compare import compare
from nodebisect.frontends.dynamo import export_onnx
from nodebisect.frontends.loading.load import build_loaded_model

MODEL = '''
import torch

class Angle(torch.nn.Module):
    """atan2(relu(y), x): torch gives +pi at y=+0, x<0; the ONNX lowering gives -pi."""
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.head = torch.nn.Linear(4, 2)

    def forward(self, y, x):
        return self.head(torch.atan2(torch.relu(y), x))

    @staticmethod
    def example_inputs():
        g = torch.Generator().manual_seed(0)
        return (torch.rand(3, 4, generator=g) + 0.1, torch.rand(3, 4, generator=g) + 0.1)
'''


@pytest.fixture(scope="module")
def angle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("trials")
    (d / "angle.py").write_text(MODEL)
    return d


def test_given_inputs_match_but_edge_case_trials_find_the_culprit(angle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = angle / "r.json"
    code = main(["locate", f"{angle}/angle.py:Angle", "--trials", "3", "--json", str(out), "-q"])
    captured = capsys.readouterr()
    assert code == 1, captured.err
    data = json.loads(out.read_text())
    rows = data["trials"]
    assert [r["trial"] for r in rows] == [0, 1, 2]
    assert rows[0]["verdict"] == "match"  # positive x: no y=+0, x<0 pair
    assert {r["onnx_node"] for r in rows[1:]} == {"node_atan2"}
    assert data["first_divergent"]["onnx_node"] == "node_atan2"
    assert data["stats"]["trial_groups"] == {"match": [0], "node_atan2": [1, 2]}
    assert "trial 1" in " ".join(data["notes"])


@pytest.mark.slow
def test_several_inputs_files_are_compared(angle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = (torch.rand(3, 4) + 0.1, torch.rand(3, 4) + 0.1)
    bad = (torch.zeros(3, 4), -torch.rand(3, 4) - 0.1)  # y = +0 and x < 0 everywhere
    torch.save(good, angle / "good.pt")
    torch.save(bad, angle / "bad.pt")
    out = angle / "files.json"
    code = main(["locate", f"{angle}/angle.py:Angle", "--inputs", str(angle / "good.pt"), "--inputs", str(angle / "bad.pt"), "--json", str(out), "-q"])
    capsys.readouterr()
    assert code == 1
    rows = json.loads(out.read_text())["trials"]
    assert [r["verdict"] for r in rows] == ["match", "diverged"]
    assert rows[1]["inputs"].endswith("bad.pt")


def _relu_block() -> torch.nn.Module:
    return Block(act="relu")


@pytest.mark.slow
def test_first_node_producing_nan_from_finite_inputs_is_reported(tmp_path: Path) -> None:
    args = (torch.randn(4, 8, generator=torch.Generator().manual_seed(0)),)
    proto = export_onnx(build_loaded_model(_relu_block().eval(), args)).model
    norm = next(n for n in proto.graph.node if n.op_type == "LayerNormalization")
    for attr in norm.attribute:
        if attr.name == "epsilon":
            attr.f = -1e6  # sqrt of a negative variance: NaN born here
    path = tmp_path / "nan.onnx"
    onnx.save(proto, path)
    result = nodebisect.locate(_relu_block().eval(), args, onnx_path=str(path), strategy="bisect")
    origin = result.stats["first_nonfinite"]
    assert origin["onnx_node"] == norm.name
    assert origin["framework_nonfinite"] is False
    assert result.first_divergent is not None and result.first_divergent.onnx_node == norm.name


class Erfcx(torch.nn.Module):
    """erfcx lowers to exp(x**2) * erfc(x): Exp overflows past x ~ 9.4, a later Mul makes inf * 0 = NaN."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.pre = torch.nn.Linear(4, 4)
        self.post = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(torch.special.erfcx(self.pre(x)))


@pytest.mark.slow
def test_nan_origin_inside_a_lowering_names_the_node_that_makes_it() -> None:
    """The NaN note and the suspect line name the same node (the Exp), not the op's carrier."""
    model = Erfcx().eval()
    with torch.no_grad():
        model.pre.weight.copy_(torch.eye(4))
        model.pre.bias.zero_()
    x = torch.tensor([[0.5, -1.0, 30.0, 2.0], [12.0, 0.1, -0.3, 1.0]])
    result = nodebisect.locate(model, (x,))
    fd = result.first_divergent
    assert result.verdict == "diverged" and fd is not None
    origin = result.stats["first_nonfinite"]
    assert origin["op_type"] == "Exp" and origin["onnx_node"] != origin["carrier"] == fd.onnx_node, origin
    assert fd.suspects[0].onnx_node == origin["onnx_node"], fd.suspects
    assert any(origin["onnx_node"] in n and "inside the nodes computing" in n for n in result.notes), result.notes


def test_half_precision_values_report_their_range_used() -> None:
    expected = np.array([1.0, -32752.0, 2.0], dtype=np.float16)
    metrics = compare("v", expected.copy(), expected).metrics
    assert metrics.range_used == pytest.approx(32752.0 / 65504.0)
    assert compare("v", np.ones(3, np.float32), np.ones(3, np.float32)).metrics.range_used == 0.0


@pytest.mark.slow
def test_vanishing_activations_are_called_out() -> None:
    model = _relu_block().eval()
    with torch.no_grad():
        model.lin.weight.mul_(1e-30)
        model.lin.bias.zero_()
        model.ln.weight.mul_(1e-30)
        model.ln.bias.zero_()
        model.lin2.weight.mul_(1e-30)
        model.lin2.bias.zero_()
    result = nodebisect.locate(model, (torch.randn(4, 8),))
    assert result.verdict == "match"
    assert any("below atol" in note for note in result.notes)
    healthy = nodebisect.locate(_relu_block().eval(), (torch.randn(4, 8),))
    assert not any("below atol" in note for note in healthy.notes)


ROW_MEAN = '''
import torch

class RowMean(torch.nn.Module):
    """A sum over a dynamic dimension divided by its size (ONNX: Shape -> Cast -> Div)."""
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Linear(4, 4)
        self.b = torch.nn.Linear(4, 2)

    def forward(self, x):
        h = self.a(x)
        return self.b(h.sum(1) / h.shape[1])

    @staticmethod
    def example_inputs():
        return (torch.randn(2, 6, 4),)
'''


@pytest.mark.slow
def test_a_value_baked_for_the_export_shape_is_reported_as_shape_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "row_mean.py").write_text(ROW_MEAN)
    spec = f"{tmp_path}/row_mean.py:RowMean"
    from nodebisect.frontends.loading.load import build_loaded_model as load

    exported = export_onnx(load(spec), dynamic=True).model
    dims = [[d.dim_param for d in vi.type.tensor_type.shape.dim] for vi in exported.graph.input]
    assert dims[0][0] and dims[0][1]  # batch and rows are symbolic
    # What a trace-time constant does: the divisor becomes the example's row count.
    div = next(n for n in exported.graph.node if n.op_type == "Div")
    exported.graph.initializer.append(onnx.numpy_helper.from_array(np.array(6.0, dtype=np.float32), name="baked_rows"))
    div.input[1] = "baked_rows"
    path = tmp_path / "baked.onnx"
    onnx.save(exported, path)

    out = tmp_path / "r.json"
    code = main(["locate", spec, "--dynamic", "--onnx", str(path), "--trials", "3", "--json", str(out), "-q"])
    capsys.readouterr()
    assert code == 1
    data = json.loads(out.read_text())
    rows = data["trials"]
    assert [r["export_shape"] for r in rows] == [True, True, False]
    assert [r["verdict"] for r in rows] == ["match", "match", "diverged"]
    assert rows[2]["onnx_node"] == div.name
    assert any("only at shapes other than the export shape" in n for n in data["notes"])
