"""What the frontends hand to the search: the ONNX model, the reference and the feeds.

Every exporter path ends in one ``Prepared``; the comparison, the search and the
diagnosis after it know nothing of how it was made: they read the ``Reference``
(``nodebisect.reference``) and never import torch.
``ReproData``, the live arrays a repro bundle is written from, lives here too: it is
never saved in a result.
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
    # A frontend's own stage checks after the search, (fd, verdict, opts, log, ort) -> (fd, verdict) (Keras: frontends.keras.stages).
    attribute: Any = None
    # LocateResult -> LocateResult: the answer in another reference's terms (diff's stages and causes, a
    # quantized node standing out), applied by the pipeline after the search, while onnxruntime is up
    # (a culprit it names anew gets its repro there), and before it composes the explanation.
    refine: Any = None

    @property
    def oracle(self) -> dict[str, np.ndarray]:
        """The reference's float64 answers (``Reference.exact``; frontends.oracle for PyTorch), or empty."""
        return self.acts.exact if self.acts is not None else {}

    @oracle.setter
    def oracle(self, values: dict[str, np.ndarray]) -> None:
        self.acts.exact = values


@dataclass
class ReproData:
    """What a minimal repro needs: the culprit's local ONNX subgraph and its data.

    Attributes:
        model_bytes: serialized ONNX model of the local subgraph.
        inputs: its inputs, fed with the framework's reference values.
        expected: the framework's value of each output.
        opt_level: the onnxruntime graph optimization level the divergence showed at.
        nodes / note / reproduces: set by ``diagnose.repro_check`` once the repro was run.
    """

    model_bytes: bytes
    inputs: dict[str, Any]
    expected: dict[str, Any]
    opt_level: str = "all"
    ep: str = "cpu"
    # The nodes the subgraph holds, and why (widened past the culprit when it alone does not reproduce).
    nodes: list[str] = field(default_factory=list)
    note: str = ""
    # False when no window reproduced the mismatch: the bundle writes no repro/ and says so.
    reproduces: bool = True
    # How many mapped levels of producers the window holds beyond the culprit's own nodes (0: its own only).
    depth: int = 0
    # Stage graph_optimization: the same value's subgraph before the exporter's optimizer (the unfused ops).
    unoptimized: tuple[bytes, dict[str, Any]] | None = None
    # The value is sign-sensitive (values.signs): repro.py counts a zero of the opposite sign as a mismatch.
    signed_zeros: bool = False
    # The culprit's aten call as data (diagnose.torch_call): repro/torch_repro.py + torch_args.npz.
    torch_call: dict[str, Any] | None = None


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

