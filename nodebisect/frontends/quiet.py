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
