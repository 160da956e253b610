"""Module scopes of TorchScript-exported node names, and the hooked activations mapped onto them.

The TorchScript exporter names each node after the module scope it was traced
in (``/encoder/layer.0/attn/q/MatMul``). ``ScopeResolver`` turns those scopes
back into module paths; ``map_activations`` maps each hooked submodule output
(``capture.hook_modules``) to the ONNX value that carries it: the value produced
inside the module's scope and read outside it (or a graph output), with the
same shape and dtype, the closest one where several fit. Function-level values
(``refs``) then fill the values no module output reaches.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch

from nodebisect.frontends.capture import Activations, Hooked, ModuleCall, to_numpy
from nodebisect.records import FrameworkRef

# Below this share of hooked modules finding their output, the notes warn that
# the search can only name wide spans of the graph.
LOW_COVERAGE = 0.5
UNMAPPED_SHOWN = 20

# ONNX ops that lower one torch op, for FrameworkRef.target when the module
# type says nothing more precise.
OP_TARGETS = {
    "Conv": "aten.convolution",
    "ConvTranspose": "aten.convolution",
    "LayerNormalization": "aten.layer_norm",
    "BatchNormalization": "aten.batch_norm",
    "Softmax": "aten.softmax",
    "LogSoftmax": "aten.log_softmax",
    "MatMul": "aten.matmul",
    "Gemm": "aten.linear",
    "Relu": "aten.relu",
    "Sigmoid": "aten.sigmoid",
    "Tanh": "aten.tanh",
    "Erf": "aten.erf",
    "Gelu": "aten.gelu",
    "Add": "aten.add",
    "Sub": "aten.sub",
    "Mul": "aten.mul",
    "Div": "aten.div",
    "Pow": "aten.pow",
    "Sqrt": "aten.sqrt",
    "ReduceMean": "aten.mean",
    "Gather": "aten.index_select",
    "MaxPool": "aten.max_pool2d",
    "AveragePool": "aten.avg_pool2d",
    "GlobalAveragePool": "aten.adaptive_avg_pool2d",
    "Concat": "aten.cat",
    "Where": "aten.where",
    "BitShift": "aten.bitwise_right_shift",
}
# Leaf module classes whose own nodes all lower one torch op.
MODULE_TARGETS = {
    "Linear": "aten.linear",
    "Conv1d": "aten.convolution",
    "Conv2d": "aten.convolution",
    "Conv3d": "aten.convolution",
    "LayerNorm": "aten.layer_norm",
    "BatchNorm1d": "aten.batch_norm",
    "BatchNorm2d": "aten.batch_norm",
    "GELU": "aten.gelu",
    "Softmax": "aten.softmax",
    "Embedding": "aten.embedding",
    "ReLU": "aten.relu",
    "SiLU": "aten.silu",
}
# The exporter folds an eval-mode BatchNorm into the Conv before it; the folded
# Conv's output is then the BatchNorm's output, not the Conv module's.
_FOLDED_INTO = {"BatchNorm1d": ("Conv",), "BatchNorm2d": ("Conv",), "BatchNorm3d": ("Conv",)}

_CALL_SUFFIX = re.compile(r"^(.*)_(\d+)$")


# -- scopes ----------------------------------------------------------------------------


def node_scope(name: str) -> str | None:
    """``/enc/layer.0/MatMul`` -> ``/enc/layer.0``; ``/Add`` -> ``""`` (the root); unscoped -> None."""
    if not name.startswith("/"):
        return None
    return name.rsplit("/", 1)[0]


class ScopeResolver:
    """Scope strings -> dotted module paths.

    A scope segment is a module's name relative to its nearest non-container
    ancestor (``layers.0`` under the root for a ModuleList item, ``blocks.0.0``
    inside nested Sequentials, a ModuleDict key alone), with ``_N`` appended for
    the N-th extra call of a reused module. So a segment resolves to the
    shortest descendant of the current module whose path ends with it.
    """

    def __init__(self, paths: list[str]) -> None:
        self.paths = [p for p in paths if p]
        self.cache: dict[str, str | None] = {"": ""}

    def resolve(self, scope: str) -> str | None:
        if scope in self.cache:
            return self.cache[scope]
        parent_scope, _, segment = scope.rpartition("/")
        parent = self.resolve(parent_scope)
        found = None
        if parent is not None:
            found = self._child(parent, segment)
            if found is None:
                m = _CALL_SUFFIX.match(segment)
                if m:
                    found = self._child(parent, m.group(1))
        self.cache[scope] = found
        return found

    def _child(self, parent: str, segment: str) -> str | None:
        prefix = f"{parent}." if parent else ""
        exact = prefix + segment
        if exact in self.paths:
            return exact
        hits = [p for p in self.paths if p.startswith(prefix) and (p == segment or p.endswith("." + segment))]
        return min(hits, key=lambda p: p.count(".")) if hits else None


# -- mapping ---------------------------------------------------------------------------


@dataclass
class _Graph:
    names: list[str]  # node names as build_graph_map keys them
    scopes: list[str | None]
    producer: dict[str, int]
    consumers: dict[str, list[int]]
    outputs: list[str]
    types: dict[str, tuple[Any, list[int | None] | None]]


def _index(model: onnx.ModelProto) -> _Graph:
    from nodebisect.onnxgraph import node_keys, subgraph_inputs, value_types

    names: list[str] = []
    scopes: list[str | None] = []
    producer: dict[str, int] = {}
    consumers: dict[str, list[int]] = {}
    for idx, (name, node) in enumerate(node_keys(model)):  # the same keys as values.graphmap
        names.append(name)
        scopes.append(node_scope(node.name))
        for o in node.output:
            if o:
                producer[o] = idx
        for x in subgraph_inputs(node):
            consumers.setdefault(x, []).append(idx)
    return _Graph(names, scopes, producer, consumers, [o.name for o in model.graph.output], value_types(model))


def with_types(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with ``value_info`` for its intermediate values (ONNX shape inference).

    The TorchScript exporter writes none; the search cuts sub-models whose
    inputs need a type, and the mapping matches values by dtype and shape.
    Only type annotations are added: no node changes. A model shape inference
    cannot handle (over 2 GB, unknown ops) comes back as it was.
    """
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # noqa: BLE001 - types are a help, not a requirement
        return model


