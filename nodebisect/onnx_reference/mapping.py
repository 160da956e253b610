"""Which candidate value is which reference value, past what the transformation tools rename.

By name first: optimizers, float16 converters and quantizers keep the names of the
values they do not remove. Then through what the tools insert: a Cast (float16
conversion with ``keep_io_types``, or around a blocked op) carries its input's value
in another dtype; a QuantizeLinear/DequantizeLinear pair (QDQ) carries its input's
value rounded to the quantization grid. Graph outputs map by position. A candidate
node whose outputs map but whose op, or whose inputs, are not the reference's replaced
a subgraph (a fusion): it is compared at its outputs and names the reference nodes it
replaced. The coverage (how much of the reference the candidate's values reach) says
whether the two models are related at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import onnx

from nodebisect.onnxgraph import node_keys, subgraph_inputs

# Below this fraction of the reference's values reached, or of its names (values, constants,
# nodes) kept, the candidate is not derived from it.
MIN_COVERAGE = 0.3
MIN_SHARED_NAMES = 0.2
# Ops a transformation tool inserts to carry a value unchanged in another type.
_CARRIERS = ("Cast", "CastLike", "Identity")
# A fused node named with more reference nodes than this is listed by its first ones only.
_REPLACED_SHOWN = 12


@dataclass
class Mapping:
    """Candidate value -> reference value, how each was found, and the fusions.

    Attributes:
        to_reference: candidate value name -> reference value name.
        how: candidate value name -> "name" | "output" | "cast" | "qdq".
        replaced: candidate node -> the reference nodes it replaced (a fusion), in graph order.
        ref_producer: reference value -> (node name, op type).
        ref_initializers: the reference's constants by name.
    """

    to_reference: dict[str, str] = field(default_factory=dict)
    how: dict[str, str] = field(default_factory=dict)
    replaced: dict[str, list[str]] = field(default_factory=dict)
    ref_producer: dict[str, tuple[str, str]] = field(default_factory=dict)
    ref_initializers: dict[str, onnx.TensorProto] = field(default_factory=dict)
    ref_nodes: dict[str, onnx.NodeProto] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)


def map_candidate(reference: onnx.ModelProto, candidate: onnx.ModelProto, ref_values: dict[str, Any]) -> Mapping:
    """Map the candidate's node outputs onto the reference's values (``ref_values``: name -> array)."""
    out = Mapping(ref_initializers={t.name: t for t in reference.graph.initializer})
    for name, node in node_keys(reference):
        out.ref_nodes[name] = node
        for o in node.output:
            if o:
                out.ref_producer[o] = (name, node.op_type)
    cand_nodes = list(node_keys(candidate))
    produced = {o for _, n in cand_nodes for o in n.output if o}
    graph_inputs = {i.name for i in candidate.graph.input}

    def take(value: str, ref: str, how: str) -> bool:
        if value in out.to_reference or ref not in ref_values:
            return False
        out.to_reference[value] = ref
        out.how[value] = how
        return True

    for value in sorted(produced):
        if value in out.ref_producer and value in ref_values:
            take(value, value, "name")
    for cand_out, ref_out in zip(candidate.graph.output, reference.graph.output):
        if cand_out.name in produced:
            take(cand_out.name, ref_out.name, "output")
    _through_carriers(cand_nodes, produced | graph_inputs, out, take)
    _fusions(cand_nodes, out, graph_inputs)
    out.stats = _coverage(out, produced, {o.name for o in reference.graph.output})
    ref_names = set(out.ref_producer) | set(out.ref_initializers)
    cand_names = produced | {t.name for t in candidate.graph.initializer}
    out.stats["shared_names"] = round(len(ref_names & cand_names) / len(ref_names), 4) if ref_names else 0.0
    return out


def related(mapping: Mapping) -> bool:
    """Enough of the reference reached, and enough of its names kept, to call the candidate derived from it."""
    return mapping.stats["coverage"] >= MIN_COVERAGE and mapping.stats["shared_names"] >= MIN_SHARED_NAMES


def _through_carriers(cand_nodes: list[tuple[str, onnx.NodeProto]], known: set[str], out: Mapping, take: Any) -> None:
    """Casts and QDQ pairs carry their input's value: map across them, both ways, until nothing changes."""
    producer = {o: n for _, n in cand_nodes for o in n.output if o}
    changed = True
    while changed:
        changed = False
        for _, node in cand_nodes:
            if not node.input or not node.output or not node.output[0]:
                continue
            src, dst = node.input[0], node.output[0]
            if node.op_type in _CARRIERS:
                if src in out.to_reference and src in producer:
                    changed |= take(dst, out.to_reference[src], "cast")
                elif dst in out.to_reference and src in producer:
                    changed |= take(src, out.to_reference[dst], "cast")
            elif node.op_type == "DequantizeLinear":
                quant = producer.get(src)
                if quant is not None and quant.op_type == "QuantizeLinear" and quant.input[0] in out.to_reference:
                    changed |= take(dst, out.to_reference[quant.input[0]], "qdq")


