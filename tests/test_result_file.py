"""One loader for a saved result: ``nodebisect.load_result``, ``nodebisect report`` and ``nodebisect tui``
answer every unusable file with the same one-line ``BadInputError`` (exit 2 on the command line)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodebisect import BadInputError, LocateResult, load_result
from nodebisect.cli.main import main

GOOD = LocateResult(verdict="match", model="m.py:make").to_json()


def _folder(path: Path, inside: str) -> None:
    path.mkdir()
    (path / inside).write_text("{}\n")


# (what the path holds, what the message says)
CASES = [
    pytest.param(None, "result file not found", id="missing"),
    pytest.param("{not json", "is not valid JSON", id="not-json"),
    pytest.param(b"\x89PNG\r\n\x1a\n\x00", "is not valid JSON", id="binary"),
    pytest.param("[1, 2]", "is not a nodebisect result (not a JSON object", id="a-list"),
    pytest.param('{"hello": 1}', "is not a nodebisect result (no schema field", id="no-schema"),
    pytest.param('{"schema": "other/1"}', "is not a nodebisect result (schema 'other/1'", id="other-schema"),
    pytest.param('{"schema": "nodebisect.report/1"}', "is not a complete nodebisect result (KeyError: 'verdict')", id="incomplete"),
    pytest.param(("dir", "sweep.jsonl"), "is a sweep directory, not one result", id="sweep-dir"),
    pytest.param(("dir", "report.json"), "is a directory, not a result file", id="report-dir"),
]


def _make(tmp_path: Path, content: str | bytes | tuple[str, str] | None) -> Path:
    path = tmp_path / "result.json"
    if isinstance(content, tuple):
        path = tmp_path / "out"
        _folder(path, content[1])
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    return path


@pytest.mark.parametrize("content, said", CASES)
def test_load_result_names_the_file_and_what_is_wrong(tmp_path: Path, content: object, said: str) -> None:
    path = _make(tmp_path, content)  # type: ignore[arg-type]
    with pytest.raises(BadInputError) as info:
        load_result(path)
    assert said in info.value.message and str(path) in info.value.message
    assert "\n" not in info.value.message and info.value.tip


@pytest.mark.parametrize("command", ["report", "tui"])
@pytest.mark.parametrize("content, said", [c for c in CASES if c.id not in ("sweep-dir", "report-dir")])
def test_the_commands_say_the_same_in_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, content: object, said: str
) -> None:
    path = _make(tmp_path, content)  # type: ignore[arg-type]
    argv = [command, str(path)] + (["--out", str(tmp_path / "rep")] if command == "report" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("nodebisect: error: ") and said in err[0]
    assert len(err) == 2 and err[1].startswith("tip: ")


def test_report_on_a_sweep_directory_points_at_the_tui(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = _make(tmp_path, ("dir", "sweep.jsonl"))
    assert main(["report", str(sweep), "--out", str(tmp_path / "rep")]) == 2
    assert f"tip: open the sweep with `nodebisect tui {sweep}`" in capsys.readouterr().err


def test_a_saved_result_loads(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    path.write_text(GOOD)
    assert load_result(path).model == "m.py:make" and load_result(str(path)).verdict == "match"
