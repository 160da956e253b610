"""Read a saved result JSON (``locate --json``, report.json) back into a ``LocateResult``, and compare two.

The one loader the public API, ``nodebisect report`` and the TUI share, so every way
a file can be unusable (missing, a folder, not JSON, not a nodebisect result) is
answered with the same one-line ``BadInputError`` wherever it is opened. Stdlib only:
a saved result opens without torch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from nodebisect.errors import BadInputError
from nodebisect.records import SCHEMA, LocateResult

_TIP = "pass a file written by `nodebisect locate --json`"
_SWEEP_ROWS = "sweep.jsonl"  # sweep.results.ROWS_FILE (sweep/ sits above this module)


def load_result(path: str | os.PathLike[str]) -> LocateResult:
    """The ``LocateResult`` saved in ``path``.

    Raises:
        BadInputError: the file is missing, a directory, unreadable, not JSON, or not a
            complete nodebisect result; the message names the file and says which.
    """
    file = Path(path)
    if file.is_dir():
        raise _directory(file)
    if not file.is_file():
        raise BadInputError(f"result file not found: {path}", tip="write one with `nodebisect locate MODEL --json result.json`")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInputError(f"{path} is not valid JSON: {exc}", tip=_TIP) from exc
    except OSError as exc:
        raise BadInputError(f"cannot read {path}: {exc.strerror or exc}", tip=_TIP) from exc
    schema = data.get("schema") if isinstance(data, dict) else None
    if not str(schema or "").startswith("nodebisect.report/"):
        held = f"schema {schema!r}" if schema else "no schema field" if isinstance(data, dict) else "not a JSON object"
        raise BadInputError(f"{path} is not a nodebisect result ({held}; expected {SCHEMA})", tip=_TIP)
    try:
        return LocateResult.from_dict(data)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BadInputError(f"{path} is not a complete nodebisect result ({type(exc).__name__}: {exc})", tip=_TIP) from exc


def _directory(folder: Path) -> BadInputError:
    if (folder / _SWEEP_ROWS).is_file():
        return BadInputError(f"{folder} is a sweep directory, not one result", tip=f"open the sweep with `nodebisect tui {folder}`")
    if (folder / "report.json").is_file():
        return BadInputError(f"{folder} is a directory, not a result file", tip=f"pass {folder / 'report.json'}")
    return BadInputError(f"{folder} is a directory, not a result file", tip=_TIP)


def without_timings(data: object) -> object:
    """A result's JSON (``json.loads(result.to_json())``) without what timing and the machine decide.

    Every ``*seconds*`` key, ``timings`` and ``environment`` go, at any depth: two runs of the
    same comparison (a benchmark's trees, a model written past 2 GB or not) must then be equal.
    """
    if isinstance(data, dict):
        return {k: without_timings(v) for k, v in data.items() if "seconds" not in k and k not in ("timings", "environment")}
    if isinstance(data, list):
        return [without_timings(v) for v in data]
    return data
