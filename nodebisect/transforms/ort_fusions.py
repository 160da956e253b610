"""onnxruntime's transformer optimizer, unmodified: ``onnxruntime.transformers.optimizer.optimize_model``.

Knob: the ``FusionOptions`` flags on by default for the model type
(``enable_gelu``, ``enable_layer_norm``, ``enable_attention``...), named as
FusionOptions names them; onnxruntime's own graph optimizations stay off
(``opt_level=0``), so only the Python fusions are bisected.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import onnx


def _options(model_type: str) -> Any:
    from onnxruntime.transformers.fusion_options import FusionOptions

    return FusionOptions(model_type)


def items(reference: onnx.ModelProto, model_type: str) -> list[str]:
    opts = _options(model_type)
    return [k for k, v in vars(opts).items() if k.startswith("enable_") and v is True and k != "enable_shape_inference"]


def apply(reference: onnx.ModelProto, disabled: frozenset[str], feeds: dict[str, Any], spec: Any) -> onnx.ModelProto:
    from onnxruntime.transformers.optimizer import optimize_model

    opts = _options(spec.model_type)
    for flag in disabled:
        setattr(opts, flag, False)
    quiet = logging.getLogger("onnxruntime.transformers")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory(prefix="nodebisect-ortfuse-") as tmp:
            src = Path(tmp) / "reference.onnx"
            onnx.save(reference, str(src))
            optimized = optimize_model(str(src), model_type=spec.model_type, optimization_options=opts, opt_level=0)
            return optimized.model
    finally:
        quiet.setLevel(level)


def knob_kwargs(disabled: list[str], reference: onnx.ModelProto, spec: Any) -> dict[str, Any]:
    return {flag: False for flag in disabled}
