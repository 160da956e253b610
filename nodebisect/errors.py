"""Errors the user can fix, and the exit codes the CLI maps them to.

Library code raises these; only ``cli.main`` turns them into a one-line message
and an exit code, so a Python API user gets real exceptions.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Documented exit codes of the ``nodebisect`` command."""

    MATCH = 0
    DIVERGED = 1
    USAGE = 2
    EXPORT_FAILED = 3
    RUNTIME_FAILED = 4
    INTERNAL_ERROR = 70
    INTERRUPTED = 130


class NodebisectError(Exception):
    """A problem the user can fix; ``tip`` says how."""

    exit_code: ExitCode = ExitCode.USAGE

    def __init__(self, message: str, tip: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.tip = tip


class BadInputError(NodebisectError):
    """The model file, the inputs or an option cannot be used."""


class UntrustedPickleError(BadInputError):
    """Loading the file would execute code from it and the user did not allow that."""


class ExportFailedError(NodebisectError):
    """The exporter could not convert the model (verdict ``export_failed``)."""

    exit_code = ExitCode.EXPORT_FAILED

    def __init__(self, message: str, tip: str = "", step: str = "", target: str = "", source: str = "") -> None:
        super().__init__(message, tip)
        self.step = step
        self.target = target
        self.source = source


class RuntimeFailedError(NodebisectError):
    """ONNX Runtime could not load or run the model (verdict ``runtime_failed``)."""

    exit_code = ExitCode.RUNTIME_FAILED


class CancelledError(NodebisectError):
    """The run was cancelled through ``Options.cancel`` (the TUI's quit, Ctrl-C)."""

    exit_code = ExitCode.INTERRUPTED
