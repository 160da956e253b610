"""Session fixtures: the work several test files share is done once per run.

* ``built_samples``: samples/build/*.pt2, built when missing (asked for, never autouse:
  pure tests build nothing).
* ``sample_runs``: each bundled sample located once through the CLI (``--json`` and
  ``--report``), shared by every test reading the same run.
* ``zoo``: each tiny architecture of tests/models.py built and exported once;
  ``broken_block``: models.Block's export with its LayerNorm epsilon broken, saved once.
* ``cli``: the one in-process CLI runner (``main(argv) -> int`` with captured stdout/stderr).
* ``quick_locate``: ``locate`` without the capture check, the float64 oracle and the
  onnxruntime child, for tests whose claim does not depend on those steps.

Tiers (pyproject.toml): ``slow`` marks what ``make test-fast`` leaves out; ``make test``
runs everything. Hypothesis profiles: tests/hypothesis_profiles.py.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

import pytest

import hypothesis_profiles  # noqa: F401  (loads the Hypothesis profile HYPOTHESIS_PROFILE names)

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
BUILD = SAMPLES / "build"


# -- the CLI, in-process ---------------------------------------------------------------------


class CliRun(NamedTuple):
    """One ``nodebisect`` command: its exit code, stdout and stderr."""

    code: int
    out: str
    err: str


def run_cli(*argv: str | Path) -> CliRun:
    """``nodebisect ARGV`` in this process, as ``python -m nodebisect`` runs it (an argparse exit is its code)."""
    from nodebisect.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse's usage errors and --help
            code = exc.code if isinstance(exc.code, int) else 1
    return CliRun(code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def cli() -> Callable[..., CliRun]:
    """``cli("locate", model, "-q") -> CliRun(code, out, err)``."""
    return run_cli


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


# -- the bundled samples ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def built_samples() -> Path:
    """samples/build/*.pt2, built once if missing (a fresh clone, CI): the sample tests must run, not skip."""
    names = [line.split("class ", 1)[1].split("(")[0] for line in (SAMPLES / "divergent.py").read_text().splitlines() if line.startswith("class ")]
    if not names or not all((BUILD / f"{n}.pt2").is_file() for n in names):
        subprocess.run([sys.executable, str(SAMPLES / "build.py"), str(BUILD)], check=True, capture_output=True, timeout=600)
    return BUILD


@dataclass
class SampleRun:
    """One sample located by the CLI: what it printed and the report folder it wrote."""

    code: int
    out: str  # the summary (stdout)
    err: str  # progress lines (stderr)
    folder: Path  # --report
    json_path: Path  # --json

    @property
    def md(self) -> str:
        return (self.folder / "report.md").read_text()

    @property
    def data(self) -> dict[str, Any]:
        """The ``--json`` document."""
        import json

        return json.loads(self.json_path.read_text())

    @property
    def result(self) -> Any:
        """A fresh ``LocateResult`` read from report.json (tests may edit it)."""
        import json

        from nodebisect.records import LocateResult

        return LocateResult.from_dict(json.loads((self.folder / "report.json").read_text()))


class SampleRuns:
    """``runs["Atan2ZeroY"]``: ``nodebisect locate BUILD/NAME.pt2 --inputs BUILD/NAME.inputs.pt --json --report``.

    ``runs.factory("TransformerFastPath")`` locates ``divergent.py:NAME`` (the eager module,
    so the capture check runs) from a folder holding a copy of divergent.py, with a relative
    spec and ``--report rep``, as a user runs it from their project. Each run happens on first use.
    """

    def __init__(self, base: Path, build: Path) -> None:
        self._base, self._build = base, build
        self._runs: dict[str, SampleRun] = {}

    def __getitem__(self, name: str) -> SampleRun:
        if name not in self._runs:
            folder = self._base / name
            model, inputs = self._build / f"{name}.pt2", self._build / f"{name}.inputs.pt"
            run = run_cli("locate", model, "--inputs", inputs, "--json", f"{folder}.json", "--report", folder)
            self._runs[name] = SampleRun(*run, folder=folder, json_path=Path(f"{folder}.json"))
        return self._runs[name]

    def factory(self, name: str) -> SampleRun:
        key = f"factory:{name}"
        if key not in self._runs:
            where = self._base / f"{name}.factory"
            where.mkdir()
            (where / "divergent.py").write_text((SAMPLES / "divergent.py").read_text())
            with _cwd(where):
                run = run_cli("locate", f"divergent.py:{name}", "--json", "r.json", "--report", "rep")
            self._runs[key] = SampleRun(*run, folder=where / "rep", json_path=where / "r.json")
        return self._runs[key]


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
