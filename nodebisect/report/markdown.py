"""LocateResult -> GitHub-issue-ready Markdown (pure text: no I/O, no torch).

The text is written for the maintainer who receives the issue: what diverged,
where it comes from in the user's code, how large the error is, what the graph
looks like around it, and how to reproduce it without the user's model. Long
parts (stack traces, the full node table) sit in ``<details>`` so the issue
stays readable. The bundle writer passes what it wrote (``BundleInfo``) so the
text can point at the pictures and the repro folder.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

from nodebisect.report.filing import full_attributes, gh_command, issue_title, reproduce_section, values_section, what_to_do_section
from nodebisect.report import tf2onnx_wording
from nodebisect.report.diff_wording import in_reference_terms
from nodebisect.report.wording import evidence_text, is_detail_note, nonfinite_sentence, stage_sentence
from nodebisect.records import (
    DIVERGED,
    EXPORT_FAILED,
    MATCH,
    RUNTIME_FAILED,
    STAGE_CAPTURE,
    STATUS_DIVERGED,
    LocateResult,
    Metrics,
    NodeRecord,
)
from nodebisect.report.index import center_node, downstream, error_key
from nodebisect.report.scope_wording import downstream_sentence, output_scope_cell, scope_text
from nodebisect.report.markup import cell, code, code_cell, details, fence, num, one_line, table
from nodebisect.report.transform_wording import transform_markdown

# How much of the graph the report shows before folding it away.
WORST_VALUES = 5
CONTEXT_NODES = 4
FULL_TABLE_MAX_ROWS = 400
LONG_TEXT_CHARS = 600

ENVIRONMENT_KEYS = (
    ("nodebisect", "nodebisect"),
    ("torch", "torch"),
    ("onnx", "onnx"),
    ("onnxruntime", "onnxruntime"),
    ("onnxscript", "onnxscript"),
    ("opset", "ONNX opset"),
    ("exporter", "exporter"),
    ("ep", "execution provider"),
    ("opt_level", "ORT graph optimization"),
    ("device", "PyTorch device"),
    ("python", "Python"),
    ("os", "OS"),
    ("machine", "machine"),
)


@dataclass
class BundleInfo:
    """What the bundle writer put next to report.md, for the text to refer to.

    Attributes:
        growth_file: file name of the error-growth picture, or "" when none.
        graph_file: file name of the graph picture (graph.svg or graph.dot), or "".
        graph_message: why the graph is not an SVG (e.g. how to install graphviz).
        repro_dir: folder name of the repro bundle, or "" when none was written.
        repro_bytes: total size of the repro bundle.
        repro_files: file names inside the repro bundle.
        repro_note: why there is no repro bundle, when there is none.
        repro_window: which nodes the repro holds and why (widened when the culprit alone passes).
        redacted: whether paths, user and host names were stripped.
    """

    growth_file: str = ""
    graph_file: str = ""
    graph_message: str = ""
    repro_dir: str = ""
    repro_bytes: int = 0
    repro_files: list[str] = field(default_factory=list)
    repro_note: str = ""
    repro_window: str = ""
    redacted: bool = False


def render_markdown(result: LocateResult, bundle: BundleInfo | None = None) -> str:
    """The whole report as Markdown text."""
    bundle = bundle or BundleInfo()
    # Symptom, evidence, what to do; then how to reproduce and file it; the long parts folded.
    parts = [_title(result), _summary(result)]
    if result.verdict == EXPORT_FAILED:
        parts += [_export_failure(result), what_to_do_section(result)]
    else:
        parts += [values_section(result), what_to_do_section(result)]
        parts.append(transform_markdown(result.transform))  # --transform NAME: the fix the knob search found
        parts += [_values(result), _suspects(result), _sequence(result), _pictures(result, bundle)]
    svgs = [f for f in (bundle.growth_file, bundle.graph_file) if f.endswith(".svg")]
    parts += [_notes(result), reproduce_section(result, bundle), gh_command(result, svgs)]
    parts += [_environment(result), _stack_trace(result), _fulltable(result)]
    text = "\n\n".join(p for p in parts if p).rstrip() + "\n"
    return in_reference_terms(text) if result.environment.get("command") == "diff" else text  # a diff's reference is a model


# -- sections --------------------------------------------------------------------


def _title(result: LocateResult) -> str:
    fd = result.first_divergent
    model = f" in `{code(result.model)}`" if result.model else ""
    if result.verdict == MATCH:
        return f"## nodebisect: ONNX export matches PyTorch{model}"
    if result.verdict == EXPORT_FAILED:  # the issue's title: no local path of the model
        return f"## {issue_title(result)}"
    if fd is not None and result.verdict in (DIVERGED, RUNTIME_FAILED):
        return f"## {issue_title(result)}"
    if fd is not None:
        return f"## nodebisect: {result.verdict} at node `{code(fd.onnx_node)}` ({code(fd.op_type) or '?'}){model}"
    return f"## nodebisect: {result.verdict}{model}"


def _summary(result: LocateResult) -> str:
    stats = result.stats
    if result.verdict == MATCH:
        return (
            f"**Summary.** Verdict **match**: all {len(result.outputs)} output(s) and "
            f"{stats.get('compared_values', 0)} compared intermediate value(s) agree with PyTorch "
            f"within tolerance ({_tolerance_text(result)})"
            + (
                f", or within {d.get('dtype') or 'float'} precision drift: each value beyond it is within {d.get('noise_ratio', 0):.2g}x "
                "PyTorch's own rounding error against the exact (float64) answer, and no node is wrong on PyTorch's own inputs."
                if (d := stats.get("precision_drift"))
                else "."
            )
            + (
                f" **But** {len(inexact)} exact op(s) are not bit-exact on PyTorch's own inputs "
                f"({', '.join('`' + code(f['node']) + '`' for f in inexact[:3])}): their lowering computes another function; see Notes."
                if (inexact := stats.get("inexact_ops"))
                else ""
            )
        )
    if result.verdict == EXPORT_FAILED:
        f = result.export_failure
        if f is None:
            return "**Summary.** Verdict **export_failed**; the exporter left no message."
        text = f"**Summary.** Verdict **export_failed**: the exporter failed at step `{f.step or '?'}`"
        if f.target:
            text += f" on `{f.target}`"
        if f.source:
            text += f", called from `{f.source}`"
        return text + f": {one_line(f.message, 300)}"
    fd = result.first_divergent
    if fd is None:
        return f"**Summary.** Verdict **{result.verdict}**; no first divergent node was named."
    fw = fd.framework
    where = "FX node" if fd.stage == STAGE_CAPTURE else "ONNX node"
    text = f"**Summary.** Verdict **{result.verdict}**. The first divergent {where} is `{fd.onnx_node}`"
    text += f" (`{fd.op_type}`)" if fd.op_type else ""
    text += f", output `{fd.onnx_value}`" if fd.onnx_value and fd.onnx_value != fd.onnx_node else ""
    if fw.target and fw.target != fd.op_type:
        text += f", converted from `{fw.target}`"
        kind = "TF op" if fw.target.startswith("tf.") else "FX node"  # a Keras model's reference is TensorFlow's graph
        text += f" ({kind} `{fw.fx_node}`)" if fw.fx_node and fw.fx_node != fd.onnx_node else ""
    if fw.module:
        text += f" in module `{fw.module}`" + (f" (`{fw.module_type}`)" if fw.module_type else "")
    if fw.source:
        text += f", at `{fw.source}`" + (f": `{code(fw.code)}`" if fw.code else "")
    exporter = result.environment.get("exporter", "dynamo")
    text += f". Stage **{fd.stage or '?'}** (cause {fd.cause or '?'}): {stage_sentence(fd, exporter)}; {_metrics_sentence(fd.metrics, fd.worst)}."
    why = evidence_text(fd)
    if why:
        text += f" {why if why.startswith('torch') else why[:1].upper() + why[1:]}".rstrip(".") + "."
    bad = [o for o in result.outputs if not o.ok]
    if bad:
        text += f" {len(bad)}/{len(result.outputs)} model output(s) diverge (worst max_abs={num(max(o.metrics.max_abs for o in bad))})."
    scope = scope_text(result)
    if scope:
        text += f" **Scope:** {scope}."
    return text


def _environment(result: LocateResult) -> str:
    env = result.environment
    if not env:
        return ""
    rows = [(label.replace("PyTorch", tf2onnx_wording.reference_name(env)) if key == "device" else label, env[key])
            for key, label in ENVIRONMENT_KEYS if env.get(key) not in (None, "")]
    rows += [(k, v) for k, v in env.items() if k not in dict(ENVIRONMENT_KEYS) and v not in (None, "")]
    tol = _tolerance_text(result)
    if tol:
        rows.append(("tolerance", tol))
    return details("Environment", table(["", "version / setting"], [[f"**{k}**", code_cell(v)] for k, v in rows]))


def _export_failure(result: LocateResult) -> str:
    f = result.export_failure
    if f is None:
        return ""
    source = f.source + (f": {f.code}" if f.code else "")
    library = f.library_source + (f": {f.library_code}" if f.library_code else "") if f.library_source != f.source else ""
    in_library = bool(f.library_source) and f.library_source == f.source  # no frame of the user's own code
    rows = [
        ["step", code_cell(f.step)],
        ["stage", code_cell(f.stage if f.stage != f.step else "")],
        ["cause", code_cell(f.cause)],
        ["aten op", code_cell(f.target)],
        ["source (library code)" if in_library else "source", code_cell(source)],
        ["in library", code_cell(library)],
        ["model settings that avoid it", code_cell(" ".join(f"--model-setting {s}" for s in f.settings))],
    ]
    text = "### Export failure\n\n" + table(["", ""], [r for r in rows if r[1]])
    message = f.message.strip()
    if len(message) > LONG_TEXT_CHARS or message.count("\n") > 8:
        text += "\n\n" + details("Exporter message", fence(message))
    elif message:
        text += "\n\n" + fence(message)
    if f.cause and f.tip:
        text += f"\n\nNext: {f.tip}."
    else:
        text += (
            "\n\nNext: rewrite or register the op named above, or try another `--opset`; "
            "`--debug` shows the exporter's traceback."
        )
    if f.repro_script:
        text += "\n\n" + details("Minimal repro of the export failure (`repro/export_repro.py`)", fence(f.repro_script.rstrip(), "python"))
    return text


def _values(result: LocateResult) -> str:
    fd = result.first_divergent
    measured = [n for n in result.nodes if n.metrics is not None]
    if not measured and not result.outputs:
        return ""
    rows: list[list[str]] = []
    shown: set[str] = set()
    culprit = result.node(fd.onnx_node) if fd else None
    if fd is not None:
        node = culprit.onnx_node if culprit else fd.onnx_node
        rows.append(_value_row("**first divergent**", fd.onnx_value, node, fd.op_type, STATUS_DIVERGED, fd.metrics))
        shown.add(fd.onnx_value)
    # The culprit's own values first (its segment), then departures not downstream of it: values the
    # culprit feeds are its consequences, larger by amplification, and would make it look minor.
    after = downstream(result, culprit) if culprit is not None else set()
    own = set(fd.segment) if fd is not None else set()
    diverged = [n for n in measured if n.status == STATUS_DIVERGED and n.onnx_value not in shown]
    consequences = [n for n in diverged if n.onnx_node in after and n.onnx_node not in own]
    worst = sorted(
        (n for n in diverged if n.onnx_node not in after or n.onnx_node in own),
        key=lambda n: (n.onnx_node not in own, -error_key(n.metrics)),
    )[:WORST_VALUES]
    for n in worst:
        rows.append(_value_row(f"node #{n.index}", n.onnx_value, n.onnx_node, n.op_type, n.status, n.metrics))
        shown.add(n.onnx_value)
    for o in result.outputs:
        if o.name not in shown:
            rows.append(_value_row(f"output {code_cell(o.label)}" if o.label else "output", o.name, "", "", "ok" if o.ok else STATUS_DIVERGED, o.metrics))
    if not rows:
        return ""
    header = ["", "value", "node", "op", "status", "max_abs", "max_rel", "cosine", "mismatch", "nan / inf"]
    title = f"### Where the values depart (first divergent, its own values, up to {WORST_VALUES} others not downstream of it, model outputs)"
    text = title + "\n\n" + table(header, rows)
    if consequences:
        text += "\n\n" + downstream_sentence(len(consequences))
    attended = [o for o in result.outputs if o.max_abs_attended is not None]
    if attended:
        text += "\n\n" + table(["output", "max_abs", "max_abs where the mask keeps positions"], [[code_cell(o.label or o.name), num(o.metrics.max_abs), output_scope_cell(o.max_abs_attended)] for o in attended])
    return text


def _suspects(result: LocateResult) -> str:
    fd = result.first_divergent
    if fd is None or not fd.suspects or [s.onnx_node for s in fd.suspects] == [fd.onnx_node]:
        return ""  # the culprit alone: the summary already names it
    rows = [[code_cell(s.onnx_node), code_cell(s.op_type), f"{s.score:.2f}", cell(s.reason)] for s in fd.suspects]
    seg = f"The culprit's segment has {len(fd.segment)} node(s) converted from the same framework op; most suspect first."
    return "### Suspects in the segment\n\n" + seg + "\n\n" + table(["node", "op", "score", "why"], rows)


def _sequence(result: LocateResult) -> str:
    center = center_node(result)
    if center is None:
        fd = result.first_divergent
        if fd is not None and fd.stage == STAGE_CAPTURE:
            return (
                "### Operator sequence around the culprit\n\n"
                f"`{fd.onnx_node}` is an FX node of the exported program (capture stage): "
                "it has no ONNX node of its own, so there is no ONNX sequence to show."
            )
        return ""
    pos = result.nodes.index(center)
    lo, hi = max(0, pos - CONTEXT_NODES), min(len(result.nodes), pos + CONTEXT_NODES + 1)
    rows = []
    for n in result.nodes[lo:hi]:
        mark = "➜" if n is center else ""
        rows.append(
            [
                mark,
                str(n.index),
                code_cell(n.onnx_node),
                code_cell(n.op_type),
                n.status,
                num(n.metrics.max_abs) if n.metrics else "",
                code_cell(n.framework.target),
                code_cell(n.framework.module),
                cell(full_attributes(n) if n is center else _attributes(n)),
            ]
        )
    fd = result.first_divergent
    if fd is not None and fd.stage == STAGE_CAPTURE:
        label = f"`{code(center.onnx_node)}`, the ONNX node carrying the culprit's FX value"
    else:
        label = "the culprit" if fd else "the largest error"
    text = f"### Operator sequence around {label} (topological order)\n\n"
    return text + table(["", "node #", "node", "op", "status", "max_abs", "framework op", "module", "attributes"], rows)


def _pictures(result: LocateResult, bundle: BundleInfo) -> str:
    lines = []
    if bundle.growth_file:
        lines.append(
            f"![error growth along the graph]({bundle.growth_file})\n\n"
            f"`{bundle.growth_file}`: log10(max_abs) of every compared value in topological order, "
            "tolerance line dashed, culprit circled."
        )
    if bundle.graph_file.endswith(".svg"):
        lines.append(
            f"![graph around the culprit]({bundle.graph_file})\n\n"
            f"`{bundle.graph_file}`: the culprit's neighbourhood; red = diverged (darker = larger error), "
            "green = ok, grey = not compared, bold outline = first divergent node."
        )
    elif bundle.graph_file:
        lines.append(f"`{bundle.graph_file}`: the culprit's neighbourhood as Graphviz source.")
    if bundle.graph_message:
        lines.append(f"> {bundle.graph_message}")
    if not lines:
        return ""
    return "### Pictures\n\n" + "\n\n".join(lines) + "\n\n(Attach the SVG files to the issue: GitHub does not follow local paths.)"


def _notes(result: LocateResult) -> str:
    notes = [n for n in result.notes if not is_detail_note(n)]  # nodebisect's own mechanics stay in report.json
    if result.capture.get("checked") is False:
        notes.append("eager PyTorch was not compared with the exported program")
    if not notes:
        return ""
    return "### Notes\n\n" + "\n".join(f"- {one_line(n, 500)}" for n in notes)


def _stack_trace(result: LocateResult) -> str:
    fd = result.first_divergent
    if fd is None or not fd.framework.stack_trace.strip():
        return ""
    name = html.escape(fd.framework.fx_node or fd.onnx_node)
    return details(f"PyTorch stack trace of <code>{name}</code>", fence(fd.framework.stack_trace.strip()))


def _fulltable(result: LocateResult) -> str:
    if not result.nodes:
        return ""
    fd = result.first_divergent
    culprit = fd.onnx_node if fd else ""
    rows = []
    for n in result.nodes[:FULL_TABLE_MAX_ROWS]:
        m = n.metrics
        rows.append(
            [
                str(n.index),
                ("**" + code_cell(n.onnx_node) + "**") if n.onnx_node == culprit else code_cell(n.onnx_node),
                code_cell(n.op_type),
                n.status,
                num(m.max_abs) if m else "",
                _pct(m.mismatch_fraction) if m else "",
                code_cell(n.mapped_to),
                code_cell(n.framework.module),
                cell(n.framework.source),
            ]
        )
    more = len(result.nodes) - FULL_TABLE_MAX_ROWS
    body = table(["node #", "node", "op", "status", "max_abs", "mismatch", "framework value", "module", "source"], rows)
    if more > 0:
        body += f"\n\n… {more} more node(s) in report.json"
    return details(f"All {len(result.nodes)} ONNX nodes", body)


# -- helpers ---------------------------------------------------------------------


def _value_row(label: str, value: str, node: str, op: str, status: str, m: Metrics) -> list[str]:
    if m.reason:
        return [label, code_cell(value), code_cell(node), code_cell(op), status, cell(m.reason), "", "", _pct(m.mismatch_fraction), ""]
    nonfinite = f"{m.nan}/{m.inf}"
    if m.expected_nan or m.expected_inf:
        nonfinite += f" (expected {m.expected_nan}/{m.expected_inf})"
    return [
        label,
        code_cell(value),
        code_cell(node),
        code_cell(op),
        status,
        num(m.max_abs),
        num(m.max_rel),
        f"{m.cosine:.4f}" if math.isfinite(m.max_abs) else "—",  # over the agreeing positions only: meaningless
        _pct(m.mismatch_fraction),
        nonfinite,
    ]


def _metrics_sentence(m: Metrics, worst: dict | None = None) -> str:
    if m.reason:
        return m.reason
    nonfinite = nonfinite_sentence(m, worst)
    if nonfinite:  # a cosine over the agreeing positions only would read as "identical"
        return f"{nonfinite}, {_pct(m.mismatch_fraction)} of elements out of tolerance"
    text = f"max_abs={num(m.max_abs)}, max_rel={num(m.max_rel)}, cosine={m.cosine:.4f}, {_pct(m.mismatch_fraction)} of elements out of tolerance"
    if m.nan or m.inf:
        text += f", {m.nan} NaN / {m.inf} Inf (PyTorch: {m.expected_nan} / {m.expected_inf})"
    return text


def _attributes(n: NodeRecord) -> str:
    items = [f"{k}={_short(v)}" for k, v in n.attributes.items()]
    return one_line(", ".join(items), 80)


def _short(v: object) -> str:
    if isinstance(v, float):
        text = f"{v:.6g}"
    else:
        text = repr(v) if isinstance(v, str) else str(v)
    return text if len(text) <= 24 else text[:21] + "…"


def _tolerance_text(result: LocateResult) -> str:
    return "; ".join(f"{d}: rtol={t.get('rtol', 0):g} atol={t.get('atol', 0):g}" for d, t in result.tolerance.items())


def _pct(x: float) -> str:
    return f"{x:.1%}"


__all__ = ["BundleInfo", "render_markdown"]
