"""The error growth along the graph as a small hand-written SVG (pure text).

x is the node index in topological order, y is log10(max_abs) of each node's
compared output. Nodes on the culprit's path (its ancestors and descendants)
are joined by a line so the jump at the culprit and the drift after it read at
a glance; other compared nodes stay as faint dots. No plotting library: the
picture must render from a saved result JSON on any machine.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

from nodebisect.records import OK, STAGE_CAPTURE, STATUS_DIVERGED, LocateResult, Metrics, NodeRecord
from nodebisect.report.index import culprit_node, graph_index
from nodebisect.values.compare import DEFAULT_TOLERANCES

WIDTH = 760
HEIGHT = 346
MARGIN_LEFT = 62
MARGIN_RIGHT = 24
MARGIN_TOP = 56
MARGIN_BOTTOM = 48
DEFAULT_ATOL = DEFAULT_TOLERANCES["float32"].atol

COLORS = {OK: "#2e7d32", STATUS_DIVERGED: "#c62828"}
TITLE = "Error growth: max |ORT − PyTorch| per node"
AXIS = "ONNX node index (topological order)"
CAPTURE_TITLE = "Capture: max |torch.export − eager PyTorch| per module"
CAPTURE_AXIS = "module (eager forward order)"
FAINT = "#9e9e9e"


@dataclass
class _Point:
    node: NodeRecord
    x: float
    y: float  # log10 value (already floored / capped)
    on_path: bool
    nonfinite: bool


def growth_svg(result: LocateResult) -> str:
    """The SVG text, or "" when the result holds no compared node.

    A capture verdict plots eager PyTorch against the exported program per
    module: the ONNX curve of such a run is all green and says nothing.
    """
    fd = result.first_divergent
    atol = _atol(result)
    if fd is not None and fd.stage == STAGE_CAPTURE:
        nodes, culprit = _capture_points(result, atol)
        label = f"first divergent module: {_clip(culprit.onnx_node, 40)} (eager vs torch.export)"
        return _render(nodes, culprit, {n.onnx_node for n in nodes}, atol, CAPTURE_TITLE, CAPTURE_AXIS, label)
    culprit = culprit_node(result)
    measured = [n for n in result.nodes if n.metrics is not None and not n.metrics.reason]
    path = _path(result, culprit) if culprit else {n.onnx_node for n in measured}
    label = f"first divergent: {_clip(culprit.onnx_node, 40)} ({culprit.op_type})" if culprit else ""
    return _render(result.nodes, culprit, path, atol, TITLE, AXIS, label)


def _render(nodes: list[NodeRecord], culprit: NodeRecord | None, path: set[str], atol: float, title: str, axis: str, label_text: str) -> str:
    measured = [n for n in nodes if n.metrics is not None and not n.metrics.reason]
    if not measured:
        return ""
    finite = [n.metrics.max_abs for n in measured if math.isfinite(n.metrics.max_abs)]
    logs = [math.log10(v) for v in finite if v > 0] + [math.log10(atol)]
    y_lo = math.floor(min(logs))
    has_zero = any(v == 0 for v in finite)
    if has_zero:
        y_lo -= 1  # exact zeros sit on their own bottom line, labelled "0"
    y_hi = math.ceil(max(logs))
    if y_hi == max(logs):
        y_hi += 1  # headroom for the labels above the top value
    has_nonfinite = len(finite) < len(measured)
    if has_nonfinite:
        y_hi += 1
    if y_hi - y_lo < 2:
        y_lo -= 1
        y_hi += 1
    x_lo = min(n.index for n in nodes)
    x_hi = max(max(n.index for n in nodes), x_lo + 1)

    plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM

    def sx(i: float) -> float:
        return MARGIN_LEFT + (i - x_lo) / (x_hi - x_lo) * plot_w

    def sy(v: float) -> float:
        return MARGIN_TOP + (y_hi - v) / (y_hi - y_lo) * plot_h

    points = []
    for n in measured:
        v = n.metrics.max_abs
        nonfinite = not math.isfinite(v)
        y = y_hi if nonfinite else (math.log10(v) if v > 0 else y_lo)
        points.append(_Point(n, sx(n.index), sy(y), n.onnx_node in path, nonfinite))

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        'font-family="Helvetica, Arial, sans-serif" font-size="11">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{MARGIN_LEFT}" y="20" font-size="14" font-weight="bold">{html.escape(title)}</text>',
    ]
    # Grid and y axis (one line per decade).
    for d in range(y_lo, y_hi + 1):
        y = sy(d)
        label = "NaN/Inf" if has_nonfinite and d == y_hi else ("0" if has_zero and d == y_lo else f"1e{d}")
        out.append(f'<line x1="{MARGIN_LEFT}" y1="{y:.1f}" x2="{WIDTH - MARGIN_RIGHT}" y2="{y:.1f}" stroke="#eeeeee"/>')
        out.append(f'<text x="{MARGIN_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#555">{label}</text>')
    # x axis ticks.
    for i in _ticks(x_lo, x_hi):
        x = sx(i)
        out.append(f'<line x1="{x:.1f}" y1="{HEIGHT - MARGIN_BOTTOM}" x2="{x:.1f}" y2="{HEIGHT - MARGIN_BOTTOM + 4}" stroke="#555"/>')
        out.append(f'<text x="{x:.1f}" y="{HEIGHT - MARGIN_BOTTOM + 16}" text-anchor="middle" fill="#555">{i}</text>')
    out.append(
        f'<rect x="{MARGIN_LEFT}" y="{MARGIN_TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>'
    )
    out.append(
        f'<text x="{MARGIN_LEFT + plot_w / 2:.1f}" y="{HEIGHT - 10}" text-anchor="middle" fill="#333">'
        f"{html.escape(axis)}</text>"
    )
    out.append(
        f'<text transform="translate(14,{MARGIN_TOP + plot_h / 2:.1f}) rotate(-90)" text-anchor="middle" fill="#333">'
        "max_abs (log scale)</text>"
    )
    # Tolerance line.
    ty = sy(math.log10(atol))
    out.append(
        f'<line x1="{MARGIN_LEFT}" y1="{ty:.1f}" x2="{WIDTH - MARGIN_RIGHT}" y2="{ty:.1f}" stroke="#ef6c00" stroke-dasharray="6,4"/>'
    )
    out.append(
        f'<text x="{WIDTH - MARGIN_RIGHT - 4}" y="{ty - 4:.1f}" text-anchor="end" fill="#ef6c00">tolerance atol={atol:g}</text>'
    )
    # The culprit's path as lines between measured neighbours on it; a gap (nodes of the
    # path that were not measured) stays open: a straight line would draw a jump as growth.
    for run in _runs(nodes, path, points):
        coords = " ".join(f"{p.x:.1f},{p.y:.1f}" for p in run)
        out.append(f'<polyline points="{coords}" fill="none" stroke="#546e7a" stroke-width="1.5"/>')
    for p in sorted(points, key=lambda q: q.on_path):
        color = COLORS.get(p.node.status, FAINT) if p.on_path else FAINT
        radius = 3.5 if p.on_path else 2.2
        tip = html.escape(f"#{p.node.index} {p.node.onnx_node} ({p.node.op_type}): max_abs={p.node.metrics.max_abs:.3g}")
        if p.nonfinite:
            out.append(
                f'<path d="M{p.x:.1f},{p.y - 5:.1f} L{p.x + 5:.1f},{p.y + 4:.1f} L{p.x - 5:.1f},{p.y + 4:.1f} Z" fill="{color}">'
                f"<title>{tip}</title></path>"
            )
        else:
            out.append(f'<circle cx="{p.x:.1f}" cy="{p.y:.1f}" r="{radius}" fill="{color}"><title>{tip}</title></circle>')
    mark = next((p for p in points if culprit is not None and p.node is culprit), None)
    if mark is not None:
        out.append(f'<circle cx="{mark.x:.1f}" cy="{mark.y:.1f}" r="9" fill="none" stroke="black" stroke-width="2"/>')
        # The label sits above the plot, joined by a leader line: it never covers the curve.
        label = html.escape(label_text)
        anchor = "end" if mark.x > MARGIN_LEFT + plot_w * 0.6 else ("start" if mark.x < MARGIN_LEFT + plot_w * 0.4 else "middle")
        ly = MARGIN_TOP - 8
        out.append(f'<line x1="{mark.x:.1f}" y1="{ly + 3:.1f}" x2="{mark.x:.1f}" y2="{mark.y - 9:.1f}" stroke="black" stroke-dasharray="2,2"/>')
        out.append(f'<text x="{mark.x:.1f}" y="{ly:.1f}" text-anchor="{anchor}" font-weight="bold">{label}</text>')
    out.append(_legend(20))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _legend(y: float) -> str:
    items = [(COLORS[OK], "ok"), (COLORS[STATUS_DIVERGED], "diverged"), (FAINT, "off the culprit's path")]
    parts = []
    x = WIDTH - MARGIN_RIGHT - 290
    for color, text in items:
        parts.append(f'<circle cx="{x}" cy="{y - 4}" r="4" fill="{color}"/><text x="{x + 8}" y="{y}" fill="#333">{text}</text>')
        x += 22 + 6 * len(text)
    return "".join(parts)


def _runs(nodes: list[NodeRecord], path: set[str], points: list[_Point]) -> list[list[_Point]]:
    """Stretches of consecutive measured nodes on the path (in node order), two points or more."""
    by_name = {p.node.onnx_node: p for p in points}
    runs: list[list[_Point]] = [[]]
    for n in nodes:
        if n.onnx_node not in path:
            continue
        point = by_name.get(n.onnx_node)
        if point is None:
            runs.append([])  # an unmeasured node of the path: break the line
        else:
            runs[-1].append(point)
    return [r for r in runs if len(r) > 1]


def _capture_points(result: LocateResult, atol: float) -> tuple[list[NodeRecord], NodeRecord]:
    """Eager vs export per module (``capture["modules"]`` when recorded, else the culprit alone)."""
    fd = result.first_divergent
    assert fd is not None
    rows = result.capture.get("modules") or []
    nodes = []
    for i, row in enumerate(rows):
        m = Metrics(max_abs=float(row.get("max_abs", 0.0)))
        status = STATUS_DIVERGED if not (m.max_abs <= atol) else OK
        nodes.append(NodeRecord(i, str(row.get("module") or row.get("fx_node") or i), "module", "", status, metrics=m))
    name = fd.framework.module or result.capture.get("first_module") or fd.onnx_node
    culprit = next((n for n in nodes if n.onnx_node == name), None)
    if culprit is None:
        culprit = NodeRecord(len(nodes), name, "module", "", STATUS_DIVERGED, metrics=fd.metrics)
        nodes.append(culprit)
    return nodes, culprit


def _path(result: LocateResult, culprit: NodeRecord) -> set[str]:
    """Node names of one chain through the culprit, from a graph input to an output.

    At each step the chain follows the neighbour whose reachable compared value
    is largest, so it runs through the activations (not a shape computation)
    and one line shows how the error grows. Nodes are in topological order.
    """
    index = graph_index(result)
    ups = {n.onnx_node: index.ups(n) for n in result.nodes}
    downs = {n.onnx_node: index.downs(n) for n in result.nodes}
    reach_up: dict[str, float] = {}
    for n in result.nodes:
        reach_up[n.onnx_node] = _score(n, [reach_up.get(p.onnx_node, -1.0) for p in ups[n.onnx_node]])
    reach_down: dict[str, float] = {}
    for n in reversed(result.nodes):
        reach_down[n.onnx_node] = _score(n, [reach_down.get(c.onnx_node, -1.0) for c in downs[n.onnx_node]])
    chain = {culprit.onnx_node}
    for neighbours, reach in ((ups, reach_up), (downs, reach_down)):
        node = culprit
        while neighbours[node.onnx_node]:
            node = max(neighbours[node.onnx_node], key=lambda m: reach.get(m.onnx_node, -1.0))
            if node.onnx_node in chain:
                break
            chain.add(node.onnx_node)
    return chain


def _score(node: NodeRecord, neighbour_scores: list[float]) -> float:
    if node.metrics is not None and not node.metrics.reason:
        v = node.metrics.max_abs
        return 1e300 if not math.isfinite(v) else v
    return max(neighbour_scores, default=-1.0)


def _atol(result: LocateResult) -> float:
    tol = result.tolerance.get("float32") or next(iter(result.tolerance.values()), None) or {}
    atol = float(tol.get("atol") or 0.0)
    return atol if atol > 0 else DEFAULT_ATOL


def _ticks(lo: int, hi: int, target: int = 8) -> list[int]:
    span = hi - lo
    step = max(1, span // target)
    for nice in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10000):
        if nice >= step:
            step = nice
            break
    first = int(math.ceil(lo / step) * step)
    return list(range(first, hi + 1, step))


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


__all__ = ["growth_svg"]
