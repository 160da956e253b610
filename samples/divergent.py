"""Small PyTorch models whose ONNX export (``torch.onnx.export(..., dynamo=True)``)
diverges from PyTorch when run in onnxruntime (CPU, default session options).

Verified with torch 2.13.0 / onnxscript 0.7.2 / onnxruntime 1.32.  Every class
builds deterministic weights (``torch.manual_seed`` in ``__init__``) and has a
``example_inputs()`` classmethod (fixed seed).  Each model has ordinary layers
before and after the culprit op so a node-level debugger has something to bisect.

Kinds:
  converter defect   - the ONNX node(s) emitted for the aten op compute something else.
  runtime semantics  - the graph follows the ONNX spec, but ONNX/ORT semantics differ
                       from PyTorch's.
  decomposed op      - one aten op lowered to several ONNX nodes; the divergence is
                       born inside that group.
  capture            - eager PyTorch differs from the torch.export'ed program itself
                       (the ONNX model agrees with the exported program).
  optimizer          - a graph optimization (the exporter's or onnxruntime's) changes the
                       numerics: the unoptimized graph agrees with PyTorch.

Usage: ``samples/divergent.py:ClassName`` -> ``ClassName()`` and
``ClassName.example_inputs()``; ``SAMPLES`` maps name -> class.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


class AvgPoolDivisorOverride(nn.Module):
    """Converter defect: aten.avg_pool2d(divisor_override=3) -> ONNX AveragePool, which
    has no divisor-override attribute; the converter silently drops it, so ORT divides by
    the window size (4) instead of 3 (output scaled by 3/4)."""

    KIND = "converter defect"
    ATEN_OP = "aten.avg_pool2d.default"
    FX_NODE = "avg_pool2d"

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4 * 4 * 4, 5)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        h = F.avg_pool2d(h, kernel_size=2, stride=2, divisor_override=3)
        return self.head(h.flatten(1))

    @classmethod
    def example_inputs(cls):
        g = torch.Generator().manual_seed(1)
        return (torch.randn(2, 3, 8, 8, generator=g),)


class ScatterReduceMean(nn.Module):
    """Converter defect: aten.scatter_reduce.two(reduce='mean', include_self=True) ->
    ONNX ScatterElements(reduction='none') (ONNX has no 'mean' reduction), so colliding
    indices are overwritten (last write wins) instead of averaged with the destination."""

    KIND = "converter defect"
    ATEN_OP = "aten.scatter_reduce.two"
    FX_NODE = "scatter_reduce"

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(4, 8)
        self.head = nn.Linear(8, 3)
        # segment ids of the 6 rows: segments 0,1,2 get 2 rows each
        self.register_buffer("seg", torch.tensor([0, 0, 1, 1, 2, 2]).unsqueeze(1).expand(6, 8).contiguous())

    def forward(self, x):
        src = torch.tanh(self.proj(x))  # (6, 8)
        base = torch.ones(3, 8, dtype=src.dtype)
        pooled = base.scatter_reduce(0, self.seg, src, reduce="mean", include_self=True)
        return self.head(pooled)

    @classmethod
    def example_inputs(cls):
        g = torch.Generator().manual_seed(2)
        return (torch.randn(6, 4, generator=g),)


class Fp16RoundingElided(nn.Module):
    """Runtime semantics: (h16 + 1024) - 1024 in float16 (aten.add.Tensor / aten.sub.Tensor
    -> ONNX Add / Sub on float16). PyTorch rounds the Add result to fp16 (spacing 1.0 at
    1024), losing the fraction; ORT CPU has no fp16 Add/Sub kernels, inserts Casts to fp32
    and removes the fp32->fp16->fp32 pair between Add and Sub, so the fraction survives."""

    KIND = "runtime semantics"
    ATEN_OP = "aten.sub.Tensor (after aten.add.Tensor, float16)"
    FX_NODE = "sub"

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x):
        h = self.fc1(x).half()
        h = (h + 1024.0) - 1024.0  # fp16 "quantize to integer" via rounding
        return self.fc2(h.float())

    @classmethod
    def example_inputs(cls):
        g = torch.Generator().manual_seed(3)
        return (torch.randn(4, 8, generator=g),)


class NanIgnoringMax(nn.Module):
    """Runtime semantics: aten.amax -> ONNX ReduceMax. torch.amax propagates NaN (log of a
    negative feature), onnxruntime's ReduceMax skips NaN and returns the max of the finite
    values; after nan_to_num torch has 0 where ORT has a finite maximum."""

    KIND = "runtime semantics"
    ATEN_OP = "aten.amax.default"
    FX_NODE = "amax"

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(6, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = torch.log(self.proj(x))  # NaN where proj(x) < 0
        m = torch.amax(h, dim=1)  # max over time, (B, 8)
        m = torch.nan_to_num(m, nan=0.0)
        return self.head(m)

    @classmethod
    def example_inputs(cls):
        g = torch.Generator().manual_seed(4)
        return (torch.randn(2, 5, 6, generator=g),)


class Atan2ZeroY(nn.Module):
    """Decomposed op (converter defect inside it): aten.atan2 is lowered to
    Div/Atan/Greater/Add/Sub/Where/Less/Where/IsNaN/Where. For y == +0 and x < 0 the
    decomposition tests Greater(y, 0) and picks atan(y/x) - pi = -pi, whereas torch.atan2
    returns +pi (error 2*pi). y = relu(...) produces exact zeros."""

    KIND = "decomposed op"
    ATEN_OP = "aten.atan2.default"
    FX_NODE = "atan2"

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fy = nn.Linear(4, 8)
        self.fx = nn.Linear(4, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        y = torch.relu(self.fy(x))
        xx = self.fx(x)
        angle = torch.atan2(y, xx)
        return self.head(angle)

    @classmethod
    def example_inputs(cls):
        g = torch.Generator().manual_seed(5)
        return (torch.randn(4, 4, generator=g),)


class SdpaFullyMaskedRow(nn.Module):
    """Decomposed op: aten.scaled_dot_product_attention with a boolean attn_mask whose
    row is all False. PyTorch returns zeros for that query; the ONNX lowering
    (Reshape/Transpose/Mul/Where/MatMul/Add/Softmax/IsNaN/Where/MatMul) fills masked
    scores with float32 min (-3.4e38) instead of -inf, so Softmax yields a uniform
    distribution (mean of V) and the IsNaN guard never fires."""

    KIND = "decomposed op"
    ATEN_OP = "aten.scaled_dot_product_attention.default"
    FX_NODE = "scaled_dot_product_attention"

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.d, self.h = 8, 2
        self.qkv = nn.Linear(self.d, 3 * self.d)
        self.out = nn.Linear(self.d, self.d)

    def forward(self, x, mask):
        b, t, _ = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q, k, v = (z.reshape(b, t, self.h, self.d // self.h).transpose(1, 2) for z in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(a.transpose(1, 2).reshape(b, t, self.d))

    @classmethod
    def example_inputs(cls):
        g = torch.Generator().manual_seed(6)
        x = torch.randn(1, 4, 8, generator=g)
        mask = torch.tensor(
            [[True, True, False, False],
             [False, False, False, False],  # fully masked query row
             [True, True, True, False],
             [True, True, True, True]]
        )
        return (x, mask)


class TransformerFastPath(nn.Module):
    """Capture: nn.TransformerEncoder(enable_nested_tensor=True) in eval mode under
    torch.no_grad() with src_key_padding_mask takes the eager "fast path" (nested tensors;
    padded positions come out as exactly 0). torch.export traces the regular path
    (aten.scaled_dot_product_attention etc.) whose padded positions are ordinary values; the
    ONNX model matches the exported program, eager differs. Run eager under no_grad()."""

    KIND = "capture"
    ATEN_OP = "nn.TransformerEncoder fast path (torch._transformer_encoder_layer_fwd / nested tensor)"
    FX_NODE = None

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Linear(6, 8)
        layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x, pad_mask):
        h = self.inp(x)
        h = self.enc(h, src_key_padding_mask=pad_mask)
        return self.head(h)

    @classmethod
    def example_inputs(cls):
        g = torch.Generator().manual_seed(7)
        x = torch.randn(2, 5, 6, generator=g)
        pad = torch.tensor([[False] * 5, [False, False, False, True, True]])
        return (x, pad)


class ConvBnCancellation(nn.Module):
    """Optimizer: a Conv whose input pairs cancel (+1e6 + a, -1e6 + b) with integer weights
    is exact in float32, and BatchNorm then scales the small result. Folding BatchNorm's
    irrational scale 1/sqrt(var + eps) into the Conv weights (the exporter's
    FuseBatchNormIntoConv rewrite by default; onnxruntime's ConvBNFusion, level basic, for an
    ``optimize=False`` export) rounds each +-1e6 product before the sum cancels: errors of
    0.06 on values of about 3. Unfused, onnxruntime agrees with PyTorch exactly."""

    KIND = "optimizer"
    ATEN_OP = "aten.conv2d + aten._native_batch_norm_legit_no_training (folded)"
    FX_NODE = "_native_batch_norm_legit_no_training"

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 2, kernel_size=(1, 2), stride=(1, 2))
        self.bn = nn.BatchNorm2d(2)
        self.head = nn.Conv2d(2, 2, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[[[1.0, 1.0]]], [[[1.0, 2.0]]]]))
            self.conv.bias.zero_()
            self.bn.running_var.fill_(2.0)
            self.bn.running_mean.fill_(0.5)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))))

    @classmethod
    def example_inputs(cls):
        g = torch.Generator().manual_seed(0)
        small = torch.randint(-8, 9, (1, 1, 4, 8), generator=g).float()
        sign = torch.tensor([1.0, -1.0]).repeat(4)
        return (small + 1e6 * sign,)


SAMPLES = {
    cls.__name__: cls
    for cls in (
        AvgPoolDivisorOverride,
        ScatterReduceMean,
        Fp16RoundingElided,
        NanIgnoringMax,
        Atan2ZeroY,
        SdpaFullyMaskedRow,
        TransformerFastPath,
        ConvBnCancellation,
    )
}

__all__ = list(SAMPLES) + ["SAMPLES"]
