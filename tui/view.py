"""What the screens show, computed from a `LocateResult` alone (no textual, no torch).

This is presentation, not analysis: it indexes the records nodebisect already
produced (who produces and who consumes each value, which rows pass a filter)
and turns them into short strings. Every verdict, metric and status comes from
the result as it is.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from nodebisect.records import (
    MATCH,
    NOT_RUN,
    OK,
    STATUS_DIVERGED,
    UNMAPPED,
    LocateResult,
    Metrics,
    NodeRecord,
)

# Row colour by how a value fared; the culprit gets its own.
STATUS_STYLE = {
    STATUS_DIVERGED: "bold red",
    OK: "green",
    UNMAPPED: "dim",
    NOT_RUN: "dim",
}
CULPRIT_STYLE = "bold white on red"
NEAR_LIMIT_STYLE = "yellow"  # passed, but used more than half of its tolerance

# Filter prefixes: "op:Gemm", "mod:encoder.layer.0", "status:diverged"; bare words match any.
FILTER_FIELDS = ("op", "mod", "status", "node")


def fmt(value: float | None, digits: int = 3) -> str:
    """A short, width-stable number: ``1.18e+00``, ``nan``, or ``-``."""
    if value is None:
        return "-"
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return str(value)
    return f"{value:.{digits - 1}e}"


def fmt_cos(value: float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return f"{value:.6f}"


@dataclass
class ResultIndex:
    """A `LocateResult` with lookups the screens need (built once, O(nodes))."""

    result: LocateResult
    by_name: dict[str, NodeRecord] = field(default_factory=dict)
    producer: dict[str, str] = field(default_factory=dict)  # value -> node that writes it
    consumers: dict[str, list[str]] = field(default_factory=dict)  # value -> nodes that read it
    position: dict[str, int] = field(default_factory=dict)  # node -> row in topological order
    _decades: Counter[int] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for pos, record in enumerate(self.result.nodes):
            self.by_name[record.onnx_node] = record
            self.position[record.onnx_node] = pos
            for value in record.outputs or [record.onnx_value]:
                self.producer[value] = record.onnx_node
            for value in record.inputs:
                if value:
                    self.consumers.setdefault(value, []).append(record.onnx_node)

    @property
    def culprit(self) -> str:
        fd = self.result.first_divergent
        return fd.onnx_node if fd and fd.onnx_node in self.by_name else ""

    def tolerance_for(self, metrics: Metrics | None) -> tuple[float, float] | None:
        """(rtol, atol) the run used for this dtype, when the result records it."""
        tol = self.result.tolerance or {}
        entry = tol.get(metrics.expected_dtype or metrics.dtype) if metrics else None
        entry = entry or (next(iter(tol.values())) if len(tol) == 1 else None)
        if not entry:
            return None
        return float(entry.get("rtol", 0.0)), float(entry.get("atol", 0.0))

    def row_style(self, record: NodeRecord) -> str:
        if record.onnx_node == self.culprit:
            return CULPRIT_STYLE
        if record.status == OK and record.metrics is not None:
            tol = self.tolerance_for(record.metrics)
            if tol and tol[1] > 0 and record.metrics.max_abs > 0.5 * tol[1] and record.metrics.max_rel > 0.5 * tol[0]:
                return NEAR_LIMIT_STYLE
        return STATUS_STYLE.get(record.status, "")

    # -- navigation ---------------------------------------------------------------
    def producers_of(self, name: str) -> list[str]:
        """Nodes writing this node's inputs, in input order (graph inputs and weights skipped)."""
        record = self.by_name.get(name)
        if record is None:
            return []
        found: list[str] = []
        for value in record.inputs:
            node = self.producer.get(value)
            if node and node != name and node not in found:
                found.append(node)
        return found

    def consumers_of(self, name: str) -> list[str]:
        record = self.by_name.get(name)
        if record is None:
            return []
        found: list[str] = []
        for value in record.outputs or [record.onnx_value]:
            for node in self.consumers.get(value, []):
                if node != name and node not in found:
                    found.append(node)
        return found

    def step(self, name: str, upward: bool) -> str | None:
        """The neighbour to walk to: a diverged one first (that is the trail), else the first."""
        around = self.producers_of(name) if upward else self.consumers_of(name)
        if not around:
            return None
        diverged = [n for n in around if self.by_name[n].status == STATUS_DIVERGED]
        return (diverged or around)[0]

    # -- filtering ------------------------------------------------------------------
    def matching(self, query: str) -> list[NodeRecord]:
        """Records passing the filter: every word must match (``op:``, ``mod:``, ``status:`` narrow it)."""
        terms = [_parse_term(word) for word in query.split()]
        if not terms:
            return list(self.result.nodes)
        return [r for r in self.result.nodes if all(_term_matches(r, key, text) for key, text in terms)]

    # -- text renderings ------------------------------------------------------------
    def histogram(self, selected: str | None = None, width: int = 24) -> list[str]:
        """Max-abs error of every compared node, bucketed by decade; ``◀`` marks ``selected``."""
        if self._decades is None:
            self._decades = Counter(_decade(r.metrics.max_abs) for r in self.result.nodes if _has_error(r.metrics))
        decades = self._decades
        if not decades:
            return []
        record = self.by_name.get(selected or "")
        mark = _decade(record.metrics.max_abs) if record is not None and _has_error(record.metrics) else None
        top = max(decades.values())
        lines = []
        for decade in range(max(decades), min(decades) - 1, -1):
            count = decades.get(decade, 0)
            bar = "█" * max(1 if count else 0, round(width * count / top))
            label = "  ≥1e+00" if decade == 0 else ("   <1e-9" if decade <= -10 else f"  ~1e{decade:+03d}")
            tail = " ◀" if decade == mark else ""
            lines.append(f"{label} {bar:<{width}} {count}{tail}")
        return lines

    def neighbourhood(self, name: str, hops: int = 2, fan: int = 6) -> list[str]:
        """The graph around ``name`` as text: producers above, consumers below, ``hops`` deep."""
        if name not in self.by_name:
            return [f"(no node {name!r})"]
        lines: list[str] = []
        layers_up = self._layers(name, hops, upward=True, fan=fan)
        for depth in range(len(layers_up), 0, -1):
            lines.append(f"── {depth} hop{'s' if depth > 1 else ''} up ".ljust(34, "─"))
            lines.extend("   " + text for text in layers_up[depth - 1])
            lines.append("        │")
        lines.append("▶▶ " + self.label(name, long=True))
        for depth, layer in enumerate(self._layers(name, hops, upward=False, fan=fan), start=1):
            lines.append("        │")
            lines.append(f"── {depth} hop{'s' if depth > 1 else ''} down ".ljust(34, "─"))
            lines.extend("   " + text for text in layer)
        graph_inputs = [v for v in self.by_name[name].inputs if v and v not in self.producer]
        if graph_inputs:
            lines.append("")
            lines.append("graph inputs / weights read: " + ", ".join(graph_inputs[:fan]) + (" …" if len(graph_inputs) > fan else ""))
        return lines

    def label(self, name: str, long: bool = False) -> str:
        record = self.by_name[name]
        tag = "CULPRIT " if name == self.culprit else ""
        m = record.metrics
        err = f", max abs {fmt(m.max_abs)}" if m is not None else ""
        where = f"  [{record.framework.module}]" if long and record.framework.module else ""
        return f"{tag}{record.op_type} {name} ({record.status}{err}){where}"

    def _layers(self, name: str, hops: int, upward: bool, fan: int) -> list[list[str]]:
        """Breadth-first rings around ``name``; each ring keeps ``fan`` nodes and says how many it hid."""
        layers: list[list[str]] = []
        seen = {name}
        frontier = [name]
        for _ in range(hops):
            ring: list[str] = []
            for node in frontier:
                for other in self.producers_of(node) if upward else self.consumers_of(node):
                    if other not in seen:
                        seen.add(other)
                        ring.append(other)
            if not ring:
                break
            frontier = ring[:fan]
            hidden = len(ring) - fan
            layers.append([self.label(n) for n in frontier] + ([f"… {hidden} more"] if hidden > 0 else []))
        return layers


