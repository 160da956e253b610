"""The short human summary of a LocateResult (pure text, no I/O)."""

from __future__ import annotations

from nodebisect.records import DIVERGED, EXPORT_FAILED, MATCH, RUNTIME_FAILED, LocateResult, Metrics
from nodebisect.report.verdict import VerdictView, verdict_view
from nodebisect.report.wording import is_detail_note, next_lines


def fmt_metrics(m: Metrics) -> str:
    """One line of the metrics that matter most."""
    if m.reason:
        return m.reason
    parts = [f"max_abs={m.max_abs:.3g}", f"max_rel={m.max_rel:.3g}", f"cosine={m.cosine:.4f}", f"mismatch={m.mismatch_fraction:.1%}"]
    if m.nan or m.expected_nan:
        parts.append(f"nan={m.nan} (expected {m.expected_nan})")
    if m.inf or m.expected_inf:
        parts.append(f"inf={m.inf} (expected {m.expected_inf})")
    return " ".join(parts)


def summary(result: LocateResult, report_dir: str | None = None, verbose: bool = False, repro: bool = False) -> str:
    """Verdict, culprit, source line, the values behind it, and what to do next.

    Args:
        result: the run's result.
        report_dir: the folder ``--report`` wrote, so ``next:`` points into it.
        verbose: also print notes about nodebisect's own mechanics (probe fusions).
        repro: whether ``report_dir`` holds ``repro/repro.py``.
    """
    lines: list[str] = []
    stats = result.stats
    view = verdict_view(result)
    if result.verdict == MATCH:
        lines.append(view.headline)
        lines.append(f"  {stats.get('onnx_nodes', 0)} ONNX nodes, {stats.get('ort_sessions', 0)} onnxruntime session(s), {stats.get('seconds', 0):.1f}s")
    elif result.verdict == EXPORT_FAILED and result.export_failure:
        f = result.export_failure
        lines.append(view.headline)
        lines.append(f"  {f.message}")
        if f.cause:
            lines.append(f"  cause: {f.cause} (stage: {f.stage or f.step})")
        if f.source:
            where = "source (library code)" if f.library_source == f.source else "source"
            lines.append(f"  {where}: {f.source}" + (f": {f.code}" if f.code else ""))
        if f.library_source and f.library_source != f.source:
            lines.append(f"  in library: {f.library_source}" + (f": {f.library_code}" if f.library_code else ""))
        if f.repro_script and report_dir:
            lines.append(f"  repro: python {report_dir}/repro/export_repro.py (fails the same way)")
        if view.file_at:
            lines.append(f"  file at: {view.file_at[0]}: {view.file_at[1]}")
        if f.target and not f.cause:  # a report from before the classifier
            lines.append(f"  next: rewrite or register {f.target}, or try another --opset; --debug shows the exporter's traceback")
        elif f.tip:
            lines.append(f"  next: {f.tip}")
        else:
            lines.append("  next: --debug shows the exporter's traceback")
    elif result.verdict in (DIVERGED, RUNTIME_FAILED) and result.first_divergent:
        lines += _diverged(result, view, report_dir, repro)
    else:
        lines.append(f"{result.verdict.upper()}")
    if result.trials:
        groups = result.stats.get("trial_groups", {})
        lines.append(f"  trials:    {len(result.trials)} input sets: " + "; ".join(f"{k}: {v}" for k, v in groups.items()))
    for note in result.notes:
        if verbose or not is_detail_note(note):
            lines.append(f"  note: {note}")
    return "\n".join(lines)


def _diverged(result: LocateResult, view: VerdictView, report_dir: str | None, repro: bool) -> list[str]:
    """The lines of a divergence: the verdict view's facts, then the search, the repro and what next."""
    stats = result.stats
    lines = [view.headline] + [f"  {fact.label + ':':<10} {fact.text}" for fact in view.facts]
    lines.append(
        f"  search:    {stats.get('strategy', '?')}, {stats.get('ort_sessions', 0)} onnxruntime session(s), "
        f"{stats.get('compared_values', 0)}/{stats.get('mapped_values', 0)} values compared, {stats.get('seconds', 0):.1f}s"
    )
    if result.repro is not None and result.repro.note and result.repro.depth != 0:
        # Widened past the culprit, or no window reproduces (diagnose.repro_check): say so here too.
        lines.append(f"  repro:     {'holds ' if result.repro.reproduces else 'none: '}{result.repro.note}")
    if view.file_at:
        lines.append(f"  file at:   {view.file_at[0]}: {view.file_at[1]}")
    for i, step in enumerate(next_lines(result, report_dir, repro)):
        lines.append(("  next:      " if i == 0 else "             ") + step)
    return lines
