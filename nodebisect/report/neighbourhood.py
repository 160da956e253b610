"""A graphviz picture of the culprit's neighbourhood, from ``result.nodes`` alone.

Edges come from the node records' input/output value names, so a saved result
JSON is enough. The picture keeps a few hops each way around the culprit
(capped so it stays legible), colours nodes by their error and outlines the
culprit. ``render_graph`` returns the DOT text and, when the ``dot`` binary is
available, the SVG bytes; writing files is the bundle writer's job.
"""

from __future__ import annotations

import html
import math
import os
import shutil
import subprocess
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from nodebisect.records import OK, STAGE_CAPTURE, STATUS_DIVERGED, LocateResult, NodeRecord
from nodebisect.report.index import center_node, graph_index

HOPS = 4
MAX_NODES = 24
LABEL_CHARS = 34
# A wheel shipping a static build of Graphviz's dot (same command line, same SVG).
PURE_DOT = "graphviz-pure"
INSTALL_HINT = (
    "Graphviz's `dot` program was not found, so the graph was written as graph.dot instead of graph.svg. "
    "Install it (`pip install graphviz-pure`, `apt-get install graphviz` or `brew install graphviz`) and "
    "re-run `nodebisect report DIR/report.json --out DIR`, or render it with `dot -Tsvg graph.dot -o graph.svg`."
)
GREEN = "#c8e6c9"
GREY = "#eeeeee"
REDS = ("#ffcdd2", "#ef9a9a", "#e57373", "#e53935", "#b71c1c")


@dataclass
class GraphPicture:
    """DOT source, the SVG rendered from it (None when ``dot`` is missing), and why."""

    dot: str
    svg: bytes | None
    message: str = ""
    center: str = ""


def neighbourhood(result: LocateResult, center: NodeRecord, hops: int = HOPS, cap: int = MAX_NODES) -> list[NodeRecord]:
    """Nodes within ``hops`` of ``center``, nearest first, at most ``cap``, in graph order."""
    index = graph_index(result)
    dist = {center.onnx_node: 0}
    queue = deque([center])
    while queue and len(dist) < cap:
        node = queue.popleft()
        if dist[node.onnx_node] >= hops:
            continue
        ups, downs = index.ups(node), index.downs(node)
        # Alternate upstream and downstream so the cap cuts both sides evenly.
        for nb in _interleave(ups, downs):
            if nb.onnx_node not in dist and len(dist) < cap:
                dist[nb.onnx_node] = dist[node.onnx_node] + 1
                queue.append(nb)
    return [n for n in result.nodes if n.onnx_node in dist]


def to_dot(result: LocateResult, center: NodeRecord, nodes: list[NodeRecord], title: str = "") -> str:
    """DOT text of ``nodes`` with edges between them and stubs for what is cut off."""
    chosen = {n.onnx_node for n in nodes}
    index = graph_index(result)
    producer, consumers = index.producer, index.consumers
    ids = {n.onnx_node: f"n{i}" for i, n in enumerate(nodes)}
    worst = max((n.metrics.max_abs for n in nodes if n.metrics and n.status == STATUS_DIVERGED), default=0.0, key=_finite)
    lines = [
        "digraph nodebisect {",
        '  graph [rankdir=TB, nodesep=0.3, ranksep=0.35, fontname="Helvetica", fontsize=12, labelloc=t, '
        f'label=<{_title(title)}>, bgcolor=white, pad=0.3];',
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11, margin="0.12,0.05", penwidth=1, color="#616161"];',
        '  edge [color="#757575", arrowsize=0.6, fontname="Helvetica", fontsize=9, fontcolor="#616161"];',
    ]
    fd = result.first_divergent
    suspect = fd.segment[0] if fd is not None and fd.segment and fd.segment[0] != center.onnx_node else ""
    for n in nodes:
        attrs = [f"label=<{_label(n)}>", f'fillcolor="{_fill(n, worst)}"', f'tooltip="{_tooltip(n)}"']
        if n is center:
            attrs += ['penwidth=3.5', 'color="black"']
        elif n.onnx_node == suspect:  # inside a decomposed op the evidence may point before the carrier
            attrs += ['penwidth=3', 'color="#e65100"', 'style="rounded,filled,dashed"', 'xlabel=<<font color="#e65100">most suspect</font>>']
        if _fill(n, worst) in REDS[3:]:
            attrs.append('fontcolor="white"')
        lines.append(f"  {ids[n.onnx_node]} [{', '.join(attrs)}];")
    stub = 0
    for n in nodes:
        outside_in = 0
        for v in n.inputs:
            p = producer.get(v)
            if p is None:
                continue
            if p.onnx_node in chosen:
                lines.append(f'  {ids[p.onnx_node]} -> {ids[n.onnx_node]} [tooltip="{_esc(v)}"];')
            else:
                outside_in += 1
        outside_out = sum(1 for v in n.outputs for c in consumers.get(v, []) if c.onnx_node not in chosen)
        if outside_in:
            lines.append(f'  s{stub} [shape=plaintext, style="", label="⋯ {outside_in} more", fontsize=9, fontcolor="#757575"];')
            lines.append(f"  s{stub} -> {ids[n.onnx_node]} [style=dashed];")
            stub += 1
        if outside_out:
            lines.append(f'  s{stub} [shape=plaintext, style="", label="{outside_out} more ⋯", fontsize=9, fontcolor="#757575"];')
            lines.append(f"  {ids[n.onnx_node]} -> s{stub} [style=dashed];")
            stub += 1
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_graph(result: LocateResult, hops: int = HOPS, cap: int = MAX_NODES) -> GraphPicture | None:
    """The culprit's neighbourhood as DOT and SVG; None when there is no node to centre on."""
    center = center_node(result)
    if center is None:
        return None
    nodes = neighbourhood(result, center, hops, cap)
    fd = result.first_divergent
    if fd is not None and fd.stage == STAGE_CAPTURE:
        title = f"ONNX node carrying capture culprit {fd.onnx_node} (the ONNX graph itself matches)"
    elif fd is not None:
        title = f"first divergent node {center.onnx_node} ({center.op_type}) and {len(nodes) - 1} neighbours"
    else:
        title = f"largest error: {center.onnx_node} ({center.op_type}) and {len(nodes) - 1} neighbours"
    dot = to_dot(result, center, nodes, title)
    svg, message = _render_svg(dot)
    return GraphPicture(dot=dot, svg=svg, message=message, center=center.onnx_node)


