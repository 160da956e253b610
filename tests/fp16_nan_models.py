"""Two small torch models, exported by the real dynamo exporter and converted by onnxconverter-common's real
``convert_float_to_float16(keep_io_types=True)``, unmodified: where a float16 candidate does and does not
make NaN on onnxruntime's CPU (tests/test_diff_nan_born.py, benchmarks/bench_diff_peers.py).

onnxruntime's CPU runs most float16 nodes in float32: it casts around ops without a float16
kernel and drops a float16 -> float32 pair between two of them, and a float16-capable node whose
neighbours are all float32 (an "isolated" one) runs in float32 too. A value is really rounded to
float16 only where it enters a chain of float16-capable nodes (Transpose -> Reshape here) or
one reading a float16 initializer (LayerNormalization, Clip).

* ``heads_pooling``: multi-head attentive pooling over time with unnormalised exp weights, the
  heads folded into the batch (``exp(score).transpose(1, 2).reshape(b * heads, 1, t)``). The
  weights (e^-20 and around, under float16's smallest subnormal) are rounded to zero entering
  the Transpose -> Reshape chain; ``bmm(w, h) / w.sum(-1)`` is then 0/0: NaN is born at the Div
  from finite inputs, where float32 is finite.
* ``cum_ln``: asteroid's cumulative layer norm (Conv-TasNet's cgLN: one-pass variance
  ``cumsum(x^2)/n - (cumsum(x)/n)^2``). The converter keeps CumSum in float32 (its default
  op_block_list) and casts its outputs to float16; run as it is, onnxruntime drops that Cast pair
  and the model's output matches. Marking the intermediate values as outputs (Polygraphy's mark
  all, a node-by-node evaluator) keeps the float16 values: the variance cancels below zero and
  Sqrt gives NaN that the model itself never makes.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import onnx


def _exported(module: Any, x: Any) -> tuple[onnx.ModelProto, onnx.ModelProto, dict[str, np.ndarray]]:
    import torch
    from onnxconverter_common import float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = torch.onnx.export(module.eval(), (x,), dynamo=True, verbose=False, external_data=False).model_proto
        candidate = float16.convert_float_to_float16(reference, keep_io_types=True)
    return reference, candidate, {reference.graph.input[0].name: x.numpy()}


def heads_pooling() -> tuple[onnx.ModelProto, onnx.ModelProto, dict[str, np.ndarray]]:
    import torch

    class HeadsPooling(torch.nn.Module):
        def __init__(self, d: int = 16, heads: int = 2) -> None:
            super().__init__()
            self.heads = heads
            self.score = torch.nn.Linear(d, heads)
            self.out = torch.nn.Linear(heads * d, d)
            with torch.no_grad():
                self.score.bias.fill_(-20.0)  # sharp scores: e^-20 and around

        def forward(self, h: torch.Tensor) -> torch.Tensor:  # [batch, time, d]
            b, t, d = h.shape
            w = torch.exp(self.score(h)).transpose(1, 2).reshape(b * self.heads, 1, t)
            hh = h.unsqueeze(1).expand(b, self.heads, t, d).reshape(b * self.heads, t, d)
            pooled = torch.bmm(w, hh) / w.sum(-1, keepdim=True)
            return self.out(pooled.reshape(b, self.heads * d))

    torch.manual_seed(0)
    return _exported(HeadsPooling(), torch.randn(2, 10, 16, generator=torch.Generator().manual_seed(0)))


def cum_ln() -> tuple[onnx.ModelProto, onnx.ModelProto, dict[str, np.ndarray]]:
    import torch

    class CumLN(torch.nn.Module):
        """asteroid.masknn.norms.CumLN's forward, then a 1x1 convolution."""

        def __init__(self, chan: int = 16) -> None:
            super().__init__()
            self.gamma = torch.nn.Parameter(torch.ones(chan))
            self.beta = torch.nn.Parameter(torch.zeros(chan))
            self.conv = torch.nn.Conv1d(chan, chan, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # [batch, channels, length]
            _, chan, spec_len = x.size()
            cum_sum = torch.cumsum(x.sum(1, keepdim=True), dim=-1)
            cum_pow_sum = torch.cumsum(x.pow(2).sum(1, keepdim=True), dim=-1)
            cnt = torch.arange(start=chan, end=chan * (spec_len + 1), step=chan, dtype=x.dtype).view(1, 1, -1)
            cum_mean = cum_sum / cnt
            cum_var = cum_pow_sum / cnt - cum_mean.pow(2)
            normed = (x - cum_mean) / (cum_var + 1e-8).sqrt()
            return self.conv(torch.relu((self.gamma * normed.transpose(1, -1) + self.beta).transpose(1, -1)))

    torch.manual_seed(0)
    return _exported(CumLN(), 10.0 + 0.1 * torch.randn(1, 16, 8, generator=torch.Generator().manual_seed(0)))
