"""One node in full: its detail, or its neighbourhood as a list to pick a node from."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, OptionList, Static
from textual.widgets.option_list import Option

from .messages import NodeChosen
from .neighbourhood import neighbourhood
from .view import ResultIndex
from .widgets import node_detail

MAX_HOPS = 12


class NodeScreen(Screen):
    """One node in full: detail (metrics, trace, attributes) or its neighbourhood, a list to pick from."""

    BINDINGS = [
        Binding("escape,enter", "close", "Table", tooltip="Return to the node table", id="close"),
        Binding("n", "toggle", "Detail/Graph", tooltip="Switch between detail and neighbourhood", id="toggle"),
        Binding("plus,equals_sign", "hops(1)", "Hops", key_display="+/-", tooltip="Graph: one hop more each way (- one less)", id="deeper"),
        Binding("minus", "hops(-1)", "Shallower", show=False, tooltip="Graph: one hop less each way", id="shallower"),
        Binding("c", "centre", "Centre", tooltip="Graph: centre on the highlighted node", id="centre"),
        Binding("i", "walk(True)", "Up", tooltip="Go to a producer (a divergent one first)", id="up"),
        Binding("o", "walk(False)", "Down", tooltip="Go to a consumer (a divergent one first)", id="down"),
        Binding("b", "back", "Back", tooltip="Back to the previous node", id="back"),
    ]

    def __init__(self, index: ResultIndex, name: str, mode: str = "detail", hops: int = 2) -> None:
        super().__init__()
        self.index = index
        self.node_name = name
        self.mode = mode
        self.hops = hops
        self.history: list[str] = []
        self.graph_nodes: list[str] = []  # option index -> node ("" for a line naming none)

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="node-scroll"):
            yield Static(id="node-view")
        yield OptionList(id="graph-list")
        yield Footer(compact=True)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("hops", "centre"):
            return self.mode == "graph"
        return True

    def on_mount(self) -> None:
        self._show_view()

    def _show_view(self) -> None:
        scroll = self.query_one("#node-scroll", VerticalScroll)
        graph = self.query_one("#graph-list", OptionList)
        scroll.display = self.mode != "graph"
        graph.display = self.mode == "graph"
        if self.mode == "graph":
            self._show_graph(graph)
        else:
            scroll.border_title = self.node_name
            self.query_one("#node-view", Static).update(node_detail(self.index, self.node_name, full=True))
            scroll.scroll_home(animate=False)
            scroll.focus()
        self.refresh_bindings()

    def _show_graph(self, graph: OptionList) -> None:
        graph.border_title = f"neighbourhood of {self.node_name} · {self.hops} hop{'s' if self.hops > 1 else ''}"
        graph.border_subtitle = "enter: show in table · c: centre · +/-: hops"
        rows = neighbourhood(self.index, self.node_name, hops=self.hops)
        options: list[Option] = []
        self.graph_nodes = []
        for row in rows:
            text = Text(row.text)
            record = self.index.by_name.get(row.node)
            is_node_line = record is not None and not row.text.startswith("──")
            if is_node_line:
                text.stylize(self.index.row_style(record) or "")
                if row.node == self.node_name:
                    text.stylize("bold")
            elif row.text.startswith("──"):
                text.stylize("bold")
            selectable = is_node_line or row.text.startswith("   ") and not row.text.startswith("   …")
            options.append(Option(text, disabled=not selectable))
            self.graph_nodes.append(row.node if is_node_line else "")
        graph.set_options(options)
        graph.highlighted = self.graph_nodes.index(self.node_name) if self.node_name in self.graph_nodes else None
        graph.focus()

    @on(OptionList.OptionSelected, "#graph-list")
    def _graph_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        node = self.graph_nodes[event.option_index] if event.option_index < len(self.graph_nodes) else ""
        if not node:
            self.notify("a value no node of the graph computes: an initializer, a constant or a graph input")
            return
        self.post_message(NodeChosen(node))
        self.dismiss()

    def _highlighted_node(self) -> str:
        graph = self.query_one("#graph-list", OptionList)
        i = graph.highlighted
        return self.graph_nodes[i] if i is not None and i < len(self.graph_nodes) else ""

    def _go(self, name: str, remember: bool = True) -> None:
        if remember:
            self.history.append(self.node_name)
        self.node_name = name
        self._show_view()
        self.post_message(NodeChosen(name))

    def action_close(self) -> None:
        self.dismiss()

    def action_toggle(self) -> None:
        self.mode = "detail" if self.mode == "graph" else "graph"
        self._show_view()

    def action_hops(self, delta: int) -> None:
        hops = max(1, min(MAX_HOPS, self.hops + delta))
        if hops == self.hops:
            self.notify(f"already at {hops} hop{'s' if hops > 1 else ''}")
            return
        keep = self._highlighted_node()
        self.hops = hops
        self._show_view()
        if keep in self.graph_nodes:
            self.query_one("#graph-list", OptionList).highlighted = self.graph_nodes.index(keep)

    def action_centre(self) -> None:
        node = self._highlighted_node()
        if node and node != self.node_name:
            self._go(node)

    def action_walk(self, upward: bool) -> None:
        target = self.index.step(self.node_name, upward)
        if target is None:
            self.notify("no producer in the graph" if upward else "no consumer: a graph output")
        else:
            self._go(target)

    def action_back(self) -> None:
        if self.history:
            self._go(self.history.pop(), remember=False)
