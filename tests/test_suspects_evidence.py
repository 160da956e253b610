"""Evidence that names the faulty node inside a multi-node lowering (issue #11 item 3).

* a weight that is not PyTorch's parameter (``frontends/pytorch_reference/weights.py``): the MatMul of a
  ``linear`` reading a corrupted weight, not the bias Add that carries the value;
* a Cast that loses the values it was given (``diagnose/casts.py``): the int64 ->
  float32 Cast of an integer floor division, not the Cast back to int64;
* an attribute that contradicts the FX node's arguments (``diagnose/suspects.py``):
  AveragePool without ``divisor_override``, ScatterElements without ``reduce='mean'``.

Models are built here, exported with the real dynamo exporter and run in onnxruntime;
faults are injected by editing one node or initializer of the clean export.
"""

from __future__ import annotations

from typing import Any

import faults
import numpy as np
import onnx
import pytest
import torch
from torch import nn

from nodebisect import locate
from nodebisect.diagnose.casts import CAST_SCORE, lossy_cast, lossy_cast_evidence
from nodebisect.diagnose.suspects import rank_suspects
from nodebisect.frontends.pytorch_reference.weights import WEIGHT_SCORE, weight_evidence
from nodebisect.frontends.dynamo import export_onnx
from nodebisect.frontends.loading.load import build_loaded_model
from nodebisect.runtime.runner import OrtRunner
from nodebisect.values.graphmap import GraphMap, build_graph_map


def export(model: nn.Module, args: tuple[Any, ...]) -> tuple[onnx.ModelProto, Any]:
    exported = export_onnx(build_loaded_model(model.eval(), args))
    return exported.model, exported.program


_CLEAN: dict[tuple[type, int], tuple[onnx.ModelProto, Any]] = {}


def clean_export(cls: type[nn.Module], args: tuple[Any, ...]) -> tuple[onnx.ModelProto, Any]:
    """``export(cls(), args)`` once per table row; the tests copy the graph before they edit it."""
    key = (cls, id(args))
    if key not in _CLEAN:
        _CLEAN[key] = export(cls(), args)
    return _CLEAN[key]


def fx_args(program: Any) -> dict[str, Any]:
    """What explain.py hands rank_suspects: the reference's ops (FX node -> RefOp) for this program."""
    from nodebisect.frontends.pytorch_reference.program import all_ops

    return all_ops(program)


def segment_of(gm: GraphMap, node: str) -> tuple[list[str], str]:
    """The ONNX nodes lowering ``node``'s FX node, and the one carrying its value.

    The carrier may lack the exporter's metadata (a trailing Cast): it is the
    producer of the value named after the FX node.
    """
    key = gm.segment_of[node]
    carrier = gm.producer[key]
    return list(dict.fromkeys(gm.segments[key] + [carrier])), carrier


# -- weights -----------------------------------------------------------------------------


class Mlp3d(nn.Module):
    """``linear`` on a 3-D input: MatMul (weight transposed and folded into ``val_N``) + Add."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 8)
        self.fc3 = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class ConvBn(nn.Module):
    """Conv + inference BatchNorm: the exporter folds BatchNorm into the Conv's weights."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(6)
        self.head = nn.Conv2d(6, 2, 1)
        with torch.no_grad():
            for bn in (self.bn1, self.bn2):
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2.0)
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-0.2, 0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        return self.head(torch.relu(self.bn2(self.conv2(h))))


