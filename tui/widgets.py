"""The widgets of the main screen: verdict banner, node table, node detail."""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.geometry import Size
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Static

from nodebisect.records import LocateResult, Metrics, NodeRecord
from nodebisect.report.node_wording import not_compared, suspect_sentence, unmeasured_suspect

from .messages import NodeHighlighted, NodeOpened
from .verdict import banner_text, capture_section
from .view import ResultIndex, bar, fmt, fmt_cos, histogram

MODULE_WIDTH = 30
NODE_WIDTH = 32
# How the table gives way when it is narrower than its data: text columns shrink to a
# floor, whole columns go, least needed first; a node's name is cut last, max abs never.
# A number is shown whole or not at all (``1.85e-`` reads as a different value).
SHRINK_FLOORS = {2: 10, 3: 14, 4: 10}  # op, node, module
FIT_STEPS = (("shrink", 4), ("drop", 8), ("shrink", 2), ("drop", 4), ("drop", 7), ("shrink", 3))  # module, cos, op, ...
# How a cut cell keeps what tells rows apart: a node's suffix (``_1``), a module path's tail.
CUT_MIDDLE, CUT_LEFT = 3, 4


class VerdictBanner(Static):
    """What the run concluded, one line per fact, each cut with an ellipsis; ``v`` or a click shows it all."""

    def show_running(self, model: str, stage: str) -> None:
        self.set_class(False, "-diverged", "-match")
        self.add_class("-running")
        self.update(Text.assemble(("RUNNING ", "bold"), f"locate on {model}", ("  ·  ", "dim"), stage))

    def show_failed(self, message: str, tip: str) -> None:
        self.set_class(False, "-running", "-match")
        self.add_class("-diverged")
        text = Text.assemble(("RUN FAILED  ", "bold"), message)
        if tip:
            text.append(f"\ntip: {tip}")
        self.update(text)

    def show_result(self, index: ResultIndex) -> None:
        result = index.result
        self.set_class(False, "-running")
        self.set_class(result.verdict == "match", "-match")
        self.set_class(result.verdict != "match", "-diverged")
        self.update(banner_text(index))

    def on_click(self) -> None:
        self.app.action_verdict()  # type: ignore[attr-defined]


