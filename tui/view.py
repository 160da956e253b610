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
    NOT_RUN,
    OK,
    STAGE_CAPTURE,
    STATUS_DIVERGED,
    UNMAPPED,
    LocateResult,
    Metrics,
    NodeRecord,
)
from nodebisect.report.index import culprit_node, graph_index

# Row colour by how a value fared; the culprit gets its own.
STATUS_STYLE = {
    STATUS_DIVERGED: "bold red",
    OK: "green",
    UNMAPPED: "dim",
    NOT_RUN: "dim",
}
CULPRIT_STYLE = "bold white on red"
CARRIER_STYLE = "bold white on dark_orange3"  # carries a capture culprit's value (ONNX itself matches)
NEAR_LIMIT_STYLE = "yellow"  # passed, but used more than half of its tolerance

# The table's first column: the culprit, the rest of its segment, suspects outside it.
MARK_CULPRIT = "▶"
MARK_SEGMENT = "┃"
MARK_SUSPECT = "?"

# Filter prefixes: "op:Gemm", "mod:encoder.layer.0", "status:diverged", "is:segment"; bare words match any.
FILTER_FIELDS = ("op", "mod", "status", "node", "is")


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
    segment: set[str] = field(default_factory=set)  # the culprit's segment (ONNX node names)
    suspects: dict[str, int] = field(default_factory=dict)  # suspect node -> rank (0 = most suspect)
    culprit: str = ""  # the ONNX node to show for the culprit ("" when none is in the table)
    _decades: Counter[int] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for pos, record in enumerate(self.result.nodes):
            self.by_name[record.onnx_node] = record
            self.position[record.onnx_node] = pos
        index = graph_index(self.result)  # the same producers and consumers as the report's pictures
        self.producer = {value: node.onnx_node for value, node in index.producer.items()}
        self.consumers = {value: [node.onnx_node for node in nodes] for value, nodes in index.consumers.items()}
        fd = self.result.first_divergent
        if fd is None:
            return
        carrier = culprit_node(self.result)  # for a capture verdict: the ONNX node carrying the FX value
        self.culprit = carrier.onnx_node if carrier is not None else ""
        if fd.stage == STAGE_CAPTURE:
            return
        self.segment = {name for name in fd.segment if name in self.by_name}
        self.suspects = {s.onnx_node: rank for rank, s in enumerate(fd.suspects) if s.onnx_node in self.by_name}

    @property
    def capture(self) -> bool:
        """The verdict is eager vs ``torch.export`` (stage capture): the ONNX graph itself matches."""
        fd = self.result.first_divergent
        return fd is not None and fd.stage == STAGE_CAPTURE

    def mark(self, name: str) -> str:
        """The table's mark for a node: culprit, segment member, suspect outside the segment, or blank."""
        if name == self.culprit:
            return MARK_CULPRIT
        if name in self.segment:
            return MARK_SEGMENT
        if name in self.suspects:
            return MARK_SUSPECT
        return ""

    def roles(self, name: str) -> list[str]:
        """What the verdict says about a node, in words (``culprit``, ``segment``, ``suspect``)."""
        found = []
        if name == self.culprit:
            found.append("culprit")
        if name in self.segment:
            found.append("segment")
        if name in self.suspects:
            found.append("suspect")
        return found

    def constants_of(self, name: str) -> list[tuple[str, str]]:
        """Inputs of ``name`` that no computing node produces: (value, where it comes from).

        A value no record produces is an initializer, a Constant folded into the graph or a
        graph input (the result does not say which); a ``Constant`` node's output is a constant.
        """
        record = self.by_name.get(name)
        if record is None:
            return []
        found: list[tuple[str, str]] = []
        for value in record.inputs:
            if not value or any(value == v for v, _ in found):
                continue
            producer = self.producer.get(value)
            if producer is None:
                found.append((value, "initializer / graph input"))
            elif self.by_name[producer].op_type == "Constant":
                attrs = self.by_name[producer].attributes
                shown = ", ".join(f"{k}={_short(v)}" for k, v in sorted(attrs.items()))
                found.append((value, f"Constant {producer}" + (f" ({shown})" if shown else "")))
        return found

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
            return CARRIER_STYLE if self.capture else CULPRIT_STYLE
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
        return [r for r in self.result.nodes if all(self._term_matches(r, key, text) for key, text in terms)]

    def _term_matches(self, record: NodeRecord, key: str, text: str) -> bool:
        if key == "is":
            return any(role.startswith(text) for role in self.roles(record.onnx_node))
        return _term_matches(record, key, text)


def histogram(index: ResultIndex, selected: str | None = None, width: int = 24) -> list[str]:
    """Max-abs error of every compared node, bucketed by decade; ``◀`` marks ``selected``."""
    if index._decades is None:  # noqa: SLF001 - the index caches the buckets for the detail pane
        index._decades = Counter(_decade(r.metrics.max_abs) for r in index.result.nodes if _has_error(r.metrics))
    decades = index._decades
    if not decades:
        return []
    record = index.by_name.get(selected or "")
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


def verdict_line(result: LocateResult) -> str:
    """One line for the title of the banner (the verdict view's banner)."""
    from nodebisect.report.verdict import verdict_view

    return verdict_view(result).banner


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


def _short(value: object, limit: int = 40) -> str:
    shown = repr(value)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


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