def _inside(scope: str | None, inst: str) -> bool:
    return scope is not None and (scope == inst or scope.startswith(inst + "/"))


def _instances(g: _Graph, resolver: ScopeResolver) -> dict[str, list[str]]:
    """Module path -> its scope instances (one per traced call) in graph order."""
    found: dict[str, list[str]] = {}
    for scope in g.scopes:
        if not scope:
            continue
        parts = scope.split("/")
        for k in range(2, len(parts) + 1):
            inst = "/".join(parts[:k])
            path = resolver.resolve(inst)
            if path is not None and inst not in found.setdefault(path, []):
                found[path].append(inst)
    return found


def _leaving(g: _Graph, inst: str) -> list[str]:
    """Values produced inside scope ``inst`` and read outside it (or graph outputs), in graph order."""
    graph_outputs = set(g.outputs)
    out: list[tuple[int, str]] = []
    for value, idx in g.producer.items():
        if not _inside(g.scopes[idx], inst):
            continue
        readers = g.consumers.get(value, [])
        if value in graph_outputs or any(not _inside(g.scopes[r], inst) for r in readers):
            out.append((idx, value))
    return [v for _i, v in sorted(out)]


def _fits_value(g: _Graph, value: str, arr: np.ndarray) -> bool | None:
    """True / False by inferred dtype and shape; None when inference left them unknown."""
    dtype, dims = g.types.get(value, (None, None))
    if dtype is None and dims is None:
        return None
    if dtype is not None and dtype != arr.dtype:
        return False
    if dims is not None and (len(dims) != arr.ndim or any(d is not None and d != s for d, s in zip(dims, arr.shape))):
        return False
    return True


def map_activations(
    model: onnx.ModelProto,
    module: torch.nn.Module,
    hooked: Hooked,
    notes: list[str],
    feeds: dict[str, np.ndarray] | None = None,
    ort: Any = None,
    functions: Any = None,
) -> tuple[Activations, dict[str, FrameworkRef], dict[str, Any]]:
    """Hooked module outputs -> Activations keyed by ONNX value names, refs per node, coverage.

    ``model`` should carry ``value_info`` (``with_types``) so values match by dtype and shape.

    A module call's output leaf maps to a value leaving its scope instance with
    the same dtype and shape; where several fit, the closest in an onnxruntime
    run of the graph wins (through ``ort``, the run's ``runtime.handle.Ort``, so
    in its child process; None: in this process). The graph outputs map to the
    eager outputs by position. A BatchNorm the exporter folded into the Conv before it has no
    nodes: the Conv's value then carries the BatchNorm's output.

    ``functions`` (``refs.FunctionRefs``) adds a value for each aten
    call's own ONNX value where no module output is mapped, and names the
    traced call (FX-style name, aten target, the user's source line) in the
    refs of the nodes its lowering made, so each call is its own segment.
    """
    from nodebisect.frontends.torchscript.refs import add_function_values, name_calls

    g = _index(model)
    resolver = ScopeResolver(list(hooked.types))
    plans = _plan(g, resolver, hooked)
    ambiguous = sorted({v for _c, _i, cands in plans for c in cands if len(c) > 1 for v in c})
    onnx_values = _ort_values(model, ambiguous, feeds, ort) if ambiguous and feeds is not None else {}
    acts, mapped_paths = _assign(plans, g, model, onnx_values)
    _map_outputs(acts, g, hooked.final, notes)
    added = add_function_values(acts, functions, lambda v, a: _fits_value(g, v, a), notes) if functions is not None else 0
    refs = _refs(model, g, resolver, hooked, module)
    if added:
        name_calls(refs, functions)
    quality = _quality(g, acts, hooked, mapped_paths, notes, functions is not None and added > 0)
    quality["function_values"] = added
    return acts, refs, quality


