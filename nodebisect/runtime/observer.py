"""Did marking probes change what onnxruntime runs? (the observer-effect guard)

Marking a value as a graph output stops onnxruntime from fusing across it, so a
fusion bug can vanish while it is observed. The guard counts the nodes
onnxruntime really runs, untouched vs with probes marked: fewer optimized nodes
untouched than probed means probes broke fusions.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Callable

from nodebisect.onnxgraph import initializer_bytes


class ObserverCheck:
    """Optimized node counts per labelled run; only for models small enough to re-save cheaply."""

    MAX_BYTES = 64 * 1024 * 1024

    def __init__(self, model: Any) -> None:
        self.enabled = initializer_bytes(model) <= self.MAX_BYTES
        self.dir = tempfile.mkdtemp(prefix="nodebisect-opt-") if self.enabled else ""
        self.counts: dict[str, int] = {}

    def path(self, label: str) -> str | None:
        """Where onnxruntime should save the optimized graph of run ``label`` (None: not checked)."""
        return os.path.join(self.dir, f"{label}.onnx") if self.enabled else None

    def record(self, label: str) -> None:
        import onnx

        path = self.path(label)
        if path and os.path.exists(path):
            self.counts[label] = len(onnx.load(path, load_external_data=False).graph.node)

    def run(self, measure: Callable[..., set[str]], values: list[str], label: str) -> set[str]:
        """``measure(values)`` with the optimized graph saved and counted under ``label``."""
        bad = measure(values, optimized_path=self.path(label))
        self.record(label)
        return bad

    def note(self) -> str:
        """Clean up; the observer-effect sentence when probes broke fusions, else ""."""
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        untouched, probed = self.counts.get("untouched"), self.counts.get("probed")
        if untouched is None or probed is None or probed <= untouched:
            return ""
        return (
            f"marking probes changed what onnxruntime runs: {untouched} optimized nodes untouched vs {probed} with every "
            "value marked (probes broke fusions); verdicts on final outputs come from the untouched graph"
        )
