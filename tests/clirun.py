"""The CLI run in-process, and the bundled samples located through it once per session.

conftest.py hands these out as the ``cli`` and ``sample_runs`` fixtures; tests import
the classes from here for their annotations.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, NamedTuple

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


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


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


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
        return json.loads(self.json_path.read_text())

    @property
    def result(self) -> Any:
        """A fresh ``LocateResult`` read from report.json (tests may edit it)."""
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


def default_sigint() -> None:
    """``preexec_fn`` for a child a test sends Ctrl-C: SIGINT at its default disposition.

    A test runner started in the background by a non-interactive shell (``cmd &``, some CI
    agents) inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler
    in the child, which would run to the end and fail the test for a reason of the runner's.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
