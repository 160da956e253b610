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
    "UntrustedPickleError",
    "load_result",
    "locate",
    "prepare",
]