def _fusions(cand_nodes: list[tuple[str, onnx.NodeProto]], out: Mapping, graph_inputs: set[str]) -> None:
    """A candidate node standing for several reference nodes (or another op): name the ones it replaced."""
    ref_reads = {name: subgraph_inputs(node) for name, node in out.ref_nodes.items()}
    for name, node in cand_nodes:
        mapped_outs = [o for o in node.output if o in out.to_reference and out.how[o] in ("name", "output")]
        if not mapped_outs or (node.op_type in _CARRIERS and node.input and node.input[0] in out.to_reference):
            continue
        tied = [i in out.to_reference or i in out.ref_initializers or i in graph_inputs for i in node.input if i]
        if not any(i in out.to_reference or i in out.ref_initializers for i in node.input if i) and not (tied and all(tied)):
            continue  # nothing ties it to the reference but an output's name: no evidence of a fusion
            # (reading only graph inputs the two models share is: an optimizer may leave one node between them)
        stops = {out.to_reference.get(i, i) for i in node.input if i}
        replaced: list[str] = []
        stack = [out.ref_producer[out.to_reference[o]][0] for o in mapped_outs if out.to_reference[o] in out.ref_producer]
        while stack:
            ref = stack.pop()
            if ref in replaced:
                continue
            replaced.append(ref)
            for x in ref_reads[ref]:
                if x in stops or x in out.ref_initializers or x in graph_inputs or x not in out.ref_producer:
                    continue
                if x in out.to_reference.values() and x not in stops:
                    continue  # another candidate value already stands for it: not this node's
                stack.append(out.ref_producer[x][0])
        ops = {out.ref_nodes[r].op_type for r in replaced}
        if len(replaced) > 1 or ops != {node.op_type}:
            order = {n: i for i, n in enumerate(out.ref_nodes)}
            out.replaced[name] = sorted(replaced, key=lambda r: order[r])


def _coverage(out: Mapping, produced: set[str], ref_outputs: set[str]) -> dict[str, Any]:
    """How much of the reference's inside the candidate reaches: mapped values plus the outputs of replaced nodes.

    Graph outputs map by position whatever the models: only the values inside count
    (all of them in a model that has none).
    """
    ref_values = (set(out.ref_producer) - ref_outputs) or set(out.ref_producer)
    covered = set(out.to_reference.values()) & ref_values
    for nodes in out.replaced.values():
        covered |= {o for r in nodes for o in out.ref_nodes[r].output if o}
    how = list(out.how.values())
    fused = {k: v[:_REPLACED_SHOWN] for k, v in out.replaced.items()}
    return {
        "reference_values": len(ref_values),
        "covered": len(covered & ref_values),
        "coverage": round(len(covered & ref_values) / len(ref_values), 4) if ref_values else 0.0,
        "candidate_values": len(produced),
        "mapped": len(out.to_reference),
        "by_name": how.count("name") + how.count("output"),
        "through_casts": how.count("cast"),
        "through_qdq": how.count("qdq"),
        "fused_nodes": fused,
    }


__all__ = ["MIN_COVERAGE", "MIN_SHARED_NAMES", "Mapping", "map_candidate", "related"]
