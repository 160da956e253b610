"""The command palette's "go to node" (ctrl+p): part of a node's name or op type offers that node.

The app's own commands (jump to the culprit, filter, write report, ...) are not here:
``NodebisectApp.get_system_commands`` yields them beside Textual's, each calling the
same action as its key. This provider only reads the screens, so it never imports
the app (no import circle).
"""

from __future__ import annotations

from functools import partial

from textual.command import Hit, Hits, Provider

from .screens import MainScreen

MAX_NODE_HITS = 20


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