def _render_svg(dot: str) -> tuple[bytes | None, str]:
    if shutil.which("dot") is None:
        pure = dot_fallback()
        return _render_pure(pure, dot) if pure else (None, INSTALL_HINT)
    try:
        import graphviz
    except ImportError:
        return None, "the `graphviz` Python package is missing (pip install graphviz); wrote graph.dot instead"
    try:
        return graphviz.Source(dot).pipe(format="svg"), ""
    except graphviz.ExecutableNotFound:
        return None, INSTALL_HINT
    except graphviz.CalledProcessError as exc:
        return None, f"dot failed ({str(exc).splitlines()[0][:160]}); wrote graph.dot instead"


def dot_fallback() -> str | None:
    """The ``graphviz-pure`` wheel's ``dot`` (same command line), when Graphviz's own is not on PATH.

    Looked up on PATH and beside the running interpreter, so a venv's copy is
    found even when the venv is not activated.
    """
    found = shutil.which(PURE_DOT)
    if found:
        return found
    beside = Path(sys.executable).parent / PURE_DOT
    return str(beside) if beside.is_file() and os.access(beside, os.X_OK) else None


def _render_pure(binary: str, dot: str) -> tuple[bytes | None, str]:
    try:
        done = subprocess.run([binary, "-Tsvg"], input=dot.encode("utf-8"), capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{PURE_DOT} failed ({str(exc)[:160]}); wrote graph.dot instead"
    if done.returncode != 0 or b"<svg" not in done.stdout:
        err = done.stderr.decode("utf-8", "replace").strip().splitlines()
        return None, f"{PURE_DOT} failed ({(err[-1] if err else 'no output')[:160]}); wrote graph.dot instead"
    return done.stdout, ""


def _interleave(a: list[NodeRecord], b: list[NodeRecord]) -> list[NodeRecord]:
    out = []
    for i in range(max(len(a), len(b))):
        out += a[i : i + 1] + b[i : i + 1]
    return out


def _fill(n: NodeRecord, worst: float) -> str:
    if n.status == OK:
        return GREEN
    if n.status != STATUS_DIVERGED or n.metrics is None:
        return GREY
    if not math.isfinite(n.metrics.max_abs) or worst <= 0:
        return REDS[-1]
    # Shade on a log scale: four decades below the worst error -> lightest red.
    ratio = math.log10(max(n.metrics.max_abs, 1e-30)) - math.log10(_finite(worst))  # the quotient underflows to 0 against inf
    step = int(round((ratio + 4) / 4 * (len(REDS) - 1)))
    return REDS[max(0, min(len(REDS) - 1, step))]


def _label(n: NodeRecord) -> str:
    parts = [f"<B>{_esc(n.op_type or '?')}</B>", _esc(_clip(n.onnx_node))]
    if n.framework.module:
        parts.append(f'<FONT POINT-SIZE="9">{_esc(_clip(n.framework.module))}</FONT>')
    if n.metrics is not None and not n.metrics.reason:
        parts.append(f'<FONT POINT-SIZE="9">max_abs {n.metrics.max_abs:.2g}</FONT>')
    elif n.status != OK:
        parts.append(f'<FONT POINT-SIZE="9">{_esc(n.status.replace("_", " "))}</FONT>')
    return _rows(parts)


def _rows(parts: list[str]) -> str:
    """Stack lines in a borderless table: its rows keep their spacing in every SVG viewer."""
    cells = "".join(f"<TR><TD>{p}</TD></TR>" for p in parts)
    return f'<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="1">{cells}</TABLE>'


def _title(text: str) -> str:
    legend = (
        '<FONT POINT-SIZE="9">red: diverged (darker = larger max_abs) · green: ok · '
        "grey: not compared · bold outline: centre node · dashed orange: most suspect</FONT>"
    )
    return _rows([f"<B>{_esc(text)}</B>", legend, " "])


def _tooltip(n: NodeRecord) -> str:
    text = f"#{n.index} {n.onnx_node} ({n.op_type}) {n.status}"
    if n.framework.target:
        text += f" from {n.framework.target}"
    if n.framework.source:
        text += f" at {n.framework.source}"
    return _esc(text).replace('"', "&quot;")


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 1e300


def _clip(text: str) -> str:
    return text if len(text) <= LABEL_CHARS else "…" + text[-(LABEL_CHARS - 1) :]


def _esc(text: str) -> str:
    return html.escape(str(text), quote=True)


__all__ = ["GraphPicture", "INSTALL_HINT", "neighbourhood", "render_graph", "to_dot"]
