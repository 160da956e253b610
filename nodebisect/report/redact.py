"""Strip absolute paths, user, home and host names from a result before sharing it.

``--redact`` exists so a bug report can be pasted into a public issue without
leaking where the user keeps their code or what their machine is called. Paths
keep their basename (``/home/ann/proj/model.py:12`` -> ``model.py:12``), the
home folder becomes ``~``, the user name ``<user>`` and the host name ``<host>``.
The result is redacted through its JSON form, so every string field is covered
(stack traces, sources, notes, the environment table).
"""

from __future__ import annotations

import getpass
import os
import re
import socket
from dataclasses import dataclass
from typing import Any

from nodebisect.records import LocateResult

# An absolute POSIX path (or ~/...) starting at a word boundary; stops at quotes,
# whitespace, brackets and the ":" of "file.py:12".
_POSIX_PATH = re.compile(r"""(?<![\w.~])(?:~/|/)(?:[^\s"'`:,()\[\]<>/]+/)*([^\s"'`:,()\[\]<>/]+)""")
_WINDOWS_PATH = re.compile(r"""\b[A-Za-z]:\\(?:[^\\\s"'`:,()\[\]<>]+\\)*([^\\\s"'`:,()\[\]<>]+)""")


@dataclass(frozen=True)
class Redactor:
    """The identifying strings of this machine and how to hide them."""

    home: str = ""
    user: str = ""
    host: str = ""

    @classmethod
    def current(cls) -> Redactor:
        """The home folder, user name and host name of the running process."""
        try:
            user = getpass.getuser()
        except Exception:  # noqa: BLE001 - no user name in some containers
            user = ""
        return cls(home=os.path.expanduser("~").rstrip("/\\"), user=user, host=socket.gethostname())

    def scrub(self, text: str) -> str:
        """``text`` with paths cut to basenames and user/home/host names replaced."""
        if not text:
            return text
        if self.home and len(self.home) > 1:
            text = text.replace(self.home, "~")
        text = _POSIX_PATH.sub(lambda m: m.group(1), text)
        text = _WINDOWS_PATH.sub(lambda m: m.group(1), text)
        for name, token in ((self.host, "<host>"), (self.user, "<user>")):
            if name and len(name) >= 2:
                text = re.sub(rf"(?<![\w]){re.escape(name)}(?![\w])", token, text)
        return text


def redact_result(result: LocateResult, redactor: Redactor | None = None) -> LocateResult:
    """A redacted copy of ``result`` (the live repro data is carried over unchanged)."""
    redactor = redactor or Redactor.current()
    copy = LocateResult.from_dict(_walk(result.to_dict(), redactor))
    copy.repro = result.repro
    return copy


def _walk(value: Any, redactor: Redactor) -> Any:
    if isinstance(value, str):
        return redactor.scrub(value)
    if isinstance(value, dict):
        return {k: _walk(v, redactor) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, redactor) for v in value]
    return value


__all__ = ["Redactor", "redact_result"]
