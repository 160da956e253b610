"""One op in float64 as PyTorch computes it: dtypes promoted, Python scalars as float32 holds them.

The oracle (``frontends.oracle``, every floating value of the program) and the op
alone (``pytorch_reference.op_noise``) promote an FX node's arguments the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

FLOATS = (torch.float32, torch.float16, torch.bfloat16)


def float64_arguments(node: torch.fx.Node) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The node's args and kwargs for a float64 run: dtypes promoted, Python scalars as float32 holds them."""
    rounded = working_precision(node)
    args = tuple(promote(as_float32(v) if rounded else v) for v in node.args)
    kwargs = {k: promote(as_float32(v) if rounded else v) for k, v in node.kwargs.items()}
    return args, kwargs


def working_precision(node: torch.fx.Node) -> bool:
    """Whether the op computes on float32/half tensors, so its Python scalars are float32 to PyTorch."""
    if node.op != "call_function":
        return False
    vals = [a.meta.get("val") for a in node.all_input_nodes] + [node.meta.get("val")]
    return any(isinstance(v, torch.Tensor) and v.dtype in FLOATS for v in vals)


def as_float32(value: Any) -> Any:
    """A top-level Python float as float32 holds it (lists, e.g. scale factors, are left exact)."""
    if isinstance(value, float) and not isinstance(value, bool):
        return float(np.float32(value))
    return value


def promote(value: Any) -> Any:
    if isinstance(value, torch.dtype):
        return torch.float64 if value in FLOATS else value
    if isinstance(value, tuple):
        return tuple(promote(v) for v in value)
    if isinstance(value, list):
        return [promote(v) for v in value]
    if isinstance(value, dict):
        return {k: promote(v) for k, v in value.items()}
    return value
