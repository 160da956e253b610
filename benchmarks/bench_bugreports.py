"""Held-out divergences from public bug reports (issue #11, "Done when").

Eleven small PyTorch models, each reproducing one PyTorch -> ONNX -> onnxruntime divergence
reported publicly (the URL is on each class and in the results), each with ordinary layers
before and after the faulty op and example inputs that hit the edge case (exact -0.0, values
past exp's overflow, a fully masked attention row, int64 past 2**24, ...), plus one reported
divergence that is now only PyTorch's own float32 rounding (must be "match"). None of them is
a test-suite model: the test suite's atan2, SDPA-bool-mask, divisor_override, scatter_reduce,
amax and floor-division samples are left out on purpose.

The expected answer is fixed WITHOUT nodebisect: the case names the aten op whose lowering
(or whose onnxruntime kernel) is wrong; the FX node calling it is found in the exported
program, its ONNX nodes from the exporter's metadata (``pkg.torch.onnx.fx_node``), its carrier
is the node whose output is the FX value. Where the op became several ONNX nodes the faulty
node is fixed by a rule stated per case: the first node making a non-finite value from finite
inputs (its outputs computed by onnxruntime), or a named op (the int64 -> float32 Cast of the
dividend), or issue #11's missing-guard convention (the first node whose inputs match PyTorch's
own decomposition and whose output does not: the final MatMul of a fully masked attention row),
or none where the fault has no single node (the remainder's Div/Floor/Mul/Sub cancellation).

Locators on each case:
  nodebisect  nodebisect.prepare(model, args) + nodebisect.locate(prepared) (all defaults,
              float64 oracle "auto"), and nodebisect.locate(model, args, oracle="off").
  naive       benchmarks/bench_accuracy.naive_locate on the same export.
  verify      torch.onnx.verification.verify_onnx_program's interpreter fed from one
              all-outputs session (bench_accuracy.verify_flags(real=False)); the real thing
              once, on the first case, to check the emulation.
Clean variants (inputs that avoid the edge case, or the same model with the argument that
is dropped set to its default) must be reported "match" by nodebisect.

Scores: segment (the faulty node, or the carrier when no inner node is fixed, is in
first_divergent.segment; for naive/verify: the named node lowers the faulty FX node), exact
(the named node is the faulty op's carrier), lead (faulty inner node is segment[0] or
suspects[0]; multi-node lowerings with a fixed inner node only), false alarms (clean variants
not reported "match").

    .venv/bin/python benchmarks/bench_bugreports.py                       # all cases (~4-5 min on 2 cores)
    .venv/bin/python benchmarks/bench_bugreports.py --cases erfcx,signbit --json out.json
    python -m nodebisect locate benchmarks/bench_bugreports.py:ErfcxOverflow
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import logging
import platform
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _load(name: str, path: Path) -> Any:
    """A sibling script (bench_accuracy) or tests/faults.py as a module, loaded once."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the file runs
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    return sys.modules[name]


INF = float("inf")


def _diag(n: int, seed: int, bias: float = 0.0, equal: bool = False) -> nn.Linear:
    """A Linear whose weight is diagonal (scales in [0.5, 1.5], or all 0.9): each output is one
    input scaled, so the example inputs place the edge values (-0.0, |x| > 88, NaN) exactly."""
    lin = nn.Linear(n, n)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        scales = torch.full((n,), 0.9) if equal else torch.rand(n, generator=g) + 0.5
        lin.weight.copy_(torch.diag(scales))
        lin.bias.fill_(bias)
    return lin


def _rows(values: list[list[float]]) -> tuple[torch.Tensor]:
    return (torch.tensor(values, dtype=torch.float32),)


# ---------------------------------------------------------------------------- the models
class ResizeNearest26To64(nn.Module):
    """F.interpolate(mode="nearest") from width 26 to 64 (scale 64/26): onnxruntime's Resize
    picks different source pixels than PyTorch around the middle of the row."""

    URL = "https://github.com/microsoft/onnxruntime/issues/12098"
    ALSO = ("https://github.com/microsoft/onnxruntime/issues/28310",)
    TARGET = "upsample_nearest2d"
    INNER = None  # single node
    CLEAN = "model"  # width 52 (scale 2): the same model, an exact scale

    def __init__(self, out_w: int = 64) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.out_w = out_w
        self.pre = nn.Conv2d(3, 3, 1)
        self.post = nn.Conv2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(self.pre(x), size=(1, self.out_w), mode="nearest")
        return self.post(h)

    @classmethod
    def example_inputs(cls, clean: bool = False) -> tuple[torch.Tensor]:
        return (torch.randn(1, 3, 1, 26, generator=torch.Generator().manual_seed(1)),)


