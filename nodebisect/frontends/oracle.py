"""The exported program run once more in float64: each value's exact answer, for its natural noise.

PyTorch's own float32 (or half) error against this oracle is how far a correct
implementation may legitimately be from exact; an ONNX value far beyond that is
a divergence whatever its magnitude (``search.noise``). The program's floating
parameters, inputs and every explicit floating dtype argument (``_to_copy``,
``full``, dtype asserts) are promoted to float64; integers stay as they are.

Python float arguments of a floating op are not promoted but rounded to float32,
the precision PyTorch computes them in (a float32 or half tensor's scalars live
in float32 "opmath"), and the precision of the constants the exporter writes. The
oracle is the exact answer of the function both sides compute, constants and all:
``torch.remainder(h, 0.1)`` at ``|h| ~ 1e6`` moves by 1e7 x the divisor's rounding,
so an oracle dividing by the exact 0.1 disagreed with PyTorch by as much as the
conversion defect did, and the defect was cleared as PyTorch's own noise.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import numpy as np
import torch

from nodebisect.frontends.capture import flat_user_inputs

FLOATS = (torch.float32, torch.float16, torch.bfloat16)


def capture_oracle(program: Any, args: tuple[Any, ...], kwargs: dict[str, Any], names: set[str]) -> dict[str, np.ndarray]:
    """float64 values of the program's FX nodes in ``names`` (floating ones only)."""
    # A copy: the unlifted module shares its parameters with the program and the user's model,
    # and .double() would change them in place.
    with warnings.catch_warnings():  # deep-copying pytree specs warns about torch's own deprecations
        warnings.simplefilter("ignore")
        gm = copy.deepcopy(program.module())
    for node in gm.graph.nodes:
        node.args, node.kwargs = float64_arguments(node)
    gm.recompile()
    gm = gm.double()
    flat = [a.double() if isinstance(a, torch.Tensor) and a.dtype in FLOATS else a for a in flat_user_inputs(program, args, kwargs)]
    out: dict[str, np.ndarray] = {}

    class _Recorder(torch.fx.Interpreter):
        def run_node(self, n: torch.fx.Node) -> Any:
            result = super().run_node(n)
            if n.name in names and isinstance(result, torch.Tensor) and result.dtype == torch.float64:
                out[n.name] = result.detach().cpu().numpy().copy()
            return result

    with torch.no_grad():
        _Recorder(gm).run(*flat)
    return out


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
