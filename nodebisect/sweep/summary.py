"""The fleet's summary as text: ``sweep.md``, the terminal table, and a sweep diff.

Pure functions from rows to strings; the CLI decides where they go.
"""

from __future__ import annotations

import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodebisect.report.transform_wording import transform_tables
from nodebisect.sweep.results import SweepDiff
from nodebisect.sweep.tasks import STATUSES


@dataclass
class Totals:
    """Counts over a fleet's rows."""

    by_status: Counter
    by_stage: Counter
    by_cause: Counter
    models: int
    wall_s: float  # sum of per-model wall times (CPU-side work, not the sweep's elapsed time)


def totals(rows: list[dict[str, Any]]) -> Totals:
    by_status: Counter = Counter(r["status"] for r in rows)
    divergent = [r.get("first_divergent") or {} for r in rows if r["status"] == "diverged"]
    return Totals(
        by_status=by_status,
        by_stage=Counter(fd.get("stage") or "?" for fd in divergent),
        by_cause=Counter(fd.get("cause") or "?" for fd in divergent),
        models=len(rows),
        wall_s=sum(float(r.get("wall_s") or 0) for r in rows),
    )


def status_line(rows: list[dict[str, Any]]) -> str:
    """``40 models: 25 match, 6 diverged, ...`` in the order of ``STATUSES``.

    A divergence only at masked positions is counted with the divergences and said beside the
    count (``locate`` exits 0 for it): "6 diverged" alone read as six broken models.
    """
    t = totals(rows)
    masked = sum(1 for r in rows if r["status"] == "diverged" and masked_only(r))
    parts = [f"{t.by_status[s]} {s}" for s in STATUSES if t.by_status[s]]
    if masked:
        note = "all" if masked == t.by_status["diverged"] else str(masked)
        parts = [p + f" ({note} only at masked positions: exit 0 unless --strict-masked)" if p.endswith(" diverged") else p for p in parts]
    return f"{t.models} models: " + (", ".join(parts) if parts else "none")


def export_failure_groups(rows: list[dict[str, Any]]) -> list[tuple[str, str, list[str]]]:
    """Export failures grouped by (failing aten op, first message line), biggest group first."""
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for row in rows:
        if row["status"] != "export_failed":
            continue
        ef = row.get("export_failure") or {}
        key = (ef.get("target") or ef.get("step") or "?", _message_key(ef.get("message", "")))
        groups[key].append(row["name"])
    return sorted(((k[0], k[1], v) for k, v in groups.items()), key=lambda g: (-len(g[2]), g[0], g[1]))


def group_remedy(rows: list[dict[str, Any]], names: list[str]) -> tuple[str, list[str]]:
    """The remedy locate named for a group of export failures, and the model settings that apply it.

    The first model of the group with a remedy speaks for it (a group is one cause).
    """
    wanted = set(names)
    for row in rows:
        ef = row.get("export_failure") or {}
        if row["name"] in wanted and (ef.get("remedy") or ef.get("settings")):
            return str(ef.get("remedy") or ""), [str(s) for s in ef.get("settings") or []]
    return "", []


def remedy_cell(remedy: str, settings: list[str]) -> str:
    """A Markdown cell: the remedy, then the flags to add (``--model-setting use_cache=False``)."""
    flags = " ".join(f"`--model-setting {s}`" for s in settings)
    text = _cell(remedy)
    return f"{text}; add {flags}" if text and flags else text or (f"add {flags}" if flags else "")


