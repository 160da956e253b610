"""Group the answers of several input sets (``--trials``, repeated ``--inputs``).

Pure bookkeeping over finished results: one row per input set, the culprits
grouped, the shape-only note, and which result is reported.
"""

from __future__ import annotations

from typing import Any

from nodebisect.records import MATCH, LocateResult
from nodebisect.run import RunLog


def trial_row(index: int, label: str, result: LocateResult, shapes: list[list[int]]) -> dict[str, Any]:
    """The JSON row of one input set."""
    fd = result.first_divergent
    return {
        "trial": index,
        "inputs": label,
        "verdict": result.verdict,
        "onnx_node": fd.onnx_node if fd else "",
        "cause": fd.cause if fd else "",
        "max_abs": fd.metrics.max_abs if fd else max((o.metrics.max_abs for o in result.outputs), default=0.0),
        "shapes": shapes,
    }


def group_trials(results: list[LocateResult], labels: list[str], shapes: list[list[list[int]]], log: RunLog) -> LocateResult:
    """The result to report (the first divergent one, else the given inputs'), with every row and the groups.

    Args:
        results: one per input set; ``results[0]`` is the given inputs'.
        labels: where each input set came from ("given", a file, a trial's distribution).
        shapes: each set's input shapes; ``shapes[0]`` is the export shape.
    """
    rows = [trial_row(i, label, r, s) for i, (label, r, s) in enumerate(zip(labels, results, shapes))]
    export_shapes = shapes[0]
    for row in rows:
        row["export_shape"] = row["shapes"] == export_shapes
    diverging = [r for r in rows if r["verdict"] != MATCH]
    if diverging and all(not r["export_shape"] for r in diverging):
        log.note(
            "diverges only at shapes other than the export shape "
            f"({', '.join(str(r['shapes']) for r in diverging)} vs {export_shapes}): a value baked into the graph for the "
            "example's shape, or a dynamic-shape path of the conversion"
        )
    first = results[0]
    chosen = next((r for r in results if r.verdict != MATCH), first)
    if chosen is not first:
        k = results.index(chosen)
        log.note(f"the given inputs match; trial {k} ({rows[k]['inputs']} inputs) diverges, and its culprit is reported")
    chosen.trials = rows
    groups: dict[str, list[int]] = {}
    for row in rows:
        groups.setdefault(row["onnx_node"] or row["verdict"], []).append(row["trial"])
    chosen.stats["trial_groups"] = groups
    return chosen
