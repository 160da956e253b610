"""Reference activations from the framework side.

Two views of the same forward pass:

* FX-node level: an interpreter over the decomposed ExportedProgram whose node
  names became the ONNX value names, recording every node's output.
* ``nn.Module`` level: forward hooks on the eager module, recording each
  submodule's output, used to check that ``torch.export`` itself kept the eager
  behaviour (the ``capture`` stage).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.fx
import torch.utils._pytree as pytree

from nodebisect.errors import BadInputError
from nodebisect.records import FrameworkRef
from nodebisect.reference import Evidence, RefOp, Reference


@dataclass
class Activations(Reference):
    """PyTorch as the reference: captured values by FX name (numpy, on the CPU), and the program that made them.

    ``dtypes`` keeps the torch dtype name (bfloat16 is stored widened to float32,
    since numpy has no bfloat16, but compared with bfloat16 tolerance). With the
    decomposed ``program`` (the dynamo path) the reference also answers what each
    op is, its weights, its float64 answer alone and its own decomposition
    (``frontends.pytorch_reference``); without it (the TorchScript path) it knows
    values only.
    """

    kind: str = "pytorch"
    program: Any = field(default=None, repr=False)
    _ops: dict[str, RefOp] | None = field(default=None, repr=False, compare=False)  # ops(), read once per program
    # Where values go once ``spill_after`` bytes are held in memory ("" = never spill).
    spill_dir: str = ""
    spill_after: int = 0
    in_memory: int = 0
    spilled: int = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        array = to_numpy(tensor)
        if self.spill_dir and self.in_memory + array.nbytes > self.spill_after:
            # Memory-mapped from disk: a big model's activations need not fit in RAM
            # next to the model, and the search reads only the few it compares.
            path = os.path.join(self.spill_dir, f"{len(self.order)}.npy")
            np.save(path, array)
            array = np.load(path, mmap_mode="r")
            self.spilled += array.nbytes
        else:
            self.in_memory += array.nbytes
        self.values[name] = array
        self.dtypes[name] = str(tensor.dtype).replace("torch.", "")
        self.order.append(name)

    # -- the Reference's questions, answered from the program (none without one) --

    def describe(self, name: str) -> FrameworkRef:
        from nodebisect.frontends.pytorch_reference.program import describe

        return describe(self.program, name)

    def op(self, name: str) -> RefOp | None:
        return self.ops().get(name)

    def ops(self) -> dict[str, RefOp]:
        """Every call of the program, read once: the exactness audit asks for one op per candidate node."""
        if self._ops is None:
            from nodebisect.frontends.pytorch_reference.program import all_ops

            self._ops = all_ops(self.program)
        return self._ops

    def parameter(self, name: str) -> np.ndarray | None:
        from nodebisect.frontends.pytorch_reference.program import parameter

        return parameter(self.program, name)

    def op_alone(self, name: str, onnx_value: np.ndarray | None) -> dict[str, float]:
        from nodebisect.frontends.pytorch_reference.op_noise import op_noise

        return op_noise(self.program, name, self.values, onnx_value)

    def intermediates(self, name: str) -> list[np.ndarray]:
        from nodebisect.frontends.pytorch_reference.program import intermediates

        return intermediates(self.program, name, self.values)

    def weight_evidence(self, gm: Any, onnx_model: Any, nodes: list[str]) -> list[Evidence]:
        from nodebisect.frontends.pytorch_reference.weights import weight_evidence

        return weight_evidence(gm, onnx_model, self.program, nodes)


def spilling_activations(budget_bytes: int) -> Activations:
    """Activations that keep ``budget_bytes`` in memory and memory-map the rest from a temp dir."""
    import shutil
    import tempfile
    import weakref

    acts = Activations(spill_dir=tempfile.mkdtemp(prefix="nodebisect-acts-"), spill_after=budget_bytes)
    weakref.finalize(acts, shutil.rmtree, acts.spill_dir, True)
    return acts


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """Detach to a CPU numpy array; bfloat16 widens to float32."""
    t = tensor.detach()
    if t.dtype == torch.bfloat16:
        t = t.float()
    # A copy: a CPU tensor's numpy view would follow later in-place ops of the forward.
    return np.array(t.cpu().numpy(), copy=True)


def flat_user_inputs(program: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
    """Flatten (args, kwargs) in the order the program's placeholders expect."""
    from torch.fx._pytree import tree_flatten_spec

    leaves = pytree.tree_leaves((tuple(args), dict(kwargs)))
    spec = program.call_spec.in_spec
    if spec is not None and spec.num_leaves != len(leaves):
        raise BadInputError(
            f"the model takes {spec.num_leaves} input(s) but {len(leaves)} were given",
            tip="pass inputs in the order of the model's forward arguments",
        )
    try:
        return list(tree_flatten_spec((tuple(args), dict(kwargs)), spec))
    except Exception:  # noqa: BLE001 - fall back to the plain order
        return leaves


