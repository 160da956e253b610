"""``sweep.jsonl``: one row per model, appended as each finishes; resume and compare.

A row is written in one ``write`` of one line, then flushed and fsynced, so an
interrupted sweep leaves at worst one torn last line, which ``load_rows``
skips; ``--resume`` then runs exactly the models without a complete row.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from nodebisect.errors import BadInputError
from nodebisect.sweep.tasks import STATUS_DIVERGED, STATUS_MATCH

ROWS_FILE = "sweep.jsonl"
# Statuses a maintainer reads as "worse than match".
FAILING = ("export_failed", "runtime_failed", "bad_input", "error", "crashed", "timeout", "out_of_memory", "lost")


class RowWriter:
    """Appends rows to ``sweep.jsonl`` durably, one line at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._repair_torn_tail()

    def append(self, row: dict[str, Any]) -> None:
        line = json.dumps(row, allow_nan=False, default=str) + "\n"
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    def _repair_torn_tail(self) -> None:
        """End a torn last line with a newline, so the next row starts on its own line."""
        try:
            with open(self.path, "rb+") as fh:
                fh.seek(0, os.SEEK_END)
                if fh.tell() == 0:
                    return
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    fh.write(b"\n")
        except FileNotFoundError:
            pass


def load_rows(path: Path) -> list[dict[str, Any]]:
    """The complete rows of a ``sweep.jsonl`` (or of the one in a sweep directory).

    A line that does not parse (the torn tail of an interrupted sweep) is skipped;
    when a model appears twice (a re-run), the later row wins.

    Raises:
        BadInputError: no such file.
    """
    path = Path(path)
    if path.is_dir():
        path = path / ROWS_FILE
    if not path.is_file():
        raise BadInputError(f"no sweep results at {path}", tip="run `nodebisect sweep ... --out DIR` first")
    rows: dict[str, dict[str, Any]] = {}
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and "name" in row and "status" in row:
                rows.pop(row["name"], None)
                rows[row["name"]] = row
    return list(rows.values())


def done_names(path: Path) -> set[str]:
    """Models that already have an answer (what ``--resume`` skips); a ``lost`` row is no answer."""
    from nodebisect.sweep.tasks import RETRY_STATUSES

    try:
        return {row["name"] for row in load_rows(path) if row["status"] not in RETRY_STATUSES}
    except BadInputError:
        return set()


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class Change:
    """One model whose outcome differs between two sweeps."""

    name: str
    old: str  # old status ("" when absent)
    new: str
    old_reason: str = ""
    new_reason: str = ""

    def to_dict(self) -> dict[str, str]:
        return dict(self.__dict__)


@dataclass
class SweepDiff:
    """What changed from an old sweep to a new one, keyed by model name."""

    newly_diverged: list[Change] = field(default_factory=list)
    newly_failing: list[Change] = field(default_factory=list)
    fixed: list[Change] = field(default_factory=list)
    culprit_moved: list[Change] = field(default_factory=list)  # diverged in both, another culprit
    other: list[Change] = field(default_factory=list)  # e.g. export_failed -> timeout
    only_old: list[str] = field(default_factory=list)
    only_new: list[str] = field(default_factory=list)
    unchanged: int = 0

    @property
    def regressions(self) -> int:
        return len(self.newly_diverged) + len(self.newly_failing)

    def to_dict(self) -> dict[str, Any]:
        return {
            "newly_diverged": [c.to_dict() for c in self.newly_diverged],
            "newly_failing": [c.to_dict() for c in self.newly_failing],
            "fixed": [c.to_dict() for c in self.fixed],
            "culprit_moved": [c.to_dict() for c in self.culprit_moved],
            "other": [c.to_dict() for c in self.other],
            "only_old": self.only_old,
            "only_new": self.only_new,
            "unchanged": self.unchanged,
        }


def compare(old_rows: Iterable[dict[str, Any]], new_rows: Iterable[dict[str, Any]]) -> SweepDiff:
    """Classify every model by how its outcome moved between the two sweeps."""
    old = {r["name"]: r for r in old_rows}
    new = {r["name"]: r for r in new_rows}
    diff = SweepDiff(only_old=sorted(set(old) - set(new)), only_new=sorted(set(new) - set(old)))
    for name in sorted(set(old) & set(new)):
        a, b = old[name], new[name]
        change = Change(name, a["status"], b["status"], a.get("reason", ""), b.get("reason", ""))
        if a["status"] == b["status"]:
            if b["status"] == STATUS_DIVERGED and _culprit(a) != _culprit(b):
                diff.culprit_moved.append(change)
            else:
                diff.unchanged += 1
        elif b["status"] == STATUS_DIVERGED:
            diff.newly_diverged.append(change)
        elif b["status"] in FAILING and a["status"] not in FAILING:
            diff.newly_failing.append(change)
        elif b["status"] == STATUS_MATCH or (a["status"] in FAILING and b["status"] not in FAILING):
            diff.fixed.append(change)
        else:
            diff.other.append(change)
    return diff


def _culprit(row: dict[str, Any]) -> tuple[str, str]:
    fd = row.get("first_divergent") or {}
    return fd.get("op_type", ""), (fd.get("framework") or {}).get("target", "")
