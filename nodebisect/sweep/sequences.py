"""Operator-sequence mining: which op-type chains end at culprits more than chance says.

For each divergent model, the op-type sequences along the graph's edges
(n = 2..5 nodes, following inputs backwards) that end at its culprit node; for
each matching model, every such sequence anywhere in its graph. A sequence is
*enriched* when many divergent models share it at their culprit while few
matching models contain it at all:

    enrichment = ((d + 0.5) / (D + 1)) / ((m + 0.5) / (M + 1))

with ``d`` of ``D`` divergent models and ``m`` of ``M`` matching models (the
0.5 / 1 smoothing keeps a sequence no matching model has from scoring infinity
off a single model). Pure Python over the saved rows: no torch, no onnx.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

ARROW = "→"
# Paths enumerated per node and length: a bound for wide graphs (concat of 100 branches).
MAX_PATHS_PER_NODE = 64


@dataclass
class SequenceStat:
    """One op-type sequence and how it splits divergent from matching models."""

    ops: tuple[str, ...]
    divergent: int  # divergent models whose culprit ends this sequence
    matching: int  # matching models that contain it anywhere
    support: float  # divergent / all divergent models
    background: float  # matching / all matching models
    enrichment: float
    models: list[str] = field(default_factory=list)
    targets: dict[str, int] = field(default_factory=dict)  # culprits' aten ops -> models

    @property
    def text(self) -> str:
        return ARROW.join(self.ops)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sequence": list(self.ops),
            "text": self.text,
            "n": len(self.ops),
            "divergent": self.divergent,
            "matching": self.matching,
            "support": round(self.support, 4),
            "background": round(self.background, 4),
            "enrichment": round(self.enrichment, 3),
            "models": self.models,
            "targets": self.targets,
        }


@dataclass
class SequenceReport:
    """The mined sequences of a fleet, most enriched first."""

    divergent_models: int
    matching_models: int
    sequences: list[SequenceStat]
    per_model: dict[str, list[list[str]]] = field(default_factory=dict)  # model -> its culprit n-grams

    def to_dict(self) -> dict[str, Any]:
        return {
            "divergent_models": self.divergent_models,
            "matching_models": self.matching_models,
            "sequences": [s.to_dict() for s in self.sequences],
            "per_model": self.per_model,
        }


def graph_of(nodes: list[dict[str, Any]]) -> tuple[list[str], list[list[int]]]:
    """Op types and predecessor lists (indices into ``nodes``) from ``LocateResult.nodes``."""
    producer: dict[str, int] = {}
    for i, node in enumerate(nodes):
        for value in node.get("outputs") or [node.get("onnx_value", "")]:
            if value:
                producer[value] = i
    ops = [str(n.get("op_type", "?")) for n in nodes]
    preds = []
    for i, node in enumerate(nodes):
        seen: list[int] = []
        for value in node.get("inputs") or []:
            j = producer.get(value)
            if j is not None and j != i and j not in seen:
                seen.append(j)
        preds.append(seen)
    return ops, preds


def sequences_ending_at(ops: list[str], preds: list[list[int]], end: int, n: int) -> set[tuple[str, ...]]:
    """Op-type sequences of ``n`` nodes along edges that end at node ``end``."""
    paths: list[list[int]] = [[end]]
    for _ in range(n - 1):
        longer = []
        for path in paths:
            for p in preds[path[0]]:
                longer.append([p] + path)
                if len(longer) >= MAX_PATHS_PER_NODE:
                    break
            if len(longer) >= MAX_PATHS_PER_NODE:
                break
        paths = longer
        if not paths:
            return set()
    return {tuple(ops[i] for i in path) for path in paths}


def all_sequences(ops: list[str], preds: list[list[int]], n: int) -> set[tuple[str, ...]]:
    """Every op-type sequence of ``n`` nodes along the graph's edges."""
    found: set[tuple[str, ...]] = set()
    for end in range(len(ops)):
        found |= sequences_ending_at(ops, preds, end, n)
    return found


