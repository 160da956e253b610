"""What the frontends hand to the search: the ONNX model, reference values and feeds.

Every exporter path ends in one ``Prepared``; the comparison and search after it
know nothing of how it was made, and never import torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nodebisect.records import FrameworkRef


@dataclass
class Prepared:
    """An ONNX model with the framework's reference values for its value names.

    Attributes:
        onnx_model: the model to debug (exported, or the user's file).
        acts: reference activations keyed by names the ONNX graph uses
            (``values``, ``dtypes``, ``order``, ``outputs``: see ``frontends.capture.Activations``).
        flat_inputs: the model inputs, in ONNX graph-input order (tensors).
        feeds: the same inputs as numpy arrays keyed by ONNX graph-input name.
        program: the decomposed ExportedProgram (dynamo path) or None.
        refs: per ONNX node FrameworkRef, where the ONNX metadata lacks them.
        mapping_quality: how much of the graph found framework values.
    """

    onnx_model: Any
    acts: Any
    flat_inputs: list[Any]
    program: Any = None
    opset: int = 0
    refs: dict[str, FrameworkRef] | None = None
    original: Any = None  # ExportedProgram before decomposition (dynamo path)
    notes: list[str] = field(default_factory=list)
    mapping_quality: dict[str, Any] = field(default_factory=dict)
    feeds: dict[str, np.ndarray] = field(default_factory=dict)
    # float64 values of the program's floating FX nodes (frontends.oracle), or empty; a
    # mapping that may still be computing (frontends.oracle.OracleRun): reading it waits.
    oracle: Any = field(default_factory=dict)
    # The same program exported with optimize=False, made once on demand (stage graph_optimization).
    unoptimized_onnx: Any = None


def settle(prep: Prepared | None) -> None:
    """Wait for what is still computing in the background (the float64 oracle)."""
    wait = getattr(prep.oracle, "wait", None) if prep is not None else None
    if wait is not None:
        wait()


def memory_available() -> int:
    """Bytes the OS says are available (Linux /proc/meminfo); a conservative 4 GiB elsewhere."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * 1024**3
