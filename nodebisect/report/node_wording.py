"""Sentences about one node of a result: why it has no numbers, why it is suspect.

Beside ``wording.py`` (the verdict's sentences): the TUI's detail pane shows these for
any node the user selects, so a suspect that could not be measured says what it is
suspected for instead of a bare ``not compared (unmapped)``.
"""

from __future__ import annotations

from nodebisect.records import Suspect
from nodebisect.vocab import Status


def not_compared(status: str) -> str:
    """Why a node's output carries no comparison."""
    if status == Status.UNMAPPED:
        return ("not compared: no PyTorch value corresponds to this node's output "
                "(an intermediate inside one op's lowering), so it cannot be measured on its own")
    if status == Status.NOT_RUN:
        return "not compared: the search settled the culprit without measuring this value"
    return f"not compared ({status})"


def suspect_sentence(rank: int, total: int, suspect: Suspect, in_segment: bool) -> str:
    """``suspect #2 of 5 in the culprit's segment (evidence 0.85): <what the diagnosis found>``."""
    where = "in the culprit's segment" if in_segment else "beside the culprit's segment"
    return f"suspect #{rank + 1} of {total} {where} (evidence {suspect.score:.2f}): {suspect.reason}"


def unmeasured_suspect(suspect: Suspect) -> str:
    """What an unmeasured suspect is suspected for: the diagnosis' evidence, not a value of its own."""
    return f"suspected for what the diagnosis found about it, not for a measurement: {suspect.reason}"
