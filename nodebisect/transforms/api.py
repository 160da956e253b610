"""``transform()``: the Python face of ``nodebisect diff REFERENCE.onnx --transform NAME``.

The reference is an ONNX file (or ModelProto); the transformation is applied with
the real tool; ``nodebisect.diff`` compares the candidate it makes with the reference
(the verdict, the culprit, the report) and the culprit starts the knob search
(``bisect``). The result is diff's ``LocateResult`` with the ``transform`` record.
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
    reference_ep: str = "cpu",
    report: str | Path | None = None,
    tolerance: float | None = None,
    log: Any = None,
    input_specs: list[str] | None = None,
    seed: int = 0,
    **options: Any,
) -> LocateResult:
    """Apply ``name`` to ``reference``, diff the candidate, search the knob that makes it match, re-check it.

    ``report``: folder for diff's report and ``transform/{candidate,fixed_candidate}.onnx``.
    ``**options``: diff's (rtol, atol, strategy, memory_budget).
    """
    from nodebisect.onnx_reference.engine import read_model
    from nodebisect.onnx_reference.inputs import both_feeds
    from nodebisect.transforms.bisect import transform_and_bisect
    from nodebisect.transforms.registry import lookup

    spec = lookup(name)
    spec.adapter()  # a missing tool is said before anything runs
    model, source = read_model(reference, "reference")
    feeds, _ = both_feeds(model, model, inputs, input_specs, seed)
    diffed: dict[str, LocateResult] = {}

    def culprit_of(named_ref: Any, candidate: Any) -> dict[str, str]:
        from nodebisect import diff

        try:
            diffed["result"] = result = diff(named_ref, candidate, feeds, ep=ep, reference_ep=reference_ep, log=log, **options)
        except BadInputError as exc:  # e.g. an optimizer renamed too much to map: the search starts from its own culprit
            diffed["why"] = exc.message  # type: ignore[assignment]
            return {}
        fd = result.first_divergent
        if fd is None:
            return {}
        names = {n.name for n in named_ref.graph.node}
        # the tools keep the reference's node names (fp16, quantization); else diff's reference node behind it
        node = fd.onnx_node if fd.onnx_node in names else fd.framework.module
        return {"node": node, "op_type": fd.op_type if node == fd.onnx_node else fd.framework.target, "value": fd.onnx_value}

    out_dir = Path(report) / "transform" if report is not None else None
    record = transform_and_bisect(model, name, feeds, out_dir, ep=ep, tolerance=tolerance, culprit_of=culprit_of)
    result = diffed.get("result")
    if not isinstance(result, LocateResult):
        result = LocateResult(verdict=MATCH if record.matched else DIVERGED, model=source)
        result.notes.append(f"nodebisect diff could not compare the candidate with the reference: {diffed.get('why', 'not run')}")
    result.transform = record.to_dict()
    if report is not None:
        from nodebisect.report.bundle import write_report

        write_report(result, report)
    return result
