"""nodebisect: find the first ONNX node whose output departs from the PyTorch model.

Public API::

    from nodebisect import locate
    result = locate(model, inputs)          # -> LocateResult
    result.first_divergent.onnx_node

Heavy libraries (torch, onnx, onnxruntime) are imported only when ``locate``
runs, so reading a saved result stays cheap.
"""

from __future__ import annotations

from typing import Any

from nodebisect.errors import (
    BadInputError,
    CancelledError,
    ExitCode,
    ExportFailedError,
    NodebisectError,
    RuntimeFailedError,
    UntrustedPickleError,
)
from nodebisect.records import FirstDivergent, LocateResult, Metrics, NodeRecord, Tolerance
from nodebisect.run import Event  # a progress event (``locate(progress=...)``)
from nodebisect.result_file import load_result  # a saved result, read without torch; BadInputError if unusable

from nodebisect.environment import __version__


def locate(model: Any, inputs: Any = None, **options: Any) -> LocateResult:
    """Find the first divergent ONNX node; see ``nodebisect.pipeline.locate``."""
    from nodebisect.pipeline import locate as _locate

    return _locate(model, inputs, **options)


def diff(reference: Any, candidate: Any, inputs: Any = None, *, ep: str = "cpu", reference_ep: str = "cpu",
         trials: int = 0, report: Any = None, log: Any = None, **options: Any) -> LocateResult:
    """The first node where ``candidate`` (an ONNX model derived from ``reference``) departs from it.

    ``reference`` / ``candidate``: a path or an ``onnx.ModelProto``; ``inputs``: a dict
    name -> array, an .npz path, or None (random inputs from the models' input types).
    See ``nodebisect.onnx_reference.engine.diff``.
    """
    from nodebisect.onnx_reference.engine import diff as _diff

    return _diff(reference, candidate, inputs, ep=ep, reference_ep=reference_ep, trials=trials, report=report, log=log, **options)


def prepare(model: Any, inputs: Any = None, **options: Any) -> Any:
    """Load, export and capture once; ``locate(prepared, rtol=...)`` then searches again without exporting.

    See ``nodebisect.pipeline.prepare``; returns a ``PreparedModel``.
    """
    from nodebisect.pipeline import prepare as _prepare

    return _prepare(model, inputs, **options)


__all__ = [
    "BadInputError",
    "CancelledError",
    "Event",
    "ExitCode",
    "ExportFailedError",
    "FirstDivergent",
    "LocateResult",
    "Metrics",
    "NodeRecord",
    "NodebisectError",
    "RuntimeFailedError",
    "Tolerance",
    "diff",
    "UntrustedPickleError",
    "load_result",
    "locate",
    "prepare",
]