class _Recorder(torch.fx.Interpreter):
    def __init__(self, gm: torch.fx.GraphModule, sink: Callable[[str, Any], None]) -> None:
        super().__init__(gm)
        self._sink = sink

    def run_node(self, n: torch.fx.Node) -> Any:
        result = super().run_node(n)
        if n.op in ("call_function", "call_method", "call_module", "placeholder") and isinstance(result, torch.Tensor):
            self._sink(n.name, result)
        return result


def capture_fx(
    program: Any, args: tuple[Any, ...], kwargs: dict[str, Any], device: str = "cpu", memory_budget: int | None = None
) -> Activations:
    """Run the ExportedProgram node by node and keep every tensor it produces.

    With ``memory_budget`` (bytes), values beyond it are spilled to disk and
    memory-mapped back.
    """
    acts = spilling_activations(memory_budget) if memory_budget is not None else Activations()
    acts.program = program  # what the reference knows of its ops comes from the program that made the values
    gm = program.module()
    if device != "cpu":
        gm = gm.to(device)
    flat = [a.to(device) if isinstance(a, torch.Tensor) else a for a in flat_user_inputs(program, args, kwargs)]
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != len(flat):
        raise BadInputError(
            f"the model takes {len(placeholders)} input(s) but {len(flat)} were given",
            tip="pass inputs in the order of the model's forward arguments",
        )
    for node, value in zip(placeholders, flat):
        expected = node.meta.get("val")
        if isinstance(expected, torch.Tensor) and isinstance(value, torch.Tensor):
            if expected.dtype != value.dtype:
                raise BadInputError(
                    f"input {node.name!r} has dtype {str(value.dtype).replace('torch.', '')}, "
                    f"the model was exported with {str(expected.dtype).replace('torch.', '')}",
                    tip="cast the input or re-export the model",
                )
            if _static_shape(expected) and list(expected.shape) != list(value.shape):
                raise BadInputError(
                    f"input {node.name!r} has shape {list(value.shape)}, the model was exported with {list(expected.shape)}",
                    tip="pass inputs of the exported shape, or export with dynamic shapes",
                )
    gm_out = _Recorder(gm, acts.add)
    try:
        with torch.no_grad():
            result = gm_out.run(*flat)
    except AssertionError as exc:
        if "Guard failed" not in str(exc):
            raise
        raise BadInputError(
            f"the inputs break an assumption the exported program was traced with: {str(exc).splitlines()[0][:200]}",
            tip="use inputs of the traced shapes, or a model whose code keeps that dimension dynamic",
        ) from exc
    # The unlifted module may rename inputs (``input`` -> ``input_1``); keep the
    # program's own names too, since FX nodes of the program refer to those.
    try:
        user_inputs = list(program.graph_signature.user_inputs)
    except Exception:  # noqa: BLE001
        user_inputs = []
    for name, value in zip(user_inputs, flat):
        if isinstance(value, torch.Tensor) and name not in acts.values:
            acts.values[name] = to_numpy(value)
            acts.dtypes[name] = str(value.dtype).replace("torch.", "")
    output_node = next(n for n in gm.graph.nodes if n.op == "output")
    out_args = pytree.tree_leaves(output_node.args[0])
    acts.outputs = [a.name if isinstance(a, torch.fx.Node) else "" for a in out_args]
    try:
        from nodebisect.frontends.pytorch_reference.output_paths import leaf_labels

        labels = leaf_labels(program.call_spec.out_spec)
    except Exception:  # noqa: BLE001 - labels are a courtesy: the graph's own names remain
        labels = []
    acts.output_labels = labels if len(labels) == len(acts.outputs) else []
    leaves = [r for r in pytree.tree_leaves(result)]
    for name, leaf in zip(acts.outputs, leaves):
        if name and isinstance(leaf, torch.Tensor) and name not in acts.values:
            acts.add(name, leaf)
    return acts


def _static_shape(t: torch.Tensor) -> bool:
    return all(isinstance(d, int) for d in t.shape)


