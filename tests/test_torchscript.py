"""The TorchScript-exporter path (``exporter="torchscript"``): real export, real ORT, tiny models.

Reference values there are submodule outputs caught by forward hooks, mapped to
the ONNX values leaving each module's scope, plus function-level values: every
aten call of the graph the exporter translates, evaluated during the export and
tied to the ONNX value its lowering produced (``frontends.torchscript.refs``).
What ``locate`` can then promise for a fault injected into one node (asserted
below, case by case):

* EXACT: the edited node's output is itself a mapped value (a module's output,
  a graph output, or the value an aten call's lowering ends in, e.g. the Softmax
  inside an attention module, a residual Add, ``F.interpolate`` or ``1 / x``
  between modules): ``first_divergent.onnx_node`` is the edited node.
* SPAN: the edited node is inside a multi-node lowering of one aten call (the
  MatMul of a Linear whose bias Add carries the output, the Sqrt of a LayerNorm
  written out at opset 16). The fault is first measurable at the lowering's
  output, so the culprit is that value's producer, and the edited node lies
  in the culprit's local subgraph (the nodes between the culprit value and its
  nearest mapped inputs), all of which ``first_divergent.segment`` lists.

Each faulted file is prepared once and searched once per strategy. The CNN's cases
are the fast tier; the transformer's and most between-module cases are marked slow.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper
from torch import nn

from nodebisect import locate, prepare
from nodebisect.errors import BadInputError
from nodebisect.frontends.torchscript.export import ScopeResolver, export_torchscript, node_scope
from nodebisect.frontends.torchscript.refs import Recorder

SAMPLES = Path(__file__).resolve().parents[1] / "samples"

EXACT = "exact"
SPAN = "span"


# -- models ----------------------------------------------------------------------------


class TinyCNN(nn.Module):
    """Conv + BatchNorm (non-trivial statistics, folded into the Conv on export) + ReLU, twice."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.act = nn.ReLU()
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(8, 4)
        with torch.no_grad():
            self.bn1.running_mean.uniform_(-1, 1)
            self.bn1.running_var.uniform_(0.5, 2.0)
            self.bn1.weight.uniform_(0.5, 1.5)
            self.bn1.bias.uniform_(-0.5, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.conv1(x)))
        x = self.block(x)
        return self.fc(x.mean((2, 3)))


class Attention(nn.Module):
    """Single-head attention written out with matmul / softmax."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.scale = d**-0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.q(x) @ self.k(x).transpose(-1, -2) / (1.0 / self.scale)
        return self.o(torch.softmax(scores, dim=-1) @ self.v(x))


class Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = Attention(d)
        self.ln2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, 2 * d)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(2 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(self.act(self.fc1(self.ln2(x))))


class TinyTransformer(nn.Module):
    """Two pre-norm blocks (Linear, LayerNorm, matmul/softmax attention, GELU) and a final LayerNorm."""

    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.layers = nn.ModuleList([Block(d), Block(d)])
        self.norm = nn.LayerNorm(d)
        with torch.no_grad():  # LayerNorm affine away from (1, 0), so an epsilon fault shows
            for mod in self.modules():
                if isinstance(mod, nn.LayerNorm):
                    mod.weight.uniform_(0.5, 1.5)
                    mod.bias.uniform_(-0.5, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)


class Bucketize(nn.Module):
    """Signed integer bucket of a feature: floor((4x).round() / 3)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.floor_divide((x * 4).round().long(), 3)


class BucketNet(nn.Module):
    """A real divergence of the TorchScript exporter (torch 2.13): ``floor_divide`` on negative ints.

    The exporter lowers ``torch.floor_divide(int, int)`` to an integer ONNX
    ``Div``, which truncates toward zero; PyTorch floors (-7 // 3 is -3, the
    ONNX graph says -2). The dynamo exporter gets it right.
    """

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(6, 6)
        self.bucket = Bucketize()
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.bucket(self.proj(x)).float())


