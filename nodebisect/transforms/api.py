"""``transform()``: the Python face of ``--transform NAME`` (the CLI is a thin layer over it).

The reference is an ONNX file (or ModelProto); the transformation is applied with the
real tool and its knobs searched (``bisect``). The result is a ``LocateResult`` whose
``transform`` field holds the record: when ``nodebisect.diff`` is available the
candidate is also diffed against the reference (verdict, culprit, report), else the
verdict is the final outputs' (match when the candidate as the tool makes it matches).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from nodebisect.errors import BadInputError
from nodebisect.records import DIVERGED, MATCH, LocateResult


def transform(
    reference: str | Path | Any,
    name: str,
    inputs: str | Path | dict[str, np.ndarray] | None = None,
    *,
    ep: str = "cpu",
    report: str | Path | None = None,
    tolerance: float | None = None,
) -> LocateResult:
    """Apply ``name`` to ``reference``, search the knob that makes it match, re-check it.

    ``report``: folder for ``transform/candidate.onnx`` and ``transform/fixed_candidate.onnx``.
    """
    import onnx

    from nodebisect.transforms.bisect import transform_and_bisect
    from nodebisect.transforms.feeds import model_feeds
    from nodebisect.transforms.registry import lookup

    spec = lookup(name)
    spec.adapter()  # the missing tool is said before anything runs
    if isinstance(reference, (str, Path)):
        if not Path(reference).is_file():
            raise BadInputError(f"no such ONNX file: {reference}")
        try:
            model = onnx.load(str(reference))
        except Exception as exc:  # noqa: BLE001 - any parse error is the user's file
            raise BadInputError(f"{reference} is not an ONNX model: {str(exc).splitlines()[0][:160]}") from None
    else:
        model = reference
    feeds = model_feeds(model, inputs)
    out_dir = Path(report) / "transform" if report is not None else None
    record = transform_and_bisect(model, name, feeds, out_dir, ep=ep, tolerance=tolerance)
    result = _diffed(reference, record.candidate, feeds, ep, report) if record.candidate else None
    if result is None:
        result = LocateResult(verdict=MATCH if record.matched else DIVERGED, model=str(reference) if isinstance(reference, (str, Path)) else "")
    result.transform = record.to_dict()
    return result


def _diffed(reference: Any, candidate: str, feeds: dict[str, np.ndarray], ep: str, report: str | Path | None) -> LocateResult | None:
    """``nodebisect.diff(reference, candidate)`` when this nodebisect has it (the full verdict), else None."""
    import nodebisect

    diff = getattr(nodebisect, "diff", None)
    if diff is None or not isinstance(reference, (str, Path)):
        return None
    return diff(str(reference), candidate, feeds, ep=ep, report=str(report) if report is not None else None)