def verdict_line(result: LocateResult) -> str:
    """One line for the title of the banner."""
    fd = result.first_divergent
    if result.verdict == MATCH:
        return "MATCH: every compared value is within tolerance"
    if fd is not None:
        return f"DIVERGED at {fd.onnx_node} ({fd.op_type})"
    if result.export_failure is not None:
        return f"EXPORT FAILED at step {result.export_failure.step}"
    return result.verdict.upper().replace("_", " ")


def bar(fraction: float, width: int = 20) -> str:
    """``██████░░░░`` for a fraction in [0, 1]."""
    if not isinstance(fraction, (int, float)) or math.isnan(fraction):
        return "?" * width
    filled = round(max(0.0, min(1.0, float(fraction))) * width)
    return "█" * filled + "░" * (width - filled)


def _has_error(metrics: Metrics | None) -> bool:
    return metrics is not None and isinstance(metrics.max_abs, (int, float)) and not math.isnan(metrics.max_abs)


def _decade(value: float) -> int:
    if value <= 0:
        return -10
    if math.isinf(value):
        return 0
    return max(-10, min(0, math.floor(math.log10(value))))


def _parse_term(word: str) -> tuple[str, str]:
    key, sep, text = word.partition(":")
    if sep and key.lower() in FILTER_FIELDS and text:
        return key.lower(), text.lower()
    return "", word.lower()


def _term_matches(record: NodeRecord, key: str, text: str) -> bool:
    fields = {
        "op": record.op_type,
        "mod": record.framework.module,
        "status": record.status,
        "node": record.onnx_node,
    }
    if key:
        return text in fields[key].lower()
    return any(text in value.lower() for value in fields.values())
