"""Session fixtures: each tiny architecture is built and exported once per run."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


@pytest.fixture(scope="session", autouse=True)
def built_samples() -> Path:
    """samples/build/*.pt2, built once if missing (a fresh clone, CI): the sample tests must run, not skip."""
    build = SAMPLES / "build"
    names = [line.split("class ", 1)[1].split("(")[0] for line in (SAMPLES / "divergent.py").read_text().splitlines() if line.startswith("class ")]
    if not names or not all((build / f"{n}.pt2").is_file() for n in names):
        subprocess.run([sys.executable, str(SAMPLES / "build.py"), str(build)], check=True, capture_output=True, timeout=600)
    return build


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
            from nodebisect.frontends.loading.load import build_loaded_model
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