_Plan = tuple[ModuleCall, "str | None", list[list[str]]]


def _plan(g: _Graph, resolver: ScopeResolver, hooked: Hooked) -> list[_Plan]:
    """Per module call: its scope instance (the k-th call meets the k-th instance) and, per output, the values that fit."""
    instances = _instances(g, resolver)
    call_no: dict[str, int] = {}
    plans: list[_Plan] = []
    for call in hooked.calls:
        k = call_no.get(call.path, 0)
        call_no[call.path] = k + 1
        insts = instances.get(call.path, [])
        inst = insts[k] if k < len(insts) else None
        cands: list[list[str]] = []
        if inst is not None:
            leaving = _leaving(g, inst)
            for arr in call.outputs:
                fits = [v for v in leaving if _fits_value(g, v, arr)]
                cands.append(fits or [v for v in leaving if _fits_value(g, v, arr) is None])
        plans.append((call, inst, cands))
    return plans


def _assign(plans: list[_Plan], g: _Graph, model: onnx.ModelProto, onnx_values: dict[str, np.ndarray]) -> tuple[Activations, set[str]]:
    """Each planned output to one value (the closest where several fit); folded and passthrough modules follow their input."""
    acts = Activations()
    owner: dict[str, str] = {}  # value -> module path whose output it carries
    value_of_tensor: dict[int, str] = {}
    mapped_paths: set[str] = set()
    for call, inst, cands in plans:
        if inst is None:
            folded = _folded(call, g, value_of_tensor, model)
            if folded:
                if not any(o == owner[folded] for v, o in owner.items() if v != folded):
                    mapped_paths.discard(owner[folded])  # the Conv's own output is not compared any more
                _put(acts, folded, call.outputs[0], call.dtypes[0], replace=True)
                owner[folded] = call.path
                mapped_paths.add(call.path)
                value_of_tensor[call.output_ids[0]] = folded
            elif call.passthrough and call.input_ids and call.input_ids[0] in value_of_tensor:
                value_of_tensor[call.output_ids[0]] = value_of_tensor[call.input_ids[0]]
            continue
        taken: set[str] = set()
        for j, (arr, options) in enumerate(zip(call.outputs, cands)):
            value = _closest([v for v in options if v not in taken], arr, onnx_values)
            if not value:
                continue
            taken.add(value)
            if value not in acts.values:
                _put(acts, value, arr, call.dtypes[j])
                owner[value] = call.path
            mapped_paths.add(call.path)
            value_of_tensor[call.output_ids[j]] = value
    return acts, mapped_paths


def _map_outputs(acts: Activations, g: _Graph, final: list[torch.Tensor], notes: list[str]) -> None:
    """The graph outputs carry the eager outputs, by position."""
    for name, tensor in zip(g.outputs, final):
        if name in g.producer:
            _put(acts, name, to_numpy(tensor), str(tensor.dtype).replace("torch.", ""), replace=True)
    if len(final) != len(g.outputs):
        notes.append(
            f"the ONNX graph has {len(g.outputs)} output(s), the eager model returned {len(final)} tensor(s): "
            f"the first {min(len(final), len(g.outputs))} were compared by position"
        )
    acts.outputs = [o if i < len(final) else "" for i, o in enumerate(g.outputs)]


