"""The main screen's moves: to the culprit, the verdict, a node in full, its neighbours, back.

A mixin of ``MainScreen`` (actions are found by name, ``action_*``): it reads the
screen's ``index``, ``table``, ``history`` and ``select``.
"""

from __future__ import annotations

from typing import Any

from .node_screen import NodeScreen
from .verdict import VerdictScreen
from .view import ResultIndex


class NavigationActions:
    """Keys j, v, enter, n, i, o, b, and r/w/s handed to the app."""

    index: ResultIndex | None
    history: list[str]
    table: Any
    app: Any
    notify: Any
    select: Any

    def action_culprit(self) -> None:
        if self.index is None:
            self.notify("no result yet", severity="warning")
        elif self.index.capture and not self.index.culprit:
            self.app.push_screen(VerdictScreen(self.index))  # eager vs export: no ONNX node to show
        elif not self.index.culprit:
            self.notify(f"no divergent node: verdict {self.index.result.verdict}", severity="information")
        else:
            self.select(self.index.culprit)
            self.table.focus()
            fd = self.index.result.first_divergent
            if self.index.capture and fd is not None:
                self.notify(f"eager PyTorch and torch.export differ at FX node {fd.onnx_node}; {self.index.culprit} "
                            "carries its value (the ONNX graph matches the export). v: full verdict", timeout=8)

    def action_verdict(self) -> None:
        if self.index is None:
            self.notify("no result yet", severity="warning")
        else:
            self.app.push_screen(VerdictScreen(self.index))

    def action_open_detail(self, mode: str = "detail") -> None:
        name = self.table.current
        if self.index is None or name is None:
            self.notify("no node selected", severity="warning")
            return
        self.app.push_screen(NodeScreen(self.index, name, mode=mode))

    def action_neighbourhood(self) -> None:
        self.action_open_detail(mode="graph")

    def action_walk(self, upward: bool) -> None:
        name = self.table.current
        if self.index is None or name is None:
            return
        target = self.index.step(name, upward)
        if target is None:
            self.notify("no producer in the graph (inputs and weights only)" if upward else "no consumer: a graph output")
            return
        self.select(target)

    def action_back(self) -> None:
        if self.history:
            self.select(self.history.pop(), remember=False)

    def action_rerun(self) -> None:
        self.app.action_rerun()  # type: ignore[attr-defined]

    def action_write_report(self) -> None:
        self.app.action_write_report()  # type: ignore[attr-defined]

    def action_save_json(self) -> None:
        self.app.action_save_json()  # type: ignore[attr-defined]
