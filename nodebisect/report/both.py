"""The two exporters' verdicts side by side (``--exporter both``): the words, for the terminal and report.md.

Pure text from the two ``LocateResult``s; each result's own view (``report.verdict``)
says where it diverged and where to file it, this module only sets the two rows
next to each other and says which exporter to file against.
"""

from __future__ import annotations

from nodebisect.records import DIVERGED, EXPORT_FAILED, MATCH, LocateResult
from nodebisect.report.markup import table
from nodebisect.report.verdict import verdict_view

LABELS = {"dynamo": "dynamo exporter (dynamo=True)", "torchscript": "TorchScript exporter (dynamo=False)"}
EXPORT_CALLS = {"dynamo": "torch.onnx.export(..., dynamo=True)", "torchscript": "torch.onnx.export(..., dynamo=False)"}


def row(result: LocateResult) -> tuple[str, str, str]:
    """(verdict, where, file at) of one exporter's result, each a short cell."""
    view = verdict_view(result)
    where_to_file = f"{view.file_at[0]}: {view.file_at[1]}" if view.file_at else "-"
    fd = result.first_divergent
    if result.verdict == EXPORT_FAILED and result.export_failure is not None:
        f = result.export_failure
        where = f"{f.stage or f.step}" + (f" on {f.target}" if f.target else "") + (f": {f.cause}" if f.cause else "")
        return "EXPORT FAILED", where, where_to_file
    if fd is not None and result.verdict != MATCH:
        lead = fd.segment[0] if fd.segment and fd.segment[0] != fd.onnx_node else ""
        where = f"{fd.onnx_node} ({fd.op_type})" + (f", lead suspect {lead} ({fd.segment_op_types[0]})" if lead else "")
        where += f" from {fd.framework.target}" if fd.framework.target else ""
        return result.verdict.upper().replace("_", " "), where, where_to_file
    return result.verdict.upper().replace("_", " "), "-", "-" if result.verdict == MATCH else where_to_file


def headline(results: dict[str, LocateResult]) -> str:
    """One line: both match, both depart, or which one departs."""
    words = {name: row(r)[0] for name, r in results.items()}
    if all(r.verdict == MATCH for r in results.values()):
        return "BOTH EXPORTERS MATCH"
    if len(set(words.values())) == 1:
        return f"BOTH EXPORTERS {next(iter(words.values()))}"
    return "EXPORTERS DIFFER: " + ", ".join(f"{name} {word}" for name, word in words.items())


def which_to_file(results: dict[str, LocateResult]) -> str:
    """The sentence a user acts on: which exporter to file against, and which to use meanwhile."""
    bad = [name for name, r in results.items() if r.verdict != MATCH]
    good = [name for name, r in results.items() if r.verdict == MATCH]
    if not bad:
        return "both exporters give ONNX models that agree with PyTorch: nothing to file"
    if not good:
        rows = {name: row(r) for name, r in results.items()}
        places = {cells[2] for cells in rows.values()}
        if len(places) == 1 and "-" not in places:
            return f"neither exporter's model agrees with PyTorch, and both point to the same place: file at {places.pop()}"
        ops = {_op(r) for r in results.values()}
        if len(ops) == 1 and "" not in ops:  # the same aten op in both: each exporter's own translation of it
            return f"neither exporter's model agrees with PyTorch, both at {ops.pop()}: file each where its row says"
        return "neither exporter's model agrees with PyTorch: file each where its row says"
    one, other = bad[0], good[0]
    result = results[one]
    view = verdict_view(result)
    what = "fails to export the model" if result.verdict == EXPORT_FAILED else "departs from PyTorch" if result.verdict == DIVERGED else "fails in onnxruntime"
    text = f"only the {LABELS[one]} {what}, the {LABELS[other]} agrees with PyTorch"
    if view.file_at:
        text += f": file against the {one} exporter at {view.file_at[0]} ({view.file_at[1]})"
    return text + f"; meanwhile export with {EXPORT_CALLS[other]}"


def _op(result: LocateResult) -> str:
    """The aten op a divergence is at, without its overload ("aten.avg_pool2d"), or ""."""
    fd = result.first_divergent
    if result.verdict != DIVERGED or fd is None or not fd.framework.target.startswith("aten."):
        return ""
    return ".".join(fd.framework.target.split(".")[:2])


def side_by_side(results: dict[str, LocateResult]) -> str:
    """The terminal's comparison: a headline, one row per exporter, and which one to file against."""
    rows = [(name, *row(r)) for name, r in results.items()]
    width = max(len(r[0]) for r in rows)
    verdict_width = max(len(r[1]) for r in rows)
    lines = [headline(results)]
    for name, verdict, where, file_at in rows:
        lines.append(f"  {name.ljust(width)}  {verdict.ljust(verdict_width)}  {where}" + (f"  [file at {file_at}]" if file_at != "-" else ""))
    lines.append(f"  so: {which_to_file(results)}")
    return "\n".join(lines)


def both_markdown(results: dict[str, LocateResult], folders: dict[str, str]) -> str:
    """report.md of ``--exporter both --report DIR``: the comparison, and each exporter's own report linked."""
    cells = [[f"`{name}`", verdict, where, file_at, f"[{folders[name]}/report.md]({folders[name]}/report.md)"] for name, (verdict, where, file_at) in ((n, row(r)) for n, r in results.items())]
    parts = [
        f"## nodebisect: {headline(results).lower().replace('exporters', 'ONNX exporters', 1)}",
        f"**So:** {which_to_file(results)}.",
        table(["exporter", "verdict", "where", "file at", "report"], cells),
        "Each exporter's report is complete on its own (values behind it, repro, the `gh issue create` command): "
        "file the one whose row departs from PyTorch.",
    ]
    return "\n\n".join(parts) + "\n"


__all__ = ["both_markdown", "headline", "row", "side_by_side", "which_to_file"]
