"""Session fixtures: each tiny architecture is built and exported once per run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest


@dataclass
class Built:
    """A tiny model, its inputs, and its clean ONNX export (never edit ``onnx``)."""

    model: Any
    args: tuple[Any, ...]
    onnx: Any  # onnx.ModelProto


class Zoo:
    """Builds and exports each architecture on first use, then reuses it."""

    def __init__(self) -> None:
        self._built: dict[str, Built] = {}

    def __getitem__(self, arch: str) -> Built:
        if arch not in self._built:
            from nodebisect.frontends.dynamo import export_onnx
            from nodebisect.frontends.loading import build_loaded_model
            import models

            builder = models.BUILDERS[arch]
            model, args = builder()
            exported = export_onnx(build_loaded_model(model, args))
            self._built[arch] = Built(model, args, exported.model)
        return self._built[arch]


@pytest.fixture(scope="session")
def zoo() -> Zoo:
    """``zoo["bert"]`` -> Built; only the architectures a run asks for are built."""
    return Zoo()
