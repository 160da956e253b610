"""What the frontends hand to the search: the ONNX model, the reference and the feeds.

Every exporter path ends in one ``Prepared``; the comparison, the search and the
diagnosis after it know nothing of how it was made: they read the ``Reference``
(``nodebisect.reference``) and never import torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nodebisect.records import FrameworkRef
from nodebisect.reference import Reference


@dataclass
class Prepared:
    """An ONNX model with the framework's reference values for its value names.

    Attributes:
        onnx_model: the model to debug (exported, or the user's file).
        acts: the reference (``nodebisect.reference.Reference``): its values keyed by names the
            ONNX graph uses, their dtypes and exact answers, and what it knows of its ops
            (PyTorch: ``frontends.capture.Activations``).
        flat_inputs: the model inputs, in ONNX graph-input order (tensors).
        feeds: the same inputs as numpy arrays keyed by ONNX graph-input name.
        program: the decomposed ExportedProgram (dynamo path) or None.
        refs: per ONNX node FrameworkRef, where the ONNX metadata lacks them.
        mapping_quality: how much of the graph found framework values.
    """

    onnx_model: Any
    acts: Reference
    flat_inputs: list[Any]
    program: Any = None  # the PyTorch stage checks' own (capture, decomposition, optimize=False); the diagnosis asks ``acts``
    opset: int = 0
    refs: dict[str, FrameworkRef] | None = None
    original: Any = None  # ExportedProgram before decomposition (dynamo path)
    notes: list[str] = field(default_factory=list)
    mapping_quality: dict[str, Any] = field(default_factory=dict)
    feeds: dict[str, np.ndarray] = field(default_factory=dict)
    # The same program exported with optimize=False, made once on demand (stage graph_optimization).
    unoptimized_onnx: Any = None

    @property
    def oracle(self) -> dict[str, np.ndarray]:
        """The reference's float64 answers (``Reference.exact``; frontends.oracle for PyTorch), or empty."""
        return self.acts.exact if self.acts is not None else {}

    @oracle.setter
    def oracle(self, values: dict[str, np.ndarray]) -> None:
        self.acts.exact = values


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