def to_markdown(rows: list[dict[str, Any]], out_dir: Path, elapsed_s: float | None = None, ran: int | None = None,
                title: str = "nodebisect sweep") -> str:
    """``sweep.md``: counts, then the divergent models, export failures, other failures, flags.

    Args:
        elapsed_s: how long this run took, and ``ran``: how many models it ran (fewer
            than ``rows`` after ``--resume``), for the models-per-minute figure.
    """
    t = totals(rows)
    lines = [f"# {title}", "", status_line(rows) + "."]
    if elapsed_s:
        ran = t.models if ran is None else ran
        rate = ran / (elapsed_s / 60) if elapsed_s > 0 else 0.0
        lines.append(f"This run: {ran} model(s) in {_duration(elapsed_s)} ({rate:.1f} models/min); "
                     f"per-model wall time summed over all rows: {_duration(t.wall_s)}.")
    lines += ["", "| verdict | models |", "|---|---:|"]
    lines += [f"| {s} | {t.by_status[s]} |" for s in STATUSES if t.by_status[s]]
    if t.by_stage:
        lines += ["", "| stage | models |  | cause | models |", "|---|---:|---|---|---:|"]
        stages, causes = t.by_stage.most_common(), t.by_cause.most_common()
        for i in range(max(len(stages), len(causes))):
            s = stages[i] if i < len(stages) else ("", "")
            c = causes[i] if i < len(causes) else ("", "")
            lines.append(f"| {s[0]} | {s[1]} |  | {c[0]} | {c[1]} |")
    divergent = [r for r in rows if r["status"] == "diverged" and not masked_only(r)]
    if divergent:
        lines += ["", "## Divergent models", "",
                  "| model | culprit | op | aten op | stage / cause | max_abs | source | report |",
                  "|---|---|---|---|---|---:|---|---|"]
        for r in sorted(divergent, key=lambda r: r["name"]):
            fd = r.get("first_divergent") or {}
            fw = fd.get("framework") or {}
            link = _link(r.get("report_dir", ""), out_dir)
            lines.append(f"| {_cell(r['name'])} | `{fd.get('onnx_node', '')}` | {fd.get('op_type', '')} | `{fw.get('target', '')}` | "
                         f"{fd.get('stage', '')} / {fd.get('cause', '')} | {_num((fd.get('metrics') or {}).get('max_abs'))} | "
                         f"{_cell(_short_source(model_source(fw)))} | {link} |")
    lines += masked_only_section([r for r in rows if r["status"] == "diverged" and masked_only(r)])
    groups = export_failure_groups(rows)
    if groups:
        lines += ["", "## Export failures", "", "| failing op / step | message | remedy | models |", "|---|---|---|---|"]
        for target, message, names in groups:
            lines.append(f"| `{target}` | {_cell(message)} | {remedy_cell(*group_remedy(rows, names))} | "
                         f"{len(names)}: {_cell(', '.join(names))} |")
    others = [r for r in rows if r["status"] not in ("match", "diverged", "export_failed")]
    if others:
        lines += ["", "## Other outcomes", "", "| model | status | exit | reason |", "|---|---|---:|---|"]
        for r in sorted(others, key=lambda r: (r["status"], r["name"])):
            lines.append(f"| {_cell(r['name'])} | {r['status']} | {r.get('exit_code', '')} | {_cell(r.get('reason', ''))} |")
    flagged = [r for r in rows if r.get("flags")]
    if flagged:
        lines += ["", "## Flags", "", "| model | status | flags |", "|---|---|---|"]
        for r in sorted(flagged, key=lambda r: r["name"]):
            lines.append(f"| {_cell(r['name'])} | {r['status']} | {', '.join(r['flags'])} |")
    lines += transform_tables(rows)  # sweep --transform NAME
    slow = sorted(rows, key=lambda r: -float(r.get("wall_s") or 0))[:5]
    if slow:
        lines += ["", "Slowest: " + ", ".join(f"{r['name']} {float(r.get('wall_s') or 0):.0f}s" for r in slow)
                  + f". Peak memory: {max(float(r.get('peak_rss_mib') or 0) for r in rows):.0f} MiB."]
    lines += ["", "Operator sequences ending at culprits: [sequences.md](sequences.md). Every row: `sweep.jsonl`."]
    return "\n".join(lines) + "\n"


def masked_only(row: dict[str, Any]) -> bool:
    """A divergence only at positions a mask input excludes (first_divergent.scope, issue #22.2)."""
    return (row.get("first_divergent") or {}).get("scope") == "masked_positions"


