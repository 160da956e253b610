"""The TorchScript path's traced calls, as the Reference answers about them: the op, and PyTorch's own decomposition.

A function call between modules whose lowering is several ONNX nodes
(``F.gelu(x, approximate="tanh")`` is nine) has one reference value, its
output, on the last node. When a node in the middle computes something else,
that value is wrong, and without more the diagnosis blames the carrier (the
last Mul). The dynamo path answers ``Reference.op`` / ``Reference.intermediates``
from the decomposed program, and ``diagnose.decomposition`` walks the lowering
back to the first node whose inputs still match PyTorch's intermediates and
whose output matches none. Here the same questions are answered from what the
export recorded (``refs``): each call's schema and arguments as they ran
(``evaluate.Call``), the tensors it read (the values of other calls, the
model's inputs and parameters), and the call run again alone, decomposed, in
float64 (``pytorch_reference.decomposition.float64_intermediates``).

Names are the calls' FX-style names (``gelu``, ``gelu_1``), the ``fx_node`` that
``refs.name_calls`` puts on every node of a lowering; every other name (an ONNX
value, a module path) is answered as before: nothing known.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch

from nodebisect.frontends.capture import Activations
from nodebisect.frontends.torchscript.evaluate import Uid, aten_overload
from nodebisect.frontends.torchscript.refs import FunctionRefs, TracedCall
from nodebisect.reference import RefOp


@dataclass
class TracedCalls(Activations):
    """The hooked and function-level values, and what the TorchScript export recorded of each aten call."""

    functions: FunctionRefs | None = field(default=None, repr=False, compare=False)
    _by_name: dict[str, TracedCall] | None = field(default=None, repr=False, compare=False)

    def op(self, name: str) -> RefOp | None:
        found = super().op(name)
        if found is not None:
            return found
        resolved = self._resolved(name)
        if resolved is None:
            return None
        fn, pos, kw = resolved
        try:
            args, kwargs = tuple(_as_numpy(a) for a in pos), {k: _as_numpy(v) for k, v in kw.items()}
        except (RuntimeError, TypeError):  # a tensor numpy cannot hold
            return None
        return RefOp(name=name, target=str(fn).replace("torch.ops.", ""), args=args, kwargs=kwargs, schema=fn._schema)

    def intermediates(self, name: str) -> list[np.ndarray]:
        """PyTorch's own decomposition of the traced call ``name``, run alone on the values it read, and its result's forms
        (``result_forms``); [] when the call cannot be decomposed."""
        from nodebisect.frontends.pytorch_reference.decomposition import float64_intermediates

        resolved, call = self._resolved(name), self._call(name)
        if resolved is None or call is None:
            return super().intermediates(name)
        found = float64_intermediates(*resolved)
        return found + result_forms([self.functions.values[u] for u in call.outputs if u in self.functions.values]) if found else []

    def _call(self, name: str) -> TracedCall | None:
        if self.functions is None:
            return None
        if self._by_name is None:
            self._by_name = {c.name: c for c in self.functions.calls if c.kind.startswith("aten::")}
        return self._by_name.get(name)

    def _resolved(self, name: str) -> tuple[Any, list[Any], dict[str, Any]] | None:
        """The call's aten overload and its arguments as tensors and data; None when one is not at hand."""
        call = self._call(name)
        recorded = self.functions.arguments.get(call.outputs[0]) if call is not None and call.outputs else None
        if recorded is None:
            return None
        schema, args = recorded
        try:
            return aten_overload(schema, [_argument(self.functions, a) for a in args])
        except Exception:  # noqa: BLE001 - a tensor not kept, an overload this torch lacks: nothing known
            return None


def result_forms(outputs: list[np.ndarray]) -> list[np.ndarray]:
    """The forms of a call's result that a right hand-written lowering holds one node before its end: twice, half, the reciprocal.

    The exporter's symbolic functions write formulas by hand, in their own order:
    ``gelu`` computes ``x * (1 + tanh(...))`` and halves it last, where PyTorch halves
    ``x`` first, so the node before the last holds twice the result, a value
    PyTorch's decomposition never holds. Without these forms that right node "leaves
    the decomposition", and a defect in the last node (a changed constant, Mul
    turned Add) is blamed on it. Only the result's forms, and only these three: a
    factor applied earlier, or any other factor, still leaves PyTorch's path where it
    is applied.
    """
    forms: list[np.ndarray] = []
    with np.errstate(all="ignore"):
        for v in outputs:
            if v.dtype.kind == "f" and v.size:
                forms += [v * 2, v / 2, 1 / v]
    return forms


def _argument(functions: FunctionRefs, arg: Any) -> Any:
    if isinstance(arg, Uid):
        return _tensor(functions, int(arg))
    if isinstance(arg, (list, tuple)):
        return type(arg)(_argument(functions, a) for a in arg)
    return arg


def _tensor(functions: FunctionRefs, uid: int) -> torch.Tensor:
    """A tensor a call read: another call's recorded value, or the model's input or parameter."""
    if uid in functions.values:
        value = torch.from_numpy(np.array(functions.values[uid]))
        dtype = getattr(torch, functions.dtypes.get(uid, ""), None)
        return value.to(dtype) if isinstance(dtype, torch.dtype) else value  # bfloat16 was kept widened
    if uid in functions.inputs:
        return functions.inputs[uid].detach()
    raise LookupError(uid)


def _as_numpy(arg: Any) -> Any:
    if isinstance(arg, torch.Tensor):
        t = arg.detach().cpu()
        return (t.float() if t.dtype == torch.bfloat16 else t).numpy()
    if isinstance(arg, (list, tuple)):
        return type(arg)(_as_numpy(a) for a in arg)
    return arg


def traced_calls(acts: Activations, functions: FunctionRefs) -> TracedCalls:
    """``acts`` (its values, as they are) answering, in addition, about the calls ``functions`` recorded."""
    kept = {f.name: getattr(acts, f.name) for f in fields(Activations) if f.init and not f.name.startswith("_")}
    return TracedCalls(**kept, functions=functions)