class Norms(nn.Module):
    """group_norm lowers to InstanceNormalization with its own ones/zeros [C] (same shape as
    the weight), then Mul/Add by the reshaped weight and bias; instance_norm reads its own."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 1)
        self.gn = nn.GroupNorm(4, 4)
        self.inn = nn.InstanceNorm2d(4, affine=True)
        with torch.no_grad():
            for norm in (self.gn, self.inn):
                norm.weight.uniform_(0.5, 1.5)
                norm.bias.uniform_(-0.3, 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inn(self.gn(self.conv(x)))


WEIGHT_CASES = [
    pytest.param(Mlp3d, (torch.randn(2, 5, 8),), "MatMul", id="linear-matmul-transposed"),
    pytest.param(ConvBn, (torch.randn(1, 3, 8, 8),), "Conv", id="conv-with-batchnorm-folded"),
]
CLEAN_ONLY = [pytest.param(Norms, (torch.randn(1, 3, 5, 5),), "InstanceNormalization", id="norm-lowerings-own-constants")]


@pytest.mark.parametrize(("cls", "args", "op"), WEIGHT_CASES + CLEAN_ONLY)
def test_clean_weights_raise_no_evidence(cls: type[nn.Module], args: tuple[Any, ...], op: str) -> None:
    model, program = clean_export(cls, args)
    gm = build_graph_map(model, {}, [])
    assert any(gm.nodes[n].op_type == op for n in gm.order)  # the lowering the case is about
    assert weight_evidence(gm, model, program, gm.order) == []


@pytest.mark.parametrize(("cls", "args", "op"), WEIGHT_CASES)
@pytest.mark.parametrize("fault", [pytest.param({"scale": 1.5}, id="scaled"), pytest.param({"noise": 0.5}, id="noise")])
def test_corrupted_weight_names_the_node_reading_it(cls: type[nn.Module], args: tuple[Any, ...], op: str, fault: dict[str, float]) -> None:
    clean, program = clean_export(cls, args)
    edited = faults.reading_initializer((op,))(clean)
    model, _ = faults.corrupt_initializer(clean, edited, **fault)
    gm = build_graph_map(model, {}, [])
    found = weight_evidence(gm, model, program, gm.order)
    assert [name for name, _, _ in found] == [edited], found
    _, score, reason = found[0]
    assert score == WEIGHT_SCORE
    assert "__faulted" in reason and "is not PyTorch's" in reason


def test_corrupted_linear_weight_ranks_the_matmul_above_the_carrier() -> None:
    """The ranking explain.py makes: MatMul first, the bias Add (the carrier) after it."""
    clean, program = export(Mlp3d(), (torch.randn(2, 5, 8),))
    edited = faults.reading_initializer(("MatMul",))(clean)
    model, _ = faults.corrupt_initializer(clean, edited, noise=0.5)
    gm = build_graph_map(model, {}, [])
    segment, carrier = segment_of(gm, edited)
    assert carrier != edited and gm.nodes[carrier].op_type == "Add"
    without = rank_suspects(gm, model, segment, carrier, fx_args(program))
    assert without[0].onnx_node == carrier  # what the issue reports today
    ranked = rank_suspects(gm, model, segment, carrier, fx_args(program), evidence=weight_evidence(gm, model, program, segment))
    assert [s.onnx_node for s in ranked] == [edited, carrier]
    assert ranked[0].score > ranked[1].score
    assert ranked[0].reason.startswith(f"weight {gm.nodes[edited].input[1]}")


def test_a_weight_renamed_after_its_parameter_is_checked_by_value() -> None:
    """An initializer that keeps a parameter's name but not its values (Gemm reads fc.weight as is)."""
    model, program = export(Mlp3d(), (torch.randn(4, 8),))  # 2-D input: Gemm reading fc1.weight by name
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    weight = next(t for t in model.graph.initializer if t.name == gemm.input[1])
    assert weight.name in program.state_dict
    arr = onnx.numpy_helper.to_array(weight).copy()
    arr[0, 0] += 1.0
    weight.CopyFrom(onnx.numpy_helper.from_array(arr, weight.name))
    gm = build_graph_map(model, {}, [])
    found = weight_evidence(gm, model, program, gm.order)
    assert [name for name, _, _ in found] == [gemm.name]
    assert "max |diff| 1" in found[0][2]


# -- lossy casts -------------------------------------------------------------------------


class FloorDivTimestamps(nn.Module):
    """Integer floor division on int64 timestamps near 1e12: lowered through float32."""

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.div(t, 1000, rounding_mode="floor") + 1, x * 2


TIMESTAMPS = torch.tensor([1_700_000_000_123, 1_700_000_123_456, 5, 1_234_567_890_123], dtype=torch.int64)


