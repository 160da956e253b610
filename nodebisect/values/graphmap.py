"""Map ONNX values to framework activations, and ONNX nodes to framework ops.

The dynamo exporter names an ONNX value after the FX node it carries and writes
``metadata_props`` on every node (``pkg.torch.onnx.fx_node``,
``pkg.torch.onnx.name_scopes``, ``pkg.torch.onnx.stack_trace``, ``namespace``).
Those are the bridge: nodes that share an FX node form that op's *segment*
(e.g. the Softmax inside a decomposed scaled_dot_product_attention), and a value
is *mapped* when a framework activation of the same name and size exists.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import Any

import onnx
from onnx import helper

from nodebisect.frames import source_frame
from nodebisect.records import FrameworkRef
from nodebisect.onnxgraph import node_attributes, node_keys, subgraph_inputs

_FX_NAME_RE = re.compile(r"^%(\S+)\s*:")
_TARGET_RE = re.compile(r"target=(?:torch\.ops\.)?([\w.]+)")
_FRAME_RE = re.compile(r'File "([^"]+)", line (\d+), in (\S+)\n\s*(.*)')


@dataclass
class GraphMap:
    """The ONNX graph seen from the framework side.

    Attributes:
        order: ONNX node names in topological (file) order.
        nodes: node name -> NodeProto.
        refs: node name -> FrameworkRef.
        segment_of: node name -> segment key (the FX node name, or the node itself).
        segments: segment key -> node names in graph order.
        producer: value name -> producing node name.
        consumers: value name -> consuming node names.
        mapped: ONNX value name -> framework activation name (the comparable values).
        output_map: ONNX graph output -> framework activation name.
    """

    order: list[str] = field(default_factory=list)
    nodes: dict[str, onnx.NodeProto] = field(default_factory=dict)
    refs: dict[str, FrameworkRef] = field(default_factory=dict)
    segment_of: dict[str, str] = field(default_factory=dict)
    segments: dict[str, list[str]] = field(default_factory=dict)
    producer: dict[str, str] = field(default_factory=dict)
    reads: dict[str, set[str]] = field(default_factory=dict)
    consumers: dict[str, list[str]] = field(default_factory=dict)
    mapped: dict[str, str] = field(default_factory=dict)
    output_map: dict[str, str] = field(default_factory=dict)
    graph_inputs: list[str] = field(default_factory=list)
    initializers: set[str] = field(default_factory=set)
    position: dict[str, int] = field(default_factory=dict)
    # Graph walks derived from the fields above, computed once per map (e.g. sign-sensitive values).
    derived: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def probes(self) -> list[str]:
        """Mapped values in topological order of their producers."""
        vals = [v for v in self.mapped if v in self.producer]
        return sorted(vals, key=lambda v: (self.position[self.producer[v]], v))

    def ancestors(self, value: str) -> set[str]:
        """All values ``value`` depends on (not including itself)."""
        seen: set[str] = set()
        stack = [value]
        while stack:
            v = stack.pop()
            node = self.producer.get(v)
            if node is None:
                continue
            for x in self.reads[node]:
                if x not in seen:
                    seen.add(x)
                    stack.append(x)
        return seen

    def cut(self, value: str, depth: int = 0) -> tuple[list[str], list[str]]:
        """The nodes computing ``value`` from its nearest mapped inputs, and those inputs.

        With ``depth=1`` the cut goes one mapped level further up. One walk for the
        isolation window (diagnose) and the teacher-forced segments (search).

        Returns:
            (node names in graph order, boundary values in order of their producers).
        """
        keep: set[str] = set()
        boundary: list[str] = []
        stack = [(self.producer[value], 0)]
        while stack:
            name, level = stack.pop()
            if name in keep:
                continue
            keep.add(name)
            for x in self.reads[name]:
                if x in self.initializers or x not in self.producer:
                    continue
                if x in self.mapped and level >= depth:
                    if x not in boundary:
                        boundary.append(x)
                else:
                    stack.append((self.producer[x], level + (1 if x in self.mapped else 0)))
        boundary = sorted((b for b in boundary if self.producer[b] not in keep), key=lambda v: self.position[self.producer[v]])
        return [n for n in self.order if n in keep], boundary

    def mapped_inputs(self, value: str) -> list[str]:
        """The nearest mapped values upstream of ``value`` (through unmapped values)."""
        found: list[str] = []
        seen: set[str] = set()
        node = self.producer.get(value)
        stack = list(self.reads[node]) if node else []
        while stack:
            v = stack.pop()
            if v in seen:
                continue
            seen.add(v)
            if v in self.mapped and v in self.producer:
                found.append(v)
            elif v in self.producer:
                stack.extend(self.reads[self.producer[v]])
        return sorted(found, key=lambda v: self.position[self.producer[v]])


def framework_ref(node: onnx.NodeProto) -> FrameworkRef:
    """Read the exporter's metadata on one node (missing fields stay empty)."""
    meta = {str(p.key): p.value if isinstance(p.value, str) else str(p.value) for p in node.metadata_props}
    ref = FrameworkRef()
    fx = meta.get("pkg.torch.onnx.fx_node", "")
    m = _FX_NAME_RE.match(fx)
    if m:
        ref.fx_node = m.group(1)
    t = _TARGET_RE.search(fx)
    if t:
        ref.target = t.group(1)
    scopes = _literal_list(meta.get("pkg.torch.onnx.name_scopes", ""))
    if len(scopes) >= 2:
        ref.module = scopes[-2]
    hierarchy = _literal_list(meta.get("pkg.torch.onnx.class_hierarchy", ""))
    if len(hierarchy) >= 2:
        ref.module_type = hierarchy[-2]
    trace = meta.get("pkg.torch.onnx.stack_trace", "")
    ref.stack_trace = trace
    ref.source, ref.code = user_frame(trace)
    return ref


