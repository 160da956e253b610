"""The short human summary of a LocateResult (pure text, no I/O)."""

from __future__ import annotations

from nodebisect.records import DIVERGED, EXPORT_FAILED, MATCH, RUNTIME_FAILED, LocateResult, Metrics


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


def summary(result: LocateResult) -> str:
    """Verdict, culprit, source line, metrics and a next-step hint."""
    lines: list[str] = []
    stats = result.stats
    if result.verdict == MATCH:
        lines.append(f"MATCH: all {len(result.outputs)} output(s) and {stats.get('compared_values', 0)} compared value(s) agree with PyTorch.")
        lines.append(f"  {stats.get('onnx_nodes', 0)} ONNX nodes, {stats.get('ort_sessions', 0)} onnxruntime session(s), {stats.get('seconds', 0):.1f}s")
    elif result.verdict == EXPORT_FAILED and result.export_failure:
        f = result.export_failure
        lines.append(f"EXPORT FAILED at step '{f.step}'" + (f" on {f.target}" if f.target else ""))
        lines.append(f"  {f.message}")
        if f.source:
            lines.append(f"  source: {f.source}")
        if f.target:
            lines.append(f"  next: rewrite or register {f.target}, or try another --opset; --debug shows the exporter's traceback")
        elif f.tip:
            lines.append(f"  next: {f.tip}")
        else:
            lines.append("  next: --debug shows the exporter's traceback")
    elif result.verdict in (DIVERGED, RUNTIME_FAILED) and result.first_divergent:
        fd = result.first_divergent
        fw = fd.framework
        lines.append(f"DIVERGED at {fd.onnx_node} ({fd.op_type})  stage={fd.stage} cause={fd.cause}")
        lines.append(f"  value:     {fd.onnx_value}")
        if fw.target or fw.fx_node:
            # The TorchScript exporter has no FX graph: its segments are module scopes.
            kind = "scope" if result.environment.get("exporter") == "torchscript" else "FX node"
            lines.append(f"  framework: {fw.target or '?'} ({kind} {fw.fx_node or '?'})" + (f" in module '{fw.module}'" if fw.module else ""))
        if fw.source:
            lines.append(f"  source:    {fw.source}" + (f"  {fw.code}" if fw.code else ""))
        lines.append(f"  metrics:   {fmt_metrics(fd.metrics)}")
        if len(fd.segment) > 1:
            lines.append(f"  segment ({len(fd.segment)} nodes, most suspect first): " + ", ".join(f"{n} ({t})" for n, t in zip(fd.segment[:5], fd.segment_op_types[:5])))
        if fd.suspects:
            top = fd.suspects[0]
            lines.append(f"  suspect:   {top.onnx_node} ({top.op_type}): {top.reason}")
        if fd.explanation:
            lines.append(f"  why:       {fd.explanation}")
        bad = [o for o in result.outputs if not o.ok]
        if bad:
            lines.append(f"  outputs:   {len(bad)}/{len(result.outputs)} diverge (worst max_abs={max(o.metrics.max_abs for o in bad):.3g})")
        lines.append(
            f"  search:    {stats.get('strategy', '?')}, {stats.get('ort_sessions', 0)} onnxruntime session(s), "
            f"{stats.get('compared_values', 0)}/{stats.get('mapped_values', 0)} values compared, {stats.get('seconds', 0):.1f}s"
        )
        if fd.stage == "capture":
            lines.append("  next: the exported program differs from eager PyTorch; report it against torch.export, not the ONNX exporter")
        else:
            lines.append("  next: write a bug report with --report DIR (Markdown, graph and a minimal repro), or inspect it with `nodebisect tui`")
    else:
        lines.append(f"{result.verdict.upper()}")
    if result.trials:
        groups = result.stats.get("trial_groups", {})
        lines.append(f"  trials:    {len(result.trials)} input sets: " + "; ".join(f"{k}: {v}" for k, v in groups.items()))
    for note in result.notes:
        lines.append(f"  note: {note}")
    return "\n".join(lines)