def _all_values(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = [o for n in model.graph.node for o in n.output if o]
    return {**feeds, **OrtRunner(model, feeds).run(names)}


def test_lossy_cast_names_the_int_to_float_cast() -> None:
    args = (TIMESTAMPS, torch.randn(3))
    model, program = export(FloorDivTimestamps(), args)
    gm = build_graph_map(model, {}, [])
    casts = [n for n in gm.order if gm.nodes[n].op_type == "Cast"]
    feeds = {"t": args[0].numpy(), "x": args[1].numpy()}
    found = lossy_cast_evidence(gm, gm.order, _all_values(model, feeds))
    first = casts[0]
    assert gm.nodes[first].input[0] == "t"
    assert [name for name, _, _ in found] == [first], found
    assert found[0][1] == CAST_SCORE
    assert "rounds 3 of 4 int64 values" in found[0][2] and "2**24" in found[0][2]
    # Ranked ahead of the Cast back to int64 that carries the FX value.
    segment, carrier = segment_of(gm, first)
    assert carrier != first
    ranked = rank_suspects(gm, model, segment, carrier, fx_args(program), evidence=found)
    assert ranked[0].onnx_node == first
    assert rank_suspects(gm, model, segment, carrier, fx_args(program))[0].onnx_node == carrier


def test_small_integers_cast_exactly_raise_nothing() -> None:
    small = torch.tensor([7, 1_000_000, -16_000_000, 12_345], dtype=torch.int64)
    model, _ = export(FloorDivTimestamps(), (TIMESTAMPS, torch.randn(3)))
    gm = build_graph_map(model, {}, [])
    feeds = {"t": small.numpy(), "x": np.zeros(3, np.float32)}
    assert lossy_cast_evidence(gm, gm.order, _all_values(model, feeds)) == []


class ExplicitFloat(nn.Module):
    """The model itself casts int64 to float32: PyTorch loses the same digits, no evidence."""

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return t.float() * 2


def test_a_cast_the_model_asked_for_is_not_evidence() -> None:
    model, _ = export(ExplicitFloat(), (TIMESTAMPS,))
    gm = build_graph_map(model, {}, [])
    cast = next(n for n in gm.order if gm.nodes[n].op_type == "Cast")
    assert gm.refs[cast].target.startswith("aten._to_copy"), gm.refs[cast].target
    values = _all_values(model, {"t": TIMESTAMPS.numpy()})
    assert lossy_cast(values["t"], np.dtype(np.float32))  # the values do lose digits
    assert lossy_cast_evidence(gm, gm.order, values) == []


@pytest.mark.parametrize(
    ("values", "target", "words"),
    [
        pytest.param(np.array([2**24 + 1, 3]), np.float32, "rounds 1 of 2", id="int64-above-2**24"),
        pytest.param(np.array([2**24, -(2**24)]), np.float32, "", id="int64-at-2**24-exact"),
        pytest.param(np.array([2**40, 3]), np.float32, "", id="power-of-two-exact"),
        pytest.param(np.array([2**31, 1]), np.int32, "wraps 1 of 2", id="int64-to-int32-wraps"),
        pytest.param(np.array([7e4, 1.5], np.float32), np.float16, "overflows 1 of 2", id="float32-to-float16-overflow"),
        pytest.param(np.array([1.1, 2.7], np.float32), np.float16, "", id="float16-rounding-is-not-loss"),
        pytest.param(np.array([2.7, -1.2], np.float32), np.int64, "", id="float-to-int-truncation-is-semantic"),
    ],
)
def test_lossy_cast_judges_the_values_actually_cast(values: np.ndarray, target: Any, words: str) -> None:
    reason = lossy_cast(values, np.dtype(target))
    assert (words in reason) if words else reason == ""
    if words:
        assert reason.startswith(words)


# -- attributes against the FX node's arguments ------------------------------------------


@pytest.mark.parametrize(
    ("sample", "node", "words"),
    [
        pytest.param(
            "AvgPoolDivisorOverride",
            "node_avg_pool2d",
            ("AveragePool has no divisor_override attribute", "kernel_shape=[2, 2]", "divisor_override=3"),
            id="avg_pool2d-divisor_override",
        ),
        pytest.param(
            "ScatterReduceMean",
            "node_scatter_reduce",
            ("attribute reduction='none'", "argument reduce='mean'", "no 'mean' reduction"),
            id="scatter_reduce-mean",
        ),
    ],
)
def test_attribute_contradicting_the_fx_arguments_is_named(sample_runs: Any, sample: str, node: str, words: tuple[str, ...]) -> None:
    fd = sample_runs[sample].result.first_divergent  # the sample located once per session (conftest)
    assert fd is not None and fd.onnx_node == node
    top = fd.suspects[0]
    assert top.onnx_node == node and top.score >= 0.85, fd.suspects
    first_reason = top.reason.split("; ")[0]
    for word in words:
        assert word in first_reason, top.reason


class CatThenSoftmax(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.softmax(torch.cat([a, b], dim=1) * 2, dim=-1)


@pytest.mark.parametrize(
    ("op", "attr", "value", "words"),
    [
        pytest.param("Concat", "axis", 0, "Concat attribute axis=0 contradicts argument dim=1", id="concat-axis"),
        pytest.param("Softmax", "axis", 0, "Softmax attribute axis=0 contradicts argument dim=-1", id="softmax-axis"),
    ],
)
def test_edited_axis_contradicts_dim(op: str, attr: str, value: int, words: str) -> None:
    clean, program = export(CatThenSoftmax(), (torch.randn(2, 3), torch.randn(2, 4)))
    target = next(n.name for n in clean.graph.node if n.op_type == op)
    model, edited = faults.set_attribute(clean, target, attr, value)
    gm = build_graph_map(model, {}, [])
    clean_gm = build_graph_map(clean, {}, [])
    assert rank_suspects(clean_gm, clean, [target], target, fx_args(program))[0].score < 0.85
    top = rank_suspects(gm, model, [edited], edited, fx_args(program))[0]
    assert top.onnx_node == edited and top.score >= 0.85
    assert top.reason.startswith(words), top.reason


def test_locate_ranks_the_lossy_cast_first() -> None:
    result = locate(FloorDivTimestamps(), (TIMESTAMPS, torch.randn(3)))
    fd = result.first_divergent
    assert fd is not None and fd.op_type == "Cast"
    assert fd.suspects[0].onnx_node != fd.onnx_node, fd.suspects
    assert "exact integer range" in fd.suspects[0].reason
