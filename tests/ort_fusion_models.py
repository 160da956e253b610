"""A small torch model that onnxruntime 1.32's transformer optimizer fuses wrongly (tests/test_ort_fusion_defect.py,
benchmarks/bench_diff_peers.py).

``onnxruntime.transformers.fusion_layernorm.FusionLayerNormalization`` matches
ReduceMean -> Sub -> Pow -> ReduceMean -> Add -> Sqrt -> Div -> Mul -> Add and replaces it by a
LayerNormalization over the last axis without reading the ReduceMeans' axes (its docstring says
"axis=2 or -1"; the code checks neither). A per-feature mean/variance normalization over time
(dim 1 of [batch, time, features], with a learnable affine per feature: a CMVN-like layer, or an
instance norm written for channels-last features) matches the pattern and is fused into a
normalization over the features instead.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx


def time_norm() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """The reference, exported by the dynamo exporter, and its feeds."""
    import torch

    class TimeNorm(torch.nn.Module):
        def __init__(self, feats: int = 16) -> None:
            super().__init__()
            self.proj = torch.nn.Linear(feats, feats)
            self.weight = torch.nn.Parameter(torch.linspace(0.5, 1.5, feats))
            self.bias = torch.nn.Parameter(torch.zeros(feats))

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # [batch, time, features]
            h = self.proj(x)
            mean = h.mean(dim=1, keepdim=True)
            var = (h - mean).pow(2).mean(dim=1, keepdim=True)
            return (h - mean) / torch.sqrt(var + 1e-5) * self.weight + self.bias

    torch.manual_seed(0)
    x = torch.randn(2, 12, 16, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = torch.onnx.export(TimeNorm().eval(), (x,), dynamo=True, verbose=False, external_data=False).model_proto
    return model, {model.graph.input[0].name: x.numpy()}


def bert_fused(model: onnx.ModelProto, folder: str) -> onnx.ModelProto:
    """``optimize_model(model_type="bert", opt_level=0)``: its Python fusions only, as ``--transform ort-transformers:bert``."""
    import logging
    from pathlib import Path

    from onnxruntime.transformers.optimizer import optimize_model

    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    path = Path(folder) / "time_norm.onnx"
    onnx.save(model, str(path))
    return optimize_model(str(path), model_type="bert", opt_level=0).model