@dataclass
class ModuleCapture:
    """Outputs of every submodule of an eager forward, in completion order."""

    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    final: list[np.ndarray] = field(default_factory=list)


def capture_modules(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], device: str = "cpu") -> ModuleCapture:
    """Run the eager module with a forward hook on every submodule."""
    cap = ModuleCapture()

    def hook_for(path: str) -> Callable[..., None]:
        def hook(_mod: Any, _inp: Any, out: Any) -> None:
            # Nested tensors (eager fast paths) have no dense value to compare.
            leaves = [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor) and not t.is_nested]
            if leaves and path not in cap.outputs:
                cap.outputs[path] = to_numpy(leaves[0])
                cap.order.append(path)

        return hook

    out = forward_with_hooks(module, args, kwargs, device, lambda path, sub: sub.register_forward_hook(hook_for(path)))
    cap.final = [to_numpy(t) for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
    return cap


def forward_with_hooks(
    module: torch.nn.Module,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    device: str,
    register: Callable[[str, torch.nn.Module], Any],
) -> Any:
    """One no-grad eager forward on ``device`` with ``register(path, submodule)`` -> handle on
    every named submodule (none on a ScriptModule), the handles removed afterwards."""
    if device != "cpu":
        module = module.to(device)
        args = tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in args)
        kwargs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    handles = []
    if not isinstance(module, torch.jit.ScriptModule):
        handles = [register(path, sub) for path, sub in module.named_modules() if path]
    try:
        with torch.no_grad():
            return module(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()


def module_output_nodes(program: Any) -> dict[str, str]:
    """Map each module path to the FX node that most likely holds its output.

    That is the last node (in graph order) recorded inside the module's scope in
    ``nn_module_stack``; for a Linear it is the ``linear`` node itself.
    """
    last: dict[str, str] = {}
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        stack = node.meta.get("nn_module_stack") or {}
        for _key, (path, _type) in stack.items():
            if path:
                last[str(path)] = node.name
    return last


# -- every submodule call (the TorchScript path's reference values) --------------------


@dataclass
class ModuleCall:
    """One forward call of one submodule, as the hooks saw it."""

    path: str
    module_type: str
    outputs: list[np.ndarray]
    dtypes: list[str]
    output_ids: list[int]
    input_ids: list[int]
    passthrough: bool  # returned its input unchanged (Identity, eval Dropout)


@dataclass
class Hooked:
    """Every submodule call of one eager forward, in completion order."""

    calls: list[ModuleCall] = field(default_factory=list)
    final: list[torch.Tensor] = field(default_factory=list)
    types: dict[str, str] = field(default_factory=dict)  # path -> class name
    scriptable: bool = True


def hook_modules(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], device: str = "cpu") -> Hooked:
    """Run the eager module once with a forward hook on every submodule, recording every call.

    Outputs are copied at hook time: a later in-place op must not change what
    the module returned.
    """
    hooked = Hooked()
    alive: list[torch.Tensor] = []  # keeps tensors alive so their ids stay unique during the run

    def tensors(obj: Any) -> list[torch.Tensor]:
        return [t for t in pytree.tree_leaves(obj) if isinstance(t, torch.Tensor) and not t.is_nested]

    def hook_for(path: str, type_name: str) -> Callable[..., None]:
        def hook(_mod: Any, inp: Any, kw: Any, out: Any) -> None:
            outs, ins = tensors(out), tensors((inp, kw))
            alive.extend(outs + ins)
            passthrough = bool(outs and ins) and (
                outs[0] is ins[0] or (outs[0].shape == ins[0].shape and outs[0].dtype == ins[0].dtype and bool(torch.equal(outs[0], ins[0])))
            )
            hooked.calls.append(
                ModuleCall(
                    path=path,
                    module_type=type_name,
                    outputs=[np.array(to_numpy(t), copy=True) for t in outs],
                    dtypes=[str(t.dtype).replace("torch.", "") for t in outs],
                    output_ids=[id(t) for t in outs],
                    input_ids=[id(t) for t in ins],
                    passthrough=passthrough,
                )
            )

        return hook

    hooked.scriptable = not isinstance(module, torch.jit.ScriptModule)
    for path, sub in module.named_modules():
        hooked.types[path] = type(sub).__name__
    out = forward_with_hooks(
        module,
        args,
        kwargs,
        device,
        lambda path, sub: sub.register_forward_hook(hook_for(path, type(sub).__name__), with_kwargs=True),
    )
    hooked.final = [t.detach().cpu() for t in tensors(out)]
    alive.clear()
    return hooked
