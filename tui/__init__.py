"""nodebisect's terminal UI, installed as ``nodebisect_tui``.

A client of the public ``nodebisect`` API: it shows a ``LocateResult`` (live from
``nodebisect.locate`` or loaded from a saved JSON) and never compares anything
itself. Build it with ``create_app``, the one factory the CLI and the tests share.
"""

from __future__ import annotations

from .app import NodebisectApp, RunSpec, create_app

__all__ = ["NodebisectApp", "RunSpec", "create_app"]