def mine(rows: Iterable[dict[str, Any]], n_min: int = 2, n_max: int = 5, min_models: int = 0, top: int = 50) -> SequenceReport:
    """Mine culprit-ending sequences over a fleet's rows.

    Args:
        rows: sweep rows (``status`` and the locate document's ``nodes`` / ``first_divergent``).
        n_min, n_max: sequence lengths, in nodes.
        min_models: least divergent models a reported sequence must end at; 0 picks
            2 when the fleet has 4+ divergent models, else 1.
        top: sequences kept, most enriched first.
    """
    divergent: dict[str, set[tuple[str, ...]]] = {}
    targets: dict[str, str] = {}
    matching: list[set[tuple[str, ...]]] = []
    per_model: dict[str, list[list[str]]] = {}
    for row in rows:
        nodes = row.get("nodes") or []
        if not nodes:
            continue
        ops, preds = graph_of(nodes)
        if row.get("status") == "diverged" and row.get("first_divergent"):
            culprit = row["first_divergent"].get("onnx_node")
            index = next((i for i, n in enumerate(nodes) if n.get("onnx_node") == culprit), None)
            if index is None:
                continue
            grams: set[tuple[str, ...]] = set()
            for n in range(n_min, n_max + 1):
                grams |= sequences_ending_at(ops, preds, index, n)
            divergent[row["name"]] = grams
            targets[row["name"]] = (row["first_divergent"].get("framework") or {}).get("target", "") or "?"
            per_model[row["name"]] = sorted(list(g) for g in grams)
        elif row.get("status") == "match" and "vacuous_match" not in (row.get("flags") or []):
            grams = set()
            for n in range(n_min, n_max + 1):
                grams |= all_sequences(ops, preds, n)
            matching.append(grams)
    d_total, m_total = len(divergent), len(matching)
    threshold = min_models or (2 if d_total >= 4 else 1)
    counts: Counter[tuple[str, ...]] = Counter(g for grams in divergent.values() for g in grams)
    stats = []
    for ops_seq, d in counts.items():
        if d < threshold:
            continue
        m = sum(1 for grams in matching if ops_seq in grams)
        models = sorted(name for name, grams in divergent.items() if ops_seq in grams)
        stats.append(SequenceStat(
            ops=ops_seq, divergent=d, matching=m,
            support=d / d_total if d_total else 0.0,
            background=m / m_total if m_total else 0.0,
            enrichment=((d + 0.5) / (d_total + 1)) / ((m + 0.5) / (m_total + 1)),
            models=models,
            targets=dict(Counter(targets[name] for name in models).most_common()),
        ))
    stats = _drop_redundant(stats)
    stats.sort(key=lambda s: (-s.enrichment, -s.divergent, len(s.ops), s.text))
    return SequenceReport(d_total, m_total, stats[:top], per_model)


def _drop_redundant(stats: list[SequenceStat]) -> list[SequenceStat]:
    """Drop a sequence when a shorter suffix of it splits the fleet identically.

    ``Softmax→MatMul`` and ``Where→Softmax→MatMul`` ending at the same models and
    present in the same number of matching models say the same thing; the shorter reads better.
    """
    by_key = {(s.ops, s.divergent, s.matching, tuple(s.models)) for s in stats}
    keep = []
    for s in stats:
        redundant = any((s.ops[k:], s.divergent, s.matching, tuple(s.models)) in by_key for k in range(1, len(s.ops) - 1))
        if not redundant:
            keep.append(s)
    return keep


def to_markdown(report: SequenceReport, top: int = 25) -> str:
    """``sequences.md``: the enriched sequences as a table, then each model's culprit chains."""
    lines = [
        "# Operator sequences at culprits",
        "",
        f"{report.divergent_models} divergent model(s) against {report.matching_models} matching model(s). "
        "A sequence is a chain of ONNX op types along the graph's edges ending at a divergent model's culprit; "
        "`matching` counts the matching models that contain the same chain anywhere. "
        "enrichment = ((d+0.5)/(D+1)) / ((m+0.5)/(M+1)).",
        "",
    ]
    if not report.sequences:
        lines.append("No sequence is shared by enough divergent models." if report.divergent_models else "No divergent model.")
        return "\n".join(lines) + "\n"
    lines += ["| sequence | divergent | support | matching | background | enrichment | culprits' aten ops | models |",
              "|---|---:|---:|---:|---:|---:|---|---|"]
    for s in report.sequences[:top]:
        aten = ", ".join(f"`{t}` ({c})" for t, c in list(s.targets.items())[:3])
        models = ", ".join(s.models[:6]) + (f", +{len(s.models) - 6}" if len(s.models) > 6 else "")
        lines.append(f"| `{s.text}` | {s.divergent} | {s.support:.0%} | {s.matching} | {s.background:.0%} | "
                     f"{s.enrichment:.2f} | {aten} | {models} |")
    best = report.sequences[0]
    inside = next(iter(best.targets), "")
    lines += ["", f"At a glance: `{best.text}`" + (f" (inside `{inside}` lowerings)" if inside else "")
              + f" ends the culprit of {best.divergent} divergent model(s) and appears in {best.matching} matching one(s)."]
    return "\n".join(lines) + "\n"