class NodeTable(ScrollView, can_focus=True):
    """Every ONNX node in topological order, one row each, coloured by status.

    A Line-API view: only the visible rows are formatted, so loading or filtering
    10,000 nodes costs a list comprehension, not 80,000 measured cells.
    """

    COMPONENT_CLASSES = {"node-table--header", "node-table--cursor"}
    COLUMNS = (("", 1, False), ("#", 5, True), ("op", 20, False), ("node", NODE_WIDTH, False), ("module", MODULE_WIDTH, False),
               ("status", 8, False), ("max abs", 9, True), ("max rel", 9, True), ("cos", 8, True))
    BINDINGS = [
        Binding("enter", "open", "Detail", show=False, tooltip="Open the selected node in full", id="table-detail"),
        Binding("up", "move(-1)", "Up", show=False, id="row-up"),
        Binding("down", "move(1)", "Down", show=False, id="row-down"),
        Binding("pageup", "page(-1)", "Page up", show=False, id="page-up"),
        Binding("pagedown,space", "page(1)", "Page down", show=False, id="page-down"),
        Binding("home,g", "goto(0)", "First", show=False, tooltip="First node", id="first"),
        Binding("end,G", "goto(-1)", "Last", show=False, tooltip="Last node", id="last"),
    ]

    cursor: reactive[int] = reactive(0, always_update=True)

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002 - textual's name
        super().__init__(id=id)
        self.index: ResultIndex | None = None
        self.records: list[NodeRecord] = []
        self._rows_of: dict[str, int] = {}
        self._widths = [width for _, width, _ in self.COLUMNS]
        self._needed = list(self._widths)  # what the data asks for, before fitting to the view
        self._styles: dict[str, Style] = {}

    @property
    def row_count(self) -> int:
        return len(self.records)

    @property
    def current(self) -> str | None:
        return self.records[self.cursor].onnx_node if self.records else None

    def load(self, index: ResultIndex, records: list[NodeRecord]) -> None:
        """Show ``records`` (already filtered); keeps nothing of the previous rows."""
        self.index = index
        self.records = records
        self._rows_of = {r.onnx_node: i for i, r in enumerate(records)}
        self._needed = _column_widths(records, self.COLUMNS)
        self._fit()
        self.cursor = min(self.cursor, max(0, len(records) - 1))
        self.refresh()

    def on_resize(self, event: events.Resize) -> None:
        self._fit()

    def _fit(self) -> None:
        """Column widths for the width the table has now (all of the data's, when it fits)."""
        available = self.scrollable_content_region.width
        self._widths = fit_widths(self._needed, available) if available > 0 else list(self._needed)
        self.virtual_size = Size(sum(w + 1 for w in self._widths if w), len(self.records) + 1)
        self.refresh()

    def show(self, name: str) -> bool:
        """Put the cursor on ``name``; False when the row is filtered out."""
        row = self._rows_of.get(name)
        if row is None:
            return False
        self.cursor = row
        self.call_after_refresh(self._center_cursor)
        return True

    def _center_cursor(self) -> None:
        body = max(1, self.scrollable_content_region.height - 1)
        if not self.scroll_y <= self.cursor < self.scroll_y + body:
            self.scroll_to(y=max(0, self.cursor - body // 2), animate=False, immediate=True)

    # -- cursor ---------------------------------------------------------------------
    def watch_cursor(self, row: int) -> None:
        if not self.records:
            return
        self._scroll_to_cursor()
        self.call_after_refresh(self._scroll_to_cursor)  # again once a new virtual size is laid out
        self.refresh()
        self.post_message(NodeHighlighted(self.records[row].onnx_node))

    def _scroll_to_cursor(self) -> None:
        body = max(1, self.scrollable_content_region.height - 1)
        if self.cursor < self.scroll_y:
            self.scroll_to(y=self.cursor, animate=False, immediate=True)
        elif self.cursor >= self.scroll_y + body:
            self.scroll_to(y=self.cursor - body + 1, animate=False, immediate=True)

    def action_move(self, delta: int) -> None:
        if self.records:
            self.cursor = max(0, min(len(self.records) - 1, self.cursor + delta))

    def action_page(self, direction: int) -> None:
        self.action_move(direction * max(1, self.scrollable_content_region.height - 2))

    def action_goto(self, row: int) -> None:
        if self.records:
            self.cursor = row % len(self.records)

    def action_open(self) -> None:
        if self.records:
            self.post_message(NodeOpened(self.records[self.cursor].onnx_node))

    def on_click(self, event: events.Click) -> None:
        row = int(self.scroll_y) + event.y - 1
        if event.y >= 1 and 0 <= row < len(self.records):
            if row == self.cursor and event.chain > 1:
                self.action_open()
            self.cursor = row

    # -- rendering ------------------------------------------------------------------
    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        scroll_x = int(self.scroll_x)
        if y == 0:
            text = _format_row([name for name, _, _ in self.COLUMNS], self._widths, self.COLUMNS)
            style = self.get_component_rich_style("node-table--header")
        else:
            row = int(self.scroll_y) + y - 1
            if row >= len(self.records) or self.index is None:
                return Strip.blank(width, self.rich_style)
            record = self.records[row]
            text = _format_row(_cells(record, self.index.mark(record.onnx_node)), self._widths, self.COLUMNS)
            style = self.rich_style + self._style(self.index.row_style(record))
            if row == self.cursor:
                style += self.get_component_rich_style("node-table--cursor")
        text = text[scroll_x:scroll_x + width].ljust(width)
        return Strip([Segment(text, style)], width)

    def _style(self, spec: str) -> Style:
        if spec not in self._styles:
            self._styles[spec] = Style.parse(spec) if spec else Style()
        return self._styles[spec]


def _cells(record: NodeRecord, mark: str = "") -> list[str]:
    m = record.metrics
    return [  # cut to the column's width by _format_row
        mark,
        str(record.index),
        record.op_type,
        record.onnx_node,
        record.framework.module,
        record.status,
        fmt(m.max_abs) if m else "-",
        fmt(m.max_rel) if m else "-",
        fmt_cos(m.cosine) if m else "-",
    ]


def _column_widths(records: list[NodeRecord], columns: tuple[tuple[str, int, bool], ...]) -> list[int]:
    """Widths that fit the data, capped by each column's maximum (one pass, no rendering)."""
    need = [len(name) for name, _, _ in columns]
    need[0] = 1
    need[1] = max(need[1], len(str(records[-1].index)) if records else 1)
    need[2] = max([need[2], *(len(r.op_type) for r in records)])
    need[3] = max([need[3], *(len(r.onnx_node) for r in records)])
    need[4] = max([need[4], *(len(r.framework.module) for r in records)])
    need[5] = max([need[5], *(len(r.status) for r in records)])
    for i in (6, 7):
        need[i] = 9
    need[8] = 8
    return [min(n, cap) for n, (_, cap, _) in zip(need, columns)]


def fit_widths(needed: list[int], available: int) -> list[int]:
    """``needed`` narrowed to ``available`` columns (a dropped column has width 0).

    Takes the steps of ``FIT_STEPS`` in order until the row fits: shrink a text column
    (only as far as needed, never below its floor) or drop a column; then gives any room
    left back to the shrunk columns. Every shown column takes its width plus one separator.
    """
    widths = list(needed)

    def excess() -> int:
        return sum(w + 1 for w in widths if w) - available

    for action, i in FIT_STEPS:
        if excess() <= 0:
            break
        if action == "drop":
            widths[i] = 0
        else:
            widths[i] -= min(excess(), max(0, widths[i] - SHRINK_FLOORS[i]))
    for i in SHRINK_FLOORS:
        if widths[i] and excess() < 0:
            widths[i] += min(-excess(), needed[i] - widths[i])
    return widths


def _cut(cell: str, width: int, column: int) -> str:
    if len(cell) <= width:
        return cell
    if column == CUT_LEFT:
        return "…" + cell[-(width - 1):]
    if column == CUT_MIDDLE and width >= 7:
        tail = (width - 1) // 2
        return cell[: width - 1 - tail] + "…" + cell[-tail:]
    return cell[: width - 1] + "…"


def _format_row(cells: list[str], widths: list[int], columns: tuple[tuple[str, int, bool], ...]) -> str:
    parts = []
    for column, (cell, width, (_, _, right)) in enumerate(zip(cells, widths, columns)):
        if not width:
            continue  # a column the view has no room for
        cell = _cut(cell, width, column)
        parts.append(cell.rjust(width) if right else cell.ljust(width))
    return parts[0] + " ".join(parts[1:]) + " "


class NodeDetail(Static):
    """Everything the result knows about one node."""

    def show(self, index: ResultIndex | None, name: str | None, full: bool = False) -> None:
        if index is None or not name or name not in index.by_name:
            self.update(Text("no node selected", style="dim"))
            return
        self.update(node_detail(index, name, full=full))


def node_detail(index: ResultIndex, name: str, full: bool = False) -> Text:
    """The detail text of one node (``full`` adds the histogram and the whole stack trace)."""
    record = index.by_name[name]
    fw = record.framework
    is_culprit = name == index.culprit
    text = Text()
    text.append(f"{record.op_type} ", style="bold")
    text.append(name, style="bold")
    text.append(f"  [{record.status}]", style=index.row_style(record) or "")
    if is_culprit and index.capture:
        text.append("  ◀ CARRIES THE CAPTURE CULPRIT", style="bold dark_orange3")
    elif is_culprit:
        text.append("  ◀ FIRST DIVERGENT", style="bold red")
    elif name in index.segment:
        text.append("  ┃ in the culprit's segment", style="red")
    suspect = None
    if name in index.suspects and not is_culprit:
        suspects = index.result.first_divergent.suspects  # type: ignore[union-attr]
        suspect = suspects[index.suspects[name]]
        text.append("\n" + suspect_sentence(index.suspects[name], len(suspects), suspect, name in index.segment), style="yellow")
    text.append(f"\n#{record.index} · value {record.onnx_value}")
    if record.mapped_to:
        text.append(f" ≙ torch {record.mapped_to}")
    if fw.target:
        text.append(f"\ntorch op  {fw.target}")
    if fw.module or fw.module_type:
        text.append(f"\nmodule    {fw.module or '(top)'}")
        if fw.module_type:
            text.append(f"  ({fw.module_type.rsplit('.', 1)[-1]})", style="dim")
    if fw.source:
        text.append(f"\nsource    {fw.source}")
    if fw.code:
        text.append(f"\n  {fw.code.strip()}", style="cyan")

    _section(text, "metrics")
    if record.metrics is None:
        text.append("\n  " + not_compared(record.status), style="dim")
        if suspect is not None:
            text.append("\n  " + unmeasured_suspect(suspect), style="yellow")
    else:
        _metrics(text, index, record.metrics)

    fd = index.result.first_divergent
    if is_culprit and index.capture:
        capture_section(text, index)
    elif is_culprit and fd is not None:
        if fd.isolated_metrics is not None:
            text.append(f"\n  isolated on torch inputs: max abs {fmt(fd.isolated_metrics.max_abs)}"
                        f" cos {fmt_cos(fd.isolated_metrics.cosine)}")
        if fd.explanation:
            text.append(f"\n  {fd.explanation}", style="italic")
        for suspect in fd.suspects[:4]:
            text.append(f"\n  suspect {suspect.onnx_node} ({suspect.op_type}, {suspect.score:.2f}): {suspect.reason}", style="yellow")

    hist = histogram(index, selected=name, width=16 if not full else 28)
    if hist:
        _section(text, "max-abs histogram, all nodes (◀ this one)")
        for line in hist:
            text.append("\n" + line, style="bold" if line.endswith("◀") else "")

    if record.attributes:
        _section(text, "attributes")
        for key, value in sorted(record.attributes.items()):
            shown = repr(value)
            text.append(f"\n  {key} = {shown if full or len(shown) < 60 else shown[:58] + '…'}")

    _section(text, "inputs  (i: walk up)")
    for value in record.inputs:
        producer = index.producer.get(value)
        if producer:
            p = index.by_name[producer]
            text.append(f"\n  {value} ← {producer} ({p.op_type}, {p.status})", style=index.row_style(p))
        elif value:
            text.append(f"\n  {value}  (graph input / weight)", style="dim")
    _section(text, "consumers  (o: walk down)")
    consumers = index.consumers_of(name)
    if not consumers:
        text.append("\n  (none: a graph output)", style="dim")
    for consumer in consumers:
        c = index.by_name[consumer]
        text.append(f"\n  {consumer} ({c.op_type}, {c.status})", style=index.row_style(c))

    if fw.stack_trace:
        _section(text, "PyTorch stack trace")
        lines = fw.stack_trace.strip().splitlines()
        for line in lines if full else lines[-4:]:
            text.append("\n  " + line.strip(), style="dim")
    return text


def _section(text: Text, title: str) -> None:
    text.append(f"\n\n{title}", style="bold underline")


def _metrics(text: Text, index: ResultIndex, m: Metrics) -> None:
    if m.reason:
        text.append(f"\n  {m.reason}", style="red")
    text.append(f"\n  max abs  {fmt(m.max_abs):>10}   mean abs {fmt(m.mean_abs)}")
    text.append(f"\n  max rel  {fmt(m.max_rel):>10}   cosine   {fmt_cos(m.cosine)}")
    text.append(f"\n  mismatch {bar(m.mismatch_fraction, 16)} {m.mismatch_fraction * 100:.1f}%")
    tol = index.tolerance_for(m)
    if tol:
        rtol, atol = tol
        ratio = f"  (max abs = {m.max_abs / atol:.3g}× atol)" if atol > 0 else ""
        text.append(f"\n  tolerance rtol {rtol:g} atol {atol:g}{ratio}")
    onnx_side = f"{list(m.shape)} {m.dtype}".strip()
    torch_side = f"{list(m.expected_shape)} {m.expected_dtype}".strip()
    text.append(f"\n  onnx  {onnx_side}")
    text.append(f"\n  torch {torch_side}", style="" if onnx_side == torch_side else "red")
    if m.nan or m.inf or m.expected_nan or m.expected_inf:
        text.append(f"\n  nan/inf onnx {m.nan}/{m.inf}  torch {m.expected_nan}/{m.expected_inf}", style="yellow")