class ErfcxOverflow(nn.Module):
    """torch.special.erfcx lowered as exp(x**2) * (1 - erf(x)): for x > 9.4 exp overflows to
    inf, 1 - erf(x) is 0, the product NaN (PyTorch: 0.056 at x = 10)."""

    URL = "https://github.com/microsoft/onnxscript/issues/1223"
    ALSO = ()
    TARGET = "special_erfcx"
    INNER = "nonfinite"
    CLEAN = "inputs"

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.pre = _diag(6, 1)
        self.post = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(torch.special.erfcx(self.pre(x)))

    @classmethod
    def example_inputs(cls, clean: bool = False) -> tuple[torch.Tensor]:
        big = 1.0 if clean else 30.0
        return _rows([[0.3, -0.5, big, 1.0, -1.2, 0.8], [big, 0.2, -0.4, 1.1, big, -0.9]])


class LogAddExpOverflow(nn.Module):
    """torch.logaddexp lowered as log(exp(a) + exp(b)): inf once a or b passes 88.7."""

    URL = "https://github.com/k2-fsa/icefall/pull/1157"
    ALSO = ("https://github.com/k2-fsa/icefall/pull/1158",)
    TARGET = "logaddexp"
    INNER = "nonfinite"
    CLEAN = "inputs"

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.pa = _diag(6, 1)
        self.pb = _diag(6, 2)
        self.post = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(torch.logaddexp(self.pa(x), self.pb(x)))

    @classmethod
    def example_inputs(cls, clean: bool = False) -> tuple[torch.Tensor]:
        big = 2.0 if clean else 200.0
        return _rows([[0.3, -0.5, big, 1.0, -1.2, 0.8], [1.5, 0.2, -0.4, big, 0.6, -0.9]])


class LogSigmoidUnderflow(nn.Module):
    """F.logsigmoid lowered as Log(Sigmoid(x)): sigmoid(-125) underflows to 0 and the log is
    -inf where PyTorch's stable kernel gives -125."""

    URL = "https://github.com/pytorch/pytorch/pull/14830"
    ALSO = ("https://github.com/pytorch/pytorch/pull/2211",)
    TARGET = "log_sigmoid"
    INNER = "nonfinite"
    CLEAN = "inputs"

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.pre = _diag(6, 1)
        self.post = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(F.logsigmoid(self.pre(x)))

    @classmethod
    def example_inputs(cls, clean: bool = False) -> tuple[torch.Tensor]:
        low = -2.0 if clean else -250.0
        return _rows([[0.3, -0.5, low, 1.0, -1.2, 0.8], [1.5, 0.2, -0.4, low, 0.6, -0.9]])


