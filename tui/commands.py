"""The app's own commands in the command palette (ctrl+p), beside Textual's.

Each command calls the same action as its key, so the palette and the keys cannot
drift apart; typing a node's name also offers to go to that node.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from textual.command import DiscoveryHit, Hit, Hits, Provider

if TYPE_CHECKING:
    from .app import NodebisectApp

MAX_NODE_HITS = 20


def app_commands(app: NodebisectApp) -> list[tuple[str, str, Callable[[], object]]]:
    """(name, help, callback) of every command, in the order the palette lists them."""
    main = app.main
    return [
        ("Jump to culprit", "Put the table on the first divergent node (key j)", main.action_culprit),
        ("Show full verdict", "Why, segment, suspects and notes, unabridged (key v)", main.action_verdict),
        ("Filter nodes", "Filter by op type, module, status, is:segment, is:suspect (key /)", main.action_focus_filter),
        ("Filter: segment and suspects", "Show only the culprit's segment and the suspects",
         partial(main.set_filter, "is:segment")),
        ("Filter: diverged nodes", "Show only nodes whose value diverged", partial(main.set_filter, "status:diverged")),
        ("Clear filter", "Show every node again (key escape)", main.action_clear_filter),
        ("Neighbourhood graph", "Producers and consumers around the selected node (key n)", main.action_neighbourhood),
        ("Write report", "Write the report bundle: report.md, graph, repro (key w)", app.action_write_report),
        ("Save result JSON", "Save this result as JSON (key s)", app.action_save_json),
        ("Re-run locate", "Run locate again, with another tolerance or strategy (key r)", app.action_rerun),
        ("Help", "Every key (key ?)", app.action_help),
    ]


class NodebisectCommands(Provider):
    """nodebisect's commands, and "go to node" for every node name that matches."""

    @property
    def _app(self) -> NodebisectApp:
        return self.app  # type: ignore[return-value]

    async def discover(self) -> Hits:
        for name, help_text, callback in app_commands(self._app):
            yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, callback in app_commands(self._app):
            if (score := matcher.match(name)) > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)
        index = self._app.main.index
        if index is None or len(query.strip()) < 2:
            return
        needle = query.strip().lower()
        shown = 0
        for record in index.result.nodes:
            if needle in record.onnx_node.lower() or needle in record.op_type.lower():
                text = f"Go to node {record.onnx_node} ({record.op_type}, {record.status})"
                yield Hit(matcher.match(text) or 0.1, matcher.highlight(text), partial(self._app.main.select, record.onnx_node),
                          help=record.framework.module or None)
                shown += 1
                if shown >= MAX_NODE_HITS:
                    return