def user_frame(trace: str) -> tuple[str, str]:
    """("file:line", code) of the source frame of a Python stack trace (``frames.source_frame``:
    the user's innermost line, else the model library's, never nodebisect's own wrappers)."""
    pick = source_frame(_FRAME_RE.findall(trace), lambda frame: frame[0])
    if pick is None:
        return "", ""
    file, line, _func, code = pick
    return f"{file}:{line}", code.strip()


def _literal_list(text: str) -> list[str]:
    if not text:
        return []
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return []
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else []


def build_graph_map(
    model: onnx.ModelProto,
    activations: dict[str, Any],
    framework_outputs: list[str],
    refs: dict[str, FrameworkRef] | None = None,
) -> GraphMap:
    """Index the ONNX graph and decide which values can be compared.

    Args:
        model: the ONNX model.
        activations: framework values by FX name (anything with ``.size``).
        framework_outputs: FX names of the program's flat outputs, in order; they
            map the ONNX graph outputs by position, whatever their names.
        refs: FrameworkRef per node name where the ONNX metadata lacks them
            (TorchScript exports); nodes absent from it fall back to metadata.
    """
    gm = GraphMap()
    graph = model.graph
    gm.initializers = {t.name for t in graph.initializer}
    gm.graph_inputs = [i.name for i in graph.input if i.name not in gm.initializers]
    for name, node in node_keys(model):
        gm.position[name] = len(gm.order)
        gm.order.append(name)
        gm.nodes[name] = node
        gm.reads[name] = subgraph_inputs(node)
        ref = refs[name] if refs and name in refs else framework_ref(node)
        gm.refs[name] = ref
        key = ref.fx_node or name
        gm.segment_of[name] = key
        gm.segments.setdefault(key, []).append(name)
        for out in node.output:
            if out:
                gm.producer[out] = name
        for x in gm.reads[name]:
            gm.consumers.setdefault(x, []).append(name)
    for out, fx_name in zip([o.name for o in graph.output], framework_outputs):
        if fx_name and fx_name in activations:
            gm.output_map[out] = fx_name
    for value in gm.producer:
        fx_name = gm.output_map.get(value) or (value if value in activations else "")
        if not fx_name:
            continue
        gm.mapped[value] = fx_name
    _map_renamed_exits(gm, model, activations)
    return gm


def _map_renamed_exits(gm: GraphMap, model: onnx.ModelProto, activations: dict[str, Any]) -> None:
    """Map an FX node's value that lost its name on the way to ONNX.

    The exporter drops identity-like FX nodes (an eval-mode dropout's ``clone``
    after a softmax): the softmax's ONNX output is then named ``val_241``, not
    ``softmax_1``, and a name-only mapping leaves the op without a reference, so a
    fault in it is reported at the next op. When the nodes carrying the FX node's
    metadata hand exactly one value to the rest of the graph, and its static shape
    and element type are the activation's, that value is the FX node's.
    """
    from nodebisect.onnxgraph import value_infos

    taken = set(gm.mapped.values())
    graph_outputs = {o.name for o in model.graph.output}
    types: dict[str, onnx.ValueInfoProto] | None = None
    for key, nodes in gm.segments.items():
        act = activations.get(key)
        if key in taken or act is None or not hasattr(act, "shape"):
            continue
        inside = set(nodes)
        exits = [
            o
            for n in nodes
            for o in gm.nodes[n].output
            if o and (o in graph_outputs or any(c not in inside for c in gm.consumers.get(o, [])))
        ]
        if len(exits) != 1 or exits[0] in gm.mapped:
            continue
        types = types if types is not None else value_infos(model)
        vi = types.get(exits[0])
        if vi is None or not vi.type.HasField("tensor_type"):
            continue
        tt = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim] if tt.HasField("shape") else None
        try:
            same_type = helper.tensor_dtype_to_np_dtype(tt.elem_type) == act.dtype
        except (KeyError, TypeError, ValueError):  # an element type numpy cannot name: leave it unmapped
            same_type = False
        if dims != list(act.shape) or not same_type:
            continue
        gm.mapped[exits[0]] = key


def overlap(gm: GraphMap) -> float:
    """Fraction of ONNX node outputs that found a framework value (ownership check)."""
    produced = len(gm.producer)
    return len(gm.mapped) / produced if produced else 0.0
