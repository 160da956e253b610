"""Silence torch's console chatter while a model loads or exports.

Its own module so that loading and the exporters can both use it without
importing each other.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from typing import Any


@contextlib.contextmanager
def quiet_torch() -> Any:
    """Silence the exporter's console chatter (progress lines, warnings) for a clean CLI.

    On a failed capture torch.export prints the partial FX graph to stderr and
    symbolic_shapes logs guesses about the user's code; the failure itself
    reaches the user as the ``export_failed`` verdict instead.
    """
    names = ("torch.onnx", "torch.export", "torch._export", "onnxscript", "torch._dynamo", "torch.fx.experimental.symbolic_shapes")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lvl in zip(loggers, levels):
            lg.setLevel(lvl)


# What TensorFlow's native code prints while it is imported (absl's pre-init warning and the
# oneDNN notice, once per shared library), whatever TF_CPP_MIN_LOG_LEVEL says in TF 2.21.
NATIVE_NOISE = ("WARNING: All log messages before absl::InitializeLog()", "oneDNN custom operations are on",
                "port.cc:", "cpu_feature_guard.cc:", "This TensorFlow binary is optimized")


@contextlib.contextmanager
def quiet_native_stderr(noise: tuple[str, ...] = NATIVE_NOISE) -> Any:
    """Hold what native code writes to file descriptor 2 while the block runs; replay all but ``noise``.

    ``redirect_stderr`` only reaches Python's ``sys.stderr``: a shared library's C++ logging
    writes to the descriptor itself, so nodebisect's one-line error or verdict came after
    lines about absl and oneDNN the user never asked about. Lines that are not known noise
    (a real error from the library) are written back after the block.
    """
    import os
    import sys
    import tempfile

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real descriptor 2 (an embedding host): nothing to hold
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().decode(errors="replace").splitlines(keepends=True)
                    if not any(n in line for n in noise)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
