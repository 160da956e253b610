"""The package version and the versions and settings recorded in every result.

Kept apart from ``__init__`` so the pipeline can record the version without
importing the package's public face (which imports the pipeline lazily).
"""

from __future__ import annotations

import platform
from typing import Any

__version__ = "0.1.0"


def environment(device: str, ep: str, opset: int | None, opt_level: str, exporter: str) -> dict[str, Any]:
    """Library versions, platform and run settings, as the report's environment table shows them.

    Complete when built: an export failure's result is frozen before any later step
    could add to it, so the exporter asked for is recorded here (the reproduce command
    repeats it).
    """
    import onnx
    import onnxruntime
    import torch

    env = {
        "nodebisect": __version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "onnxscript": _version("onnxscript"),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "device": device,
        "ep": ep,
        "opset": opset,
        "opt_level": opt_level,
        "exporter": exporter,
    }
    if exporter == "tf2onnx":  # what a tf2onnx maintainer asks for first
        env.update(tensorflow=_version("tensorflow") or _version("tensorflow-cpu"), keras=_version("keras"), tf2onnx=_version("tf2onnx"))
    return env


def _version(dist: str) -> str:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:  # noqa: BLE001
        return ""