class HalfShift(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x >> 1


class ShiftNet(nn.Module):
    """A second TorchScript-only divergence: ``x >> 1`` on negative ints exports as Div by 2 (truncating)."""

    def __init__(self) -> None:
        super().__init__()
        self.shift = HalfShift()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shift(x * 3 - 5)


class Between(nn.Module):
    """Plain function calls between modules: no module returns their values, their lowerings are single nodes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.mix = nn.Conv2d(4, 4, 1)
        self.head = nn.Linear(64, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.interpolate(self.conv(x), scale_factor=2, mode="nearest")
        h = torch.softmax(self.mix(h), dim=1)
        h = 1 / (h + 0.5)
        h = nn.functional.avg_pool2d(h, 4)
        return self.head(h.flatten(1))


def build(arch: str) -> tuple[nn.Module, tuple[Any, ...]]:
    torch.manual_seed(0)
    if arch == "cnn":
        return TinyCNN().eval(), (torch.randn(1, 3, 8, 8),)
    if arch == "between":
        return Between().eval(), (torch.randn(2, 3, 8, 8),)
    return TinyTransformer().eval(), (torch.randn(2, 6, 16),)


# -- fixtures: each architecture exported once per module ---------------------------------


class Exports:
    """(arch, opset) -> (model, args, clean ONNX); exported on first use."""

    def __init__(self) -> None:
        self._done: dict[tuple[str, int], tuple[nn.Module, tuple[Any, ...], onnx.ModelProto]] = {}

    def __getitem__(self, key: tuple[str, int]) -> tuple[nn.Module, tuple[Any, ...], onnx.ModelProto]:
        if key not in self._done:
            model, args = build(key[0])
            self._done[key] = (model, args, export_torchscript(model, args, {}, key[1]))
        return self._done[key]


@pytest.fixture(scope="module")
def exports() -> Exports:
    return Exports()


# -- faults: edit exactly one node, by its name -------------------------------------------


def _node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    found = [n for n in model.graph.node if n.name == name]
    assert len(found) == 1, f"expected one node named {name!r}, found {[n.name for n in model.graph.node]}"
    return found[0]


def set_attr(name: str, attr: str, value: Any) -> Callable[[onnx.ModelProto], None]:
    def edit(model: onnx.ModelProto) -> None:
        node = _node(model, name)
        kept = [a for a in node.attribute if a.name != attr]
        del node.attribute[:]
        node.attribute.extend(kept + [helper.make_attribute(attr, value)])

    return edit


def swap_op(name: str, new_op: str) -> Callable[[onnx.ModelProto], None]:
    def edit(model: onnx.ModelProto) -> None:
        node = _node(model, name)
        assert node.op_type != new_op
        node.op_type = new_op

    return edit


def scale_weight(name: str, scale: float, index: int = 1) -> Callable[[onnx.ModelProto], None]:
    """Scale the initializer one node reads, copied under a new name so no other node changes."""

    def edit(model: onnx.ModelProto) -> None:
        node = _node(model, name)
        tensor = next(t for t in model.graph.initializer if t.name == node.input[index])
        model.graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(tensor) * scale, tensor.name + "__faulted"))
        node.input[index] = tensor.name + "__faulted"

    return edit


def scale_constant(name: str, scale: float) -> Callable[[onnx.ModelProto], None]:
    """Scale the value of one Constant node."""

    def edit(model: onnx.ModelProto) -> None:
        node = _node(model, name)
        attr = next(a for a in node.attribute if a.name == "value")
        attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t) * scale))

    return edit


# (arch, opset, edited node, fault, guarantee, module the culprit must name); the CNN's rows are the fast tier.
CASES = [
    pytest.param("cnn", 17, "/conv1/Conv", scale_weight("/conv1/Conv", 1.5), EXACT, "conv1", id="cnn-folded_conv_weight"),
    pytest.param("cnn", 17, "/act/Relu", swap_op("/act/Relu", "Sigmoid"), EXACT, "act", id="cnn-relu_to_sigmoid"),
    pytest.param("cnn", 17, "/block/block.0/Conv", scale_weight("/block/block.0/Conv", 0.5), EXACT, "block.0", id="cnn-seq_conv_weight"),
    pytest.param("tiny", 17, "/layers.1/ln1/LayerNormalization", set_attr("/layers.1/ln1/LayerNormalization", "epsilon", 1.0), EXACT, "layers.1.ln1", id="tiny-layernorm_epsilon", marks=pytest.mark.slow),
    pytest.param("tiny", 17, "/layers.0/attn/q/Add", swap_op("/layers.0/attn/q/Add", "Sub"), EXACT, "layers.0.attn.q", id="tiny-linear_bias_add_to_sub", marks=pytest.mark.slow),
    # Function calls inside a module's forward: judged at their own lowering (module-level alone said layers.0.attn.o / layers.0.ln2).
    pytest.param("tiny", 17, "/layers.0/attn/Softmax", set_attr("/layers.0/attn/Softmax", "axis", 1), EXACT, "layers.0.attn", id="tiny-softmax_axis", marks=pytest.mark.slow),
    pytest.param("tiny", 17, "/layers.0/attn/Div", swap_op("/layers.0/attn/Div", "Mul"), EXACT, "layers.0.attn", id="tiny-attention_scale_div_to_mul", marks=pytest.mark.slow),
    pytest.param("tiny", 17, "/layers.0/Add", swap_op("/layers.0/Add", "Sub"), EXACT, "layers.0", id="tiny-residual_add_to_sub", marks=pytest.mark.slow),
    pytest.param("tiny", 17, "/layers.1/fc1/MatMul", scale_weight("/layers.1/fc1/MatMul", 1.5), SPAN, "layers.1.fc1", id="tiny-matmul_weight", marks=pytest.mark.slow),
    # opset 16 has no LayerNormalization: the exporter writes ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div/Mul/Add.
    pytest.param("tiny", 16, "/layers.0/ln2/Sqrt", swap_op("/layers.0/ln2/Sqrt", "Reciprocal"), SPAN, "layers.0.ln2", id="tiny16-layernorm_chain_sqrt", marks=pytest.mark.slow),
    pytest.param("tiny", 16, "/layers.1/ln1/Constant_1", scale_constant("/layers.1/ln1/Constant_1", 1e5), SPAN, "layers.1.ln1", id="tiny16-layernorm_chain_epsilon", marks=pytest.mark.slow),
]


def _local_subgraph(result: Any) -> set[str]:
    """Nodes between the culprit value and its mapped inputs, from the result's own node records."""
    records = {r.onnx_node: r for r in result.nodes}
    producer = {o: r.onnx_node for r in result.nodes for o in r.outputs}
    mapped = {r.onnx_value for r in result.nodes if r.mapped_to}
    keep: set[str] = set()
    stack = [result.first_divergent.onnx_node]
    while stack:
        name = stack.pop()
        if name in keep:
            continue
        keep.add(name)
        for value in records[name].inputs:
            if value in producer and value not in mapped:
                stack.append(producer[value])
    return keep


class Faulted:
    """Each faulted file prepared once (TorchScript export of the model, its hooks, the file read);
    every strategy then only searches it again: ``locate(prepared, strategy=...)``."""

    def __init__(self, exports: Exports, folder: Path) -> None:
        self._exports, self._folder = exports, folder
        self._prepared: dict[str, tuple[Any, onnx.ModelProto]] = {}

    def locate(self, key: tuple[str, int], edited: str, fault: Any, strategy: str) -> tuple[Any, onnx.ModelProto]:
        """``fault`` (editing node ``edited``) applied to the clean export ``key``, located with ``strategy``."""
        case = f"{key[0]}{key[1]}:{edited}"
        if case not in self._prepared:
            model, args, clean = self._exports[key]
            faulted = copy.deepcopy(clean)
            fault(faulted)
            path = self._folder / f"{len(self._prepared)}.onnx"
            onnx.save(faulted, str(path))
            self._prepared[case] = (prepare(model, args, exporter="torchscript", onnx_path=str(path)), faulted)
        prepared, faulted = self._prepared[case]
        return locate(prepared, strategy=strategy), faulted


@pytest.fixture(scope="module")
def faulted(exports: Exports, tmp_path_factory: pytest.TempPathFactory) -> Faulted:
    return Faulted(exports, tmp_path_factory.mktemp("torchscript_faults"))


@pytest.mark.parametrize("arch, opset, edited, fault, guarantee, module", CASES)
@pytest.mark.parametrize("strategy", ["all", "bisect"])
def test_injected_fault_is_located(
    faulted: Faulted, arch: str, opset: int, edited: str, fault: Any, guarantee: str, module: str, strategy: str
) -> None:
    result, faulted_model = faulted.locate((arch, opset), edited, fault, strategy)

    assert result.verdict == "diverged", result.notes
    fd = result.first_divergent
    assert fd.cause == "conversion"
    assert fd.framework.module == module
    if guarantee == EXACT:
        assert fd.onnx_node == edited
    else:
        assert fd.onnx_node != edited, "the edited node's output is not mapped: it cannot be the carrier"
        assert edited in _local_subgraph(result)
        assert edited in fd.segment
    mapping = result.stats["mapping"]
    assert mapping["modules_mapped"] > 0 and mapping["mapped_values"] > 0
    assert mapping["onnx_nodes"] == len(faulted_model.graph.node)


@pytest.mark.parametrize(
    "arch, function_values", [("cnn", 1), pytest.param("tiny", 12, marks=pytest.mark.slow), pytest.param("between", 6, marks=pytest.mark.slow)]
)
def test_clean_export_matches_with_full_module_coverage(exports: Exports, arch: str, function_values: int) -> None:
    model, args, _clean = exports[(arch, 17)]
    result = locate(model, args, exporter="torchscript")
    assert result.verdict == "match", result.notes
    assert result.environment["exporter"] == "torchscript"
    mapping = result.stats["mapping"]
    assert set(mapping) == {"onnx_nodes", "mapped_values", "modules_hooked", "modules_mapped", "unmapped_modules", "function_values"}
    # Values only function calls give (the CNN's mean, the transformer's matmuls, softmaxes and
    # residual adds, Between's calls between modules), every one of them compared and matching.
    assert mapping["function_values"] == function_values
    assert not any("function-level reference values are off" in n for n in result.notes)
    # The CNN's conv1 is the only module whose own output is not in the graph:
    # its Conv carries bn1 (folded), so bn1 is mapped and conv1 is not.
    expected_unmapped = ["conv1"] if arch == "cnn" else []
    assert mapping["unmapped_modules"] == expected_unmapped
    assert mapping["modules_mapped"] == mapping["modules_hooked"] - len(expected_unmapped)


# -- function-level values: calls between modules named at their own node -----------------


# (edited node, fault, aten target, traced call, code on the source line)
FUNCTION_CASES = [
    pytest.param("/Resize", set_attr("/Resize", "mode", "linear"), "aten.upsample_nearest2d", "upsample_nearest2d", "interpolate(", id="interpolate_mode", marks=pytest.mark.slow),
    pytest.param("/Softmax", set_attr("/Softmax", "axis", 3), "aten.softmax", "softmax", "torch.softmax(", id="softmax_axis"),
    pytest.param("/Reciprocal", swap_op("/Reciprocal", "Sqrt"), "aten.reciprocal", "reciprocal", "1 / (h + 0.5)", id="reciprocal_to_sqrt", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("edited, fault, target, call, code", FUNCTION_CASES)
@pytest.mark.parametrize("strategy", ["all", "bisect"])
def test_function_call_between_modules_is_named_exactly(
    faulted: Faulted, edited: str, fault: Any, target: str, call: str, code: str, strategy: str
) -> None:
    """Module outputs alone would report each of these at the next module (/mix/Conv, /head/Gemm)."""
    result, _ = faulted.locate(("between", 17), edited, fault, strategy)

    assert result.verdict == "diverged", result.notes
    fd = result.first_divergent
    assert fd.onnx_node == edited and fd.cause == "conversion"
    assert fd.segment[0] == edited and all(n == edited or n.startswith("/Constant") for n in fd.segment)
    assert (fd.framework.target, fd.framework.fx_node, fd.framework.module) == (target, call, "")
    assert fd.framework.source.startswith(__file__) and code in fd.framework.code


@pytest.mark.slow
def test_dropped_divisor_override_is_named_at_the_average_pool() -> None:
    """A real TorchScript-exporter divergence between modules: AveragePool has no divisor_override."""
    result = locate(f"{SAMPLES}/divergent.py:AvgPoolDivisorOverride", exporter="torchscript")
    assert result.verdict == "diverged"
    fd = result.first_divergent
    assert (fd.onnx_node, fd.op_type, fd.cause) == ("/AveragePool", "AveragePool", "conversion")  # was /head/Gemm
    assert (fd.framework.target, fd.framework.fx_node) == ("aten.avg_pool2d", "avg_pool2d")
    assert "divisor_override=3" in fd.framework.code and "divergent.py:" in fd.framework.source


@pytest.mark.parametrize("arch", ["cnn", "tiny", "between"])
def test_tagged_export_is_the_plain_export(exports: Exports, arch: str) -> None:
    """Listening to the exporter changes nothing in the file it writes; a rewritten node carries no call's value."""
    model, args, clean = exports[(arch, 17)]
    recorder = Recorder()
    tagged = export_torchscript(model, args, {}, 17, recorder=recorder)
    assert tagged.SerializeToString() == clean.SerializeToString()
    refs = recorder.refs
    assert refs.error == "" and refs.carriers
    assert all(refs.value_of(v) is not None for v in refs.carriers)
    if arch == "cnn":
        # bn1 is folded into /conv1/Conv after translation: its value is the BatchNorm's, not the convolution's.
        assert "/conv1/Conv_output_0" in refs.dropped and "/conv1/Conv_output_0" not in refs.carriers
        assert "/conv1/Conv" not in refs.members


class ConvBnOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        with torch.no_grad():
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


def test_batchnorm_folded_into_the_returned_conv_gives_no_function_value() -> None:
    """No node reads the folded Conv: the graph output itself shows the rewrite (the graph returned the BatchNorm)."""
    torch.manual_seed(0)
    model, args = ConvBnOut().eval(), (torch.randn(1, 3, 6, 6),)
    recorder = Recorder()
    exported = export_torchscript(model, args, {}, 17, recorder=recorder)
    assert [n.op_type for n in exported.graph.node] == ["Conv"]
    assert recorder.refs.carriers == {} and exported.graph.output[0].name in recorder.refs.dropped
    result = locate(model, args, exporter="torchscript")
    assert result.verdict == "match" and not any("function-level" in n for n in result.notes)


class Overwrites(nn.Module):
    """In-place writes through views and an indexed assignment: the exporter rewrites them into a block."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 6)
        self.b = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        h[:, :3].mul_(2)
        h[:, 0] = 1.0
        return self.b(h.relu())


def test_graph_the_evaluator_cannot_replay_falls_back_to_module_outputs() -> None:
    torch.manual_seed(0)
    result = locate(Overwrites().eval(), (torch.randn(2, 4),), exporter="torchscript")
    assert result.verdict == "match", result.notes
    assert result.stats["mapping"]["function_values"] == 0
    assert any(n.startswith("function-level reference values are off") for n in result.notes)


@pytest.mark.slow
def test_graph_that_is_not_the_eager_forward_turns_function_values_off() -> None:
    """Eager nn.TransformerEncoder takes its nested-tensor fast path; the trace does not: graph values are no reference."""
    result = locate(f"{SAMPLES}/divergent.py:TransformerFastPath", exporter="torchscript")
    assert result.stats["mapping"]["function_values"] == 0
    assert any("already differs from the eager module" in n for n in result.notes)
    assert result.first_divergent.onnx_node == "/enc/layers.0/norm2/LayerNormalization"  # as with module outputs alone


def test_folded_batchnorm_compares_the_conv_value_with_the_batchnorm_output(exports: Exports) -> None:
    model, args, _clean = exports[("cnn", 17)]
    result = locate(model, args, exporter="torchscript", strategy="all")
    conv = next(r for r in result.nodes if r.onnx_node == "/conv1/Conv")
    assert conv.status == "ok" and conv.mapped_to == conv.onnx_value
    assert conv.framework.module == "conv1" and conv.framework.target == "aten.convolution"


@pytest.mark.slow
@pytest.mark.parametrize(
    "model, args, module, node",
    [
        pytest.param(BucketNet, lambda: (torch.randn(4, 6),), "bucket", "/bucket/Div", id="floor_divide_negative_ints"),
        pytest.param(ShiftNet, lambda: (torch.arange(-4, 4).view(2, 4),), "shift", "/shift/Div", id="right_shift_negative_ints"),
    ],
)
def test_real_torchscript_only_divergence(model: Any, args: Any, module: str, node: str) -> None:
    torch.manual_seed(0)
    net, inputs = model().eval(), args()
    ts = locate(net, inputs, exporter="torchscript")
    assert ts.verdict == "diverged"
    fd = ts.first_divergent
    assert fd.cause == "conversion" and fd.framework.module == module
    assert fd.onnx_node.startswith(f"/{module}/") and node in fd.segment
    assert ts.stats["mapping"]["modules_mapped"] >= 1
    # The same model through the dynamo exporter is right: the defect is the TorchScript exporter's.
    assert locate(net, inputs).verdict == "match"


class FloorDivBetween(nn.Module):
    """``floor_divide`` on negative numbers as a plain call between modules (issue #22, point 4).

    Its TorchScript lowering is three nodes, and the traced call's value sits on the
    last, a Cast that only passes numbers on. On ints: Div (integer, truncating: the
    defect), Cast, Cast. On floats: Div (exact), Cast to int64 (truncates toward zero
    where PyTorch floors: the defect), Cast back to float.
    """

    def __init__(self, ints: bool) -> None:
        super().__init__()
        self.ints = ints
        self.proj = nn.Linear(6, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = (self.proj(x) * 8).long() if self.ints else self.proj(x) * 4
        return self.head(torch.floor_divide(q, 3 if self.ints else 0.7).float() + 1)


@pytest.mark.parametrize(
    "ints, carrier, departs, passed_on",
    [
        pytest.param(True, "/Cast_2", ("/Div", "Div"), "/Cast_1 (Cast), /Cast_2 (Cast)", id="int-truncating-div"),
        pytest.param(False, "/Cast_1", ("/Cast", "Cast"), "/Cast_1 (Cast)", id="float-truncating-cast", marks=pytest.mark.slow),
    ],
)
def test_multi_node_lowering_between_modules_names_the_node_that_departs(ints: bool, carrier: str, departs: tuple[str, str], passed_on: str) -> None:
    """Judged against the traced call's own value, the Casts that carry it only pass the wrong numbers on."""
    from nodebisect.report.filing import issue_title

    torch.manual_seed(0)
    net = FloorDivBetween(ints).eval()
    result = locate(net, (torch.randn(4, 6, generator=torch.Generator().manual_seed(1)),), exporter="torchscript")
    assert result.verdict == "diverged", result.notes
    fd = result.first_divergent
    assert (fd.framework.target, fd.framework.fx_node, fd.cause) == ("aten.floor_divide", "floor_divide", "conversion")
    assert fd.onnx_node == carrier  # the node carrying the call's value
    lead = fd.suspects[0]
    assert (fd.segment[0], fd.segment_op_types[0]) == departs and lead.onnx_node == departs[0], [(s.onnx_node, s.score, s.reason) for s in fd.suspects]
    assert lead.reason.startswith(f"its output already holds the wrong values, which {passed_on} only pass on unchanged")
    assert f"its {departs[1]} computes something else" in issue_title(result)


def test_export_failure_is_a_verdict() -> None:
    class NearestExact(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return nn.functional.interpolate(x, size=7, mode="nearest-exact")

    result = locate(NearestExact(), (torch.randn(1, 1, 10),), exporter="torchscript")
    assert result.verdict == "export_failed"
    assert result.export_failure.step == "torchscript export"
    assert result.export_failure.target == "aten._upsample_nearest_exact1d"


def test_no_eager_module_is_bad_input(exports: Exports) -> None:
    model, args, _clean = exports[("cnn", 17)]
    program = torch.export.export(model, args)
    with pytest.raises(BadInputError, match="needs an eager nn.Module"):
        locate(program, args, exporter="torchscript")


@pytest.mark.slow
def test_dynamo_file_is_refused_on_the_torchscript_path(tmp_path: Path) -> None:
    model, args = build("cnn")
    path = tmp_path / "dynamo.onnx"
    torch.onnx.export(model, args, str(path), dynamo=True)
    with pytest.raises(BadInputError, match="no TorchScript module scopes"):
        locate(model, args, exporter="torchscript", onnx_path=str(path))


def test_unused_input_is_dropped_and_matched(tmp_path: Path) -> None:
    class TakesMask(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, unused: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x)

    result = locate(TakesMask().eval(), (torch.zeros(3), torch.randn(2, 4)), exporter="torchscript")
    assert result.verdict == "match"
    assert any("drops inputs" in n for n in result.notes)


def test_scope_resolution_follows_containers_and_reuse() -> None:
    paths = ["", "enc", "enc.0", "enc.0.blocks", "enc.0.blocks.0", "enc.0.blocks.0.0", "enc.0.d", "enc.0.d.a", "layer_1", "act"]
    resolver = ScopeResolver(paths)
    assert resolver.resolve("/enc.0/blocks/blocks.0/blocks.0.0") == "enc.0.blocks.0.0"  # nested Sequentials
    assert resolver.resolve("/enc.0/a") == "enc.0.d.a"  # a ModuleDict key alone
    assert resolver.resolve("/layer_1") == "layer_1"  # a real name ending in _1
    assert resolver.resolve("/layer_1_1") == "layer_1"  # its second call
    assert resolver.resolve("/act_2") == "act"
    assert resolver.resolve("/nothing") is None
    assert node_scope("/enc.0/a/Gemm") == "/enc.0/a" and node_scope("/Add") == "" and node_scope("Identity_3") is None


@pytest.mark.slow
def test_graph_values_keep_the_hooked_dtype_and_shape(exports: Exports) -> None:
    """Every mapped value has the shape ORT computes for it (a mis-mapping would fail the shape check)."""
    model, args, _clean = exports[("tiny", 17)]
    result = locate(model, args, exporter="torchscript", strategy="all")
    compared = [r for r in result.nodes if r.metrics is not None]
    assert compared and all(r.status == "ok" for r in compared)
    assert all(np.isfinite(r.metrics.max_abs) for r in compared)


class Recurrent(nn.Module):
    """An LSTM returns ``out, (h, c)``: h and c have the same shape, so the mapping must tell them apart."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(4, 5, batch_first=True)
        self.fc = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        out, (h, c) = self.rnn(x)
        return self.fc(out) + bias, h * 2, c


@pytest.mark.slow
def test_same_shape_outputs_and_keyword_inputs_map_right() -> None:
    torch.manual_seed(0)
    result = locate(Recurrent().eval(), {"x": torch.randn(2, 3, 4), "bias": torch.randn(2)}, exporter="torchscript", strategy="all")
    assert result.verdict == "match", result.notes
    lstm = next(r for r in result.nodes if r.op_type == "LSTM")
    assert lstm.status == "ok" and lstm.framework.module == "rnn"
    assert result.stats["mapping"]["unmapped_modules"] == []
