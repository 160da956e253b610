"""Both ONNX exporters on one model, side by side: which one to file against, in one command.

"It works with dynamo=False" is the most common report about the new exporter, and
the converse ("the new exporter fixed it") the most common answer. ``locate_both``
runs the ordinary ``locate`` once per exporter (dynamo, then TorchScript) and keeps
the two results; nothing of the search or the diagnosis is redone differently. The
words of the comparison are ``report.both``'s.

The command's exit code is the worse of the two (the higher of their codes:
0 match < 1 divergence < 3 export failed < 4 onnxruntime failed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from nodebisect.errors import BadInputError, ExitCode
from nodebisect.records import LocateResult
from nodebisect.run import Event, Progress

EXPORTERS = ("dynamo", "torchscript")
SCHEMA = "nodebisect.both/1"


@dataclass
class BothResult:
    """One ``LocateResult`` per exporter, in ``EXPORTERS`` order."""

    results: dict[str, LocateResult] = field(default_factory=dict)

    @property
    def exit_code(self) -> ExitCode:
        """The worse of the two verdicts' exit codes (the higher one)."""
        return max((r.exit_code for r in self.results.values()), default=ExitCode.MATCH)

    def to_dict(self) -> dict[str, Any]:
        """``{"schema", "exit_code", "results": {exporter: LocateResult}}``: one record per exporter."""
        return {
            "schema": SCHEMA,
            "exit_code": int(self.exit_code),
            "results": {name: result.to_dict() for name, result in self.results.items()},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"


def locate_both(model: Any, inputs: Any = None, *, progress: Progress | None = None, **options: Any) -> BothResult:
    """``locate`` with the dynamo exporter, then with the TorchScript exporter, on the same model and inputs.

    Args:
        model, inputs, progress: as for ``locate``.
        **options: ``locate``'s options except ``exporter`` and ``onnx_path`` (a given
            ONNX file is one exporter's, so there is nothing to compare it with).

    Raises:
        BadInputError: ``onnx_path`` given, or what ``locate`` raises for bad input.
    """
    from nodebisect.pipeline import locate

    if options.get("onnx_path"):
        raise BadInputError("--exporter both exports the model twice; --onnx is one exporter's file", tip="pass --exporter dynamo or torchscript with --onnx")
    options.pop("exporter", None)
    out = BothResult()
    for exporter in EXPORTERS:
        if progress is not None:
            progress(Event(kind="stage", message=f"{exporter} exporter"))
        out.results[exporter] = locate(model, inputs, progress=progress, exporter=exporter, **options)
    return out


__all__ = ["EXPORTERS", "BothResult", "locate_both"]
