"""The reference's questions answered from the decomposed ExportedProgram (FX nodes by name)."""

from __future__ import annotations

from typing import Any

import numpy as np

from nodebisect.frontends.pytorch_reference.decomposition import lifted_tensor, program_tensor, torch_intermediates
from nodebisect.values.graphmap import user_frame
from nodebisect.records import FrameworkRef
from nodebisect.reference import RefOp


def fx_node(program: Any, name: str) -> Any:
    """The call_function FX node ``name`` of ``program`` (None for inputs, outputs, unknown names)."""
    if program is None or not name:
        return None
    return next((n for n in program.graph.nodes if n.name == name and n.op == "call_function"), None)


def describe(program: Any, fx_name: str) -> FrameworkRef:
    """The framework side of ``fx_name``, read from the FX node itself.

    The same fields the exporter writes onto its ONNX nodes (``graphmap.framework_ref``
    reads them back): target, the innermost module of ``nn_module_stack``, the stack
    trace and its user frame. Used for a carrier the exporter left without metadata
    (a Cast its optimizer inserted) and for culprits before ONNX exists (capture,
    decomposition). ``program`` None (the TorchScript path) or an unknown name gives
    the FX name alone.
    """
    node = next((n for n in program.graph.nodes if n.name == fx_name), None) if program is not None and fx_name else None
    if node is None or node.op != "call_function":
        return FrameworkRef(fx_node=fx_name)
    ref = FrameworkRef(target=str(node.target).replace("torch.ops.", ""), fx_node=fx_name)
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        path, kind = list(stack.values())[-1]
        ref.module = str(path)
        ref.module_type = kind if isinstance(kind, str) else f"{kind.__module__}.{kind.__qualname__}"
    ref.stack_trace = node.meta.get("stack_trace", "") or ""
    ref.source, ref.code = user_frame(ref.stack_trace)
    return ref


def ref_op(node: Any) -> RefOp:
    """An FX call as a ``RefOp``: its aten target, its FX arguments, its schema (None off aten)."""
    target = str(node.target).replace("torch.ops.", "")
    return RefOp(name=node.name, target=target, args=tuple(node.args), kwargs=dict(node.kwargs), schema=_schema_of(target))


def all_ops(program: Any) -> dict[str, RefOp]:
    if program is None:
        return {}
    return {n.name: ref_op(n) for n in program.graph.nodes if n.op == "call_function"}


def parameter(program: Any, name: str) -> np.ndarray | None:
    """A weight, buffer or constant by placeholder name or by FQN (the exporter's initializer names)."""
    if program is None:
        return None
    value = lifted_tensor(program, name)
    if value is not None:
        return value
    tensor = program_tensor(program, name)
    return tensor.detach().cpu().numpy() if tensor is not None else None


def intermediates(program: Any, fx_name: str, values: dict[str, np.ndarray]) -> list[np.ndarray]:
    """PyTorch's own decomposition of the op behind ``fx_name``, run on its captured inputs (and weights)."""
    node = fx_node(program, fx_name)
    if node is None:
        return []
    reference = dict(values)
    for arg in node.all_input_nodes:  # weights are not among the captured activations
        if arg.name not in reference and (value := lifted_tensor(program, arg.name)) is not None:
            reference[arg.name] = value
    return torch_intermediates(node, reference)


def _schema_of(target: str) -> Any:
    """The schema of ``aten.op.overload`` (``torch.ops.aten.op.overload._schema``), or None."""
    parts = target.split(".")
    if len(parts) != 3 or parts[0] != "aten":
        return None
    import torch

    try:
        return getattr(getattr(torch.ops.aten, parts[1]), parts[2])._schema
    except (AttributeError, RuntimeError):
        return None
