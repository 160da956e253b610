"""The exported program's tensors and PyTorch's own decomposition of one of its ops.

``torch_intermediates`` runs an aten op decomposed into core aten ops and keeps every
intermediate: the diagnosis (``diagnose.decomposition``) walks an ONNX lowering back
to where it leaves them. ``lifted_tensor`` / ``program_tensor`` read the program's
weights, buffers and constants, which the captured activations do not hold.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.fx


def torch_intermediates(fx_node: torch.fx.Node, reference: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run ``fx_node``'s aten op decomposed into core aten ops; return every intermediate."""
    from torch._decomp import core_aten_decompositions
    from torch.fx.experimental.proxy_tensor import make_fx

    tensors: list[torch.Tensor] = []

    def materialise(arg: Any) -> Any:
        if isinstance(arg, torch.fx.Node):
            if arg.name not in reference:
                raise KeyError(arg.name)
            tensors.append(torch.from_numpy(np.array(reference[arg.name])))
            return ("__tensor__", len(tensors) - 1)
        return arg

    args = torch.fx.node.map_aggregate(fx_node.args, materialise)
    kwargs = torch.fx.node.map_aggregate(fx_node.kwargs, materialise)

    def rebuild(obj: Any, flat: tuple[torch.Tensor, ...]) -> Any:
        if isinstance(obj, tuple) and len(obj) == 2 and obj[0] == "__tensor__":
            return flat[obj[1]]
        if isinstance(obj, (list, tuple)):
            return type(obj)(rebuild(o, flat) for o in obj)
        if isinstance(obj, dict):
            return {k: rebuild(v, flat) for k, v in obj.items()}
        return obj

    target = fx_node.target

    def fn(*flat: torch.Tensor) -> Any:
        return target(*rebuild(args, flat), **rebuild(kwargs, flat))

    gm = make_fx(fn, decomposition_table=core_aten_decompositions())(*tensors)
    found: list[np.ndarray] = []

    class _Rec(torch.fx.Interpreter):
        def run_node(self, n: torch.fx.Node) -> Any:
            out = super().run_node(n)
            if n.op == "call_function" and isinstance(out, torch.Tensor) and out.dtype != torch.bfloat16:
                found.append(out.detach().contiguous().numpy())
            return out

    with torch.no_grad():
        _Rec(gm).run(*tensors)
    return found


def lifted_tensor(program: Any, placeholder: str) -> np.ndarray | None:
    """A parameter, buffer or constant of ``program`` by its placeholder name.

    Capture runs the unlifted module, where weights are attributes rather than
    inputs, so ops taking a weight (linear, conv, layer_norm) would otherwise
    have no decomposition to compare with.
    """
    sig = program.graph_signature
    fqn = (
        sig.inputs_to_parameters.get(placeholder)
        or sig.inputs_to_buffers.get(placeholder)
        or sig.inputs_to_lifted_tensor_constants.get(placeholder)
    )
    tensor = program_tensor(program, fqn) if fqn is not None else None
    if tensor is None or tensor.dtype == torch.bfloat16:
        return None
    return tensor.detach().cpu().contiguous().numpy()


def program_tensor(program: Any, fqn: str) -> torch.Tensor | None:
    """The program's parameter, buffer or constant named ``fqn`` (None if it holds no such tensor)."""
    tensor = program.state_dict.get(fqn)
    if tensor is None:
        tensor = program.constants.get(fqn)
    return tensor if isinstance(tensor, torch.Tensor) else None