def masked_only_section(rows: list[dict[str, Any]]) -> list[str]:
    """sweep.md's models whose outputs agree wherever the mask keeps positions: apart from the real divergences."""
    if not rows:
        return []
    lines = ["", "## Divergent only at masked positions", "",
             "Every position the attention mask keeps agrees; the outputs differ only where it excludes "
             "(padded query rows). `locate` exits 0 for these unless `--strict-masked`.", "",
             "| model | culprit | op | aten op | max_abs attended | max_abs masked | report |", "|---|---|---|---|---:|---:|---|"]
    for r in sorted(rows, key=lambda r: r["name"]):
        fd = r.get("first_divergent") or {}
        outs = [o for o in r.get("outputs") or [] if o.get("max_abs_attended") is not None]
        attended = max((_float(o["max_abs_attended"]) for o in outs), default=None)
        masked = max((_float((o.get("metrics") or {}).get("max_abs")) for o in outs), default=None)
        lines.append(f"| {_cell(r['name'])} | `{fd.get('onnx_node', '')}` | {fd.get('op_type', '')} | "
                     f"`{(fd.get('framework') or {}).get('target', '')}` | {_num(attended)} | {_num(masked)} | "
                     f"{_link(r.get('report_dir', ''), Path('.'))} |")
    return lines


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def terminal_table(rows: list[dict[str, Any]], width: int = 100) -> str:
    """A plain-text table of every model that did not match, under the counts line."""
    lines = [status_line(rows)]
    bad = sorted((r for r in rows if r["status"] != "match"), key=lambda r: (r["status"], r["name"]))
    if bad:
        name_w = min(40, max(len(r["name"]) for r in bad))
        status_w = max(len(r["status"]) for r in bad)
        for r in bad:
            reason = r.get("reason", "")
            room = max(20, width - name_w - status_w - 4)
            lines.append(f"  {r['name'][:name_w]:<{name_w}}  {r['status']:<{status_w}}  {reason[:room]}")
    return "\n".join(lines)


def diff_text(diff: SweepDiff) -> str:
    """``--compare``: what newly diverges or fails, what got fixed, what moved."""
    lines = [f"{diff.regressions} regression(s): {len(diff.newly_diverged)} newly diverged, {len(diff.newly_failing)} newly failing; "
             f"{len(diff.fixed)} fixed, {len(diff.culprit_moved)} with another culprit, {diff.unchanged} unchanged"]
    for title, changes in (("newly diverged", diff.newly_diverged), ("newly failing", diff.newly_failing),
                           ("fixed", diff.fixed), ("culprit moved", diff.culprit_moved), ("other changes", diff.other)):
        if changes:
            lines.append(f"{title}:")
            lines += [f"  {c.name}: {c.old} -> {c.new}  {c.new_reason or c.old_reason}"[:200] for c in changes]
    if diff.only_old:
        lines.append(f"only in OLD: {', '.join(diff.only_old)}")
    if diff.only_new:
        lines.append(f"only in NEW: {', '.join(diff.only_new)}")
    return "\n".join(lines)


def _message_key(message: str) -> str:
    """The message as a group key: first line, without the step the table already names,
    numbers folded (``Cannot view a tensor with shape torch.Size([N, N, N, N])``) so one
    cause met at several shapes is one group."""
    first = (message or "").strip().splitlines()[0] if (message or "").strip() else ""
    first = re.sub(r"^ONNX export failed at step '[^']*'( on \S+)?: ", "", first)
    return re.sub(r"\d+", "N", first)[:160]


def model_source(framework: dict[str, Any]) -> str:
    """The culprit's line in the model's code.

    locate names the innermost frame outside site-packages; for a zoo model that is the
    zoo's own wrapper, so take the deepest frame of the stack trace outside torch instead
    (the ``transformers`` modeling line).
    """
    source = framework.get("source", "") or ""
    if source and "/nodebisect/sweep/zoo.py" not in source.replace(os.sep, "/"):
        return source
    frames = re.findall(r'File "([^"]+)", line (\d+)', framework.get("stack_trace", "") or "")
    frames = [f for f in frames if "/torch/" not in f[0].replace(os.sep, "/") and "/nodebisect/" not in f[0].replace(os.sep, "/")]
    return f"{frames[-1][0]}:{frames[-1][1]}" if frames else source


def _short_source(source: str) -> str:
    if not source:
        return ""
    path, _, line = source.rpartition(":")
    marker = f"{os.sep}site-packages{os.sep}"
    if marker in path:
        path = path.split(marker, 1)[1]
    return f"{path}:{line}" if path else source


def _link(report_dir: str, out_dir: Path) -> str:
    """A link that survives moving the sweep directory: bundles live in ``DIR/reports/NAME``."""
    if not report_dir:
        return ""
    return f"[report](reports/{Path(report_dir).name}/report.md)"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")[:240]


def _num(value: Any) -> str:
    try:
        return f"{float(value):.3g}"
    except (TypeError, ValueError):
        return ""


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
