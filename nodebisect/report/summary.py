"""The short human summary of a LocateResult (pure text, no I/O)."""

from __future__ import annotations

from nodebisect.records import DIVERGED, EXPORT_FAILED, MATCH, RUNTIME_FAILED, LocateResult, Metrics
from nodebisect.report.wording import (
    constants_text,
    explanation_text,
    file_at,
    is_detail_note,
    isolation_text,
    metrics_text,
    named_suspect,
    next_lines,
    precision_text,
    amplifier_text,
    stage_sentence,
    worst_text,
)


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
    if result.verdict == MATCH:
        drift = stats.get("precision_drift")
        within = f" within {drift.get('dtype') or 'float'} precision drift (note below)" if drift else ""
        inexact = stats.get("inexact_ops") or []
        caveat = f"; but {len(inexact)} exact op(s) are not bit-exact on PyTorch's inputs (note below)" if inexact else ""
        lines.append(
            f"MATCH: all {len(result.outputs)} output(s) and {stats.get('compared_values', 0)} compared value(s) agree with PyTorch{within}{caveat}."
        )
        lines.append(f"  {stats.get('onnx_nodes', 0)} ONNX nodes, {stats.get('ort_sessions', 0)} onnxruntime session(s), {stats.get('seconds', 0):.1f}s")
    elif result.verdict == EXPORT_FAILED and result.export_failure:
        f = result.export_failure
        lines.append(f"EXPORT FAILED at step '{f.step}'" + (f" on {f.target}" if f.target else ""))
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
        if f.target and not f.cause:  # a report from before the classifier
            lines.append(f"  next: rewrite or register {f.target}, or try another --opset; --debug shows the exporter's traceback")
        elif f.tip:
            lines.append(f"  next: {f.tip}")
        else:
            lines.append("  next: --debug shows the exporter's traceback")
    elif result.verdict in (DIVERGED, RUNTIME_FAILED) and result.first_divergent:
        lines += _diverged(result, report_dir, repro)
    else:
        lines.append(f"{result.verdict.upper()}")
    if result.trials:
        groups = result.stats.get("trial_groups", {})
        lines.append(f"  trials:    {len(result.trials)} input sets: " + "; ".join(f"{k}: {v}" for k, v in groups.items()))
    for note in result.notes:
        if verbose or not is_detail_note(note):
            lines.append(f"  note: {note}")
    return "\n".join(lines)


def _diverged(result: LocateResult, report_dir: str | None, repro: bool) -> list[str]:
    """The lines of a divergence: each fact once, stage and cause in one sentence."""
    fd = result.first_divergent
    assert fd is not None
    stats = result.stats
    exporter = result.environment.get("exporter", "dynamo")
    fw = fd.framework
    lines = [f"DIVERGED at {fd.onnx_node} ({fd.op_type})", f"  value:     {fd.onnx_value}"]
    lines.append(f"  stage:     {fd.stage} (cause {fd.cause}): {stage_sentence(fd, exporter)}")
    if fw.target or fw.fx_node:
        # The TorchScript exporter has no FX graph: its segments are module scopes, or traced
        # aten calls between modules (function-level references) when fx_node is not the module.
        kind = "FX node" if exporter != "torchscript" else ("scope" if fw.fx_node == fw.module else "traced call")
        lines.append(f"  framework: {fw.target or '?'} ({kind} {fw.fx_node or '?'})" + (f" in module '{fw.module}'" if fw.module else ""))
    if fw.source:
        library = any(m in fw.source for m in ("site-packages", "dist-packages"))  # no frame of the user's own code
        lines.append(("  source (library code): " if library else "  source:    ") + fw.source + (f"  {fw.code}" if fw.code else ""))
    worst = worst_text(fd.worst)
    if worst:
        lines.append(f"  worst:     {worst}")
    consts = constants_text(fd.worst)
    if consts:
        lines.append(f"  constants: {consts}")
    lines.append(f"  metrics:   {metrics_text(fd.metrics, fd.worst)}")
    alone = isolation_text(fd)
    if alone:
        lines.append(f"  isolated:  {alone}")
    caution = precision_text(fd.metrics, fd.op_noise)
    if caution:
        lines.append(f"  precision: {caution}")
    amplified = amplifier_text(fd)
    if amplified:
        lines.append(f"  amplified: {amplified}")
    if len(fd.segment) > 1:
        lines.append(f"  segment ({len(fd.segment)} nodes, most suspect first): " + ", ".join(f"{n} ({t})" for n, t in zip(fd.segment[:5], fd.segment_op_types[:5])))
    suspect = named_suspect(fd)
    if suspect:
        lines.append(f"  suspect:   {suspect}")
    why = explanation_text(fd)
    if why:
        lines.append(f"  why:       {why}")
    bad = [o for o in result.outputs if not o.ok]
    if bad:
        reasons = [o.metrics.reason for o in bad if o.metrics.reason]
        size = reasons[0] if reasons else f"worst max_abs={max(o.metrics.max_abs for o in bad):.3g}"
        lines.append(f"  outputs:   {len(bad)}/{len(result.outputs)} diverge ({size})")
    lines.append(
        f"  search:    {stats.get('strategy', '?')}, {stats.get('ort_sessions', 0)} onnxruntime session(s), "
        f"{stats.get('compared_values', 0)}/{stats.get('mapped_values', 0)} values compared, {stats.get('seconds', 0):.1f}s"
    )
    if result.repro is not None and result.repro.note and not result.repro.note.startswith("the culprit's own"):
        # Widened past the culprit, or no window reproduces (diagnose.repro_check): say so here too.
        lines.append(f"  repro:     {'holds ' if result.repro.reproduces else 'none: '}{result.repro.note}")
    repo = file_at(fd, exporter)
    if repo:
        lines.append(f"  file at:   {repo[0]}: {repo[1]}")
    for i, step in enumerate(next_lines(result, report_dir, repro)):
        lines.append(("  next:      " if i == 0 else "             ") + step)
    return lines
