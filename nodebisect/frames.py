"""Whose code a stack frame is: the user's, a model library's, or the machinery's.

One rule for every stack nodebisect reads (the dynamo exporter's node stack traces,
the TorchScript tracer's source ranges, an exporter's exception), so the source line a
report names is chosen the same way on every path:

* internal: torch, onnx, onnxscript, onnxruntime, the standard library, generated code
  (``<string>``, ``<frozen ...>``) and nodebisect itself (its wrappers, such as the
  sweep zoo's model wrapper, are never the user's code);
* library: any other installed package (``transformers``, ``timm``, ...), or a
  ``transformers`` source checkout;
* user: everything else (the user's factory file, their own modules).

A value's source is the innermost user frame; with none, the innermost frame (the
library line that called the op), which reports label library code. An export failure
names its innermost user frame and its innermost library frame apart. Stdlib only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from typing import TypeVar

USER = "user"
LIBRARY = "library"
INTERNAL = "internal"

_MACHINERY = ("/torch/", "/onnx/", "/onnxscript/", "/onnxruntime/", "/functorch/", "/sympy/", "/typing_extensions")
_LIBRARIES = ("site-packages", "dist-packages", "/transformers/")
_STDLIB = re.compile(r"/lib/python3\.\d+/")
_OWN_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep

F = TypeVar("F")


def frame_kind(path: str) -> str:
    """``USER``, ``LIBRARY`` or ``INTERNAL`` for a frame's source file path."""
    slashed = path.replace("\\", "/")
    if slashed.startswith("<") or "<frozen" in slashed or any(s in slashed for s in _MACHINERY):
        return INTERNAL
    if os.path.abspath(path).startswith(_OWN_PACKAGE):
        return INTERNAL
    if any(s in slashed for s in _LIBRARIES):
        return LIBRARY
    if _STDLIB.search(slashed):
        return INTERNAL
    return USER


def innermost(frames: Sequence[F], kind: str, path_of: Callable[[F], str]) -> F | None:
    """The innermost frame of ``kind``; ``frames`` run outermost first, as a Python traceback lists them."""
    return next((f for f in reversed(frames) if frame_kind(path_of(f)) == kind), None)


def source_frame(frames: Sequence[F], path_of: Callable[[F], str]) -> F | None:
    """The frame a value's source names: the innermost user frame, else the innermost frame.

    Args:
        frames: outermost first, as a Python traceback lists them.
        path_of: a frame's source file path.
    """
    return innermost(frames, USER, path_of) or (frames[-1] if frames else None)
