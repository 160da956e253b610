"""Messages the locate worker and the screens post; plain dataclasses."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from nodebisect import Event, LocateResult


@dataclass
class RunProgress(Message):
    """The worker relays one ``nodebisect`` progress ``Event``."""

    event: Event


@dataclass
class RunFinished(Message):
    """``locate`` returned; the app shows ``result``."""

    result: LocateResult


@dataclass
class RunFailed(Message):
    """``locate`` raised; ``message`` is one line, ``tip`` what to do."""

    message: str
    tip: str = ""


@dataclass
class NodeChosen(Message):
    """A screen moved to another node; the main table follows."""

    name: str


@dataclass
class NodeHighlighted(Message):
    """The node table's cursor moved to ``name``."""

    name: str


@dataclass
class NodeOpened(Message):
    """The user asked for ``name`` in full (enter or double click)."""

    name: str
