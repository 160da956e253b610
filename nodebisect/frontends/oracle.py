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
from nodebisect.frontends.pytorch_reference.float64 import FLOATS, float64_arguments



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
