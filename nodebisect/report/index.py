"""Lookups over a saved result that every writer and the TUI need: who produces and reads each
value, the node a picture centres on. One place, so the report, the pictures and the TUI agree.

Pure: works from ``LocateResult.nodes`` alone (no ONNX file, no torch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from nodebisect.records import DIVERGED, MATCH, RUNTIME_FAILED, STAGE_CAPTURE, LocateResult, Metrics, NodeRecord


@dataclass
class GraphIndex:
    """Producer and consumers of every value named in the node records."""

    producer: dict[str, NodeRecord] = field(default_factory=dict)  # value -> the node writing it
    consumers: dict[str, list[NodeRecord]] = field(default_factory=dict)  # value -> nodes reading it

    def ups(self, node: NodeRecord) -> list[NodeRecord]:
        """Nodes writing ``node``'s inputs, in input order (graph inputs and weights have none)."""
        return [self.producer[v] for v in node.inputs if v in self.producer]

    def downs(self, node: NodeRecord) -> list[NodeRecord]:
        """Nodes reading ``node``'s outputs."""
        return [c for v in node.outputs or [node.onnx_value] for c in self.consumers.get(v, [])]


def graph_index(result: LocateResult) -> GraphIndex:
    index = GraphIndex()
    for n in result.nodes:
        for v in n.outputs or [n.onnx_value]:
            index.producer[v] = n
        for v in n.inputs:
            if v:
                index.consumers.setdefault(v, []).append(n)
    return index


def downstream(result: LocateResult, node: NodeRecord) -> set[str]:
    """Names of the nodes reading, directly or not, what ``node`` writes (``node`` excluded)."""
    index = graph_index(result)
    seen: set[str] = set()
    stack = index.downs(node)
    while stack:
        n = stack.pop()
        if n.onnx_node not in seen:
            seen.add(n.onnx_node)
            stack.extend(index.downs(n))
    seen.discard(node.onnx_node)
    return seen


def culprit_node(result: LocateResult) -> NodeRecord | None:
    """The ONNX node row of the culprit; for a capture verdict, the node carrying its FX value."""
    fd = result.first_divergent
    if fd is None:
        return None
    if fd.stage == STAGE_CAPTURE:
        return next((n for n in result.nodes if fd.onnx_value and n.mapped_to == fd.onnx_value), None)
    return result.node(fd.onnx_node)


def center_node(result: LocateResult) -> NodeRecord | None:
    """The node a report or picture centres on: the culprit, else the largest error."""
    if result.first_divergent is not None:
        return culprit_node(result)
    measured = [n for n in result.nodes if n.metrics is not None]
    if result.verdict in (DIVERGED, RUNTIME_FAILED, MATCH) and measured:
        return max(measured, key=lambda n: error_key(n.metrics))
    return None


def error_key(m: Metrics | None) -> float:
    """Sort key of a node's error: unmeasured lowest, NaN highest."""
    if m is None:
        return -1.0
    return m.max_abs if not math.isnan(m.max_abs) else math.inf
