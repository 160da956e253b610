"""Operator-sequence mining: which op-type chains tell divergent models from matching ones.

For each divergent model, the op-type sequences along the graph's edges
(n = 2..5 nodes, following inputs backwards) that end at its culprit node are the
candidates. Each is ranked by how well it *separates* the fleet:

    separation = d_any / D - m / M

the share of the ``D`` divergent models that contain it anywhere minus the share of
the ``M`` matching models that do. A sequence present in every model scores 0,
however often it ends a culprit (grouped-query attention's ``Expand→Reshape→MatMul``
in a fleet of causal LMs). Sequences that lie inside the culprit's own segment (the
nodes of its aten op's lowering) come first: a chain that only reaches the culprit
from a neighbouring op (the key/value path into an attention's last MatMul) says
less about what the lowering does wrong.

Divergent models are also grouped by their culprit's signature: its aten op, the
op chain of its segment and the cause, the first thing ``sequences.md`` says.

The older score is kept beside it: ``enrichment = ((d + 0.5) / (D + 1)) / ((m + 0.5) / (M + 1))``
with ``d`` the divergent models whose culprit ends the sequence. Pure Python over
the saved rows: no torch, no onnx.
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
    separation: float = 0.0  # share of divergent models holding it anywhere - share of matching ones
    inside: int = 0  # divergent models where it lies inside the culprit's segment

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
            "separation": round(self.separation, 4),
            "inside_segment": self.inside,
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
    signatures: list[Signature] = field(default_factory=list)  # biggest group first

    def to_dict(self) -> dict[str, Any]:
        return {
            "divergent_models": self.divergent_models,
            "matching_models": self.matching_models,
            "signatures": [s.to_dict() for s in self.signatures],
            "sequences": [s.to_dict() for s in self.sequences],
            "per_model": self.per_model,
        }


@dataclass
class Signature:
    """Divergent models whose culprits look alike: the same aten op, lowered to the same op chain, the same cause."""

    target: str
    chain: tuple[str, ...]  # the culprit's segment op types, as locate lists them (segment_op_types)
    cause: str
    models: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "chain": list(self.chain), "cause": self.cause, "models": self.models}


def signatures(rows: Iterable[dict[str, Any]]) -> list[Signature]:
    """The divergent rows grouped by culprit signature, biggest group first."""
    groups: dict[tuple[str, tuple[str, ...], str], list[str]] = {}
    for row in rows:
        fd = row.get("first_divergent") or {}
        if row.get("status") != "diverged" or not fd:
            continue
        target = (fd.get("framework") or {}).get("target") or "?"
        chain = tuple(fd.get("segment_op_types") or [fd.get("op_type") or "?"])
        groups.setdefault((target, chain, fd.get("cause") or "?"), []).append(row["name"])
    found = [Signature(t, c, cause, sorted(names)) for (t, c, cause), names in groups.items()]
    return sorted(found, key=lambda g: (-len(g.models), g.target, g.chain))


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


def sequences_ending_at(ops: list[str], preds: list[list[int]], end: int, n: int,
                        within: set[int] | None = None) -> set[tuple[str, ...]]:
    """Op-type sequences of ``n`` nodes along edges that end at node ``end`` (only through ``within``, when given)."""
    paths: list[list[int]] = [[end]]
    for _ in range(n - 1):
        longer = []
        for path in paths:
            for p in preds[path[0]]:
                if within is not None and p not in within:
                    continue
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
    rows = list(rows)
    divergent: dict[str, set[tuple[str, ...]]] = {}  # at the culprit
    inside: dict[str, set[tuple[str, ...]]] = {}  # at the culprit, inside its segment
    anywhere: dict[str, set[tuple[str, ...]]] = {}  # divergent models, anywhere in the graph
    targets: dict[str, str] = {}
    matching: list[set[tuple[str, ...]]] = []
    per_model: dict[str, list[list[str]]] = {}
    lengths = range(n_min, n_max + 1)
    for row in rows:
        nodes = row.get("nodes") or []
        if not nodes:
            continue
        ops, preds = graph_of(nodes)
        if row.get("status") == "diverged" and row.get("first_divergent"):
            fd = row["first_divergent"]
            position = {n.get("onnx_node"): i for i, n in enumerate(nodes)}
            index = position.get(fd.get("onnx_node"))
            if index is None:
                continue
            segment = {position[name] for name in fd.get("segment") or [] if name in position} | {index}
            name = row["name"]
            divergent[name] = {g for n in lengths for g in sequences_ending_at(ops, preds, index, n)}
            inside[name] = {g for n in lengths for g in sequences_ending_at(ops, preds, index, n, within=segment)}
            anywhere[name] = {g for n in lengths for g in all_sequences(ops, preds, n)} | divergent[name]
            targets[name] = (fd.get("framework") or {}).get("target", "") or "?"
            per_model[name] = sorted(list(g) for g in divergent[name])
        elif row.get("status") == "match" and "vacuous_match" not in (row.get("flags") or []):
            matching.append({g for n in lengths for g in all_sequences(ops, preds, n)})
    d_total, m_total = len(divergent), len(matching)
    threshold = min_models or (2 if d_total >= 4 else 1)
    counts: Counter[tuple[str, ...]] = Counter(g for grams in divergent.values() for g in grams)
    stats = []
    for ops_seq, d in counts.items():
        if d < threshold:
            continue
        m = sum(1 for grams in matching if ops_seq in grams)
        d_any = sum(1 for grams in anywhere.values() if ops_seq in grams)
        models = sorted(name for name, grams in divergent.items() if ops_seq in grams)
        stats.append(SequenceStat(
            ops=ops_seq, divergent=d, matching=m,
            support=d / d_total if d_total else 0.0,
            background=m / m_total if m_total else 0.0,
            enrichment=((d + 0.5) / (d_total + 1)) / ((m + 0.5) / (m_total + 1)),
            models=models,
            targets=dict(Counter(targets[name] for name in models).most_common()),
            separation=d_any / d_total - (m / m_total if m_total else 0.0),
            inside=sum(1 for name in models if ops_seq in inside[name]),
        ))
    stats = _drop_redundant(stats)
    stats.sort(key=rank)
    return SequenceReport(d_total, m_total, stats[:top], per_model, signatures(rows))


def rank(s: SequenceStat) -> tuple:
    """Sort key: separating sequences inside the culprits' segments first, then by separation."""
    in_segment = s.separation > 0 and 2 * s.inside >= s.divergent
    return (not in_segment, -round(s.separation, 9), -s.divergent, -s.enrichment, len(s.ops), s.text)


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
    lines = ["# Operator sequences at culprits", ""]
    if report.signatures:
        first = report.signatures[0]
        lines += [f"Culprit signature of {len(first.models)} of {report.divergent_models} divergent model(s): "
                  f"{_signature_text(first)}.", ""]
    lines += [
        f"{report.divergent_models} divergent model(s) against {report.matching_models} matching model(s). "
        "A sequence is a chain of ONNX op types along the graph's edges ending at a divergent model's culprit; "
        "`matching` counts the matching models that contain the same chain anywhere. "
        "separation = (divergent models holding it anywhere)/D - m/M: a chain every model holds scores 0. "
        "Chains inside the culprit's own segment (its aten op's lowering) come first. "
        "enrichment = ((d+0.5)/(D+1)) / ((m+0.5)/(M+1)).",
        "",
    ]
    if len(report.signatures) > 1:
        lines += ["| aten op | lowered as (the culprit's segment) | cause | models |", "|---|---|---|---|"]
        lines += [f"| `{g.target}` | `{ARROW.join(g.chain)}` | {g.cause} | {len(g.models)}: {', '.join(g.models[:6])}"
                  + (f", +{len(g.models) - 6}" if len(g.models) > 6 else "") + " |" for g in report.signatures]
        lines.append("")
    if not report.sequences:
        lines.append("No sequence is shared by enough divergent models." if report.divergent_models else "No divergent model.")
        return "\n".join(lines) + "\n"
    lines += ["| sequence | in segment | divergent | support | matching | background | separation | enrichment | culprits' aten ops | models |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for s in report.sequences[:top]:
        aten = ", ".join(f"`{t}` ({c})" for t, c in list(s.targets.items())[:3])
        models = ", ".join(s.models[:6]) + (f", +{len(s.models) - 6}" if len(s.models) > 6 else "")
        lines.append(f"| `{s.text}` | {s.inside} | {s.divergent} | {s.support:.0%} | {s.matching} | {s.background:.0%} | "
                     f"{s.separation:+.2f} | {s.enrichment:.2f} | {aten} | {models} |")
    best = report.sequences[0]
    inside = next(iter(best.targets), "")
    lines += ["", f"At a glance: `{best.text}`" + (f" (inside `{inside}` lowerings)" if inside else "")
              + f" ends the culprit of {best.divergent} divergent model(s) and appears in {best.matching} matching one(s)."]
    return "\n".join(lines) + "\n"


def _signature_text(group: Signature) -> str:
    return f"`{group.target}` lowered as `{ARROW.join(group.chain)}`, cause {group.cause}"
