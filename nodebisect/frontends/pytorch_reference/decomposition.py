"""The exported program's tensors and PyTorch's own decomposition of one of its ops.

``torch_intermediates`` runs an aten op decomposed into core aten ops and keeps every
intermediate: the diagnosis (``diagnose.decomposition``) walks an ONNX lowering back
to where it leaves them. ``float64_intermediates`` does the same for one call the
TorchScript exporter traced, which is not decomposed at all (``aten::gelu`` whole):
as far as PyTorch's decompositions go, in float64. ``lifted_tensor`` /
``program_tensor`` read the program's weights, buffers and constants, which the
captured activations do not hold.
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


def float64_intermediates(op: Any, args: list[Any], kwargs: dict[str, Any]) -> list[np.ndarray]:
    """Every intermediate of aten ``op`` on ``args``, decomposed as far as PyTorch's decompositions go.

    The decomposition a correct lowering of several ONNX nodes goes through: the
    TorchScript exporter writes ``gelu(x, approximate="tanh")`` out as nine nodes,
    and ``torch._refs`` writes the same formula, while the core-aten table keeps
    ``gelu`` whole (it is a core op). So every registered decomposition applies,
    the core table where that one does not trace. Floating tensors run in float64,
    Python floats as float32 holds them when the call computes in a lower precision
    (the lowering's constants are float32), and each floating intermediate comes back
    rounded to the call's working dtype, so it compares under that dtype's tolerance.

    Each reciprocal PyTorch takes (``rsqrt``, ``reciprocal``) also gives the value before
    it: a lowering may divide by ``sqrt(var + eps)`` where PyTorch multiplies by
    ``rsqrt(var + eps)`` (``layer_norm``), and its Sqrt is then right although PyTorch
    never holds that value.

    Returns:
        the intermediates in execution order (the op's outputs among them); [] when
        the call cannot be decomposed here.
    """
    from torch._decomp import core_aten_decompositions, decomposition_table

    from nodebisect.frontends.pytorch_reference.float64 import FLOATS, as_float32, promote

    tensors: list[torch.Tensor] = []
    working = [None]

    def lift(arg: Any) -> Any:
        if isinstance(arg, torch.Tensor):
            if arg.dtype in FLOATS and working[0] is None:
                working[0] = arg.dtype
            tensors.append(arg.double() if arg.dtype in FLOATS else arg)
            return ("__tensor__", len(tensors) - 1)
        if isinstance(arg, (list, tuple)):
            return type(arg)(lift(a) for a in arg)
        return promote(arg)

    lifted = [lift(a) for a in args]
    named = {k: lift(v) for k, v in kwargs.items()}
    if working[0] is not None:
        lifted = [as_float32(a) for a in lifted]
        named = {k: as_float32(v) for k, v in named.items()}

    def fn(*flat: torch.Tensor) -> Any:
        return op(*_rebuild(lifted, flat), **_rebuild(named, flat))

    for table in (decomposition_table, core_aten_decompositions()):
        try:
            found = _run_decomposed(fn, tensors, table)
        except Exception:  # noqa: BLE001 - a table that does not trace this op: the next one
            continue
        return [_rounded(t, working[0]) for t in found]
    return []


def _rebuild(obj: Any, flat: tuple[torch.Tensor, ...]) -> Any:
    if isinstance(obj, tuple) and len(obj) == 2 and obj[0] == "__tensor__":
        return flat[obj[1]]
    if isinstance(obj, (list, tuple)):
        return type(obj)(_rebuild(o, flat) for o in obj)
    if isinstance(obj, dict):
        return {k: _rebuild(v, flat) for k, v in obj.items()}
    return obj


def _run_decomposed(fn: Any, tensors: list[torch.Tensor], table: Any) -> list[torch.Tensor]:
    """``fn`` run with ``table``'s decompositions applied as deep as they go; every leaf op's tensor outputs, in order.

    A dispatch mode rather than ``make_fx``: the same leaf ops, without tracing a graph
    first, and without importing torch._dynamo and torch._inductor (seconds on the first
    use), which the TorchScript path otherwise never needs.
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    found: list[torch.Tensor] = []

    class _Decomposing(TorchDispatchMode):
        @classmethod
        def _should_skip_dynamo(cls) -> bool:
            return False  # nothing is compiled in here: no torch._dynamo to import (seconds) to keep it out

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            decomposition = table.get(func)
            if decomposition is not None:
                with self:  # the ops it calls are decomposed in turn
                    out = decomposition(*args, **kwargs)
                if out is not NotImplemented:
                    return out
            out = func(*args, **kwargs)
            found.extend(t for t in (out if isinstance(out, (list, tuple)) else [out]) if isinstance(t, torch.Tensor))
            if func.__name__.split(".")[0] in ("rsqrt", "reciprocal") and isinstance(out, torch.Tensor):
                found.append(1 / out)  # the value before the reciprocal, which a lowering may divide by
            return out

    with torch.no_grad(), _Decomposing():
        fn(*tensors)
    return found


def _rounded(tensor: torch.Tensor, working: torch.dtype | None) -> np.ndarray:
    """A float64 intermediate as the call's working dtype holds it (bfloat16 widened to float32 for numpy)."""
    t = tensor.detach()
    if working is not None and t.dtype == torch.float64:
        t = t.to(working)
    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.contiguous().numpy().copy()


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