def _quality(g: _Graph, acts: Activations, hooked: Hooked, mapped_paths: set[str], notes: list[str], functions: bool = False) -> dict[str, Any]:
    """How much of the graph found framework values; a note where too little did."""
    hooked_paths = list(dict.fromkeys(c.path for c in hooked.calls))
    unmapped = [p for p in hooked_paths if p not in mapped_paths]
    quality = {
        "onnx_nodes": len(g.names),
        "mapped_values": sum(1 for v in acts.values if v in g.producer),
        "modules_hooked": len(hooked_paths),
        "modules_mapped": len(hooked_paths) - len(unmapped),
        "unmapped_modules": unmapped[:UNMAPPED_SHOWN],
    }
    if not hooked.scriptable:
        notes.append("a TorchScript module takes no forward hooks: only the graph outputs are compared")
    elif hooked_paths and quality["modules_mapped"] / len(hooked_paths) < LOW_COVERAGE and not functions:
        notes.append(
            f"TorchScript exporter: only {quality['modules_mapped']} of {len(hooked_paths)} hooked modules found their output "
            "in the ONNX graph (node names lost their module scopes, or modules were folded away); "
            "the culprit is the span between mapped values, wider than one op; --exporter dynamo maps every op"
        )
    return quality


def _put(acts: Activations, name: str, arr: np.ndarray, dtype: str, replace: bool = False) -> None:
    if name in acts.values and not replace:
        return
    if name not in acts.values:
        acts.order.append(name)
    acts.values[name] = arr
    acts.dtypes[name] = dtype


def _closest(options: list[str], arr: np.ndarray, onnx_values: dict[str, np.ndarray]) -> str:
    if len(options) <= 1:
        return options[0] if options else ""
    scored = []
    for pos, v in enumerate(options):
        got = onnx_values.get(v)
        if got is None or got.shape != arr.shape:
            err = float("inf")
        else:
            diff = np.abs(got.astype(np.float64) - arr.astype(np.float64))
            err = float(np.nanmax(diff)) if diff.size else 0.0
        scored.append((err, -pos, v))  # ties: the last value computed in the scope
    return min(scored)[2]


def _ort_values(model: onnx.ModelProto, values: list[str], feeds: dict[str, np.ndarray], ort: Any) -> dict[str, np.ndarray]:
    """Values of one onnxruntime run (optimizations off), to break ties between same-shape candidates.

    Returns {} when the graph cannot run: the search's own session then reports why.
    """
    from nodebisect.runtime.handle import Ort

    try:
        return (ort or Ort()).runner(model, feeds, opt_level="disabled").run(values)
    except Exception:  # noqa: BLE001 - a tie-break only; ties then go to the last value computed
        return {}


def _folded(call: ModuleCall, g: _Graph, value_of_tensor: dict[int, str], model: onnx.ModelProto) -> str:
    """The value carrying a module the exporter folded into its producer (BatchNorm into Conv), or ""."""
    ops = _FOLDED_INTO.get(call.module_type)
    if not ops or not call.input_ids or not call.outputs or call.passthrough:
        return ""
    value = value_of_tensor.get(call.input_ids[0], "")
    if not value or value not in g.producer:
        return ""
    if model.graph.node[g.producer[value]].op_type not in ops:
        return ""
    return value


def _refs(model: onnx.ModelProto, g: _Graph, resolver: ScopeResolver, hooked: Hooked, module: torch.nn.Module) -> dict[str, FrameworkRef]:
    """FrameworkRef per node: module path from the scope (also the segment key), class, likely torch op."""
    modules = dict(module.named_modules())
    sources: dict[str, tuple[str, str]] = {}
    refs: dict[str, FrameworkRef] = {}
    for idx, node in enumerate(model.graph.node):
        scope = g.scopes[idx]
        path = resolver.resolve(scope) if scope else None
        path = path or ""
        type_name = hooked.types.get(path, "")
        mod = modules.get(path)
        target = MODULE_TARGETS.get(type_name, "") if path and _is_leaf(mod) else ""
        target = target or OP_TARGETS.get(node.op_type, "")
        if path and path not in sources:
            sources[path] = _forward_source(mod)
        source, code = sources.get(path, ("", ""))
        module_type = f"{type(mod).__module__}.{type(mod).__qualname__}" if mod is not None else ""
        refs[g.names[idx]] = FrameworkRef(target=target, fx_node=path, module=path, module_type=module_type, source=source, code=code)
    return refs


def _is_leaf(mod: torch.nn.Module | None) -> bool:
    return mod is not None and not any(True for _ in mod.children())


def _forward_source(mod: torch.nn.Module | None) -> tuple[str, str]:
    """("file.py:line", "def forward(...)") of a user-defined module's forward; empty for torch's own."""
    if mod is None or type(mod).__module__.startswith("torch."):
        return "", ""
    try:
        forward = type(mod).forward
        file = inspect.getsourcefile(forward) or ""
        lines, start = inspect.getsourcelines(forward)
    except (OSError, TypeError):
        return "", ""
    first = next((ln.strip() for ln in lines if ln.strip().startswith("def ")), lines[0].strip() if lines else "")
    return (f"{file}:{start}" if file else "", first)