class SdpaFloatMaskFullyMasked(nn.Module):
    """scaled_dot_product_attention with an additive float mask whose first query row is all
    -inf: PyTorch returns 0 for that row, the exported Softmax gives NaN (the bool-mask fix in
    onnxscript#2479 does not cover float masks)."""

    URL = "https://github.com/pytorch/pytorch/issues/103749"
    ALSO = ("https://github.com/microsoft/onnxscript/pull/2479",)
    TARGET = "scaled_dot_product_attention"
    # issue #11's convention for a missing guard: the first node whose inputs match PyTorch's own
    # decomposition and whose output does not. PyTorch's decomposition has the same NaN softmax
    # (_softmax) and then zeroes fully masked rows (where); the lowering has no such guard, so
    # the final MatMul (the carrier) is that node. The Softmax makes the NaN.
    INNER = "carrier"
    CLEAN = "inputs"  # a causal mask: no fully masked row

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.q, self.k, self.v, self.o = (nn.Linear(8, 8) for _ in range(4))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(1, 4, 2, 4).transpose(1, 2)

        a = F.scaled_dot_product_attention(heads(self.q(x)), heads(self.k(x)), heads(self.v(x)), attn_mask=mask)
        return self.o(a.transpose(1, 2).reshape(1, 4, 8))

    @classmethod
    def example_inputs(cls, clean: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(1, 4, 8, generator=torch.Generator().manual_seed(1))
        mask = torch.triu(torch.full((4, 4), -INF), diagonal=1)
        if not clean:
            mask[0, :] = -INF
        return x, mask.view(1, 1, 4, 4)


class MaskedFillNegZero(nn.Module):
    """masked_fill(h < 0, -0.0): onnxruntime's Where returns +0.0 for a -0.0 taken from a
    broadcast operand, so the later 1/x is +inf where PyTorch has -inf."""

    URL = "https://github.com/microsoft/onnxruntime/issues/32191"
    ALSO = ()
    TARGET = "masked_fill"
    INNER = None
    CLEAN = "inputs"  # all h > 0: nothing filled

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.pre = _diag(6, 1)
        self.post = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pre(x)
        g = h.masked_fill(h < 0, -0.0)
        return self.post(torch.atan(1.0 / g))

    @classmethod
    def example_inputs(cls, clean: bool = False) -> tuple[torch.Tensor]:
        s = 1.0 if clean else -1.0
        return _rows([[0.3, s * 0.5, 1.2, s * 1.0, 0.7, 0.8], [s * 1.5, 0.2, s * 0.4, 1.1, 0.6, 0.9]])


class SignbitNegZero(nn.Module):
    """torch.signbit lowered as Less(x, 0): False for -0.0, where PyTorch says True."""

    URL = "https://github.com/microsoft/onnxscript/pull/2754"
    ALSO = ("https://github.com/pytorch/pytorch/issues/53963",)
    TARGET = "signbit"
    INNER = None
    CLEAN = "inputs"  # all h > 0: -relu(h) is negative, never -0.0

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.pre = _diag(6, 1)
        self.post = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pre(x)
        s = torch.signbit(-torch.relu(h)).to(h.dtype)
        return self.post(h * (1.0 + s))

    @classmethod
    def example_inputs(cls, clean: bool = False) -> tuple[torch.Tensor]:
        s = 1.0 if clean else -1.0
        return _rows([[0.3, s * 0.5, 1.2, s * 1.0, 0.7, 0.8], [s * 1.5, 0.2, s * 0.4, 1.1, 0.6, 0.9]])


class LayerNormLargeMean(nn.Module):
    """A reported divergence that is not one any more: onnxruntime's CPU LayerNormalization gave
    NaN for rows with a large mean and a small spread. On onnxruntime 1.32 the NaN is gone; at
    mean 9e3 and spread 0.01 the outputs still differ by 0.04, but that is PyTorch's own float32
    rounding (PyTorch's LayerNorm output is 0.092 from float64, onnxruntime's 0.058): the right
    answer is "match" (issue #11: legitimate drift raises no alarm). Scored as a false-alarm check."""

    URL = "https://github.com/microsoft/onnxruntime/issues/28463"
    ALSO = ("https://github.com/microsoft/onnxruntime/issues/21935",)
    TARGET = "layer_norm"
    INNER = None
    EXPECT = "match"
    CLEAN = "inputs"  # rows with mean 0

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.pre = _diag(16, 1, equal=True)  # equal scales keep the rows' spread small
        self.norm = nn.LayerNorm(16)
        self.post = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(self.norm(self.pre(x)))

    @classmethod
    def example_inputs(cls, clean: bool = False) -> tuple[torch.Tensor]:
        noise = torch.randn(2, 16, generator=torch.Generator().manual_seed(1))
        return (noise if clean else 0.01 * noise + 1.0e4,)


class AminNaN(nn.Module):
    """torch.amin propagates NaN; onnxruntime's ReduceMin drops a NaN that is not first in the
    row (the NaN comes from log of a negative feature), nan_to_num then keeps the difference."""

    URL = "https://github.com/microsoft/onnxruntime/issues/10514"
    ALSO = ("https://github.com/iree-org/iree/issues/24503",)
    TARGET = "amin"
    INNER = None
    CLEAN = "inputs"  # all features positive: no NaN

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.pre = _diag(6, 1)
        self.post = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logs = torch.log(self.pre(x))
        low = torch.amin(logs, dim=-1, keepdim=True)
        return self.post(torch.nan_to_num(logs - low))

    @classmethod
    def example_inputs(cls, clean: bool = False) -> tuple[torch.Tensor]:
        s = 1.0 if clean else -1.0
        return _rows([[0.3, 0.5, 1.2, 1.0, 0.7, s * 0.8], [1.5, 0.2, 0.4, 1.1, s * 0.6, 0.9]])


class TruncDivInt64(nn.Module):
    """torch.div(t, 1000, rounding_mode="trunc") on int64 millisecond timestamps: the lowering
    casts t to float32 (exact only below 2**24), so the quotient and the remainder are wrong."""

    URL = "https://github.com/microsoft/onnxscript/issues/2589"
    ALSO = ()
    TARGET = "div"
    INNER = "Cast"  # the int64 -> float32 Cast of the dividend
    CLEAN = "inputs"  # timestamps below 2**24

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.register_buffer("offset", torch.tensor(250, dtype=torch.int64))
        self.post = nn.Linear(2, 3)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t = t + self.offset
        q = torch.div(t, 1000, rounding_mode="trunc")
        ms = t - q * 1000
        feats = torch.stack([ms.to(torch.float32) / 1000.0, torch.remainder(q, 60).to(torch.float32) / 60.0], dim=-1)
        return self.post(feats)

    @classmethod
    def example_inputs(cls, clean: bool = False) -> tuple[torch.Tensor]:
        base = 1_000_000 if clean else 1_700_000_000_000
        return (torch.tensor([base + 123, base + 98_765, base + 5_000_321, base + 7], dtype=torch.int64),)


class RemainderFloatLarge(nn.Module):
    """torch.remainder(h, 0.1) for |h| near 1e6: lowered as h - floor(h / 0.1) * 0.1, which
    cancels away the remainder in float32 (PyTorch computes it exactly, fmod-based)."""

    URL = "https://github.com/pytorch/pytorch/issues/37743"
    ALSO = ("https://github.com/pytorch/pytorch/pull/185793",)
    TARGET = "remainder"
    INNER = None  # Div, Floor, Mul, Sub: the cancellation has no single faulty node
    CLEAN = "inputs"  # |h| < 5

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.pre = _diag(6, 1)
        self.post = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(torch.remainder(self.pre(x), 0.1))

    @classmethod
    def example_inputs(cls, clean: bool = False) -> tuple[torch.Tensor]:
        big = 0.0 if clean else 1.0e6
        return _rows([[big + 0.3, -0.5, 1.2, big + 1.0, -1.2, 0.8], [1.5, big + 0.2, -0.4, 1.1, 0.6, big - 0.9]])


class CrossEntropyLabelSmoothing(nn.Module):
    """F.cross_entropy(label_smoothing=0.1) -> ONNX SoftmaxCrossEntropyLoss, which has no label
    smoothing: the exporter drops the argument and the loss is the unsmoothed one."""

    URL = "https://github.com/microsoft/onnxscript/pull/444"
    ALSO = ("https://github.com/microsoft/onnxruntime/pull/9007",)
    TARGET = "cross_entropy_loss"
    INNER = None
    CLEAN = "model"  # label_smoothing=0.0

    def __init__(self, label_smoothing: float = 0.1) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.label_smoothing = label_smoothing
        self.pre = nn.Linear(6, 5)
        self.post = nn.Linear(1, 3)

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(self.pre(x), target, label_smoothing=self.label_smoothing, reduction="none")
        return self.post(loss.unsqueeze(-1))

    @classmethod
    def example_inputs(cls, clean: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randn(4, 6, generator=torch.Generator().manual_seed(1)), torch.tensor([1, 0, 4, 2])


CASES: dict[str, type[nn.Module]] = {
    "resize_nearest": ResizeNearest26To64,
    "erfcx": ErfcxOverflow,
    "logaddexp": LogAddExpOverflow,
    "logsigmoid": LogSigmoidUnderflow,
    "sdpa_float_mask": SdpaFloatMaskFullyMasked,
    "masked_fill_negzero": MaskedFillNegZero,
    "signbit": SignbitNegZero,
    "layernorm_large_mean": LayerNormLargeMean,
    "amin_nan": AminNaN,
    "trunc_div_int64": TruncDivInt64,
    "remainder_float": RemainderFloatLarge,
    "cross_entropy_label_smoothing": CrossEntropyLabelSmoothing,
}

CLEAN_MODELS: dict[str, Callable[[], nn.Module]] = {
    "resize_nearest": lambda: ResizeNearest26To64(out_w=52),
    "cross_entropy_label_smoothing": lambda: CrossEntropyLabelSmoothing(label_smoothing=0.0),
}

# Reported divergences tried on torch 2.13.0 / onnxscript 0.7.2 / onnxruntime 1.32 that no longer
# diverge, or that fail to export, or that are already test-suite samples (one line each).
NOT_KEPT = [
    ("F.interpolate(bilinear, antialias=True) 10->4", "https://github.com/pytorch/pytorch/issues/183546",
     "matches: the Resize now carries exclude_outside=1 (fixed in onnxscript, microsoft/onnxscript#2916)"),
    ("F.interpolate(bicubic, antialias=True) up and down", "https://github.com/pytorch/pytorch/issues/157220",
     "matches: exclude_outside=1, cubic_coeff_a=-0.5 (also https://github.com/pytorch/pytorch/issues/177138)"),
    ("F.interpolate(size=(1, 1), bilinear)", "https://github.com/pytorch/pytorch/issues/183523", "matches"),
    ("F.interpolate(bicubic) 4x4 -> 1x1", "https://github.com/microsoft/onnxruntime/issues/11496", "matches"),
    ("avg_pool2d(ceil_mode=True, count_include_pad=True)", "https://github.com/pytorch/pytorch/issues/183528",
     "matches (and the skipped last window, https://github.com/pytorch/pytorch/issues/131272, matches)"),
    ("embedding_bag(mode='max') with an empty bag", "https://github.com/microsoft/onnxscript/issues/1056",
     "matches, also float16 weights, mean/sum, padding_idx, per_sample_weights, include_last_offset"),
    ("embedding_bag(padding_idx=...)", "https://github.com/pytorch/pytorch/issues/128930", "matches (sum, mean, max)"),
    ("torch.logsumexp over an all -inf row", "https://github.com/microsoft/onnxruntime/issues/28461",
     "matches: ReduceLogSumExp now gives -inf"),
    ("LayerNorm over a constant row (1234.0)", "https://github.com/microsoft/onnxruntime/issues/21935",
     "matches: no NaN any more (large mean, small spread: kept as a must-match case, the gap is PyTorch's rounding)"),
    ("torch.remainder with negative operands", "https://github.com/pytorch/pytorch/pull/64230", "matches"),
    ("x >> 1 on negative int64", "https://github.com/pytorch/pytorch/issues/191014",
     "matches with the dynamo exporter (the report is about the TorchScript exporter)"),
    ("SDPA bool mask with a fully masked row", "https://github.com/microsoft/onnxscript/pull/2479",
     "no NaN any more but a uniform row: still diverges; left out as the test suite's SdpaFullyMaskedRow sample"),
    ("floor division of int64 timestamps", "https://github.com/microsoft/onnxscript/issues/2589",
     "still diverges; left out as issue #11's own floor-division test case (trunc division kept instead)"),
    ("torch.cumprod", "https://github.com/pytorch/pytorch/issues/102948", "fails to export (ConversionError, no torchlib function)"),
]


# ---------------------------------------------------------------------------- expected answers
@dataclass
class Expected:
    fx_node: str = ""
    target: str = ""
    nodes: list[str] = field(default_factory=list)  # ONNX nodes lowering it, graph order
    op_types: list[str] = field(default_factory=list)
    carrier: str = ""
    inner: list[str] = field(default_factory=list)  # acceptable faulty inner nodes (multi-node, when fixed)
    faulty: list[str] = field(default_factory=list)  # what must be in the segment: inner, else the carrier


def expected_answer(cls: type[nn.Module], model: onnx.ModelProto, program: Any, feeds: dict) -> Expected:
    """The faulty op's FX node (from the exported program), its ONNX nodes (from the metadata)
    and the inner faulty node by the case's rule: no nodebisect involved."""
    faults = _load("faults", ROOT / "tests" / "faults.py")
    calls = [n for n in program.graph.nodes if n.op == "call_function" and f"aten.{cls.TARGET}." in str(n.target)]
    if not calls:
        raise LookupError(f"no aten.{cls.TARGET} call in the exported program")
    fx = calls[0]
    segs = faults.segments(model)
    names = segs.get(fx.name, [])
    by_name = {n.name: n for n in model.graph.node}
    exp = Expected(fx_node=fx.name, target=str(fx.target), nodes=names, op_types=[by_name[n].op_type for n in names])
    # the carrier outputs the FX value; the exporter may add it without metadata (a Cast back to int64)
    exp.carrier = next((n.name for n in model.graph.node if fx.name in n.output), names[-1] if names else "")
    if exp.carrier and exp.carrier not in names:
        exp.nodes.append(exp.carrier)
        exp.op_types.append(by_name[exp.carrier].op_type)
        names = exp.nodes
    if len(names) > 1 and cls.INNER == "nonfinite":
        exp.inner = _nonfinite_origins(model, [by_name[n] for n in names], feeds)
    elif len(names) > 1 and cls.INNER == "carrier":
        exp.inner = [exp.carrier]
    elif len(names) > 1 and cls.INNER:
        exp.inner = [next(n for n in names if by_name[n].op_type == cls.INNER)]
    exp.faulty = exp.inner or [exp.carrier]
    return exp


def _nonfinite_origins(model: onnx.ModelProto, nodes: list[onnx.NodeProto], feeds: dict) -> list[str]:
    """Nodes of the segment whose onnxruntime output holds NaN/Inf while every input is finite."""
    acc = _load("bench_accuracy", ROOT / "benchmarks" / "bench_accuracy.py")
    values = sorted({v for n in nodes for v in list(n.input) + list(n.output) if v})
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    consts = {n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node
              if n.op_type == "Constant" and n.attribute and n.attribute[0].type == onnx.AttributeProto.TENSOR}
    runnable = [v for v in values if v not in inits and v not in consts and v not in feeds]
    got = {**inits, **consts, **feeds, **acc.run_all(model, feeds, runnable)}

    def finite(v: str) -> bool:
        a = np.asarray(got[v])
        return a.dtype.kind not in "fc" or bool(np.isfinite(a).all())

    return [n.name for n in nodes if all(finite(v) for v in n.input if v) and not all(finite(v) for v in n.output if v)]


# ---------------------------------------------------------------------------- one case
@dataclass
class CaseResult:
    case: str
    model: str
    url: str
    also: list[str]
    expect: str = "diverged"  # "match": a reported divergence that is PyTorch's own rounding
    expected: dict = field(default_factory=dict)
    torch_vs_ort_max_abs: float = 0.0
    nb: dict = field(default_factory=dict)  # "auto" / "off" -> outcome
    clean: dict = field(default_factory=dict)  # nodebisect on the clean variant
    naive: str | None = None
    verify_first: str | None = None
    verify_flagged: int = 0
    verify_real_agrees: bool | None = None
    seconds: float = 0.0
    error: str = ""


def _outcome(r: Any, seconds: float) -> dict:
    out = {"verdict": r.verdict, "seconds": round(seconds, 2)}
    fd = r.first_divergent
    if fd is not None:
        out.update(node=fd.onnx_node, op=fd.op_type, stage=fd.stage, cause=fd.cause, segment=list(fd.segment),
                   suspects=[s.onnx_node for s in fd.suspects][:3], suspect_reasons=[s.reason[:160] for s in fd.suspects][:2],
                   fx=fd.framework.fx_node, explanation=(fd.explanation or "")[:400])
    nf = (r.stats or {}).get("first_nonfinite")
    if nf:
        out["first_nonfinite"] = nf
    return out


def _max_abs(model: nn.Module, args: tuple, onnx_model: onnx.ModelProto, feeds: dict) -> float:
    acc = _load("bench_accuracy", ROOT / "benchmarks" / "bench_accuracy.py")
    with torch.no_grad():
        ref = model(*args).numpy().astype(np.float64)
    out = onnx_model.graph.output[0].name
    got = acc.run_all(onnx_model, feeds, [out])[out].astype(np.float64)
    if not np.array_equal(np.isfinite(ref), np.isfinite(got)):
        return INF  # NaN/Inf where the other side is finite
    both = np.isfinite(ref)
    return float(np.abs(ref[both] - got[both]).max()) if both.any() else 0.0


def _all_locators(model: nn.Module, args: tuple, real_verify: bool) -> tuple[dict, Any, dict]:
    """nodebisect (prepare + locate, defaults), the naive locator and verify_onnx_program on one export."""
    import nodebisect

    acc = _load("bench_accuracy", ROOT / "benchmarks" / "bench_accuracy.py")
    t = time.perf_counter()
    prepared = nodebisect.prepare(model, args)
    outcome = _outcome(nodebisect.locate(prepared), time.perf_counter() - t)
    prep = prepared.prep
    peers: dict[str, Any] = {"naive": None, "verify_first": None, "verify_flagged": 0, "verify_real_agrees": None, "error": ""}
    try:
        peers["naive"] = acc.naive_locate(prep.onnx_model, prep.feeds, prep.acts.values)
    except Exception as exc:  # noqa: BLE001 - a crash is a result too
        peers["error"] += f"naive: {type(exc).__name__}: {exc}"[:200]
    try:
        flagged, _s = acc.verify_flags(prep.onnx_model, prep.program, args, real=False)
        first = flagged[0] if flagged else None
        peers["verify_flagged"] = len(flagged)
        peers["verify_first"] = next((n.name for n in prep.onnx_model.graph.node if first in n.output), first) if first else None
        if real_verify:
            peers["verify_real_agrees"] = acc.verify_flags(prep.onnx_model, prep.program, args, real=True)[0] == flagged
    except Exception as exc:  # noqa: BLE001
        peers["error"] += f" verify: {type(exc).__name__}: {exc}"[:200]
    return outcome, prep, peers


def run_case(name: str, real_verify: bool, oracles: list[str], log: Callable[[str], None]) -> CaseResult:
    import nodebisect

    cls = CASES[name]
    res = CaseResult(name, cls.__name__, cls.URL, list(cls.ALSO), expect=getattr(cls, "EXPECT", "diverged"))
    t0 = time.perf_counter()
    model, args = cls().eval(), cls.example_inputs()
    res.nb[oracles[0]], prep, peers = _all_locators(model, args, real_verify)
    res.naive, res.verify_first, res.verify_flagged = peers["naive"], peers["verify_first"], peers["verify_flagged"]
    res.verify_real_agrees, res.error = peers["verify_real_agrees"], peers["error"]
    exp = expected_answer(cls, prep.onnx_model, prep.program, prep.feeds)
    res.expected = asdict(exp)
    res.torch_vs_ort_max_abs = _max_abs(model, args, prep.onnx_model, prep.feeds)
    for mode in oracles[1:]:
        t = time.perf_counter()
        res.nb[mode] = _outcome(nodebisect.locate(model, args, oracle=mode), time.perf_counter() - t)
    if cls.CLEAN:
        clean_model = CLEAN_MODELS[name]().eval() if cls.CLEAN == "model" else cls().eval()
        res.clean, _prep, clean_peers = _all_locators(clean_model, cls.example_inputs(clean=cls.CLEAN == "inputs"), False)
        res.clean["naive"], res.clean["verify_first"] = clean_peers["naive"], clean_peers["verify_first"]
    res.seconds = time.perf_counter() - t0
    nb = res.nb[oracles[0]]
    log(f"{name}: expected {exp.fx_node} -> {exp.carrier} ({'/'.join(exp.op_types)}), inner {exp.inner} | "
        f"nb {nb['verdict']} {nb.get('node')} ({nb.get('op')}) {nb.get('stage')}/{nb.get('cause')} seg={nb.get('segment')} "
        f"sus={nb.get('suspects')} | naive {res.naive} | verify {res.verify_first} ({res.verify_flagged}) | "
        f"clean {res.clean.get('verdict')} (naive {res.clean.get('naive')}, verify {res.clean.get('verify_first')}) | {res.seconds:.1f}s")
    return res


# ---------------------------------------------------------------------------- scoring
def score(res: CaseResult, oracle: str) -> dict[str, Any]:
    """segment / exact / lead for nodebisect (one oracle mode), the naive locator and verify."""
    exp = Expected(**res.expected)
    nb = res.nb.get(oracle, {})
    seg = nb.get("segment") or []
    lead = None
    if len(exp.nodes) > 1 and exp.inner:
        lead = bool(set(seg[:1] + (nb.get("suspects") or [])[:1]) & set(exp.inner))
    return {
        "nb_segment": bool(set(exp.faulty) & set(seg)), "nb_exact": nb.get("node") == exp.carrier, "nb_lead": lead,
        "naive_segment": res.naive in exp.nodes, "naive_exact": res.naive == exp.carrier,
        "verify_segment": res.verify_first in exp.nodes, "verify_exact": res.verify_first == exp.carrier,
    }


def _mark(v: bool | None) -> str:
    return "–" if v is None else ("✓" if v else "✗")


def _ratio(values: list[bool | None]) -> str:
    known = [v for v in values if v is not None]
    return f"{sum(known)}/{len(known)}"


def divergence_table(results: list[CaseResult], oracles: list[str]) -> list[str]:
    """One row per reported divergence: what nodebisect named against the expected answer."""
    out = ["| case (report) | faulty op → ONNX nodes | expected: carrier / faulty inner | nodebisect names | stage / cause | "
           "segment | exact | lead | oracle=off | naive | verify |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    scores, offs = [], []
    for res in (r for r in results if r.expect == "diverged"):
        exp, sc, nb = Expected(**res.expected), score(res, oracles[0]), res.nb[oracles[0]]
        scores.append(sc)
        off = ""
        if len(oracles) > 1:
            so = score(res, oracles[1])
            offs.append(so)
            off = f"{_mark(so['nb_segment'])}{_mark(so['nb_exact'])} {res.nb[oracles[1]].get('node', res.nb[oracles[1]]['verdict'])}"
        out.append(f"| [{res.case}]({res.url}) | `{exp.target.replace('aten.', '')}` → {'/'.join(exp.op_types)} | "
                   f"{exp.carrier}{' / ' + ', '.join(exp.inner) if exp.inner else ''} | {nb.get('node', nb['verdict'])} ({nb.get('op', '')}) | "
                   f"{nb.get('stage', '')} / {nb.get('cause', '')} | {_mark(sc['nb_segment'])} | {_mark(sc['nb_exact'])} | "
                   f"{_mark(sc['nb_lead'])} | {off} | {_mark(sc['naive_exact'])} {res.naive} | {_mark(sc['verify_exact'])} {res.verify_first} |")
    col = {k: _ratio([sc[k] for sc in scores]) for k in scores[0]} if scores else {}
    off_total = f"{_ratio([o['nb_segment'] for o in offs])} seg, {_ratio([o['nb_exact'] for o in offs])} exact" if offs else ""
    out.append(f"| **total** | | | | | **{col.get('nb_segment')}** | **{col.get('nb_exact')}** | **{col.get('nb_lead')}** | "
               f"{off_total} | **{col.get('naive_exact')}** exact ({col.get('naive_segment')} in the op) | "
               f"**{col.get('verify_exact')}** exact ({col.get('verify_segment')} in the op) |")
    return out


def clean_runs(results: list[CaseResult], oracles: list[str]) -> list[tuple[str, str, dict, str | None, str | None]]:
    """(case, variant, nodebisect outcome, naive's node, verify's first flagged node) for every run that must match."""
    runs = []
    for res in results:
        if res.expect == "match":
            runs.append((res.case, "reported inputs", res.nb[oracles[0]], res.naive, res.verify_first))
        if res.clean:
            variant = "clean model" if CASES[res.case].CLEAN == "model" else "clean inputs"
            runs.append((res.case, variant, res.clean, res.clean.get("naive"), res.clean.get("verify_first")))
    return runs


def clean_table(results: list[CaseResult], oracles: list[str]) -> list[str]:
    runs = clean_runs(results, oracles)
    out = ["| case | variant | nodebisect | naive | verify |", "|---|---|---|---|---|"]
    for case, variant, nb, naive, verify in runs:
        named = f" {nb.get('node')} ({nb.get('cause')})" if nb.get("node") else ""
        out.append(f"| {case} | {variant} | {nb['verdict']}{named} | {naive or 'match'} | {verify or 'match'} |")
    alarms = [sum(r[2]["verdict"] != "match" for r in runs), sum(r[3] is not None for r in runs), sum(r[4] is not None for r in runs)]
    out.append(f"| **false alarms** | {len(runs)} runs | **{alarms[0]}** | **{alarms[1]}** | **{alarms[2]}** |")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from: {', '.join(CASES)}")
    ap.add_argument("--oracles", default="auto,off", help="nodebisect oracle modes (the first is scored)")
    ap.add_argument("--json", help="write every case's outcome here")
    ns = ap.parse_args(argv)
    for name in ("torch.onnx", "torch.onnx._internal.exporter._verification", "torch.export", "onnxscript", "onnx_ir"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    oracles = ns.oracles.split(",")
    started = datetime.datetime.now().isoformat(timespec="seconds")
    t0 = time.perf_counter()
    results: list[CaseResult] = []
    for k, name in enumerate(ns.cases.split(",")):
        try:
            results.append(run_case(name, real_verify=k == 0, oracles=oracles, log=lambda m: print(m, flush=True)))
        except Exception as exc:  # noqa: BLE001 - one broken case must not hide the others
            print(f"{name}: ERROR {type(exc).__name__}: {exc}", flush=True)
    lines = ["", f"{len(results)} cases, started {started}, {time.perf_counter() - t0:.0f}s; nodebisect {_git()}, torch {torch.__version__}, "
             f"onnxruntime {_version('onnxruntime')}, onnxscript {_version('onnxscript')}, {platform.machine()} {platform.system()}", ""]
    lines += ["Reported divergences (nodebisect defaults = float64 oracle auto):", ""] + divergence_table(results, oracles)
    lines += ["", "Runs that must be reported `match` (clean variants; a reported divergence that is PyTorch's own rounding):", ""]
    lines += clean_table(results, oracles)
    real = [r for r in results if r.verify_real_agrees is not None]
    if real:
        lines.append(f"\nverify_onnx_program run as is on {real[0].case}: the one-session emulation flagged the same values: {real[0].verify_real_agrees}")
    lines.append("\nper-case nodebisect answers:")
    for res in results:
        nb = res.nb[oracles[0]]
        lines.append(f"- {res.case}: torch vs ORT max_abs {res.torch_vs_ort_max_abs:.3g}; named {nb.get('node')} ({nb.get('op')}), "
                     f"stage {nb.get('stage')}, cause {nb.get('cause')}, segment {nb.get('segment')}, suspects {nb.get('suspects')}; "
                     f"{nb.get('seconds')}s" + (f" ({oracles[1]} {res.nb[oracles[1]].get('seconds')}s)" if len(oracles) > 1 else "") + f"; clean {res.clean.get('verdict')} "
                     f"{res.clean.get('node', '')}" + (f"; error {res.error}" if res.error else ""))
    lines.append("\nreported divergences not kept:")
    lines += [f"- {what} ({url}): {why}" for what, url, why in NOT_KEPT]
    print("\n".join(lines))
    if ns.json:
        Path(ns.json).write_text(json.dumps({"started": started, "results": [asdict(r) for r in results],
                                             "not_kept": NOT_KEPT}, indent=1, default=str))
    return 0


def _git() -> str:
    """The commit measured, and whether the working tree differs from it (other work in progress)."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "nodebisect"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return head + (" + uncommitted nodebisect/ changes" if dirty else "")


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    raise SystemExit(main())
