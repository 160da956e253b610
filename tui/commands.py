"""The command palette's "go to node" (ctrl+p): part of a node's name or op type offers that node.

The app's own commands (jump to the culprit, filter, write report, ...) are listed by
``app_commands`` and yielded by ``NodebisectApp.get_system_commands`` beside Textual's,
each calling the same action as its key. Neither reads more than the app and screen it
is handed, so this module never imports the app (no import circle).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

from textual.command import Hit, Hits, Provider

from .screens import MainScreen

MAX_NODE_HITS = 20


def app_commands(app: Any, main: MainScreen) -> list[tuple[str, str, Callable[[], Any]]]:
    """(title, help, callback) of nodebisect's palette commands: each calls the same action as its key."""
    return [
        ("Jump to culprit", "Put the table on the first divergent node (key j)", main.action_culprit),
        ("Show full verdict", "Why, segment, suspects and notes, unabridged (key v)", main.action_verdict),
        ("Filter nodes", "Filter by op type, module, status, is:segment, is:suspect (key /)", main.action_focus_filter),
        ("Filter: segment and suspects", "Show only the culprit's segment and the suspects", partial(main.set_filter, "is:segment")),
        ("Filter: diverged nodes", "Show only nodes whose value diverged", partial(main.set_filter, "status:diverged")),
        ("Clear filter", "Show every node again (key escape)", main.action_clear_filter),
        ("Neighbourhood graph", "Producers and consumers around the selected node (key n)", main.action_neighbourhood),
        ("Write report", "Write the report bundle: report.md, graph, repro (key w)", app.action_write_report),
        ("Save result JSON", "Save this result as JSON (key s)", app.action_save_json),
        ("Re-run locate", "Run locate again, with another tolerance or strategy (key r)", app.action_rerun),
        ("Help", "Every key (key ?)", app.action_help),
    ]


class NodeCommands(Provider):
    """Offers "Go to node NAME" for every node whose name or op type holds the query."""

    async def search(self, query: str) -> Hits:
        main = self.app.screen_stack[0] if self.app.screen_stack else None
        if not isinstance(main, MainScreen) or main.index is None or len(query.strip()) < 2:
            return
        matcher = self.matcher(query)
        needle = query.strip().lower()
        shown = 0
        for record in main.index.result.nodes:
            if needle in record.onnx_node.lower() or needle in record.op_type.lower():
                text = f"Go to node {record.onnx_node} ({record.op_type}, {record.status})"
                yield Hit(matcher.match(text) or 0.1, matcher.highlight(text), partial(main.select, record.onnx_node),
                          help=record.framework.module or None)
                shown += 1
                if shown >= MAX_NODE_HITS:
                    return
