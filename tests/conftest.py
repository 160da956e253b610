"""Session fixtures: the work several test files share is done once per run.

* ``built_samples``: samples/build/*.pt2, built when missing (asked for, never autouse:
  pure tests build nothing).
* ``sample_runs``: each bundled sample located once through the CLI (``--json`` and
  ``--report``), shared by every test reading the same run.
* ``zoo``: each tiny architecture of tests/models.py built and exported once;
  ``broken_block``: models.Block's export with its LayerNorm epsilon broken, saved once.
* ``cli``: the one in-process CLI runner (``main(argv) -> int`` with captured stdout/stderr);
  it and ``sample_runs`` live in tests/clirun.py.
* ``quick_locate``: ``locate`` without the capture check, the float64 oracle and the
  onnxruntime child, for tests whose claim does not depend on those steps.

Tiers (pyproject.toml): ``slow`` marks what ``make test-fast`` leaves out; ``make test``
runs everything. Hypothesis profiles: tests/hypothesis_profiles.py.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

import hypothesis_profiles  # noqa: F401  (loads the Hypothesis profile HYPOTHESIS_PROFILE names)
from clirun import CliRun, SampleRuns, run_cli

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
BUILD = SAMPLES / "build"


@pytest.fixture(scope="session")
def cli() -> Callable[..., CliRun]:
    """``cli("locate", model, "-q") -> CliRun(code, out, err)``."""
    return run_cli


# -- the bundled samples ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def built_samples() -> Path:
    """samples/build/*.pt2, built once if missing (a fresh clone, CI): the sample tests must run, not skip."""
    import fcntl

    names = [line.split("class ", 1)[1].split("(")[0] for line in (SAMPLES / "divergent.py").read_text().splitlines() if line.startswith("class ")]
    BUILD.mkdir(parents=True, exist_ok=True)
    # pytest-xdist workers each hold this session fixture: the first builds, the other waits for it
    # (two builds writing the same archives at once would let a worker read a half-written one).
    with open(BUILD / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not names or not all((BUILD / f"{n}.pt2").is_file() for n in names):
            subprocess.run([sys.executable, str(SAMPLES / "build.py"), str(BUILD)], check=True, capture_output=True, timeout=600)
    return BUILD


@pytest.fixture(scope="session")
def sample_runs(built_samples: Path, tmp_path_factory: pytest.TempPathFactory) -> SampleRuns:
    """Each sample located once per session, whichever test asks first."""
    return SampleRuns(tmp_path_factory.mktemp("sample_runs"), built_samples)


# -- tiny models, exported once --------------------------------------------------------------


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


@dataclass
class Faulted:
    """A tiny model with one node of its export broken, saved as ``path`` (never edit it)."""

    model: Any
    args: tuple[Any, ...]
    path: Path
    node: str  # the broken node


@pytest.fixture(scope="session")
def broken_block(zoo: Zoo, tmp_path_factory: pytest.TempPathFactory) -> Faulted:
    """models.Block's clean export with its LayerNormalization epsilon set to 0.5."""
    import onnx

    import models

    built = zoo["block"]
    proto = onnx.ModelProto()
    proto.CopyFrom(built.onnx)
    node = models.set_layernorm_epsilon(proto, 0.5)
    path = tmp_path_factory.mktemp("broken_block") / "block_eps.onnx"
    onnx.save(proto, str(path))
    return Faulted(built.model, built.args, path, node)


@pytest.fixture(scope="session")
def quick_locate() -> Callable[..., Any]:
    """``locate`` without the eager-vs-export check, the float64 oracle and the onnxruntime child."""
    from nodebisect import locate

    return functools.partial(locate, check_capture=False, oracle="off", isolate_crashes=False)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under ``pytest -n 2 --dist loadgroup`` (``make test``) the Ray tests run one after another on one
    worker: each starts Ray processes of its own (a local instance, a two-node cluster), and two at
    once would starve each other of the machine's two cores and trip their timeouts."""
    for item in items:
        if item.get_closest_marker("ray"):
            item.add_marker(pytest.mark.xdist_group("ray"))
