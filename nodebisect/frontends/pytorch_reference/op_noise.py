"""How far PyTorch and onnxruntime each are from the culprit op's exact answer on the same inputs.

The float64 oracle (``frontends.oracle``) gives each value's noise through the
whole program: it includes the rounding of everything upstream. That is the right
scale for drift a node *inherits*, but not for a node that is wrong on PyTorch's
own inputs: ``torch.remainder(h, 0.1)`` with ``h ~ 1e6`` inherits ~0.03 of noise
from ``h``'s float32 rounding, yet PyTorch's fmod is exact on the float32 ``h`` it
is given, and the ONNX lowering (``h - floor(h / 0.1) * 0.1``) is off by 0.03 on
that same ``h``. Measured on the op alone (float64 evaluation of the FX node on
PyTorch's own float32 inputs), PyTorch's error is zero and onnxruntime's is not:
a conversion defect, not two roundings of one function (LayerNorm over rows with
a large mean, where both are about equally far from exact).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from nodebisect.frontends.pytorch_reference.decomposition import lifted_tensor
from nodebisect.frontends.pytorch_reference.float64 import FLOATS, float64_arguments
from nodebisect.values.compare import agreeing, default_tolerance
from nodebisect.values.noise import element_ratio


def op_noise(program: Any, fx_name: str, values: dict[str, np.ndarray], onnx_value: np.ndarray | None) -> dict[str, float]:
    """{"torch", "onnxruntime", "ulp", "element_ratio"}: each side's max distance from the op's exact answer ({} if unknown).

    ``values`` holds PyTorch's captured values (by FX name), ``onnx_value`` the
    culprit's onnxruntime value computed from those same inputs (the isolated run).
    The exact answer is the FX node evaluated in float64 on its float32 inputs, with
    its Python scalars as float32 (the precision both sides use for them). "ulp" is
    one float32 ulp of the answer's largest magnitude, a floor for "as close".
    """
    if program is None or onnx_value is None or fx_name not in values:
        return {}
    node = next((n for n in program.graph.nodes if n.name == fx_name and n.op == "call_function"), None)
    if node is None:
        return {}
    try:
        exact = _exact(program, node, values)
    except Exception:  # noqa: BLE001 - a refinement only; without it the conversion verdict stands
        return {}
    if exact is None or exact.shape != onnx_value.shape or exact.shape != values[fx_name].shape:
        return {}
    finite = np.isfinite(exact) & np.isfinite(onnx_value) & np.isfinite(values[fx_name])
    if not finite.any():
        return {}
    e = exact[finite]
    torch_value = values[fx_name]
    outside = ~agreeing(onnx_value, torch_value, default_tolerance(str(torch_value.dtype)))
    return {
        "torch": float(np.abs(torch_value[finite].astype(np.float64) - e).max()),
        "onnxruntime": float(np.abs(onnx_value[finite].astype(np.float64) - e).max()),
        "ulp": float(np.spacing(np.float32(np.abs(e).max()))),
        # Element by element (values.noise, issue #22.1): a noisy element excuses no exact neighbour.
        "element_ratio": element_ratio(onnx_value, torch_value, exact, outside, float(np.finfo(np.float32).eps)),
    }


def _exact(program: Any, node: torch.fx.Node, values: dict[str, np.ndarray]) -> np.ndarray | None:
    """The FX node's output in float64 on PyTorch's own inputs (None when it is not one floating tensor)."""

    def materialise(arg: Any) -> Any:
        if isinstance(arg, torch.fx.Node):
            value = values.get(arg.name)
            if value is None:
                value = lifted_tensor(program, arg.name)
            if value is None:
                raise KeyError(arg.name)
            tensor = torch.from_numpy(np.array(value))
            return tensor.double() if tensor.dtype in FLOATS else tensor
        return arg

    args, kwargs = float64_arguments(node)
    args = torch.fx.node.map_aggregate(args, materialise)
    kwargs = torch.fx.node.map_aggregate(kwargs, materialise)
    with torch.no_grad():
        out = node.target(*args, **kwargs)
    if not isinstance(out, torch.Tensor) or out.dtype != torch.float64:
        return None
    return out.detach().cpu().numpy()
