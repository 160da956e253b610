"""The README shows real runs: its quickstart output, its ``mymodel.py`` and its TUI keys.

The quickstart block is checked against a fresh run of the command it shows
(issue #12 item 6; in-process, from a clean folder): every line it prints must be a
line the run prints, in the same order, so the README cannot drift from what
nodebisect says today.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _block_after(marker: str) -> str:
    """The fenced block following an HTML comment marker."""
    start = README.index(marker)
    match = re.search(r"```[a-z]*\n(.*?)\n```", README[start:], re.S)
    assert match, marker
    return match.group(1)


def test_quickstart_lines_are_those_of_a_real_run(built_samples: Path, tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    block = _block_after("<!-- quickstart").splitlines()
    command, shown = block[0], block[1:]
    assert command.startswith("$ nodebisect locate samples/build/SdpaFullyMaskedRow.pt2")
    (tmp_path / "samples").symlink_to(ROOT / "samples")  # the README's relative paths, from a clean folder
    monkeypatch.chdir(tmp_path)
    done = cli(*command.removeprefix("$ nodebisect ").split())
    assert done.code == 0, done.err  # the sample diverges only in a fully masked query row (--strict-masked: 1)
    # The samples' source lines name the checkout that built them (samples/build may be a link to another one).
    checkouts = {f"{ROOT}/", f"{built_samples.resolve().parents[1]}/"}
    printed = [line.rstrip() for line in done.out.splitlines()]
    for checkout in checkouts:
        printed = [line.replace(checkout, "") for line in printed]
    assert shown[0] == printed[0], (shown[0], printed[0])
    at = 0
    for line in shown:
        assert line in printed[at:], f"README line not printed (in this order) by the run:\n{line}\n--- run:\n" + "\n".join(printed)
        at = printed.index(line, at) + 1
    # And nothing the run prints is missing from the README, but the timing and the notes it says it leaves out.
    left_out = ("search:", "note:")
    missing = [line for line in printed if line not in shown and not line.strip().startswith(left_out)]
    assert not missing, "the run prints lines the README's quickstart lacks:\n" + "\n".join(missing)
    report = tmp_path / "nodebisect-out" / "SdpaFullyMaskedRow"
    assert (report / "report.md").exists() and (report / "repro" / "repro.py").exists()


def test_mymodel_factory_of_the_readme_runs(tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mymodel.py").write_text(_block_after("<!-- mymodel.py") + "\n")
    monkeypatch.chdir(tmp_path)
    done = cli("locate", "mymodel.py:build", "--quiet", "--report", "out")
    assert done.code in (0, 1), done.err
    assert done.out.startswith(("MATCH", "DIVERGED")), done.out
    assert (tmp_path / "out" / "report.md").exists()


def test_tui_keys_of_the_readme_exist() -> None:
    from nodebisect_tui.screens import MainScreen

    section = README[README.index("## The TUI") :]
    section = section[: section.index("\n## ", 10)]
    bound = {k for b in MainScreen.BINDINGS for k in b.key.split(",")}
    names = {"/": "slash", "?": "question_mark"}
    documented = re.findall(r"^\| `([^`]+)`", section, re.M)
    assert {"j", "v", "n", "w", "s", "r"} <= set(documented)
    for key in documented:
        if key == "ctrl+p":
            continue  # Textual's command palette
        assert names.get(key, key) in bound, key
