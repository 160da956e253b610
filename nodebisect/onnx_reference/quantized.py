"""One quantized node whose error stands far above its neighbours': the quantization defect to keep out.

Every int8 node differs from its float reference; what a user must act on is the
node whose quantization loses much more than the others (a weight with outliers, an
activation with an outlier feature: the per-tensor scale then rounds everything else
away). Each quantized value's *added* error is its relative error (from the cosine
against the reference: direction, scale-free) minus the largest relative error of
the mapped values it reads; a node adding ``STANDOUT`` times the median of the other
quantized nodes, and at least ``MIN_ADDED``, stands out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import onnx

from nodebisect.onnxgraph import node_keys, subgraph_inputs
from nodebisect.records import NodeRecord

STANDOUT = 5.0
MIN_ADDED = 0.05
# With one quantized node there is no neighbour: only an error this large stands out alone.
ALONE_ADDED = 0.25
QUANTIZED_OPS = {"MatMulInteger", "ConvInteger", "QLinearMatMul", "QLinearConv", "DequantizeLinear", "MatMulIntegerToFloat", "DynamicQuantizeMatMul"}


@dataclass
class Standout:
    """The quantized value that adds the most error, and by how much against the others."""

    value: str
    node: str
    added: float
    median: float
    others: int
    nodes: list[str]


def relative_error(record: NodeRecord | None) -> float:
    """The scale-free error of a compared value from its cosine with the reference (0 when unknown)."""
    if record is None or record.metrics is None:
        return 0.0
    cos = record.metrics.cosine
    return math.sqrt(max(0.0, 2.0 * (1.0 - cos))) if math.isfinite(cos) else float("inf")


def standout(candidate: onnx.ModelProto, mapped: set[str], records: list[NodeRecord]) -> Standout | None:
    """The quantized node whose added error stands out, or None."""
    producer: dict[str, tuple[str, onnx.NodeProto]] = {}
    for name, node in node_keys(candidate):
        for o in node.output:
            if o:
                producer[o] = (name, node)
    quantized = {name for name, node in producer.values() if node.op_type in QUANTIZED_OPS}
    if not quantized:
        return None  # nothing quantized (a float16 candidate): no segment can hold a quantized node
    by_value = {r.onnx_value: r for r in records if r.metrics is not None}
    added: list[tuple[float, str, list[str]]] = []
    for value in mapped:
        if value not in by_value or value not in producer:
            continue
        segment, inputs = _segment(value, producer, mapped)
        if quantized.isdisjoint(segment):
            continue
        before = max((relative_error(by_value.get(i)) for i in inputs), default=0.0)
        added.append((relative_error(by_value[value]) - before, value, segment))
    if not added:
        return None
    added.sort(reverse=True)
    top, value, segment = added[0]
    rest = sorted(a for a, _, _ in added[1:])
    median = rest[len(rest) // 2] if rest else 0.0
    if not math.isfinite(top) or top < MIN_ADDED or (rest and top < STANDOUT * median) or (not rest and top < ALONE_ADDED):
        return None
    position = {name: i for i, (name, _) in enumerate(node_keys(candidate))}
    ordered = [producer[value][0]] + sorted((n for n in segment if n != producer[value][0]), key=position.__getitem__)
    return Standout(value=value, node=producer[value][0], added=top, median=median, others=len(rest), nodes=ordered)


def _segment(value: str, producer: dict[str, tuple[str, onnx.NodeProto]], mapped: set[str]) -> tuple[list[str], list[str]]:
    """The node names computing ``value`` from its nearest mapped values, and those values."""
    nodes: list[str] = []
    inputs: list[str] = []
    stack = [value]
    seen: set[str] = set()
    while stack:
        v = stack.pop()
        if v in seen or v not in producer:
            continue
        seen.add(v)
        name, node = producer[v]
        if name not in nodes:
            nodes.append(name)
        for x in subgraph_inputs(node):
            if x in mapped and x in producer:
                inputs.append(x)
            else:
                stack.append(x)
    return nodes, inputs
