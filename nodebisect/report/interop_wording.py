"""The sentences of the interop files and commands (Polygraphy README, Model Explorer, the explore command).

Beside ``report.wording``, which composes every sentence about a verdict; these say how to
use nodebisect's values in another tool. Pure text, no heavy import.
"""

from __future__ import annotations

EXPLORER_EXTRA = "ai-edge-model-explorer"
EXPLORER_INSTALL = "pip install 'nodebisect[explorer]'  (ai-edge-model-explorer and model-explorer-onnx)"


def polygraphy_readme(model: str, count: int, command: str) -> str:
    """README.txt of a ``--polygraphy`` folder: what the files are and the one command that uses them."""
    return f"""Polygraphy golden values from nodebisect
========================================

model.onnx    the ONNX model nodebisect compared ({model})
golden.json   PyTorch's values of {count} ONNX tensor(s), as a Polygraphy RunResults (runner "pytorch")
inputs.json   the inputs they were computed on (Polygraphy's --load-inputs format)

Check onnxruntime (or any backend) against PyTorch, tensor by tensor, under nodebisect's tolerance:

  {command}

Swap --onnxrt for --trt (TensorRT) or add --providers cuda to check another backend against the same
values; Polygraphy prints PASSED or FAILED per tensor and exits non-zero when one fails. The
first FAILED tensor in graph order is where the backend departs from PyTorch.
"""


def nothing_written(flags: list[str]) -> str:
    """``--model-explorer`` / ``--polygraphy`` when the run produced no ONNX model to describe (the export failed)."""
    return f"nothing written for {' and '.join(flags)}: the run has no ONNX model (see the verdict below)"


def explorer_missing() -> str:
    """The one line ``nodebisect explore`` says when Model Explorer is not installed."""
    return f"Model Explorer is not installed (the {EXPLORER_EXTRA} package)"


def explorer_no_model(result_path: str) -> str:
    return f"no model to open for {result_path}: it has no model.onnx beside it and names no .onnx or .pt2 file that exists"


def explorer_no_overlays(result_path: str, model: str) -> str:
    return f"no Model Explorer overlays for {model} with {result_path}"


EXPLORER_WRITE_TIP = "`nodebisect locate MODEL --model-explorer DIR` writes the model as compared and its overlays (a .pt2's FX graph too)"


__all__ = ["EXPLORER_INSTALL", "EXPLORER_WRITE_TIP", "nothing_written", "explorer_missing", "explorer_no_model", "explorer_no_overlays", "polygraphy_readme"]
