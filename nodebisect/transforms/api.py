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

from nodebisect.errors import NodebisectError
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
    strict_masked: bool = False,
    budget_s: float | None = None,
    **options: Any,
) -> LocateResult:
    """Apply ``name`` to ``reference``, diff the candidate, search the knob that makes it match, re-check it.

    ``report``: folder for diff's report and ``transform/{candidate,fixed_candidate}.onnx``.
    ``strict_masked``: a divergence only at positions a mask input excludes departs too.
    ``budget_s``: seconds the keep-list search may spend minimizing (``transforms.search.Budget``; default 240).
    ``**options``: diff's (rtol, atol, strategy, memory_budget).
    """
    from nodebisect.onnx_reference.engine import read_model
    from nodebisect.onnx_reference.inputs import both_feeds
    from nodebisect.transforms.bisect import SEARCH_BUDGET_S, transform_and_bisect
    from nodebisect.transforms.registry import lookup

    spec = lookup(name)
    spec.adapter()  # a missing tool is said before anything runs
    model, source = read_model(reference, "reference")
    feeds, _ = both_feeds(model, model, inputs, input_specs, seed)
    diffed: dict[str, Any] = {}
    culprit_of = _diff_culprit(feeds, diffed, strict_masked, _made_by(spec), ep=ep, reference_ep=reference_ep, log=log, **options)
    out_dir = Path(report) / "transform" if report is not None else None
    record = transform_and_bisect(model, name, feeds, out_dir, ep=ep, tolerance=tolerance, culprit_of=culprit_of,
                                  isolate_crashes=options.get("isolate_crashes", True), strict_masked=strict_masked,
                                  progress=log if callable(log) else None, budget_s=budget_s or SEARCH_BUDGET_S)
    result = diffed.get("result")
    if not isinstance(result, LocateResult):
        result = LocateResult(verdict=MATCH if record.matched else DIVERGED, model=source)
        result.notes.append(f"nodebisect diff could not compare the candidate with the reference: {diffed.get('why', 'not run')}")
    result.transform = record.to_dict()
    if record.candidate:  # the report's command diffs the files the run read and wrote, not "<candidate ModelProto>"
        env = result.environment
        env["candidate"] = record.candidate
        env["reference"] = source
        env["run_inputs"] = {"inputs_file": str(inputs) if isinstance(inputs, (str, Path)) else None, "input_specs": input_specs, "seed": seed}
    if report is not None:
        from nodebisect.report.bundle import write_report

        write_report(result, report)
    return result


def locate_and_transform(
    model: Any, name: str, inputs: Any = None, *, report: str | Path | None = None, tolerance: float | None = None,
    progress: Any = None, strict_masked: bool = False, budget_s: float | None = None, **options: Any,
) -> LocateResult:
    """``nodebisect locate MODEL --transform NAME`` (and the sweep's): export and locate, then the transformation
    of the exported ONNX model on the same feeds; the result is locate's, with the ``transform`` record.

    When the tool refuses the exported model or writes one onnxruntime cannot run, the record says so
    (``failed``, with the exit code it gives) and locate's verdict stays.
    """
    import nodebisect
    from nodebisect.errors import BadInputError, RuntimeFailedError
    from nodebisect.transforms.bisect import SEARCH_BUDGET_S, failed_record, transform_and_bisect
    from nodebisect.transforms.registry import lookup

    lookup(name).adapter()  # a missing tool is said before the export
    with nodebisect.prepare(model, inputs, progress=progress, **options) as prepared:
        result = nodebisect.locate(prepared, progress=progress)
        prep = prepared.prep
        if prep is None or prep.onnx_model is None:
            return result  # export failed: nothing to transform
        diffed: dict[str, Any] = {}
        culprit_of = _diff_culprit(prep.feeds, diffed, strict_masked, _made_by(lookup(name)), ep=options.get("ep", "cpu"), log=progress,
                                   isolate_crashes=options.get("isolate_crashes", True))
        out_dir = Path(report) / "transform" if report is not None else None
        try:
            record = transform_and_bisect(prep.onnx_model, name, dict(prep.feeds), out_dir, ep=options.get("ep", "cpu"), tolerance=tolerance,
                                          culprit_of=culprit_of, isolate_crashes=options.get("isolate_crashes", True),
                                          strict_masked=strict_masked, progress=progress if callable(progress) else None,
                                          budget_s=budget_s or SEARCH_BUDGET_S)
        except (BadInputError, RuntimeFailedError) as exc:  # the tool refused the export or wrote an invalid model
            record = failed_record(name, exc)
        if out_dir is not None and not record.matched and isinstance(diffed.get("result"), LocateResult):
            record.report = _diff_report(diffed["result"], record, out_dir, prep.onnx_model, dict(prep.feeds))
    result.transform = record.to_dict()
    return result


def _diff_report(diffed: LocateResult, record: Any, out_dir: Path, reference: Any, feeds: dict[str, np.ndarray]) -> str:
    """diff's report on the departing candidate (report.md, report.json, repro/, pictures) beside it in ``out_dir``.

    locate's own report is about the export; a maintainer of the transformation's tool needs the
    candidate's values node by node and the smallest subgraph that reproduces, as ``diff
    --transform`` writes them, without the user's PyTorch model: the export and its inputs are
    written beside the candidate (``reference.onnx``, ``inputs.npz``), and the report's command
    diffs those files.
    """
    import io

    from nodebisect.onnx_reference.large import write_model
    from nodebisect.report.atomic import write_bytes
    from nodebisect.report.bundle import write_report

    write_model(reference, out_dir / "reference.onnx")
    buffer = io.BytesIO()
    np.savez(buffer, **feeds)
    write_bytes(out_dir / "inputs.npz", buffer.getvalue())
    diffed.transform = record.to_dict()
    env = diffed.environment
    env["reference"], env["candidate"] = str(out_dir / "reference.onnx"), record.candidate or str(out_dir / "candidate.onnx")
    env["run_inputs"] = {"inputs_file": str(out_dir / "inputs.npz"), "input_specs": None, "seed": 0}
    write_report(diffed, out_dir)
    return str(out_dir / "report.md")


def _diff_culprit(feeds: dict[str, np.ndarray], diffed: dict[str, Any], strict_masked: bool = False, made_by: str = "",
                  **diff_options: Any) -> Any:
    """``culprit_of`` for ``transform_and_bisect``: ``nodebisect.diff`` of a candidate as a ``DiffAnswer``.

    Its culprit is named as a reference node; it departs when diff diverges (only at masked
    positions: when ``strict_masked``). The first diff's result, the candidate's as the tool
    makes it, is kept in ``diffed["result"]`` (or why it could not run in ``diffed["why"]``);
    the re-check of the fixed candidate asks again without replacing it. ``made_by``: the tool and
    its version, named in diff's report (the candidate's producer fields are the reference's).
    """
    from nodebisect.transforms.bisect import DiffAnswer

    def culprit_of(named_ref: Any, candidate: Any) -> DiffAnswer:
        from nodebisect import diff
        from nodebisect.report.scope_wording import masked_only
        from nodebisect.run import Event

        log = diff_options.get("log")
        if callable(log) and ("result" in diffed or "why" in diffed):  # the second diff: the fixed candidate's
            log(Event(kind="stage", message="re-check the fixed candidate (diff)"))
        try:
            result = diff(named_ref, candidate, feeds, **diff_options, made_by=made_by)
        except NodebisectError as exc:  # e.g. an optimizer renamed too much to map: the search starts from its own culprit
            diffed.setdefault("why", exc.message)
            return DiffAnswer()
        diffed.setdefault("result", result)
        departs = result.verdict == DIVERGED and (strict_masked or not masked_only(result))
        fd = result.first_divergent
        if fd is None:
            return DiffAnswer(departs=departs)
        names = {n.name for n in named_ref.graph.node}
        # the tools keep the reference's node names (fp16, quantization); else diff's reference node behind it
        node = fd.onnx_node if fd.onnx_node in names else fd.framework.module
        culprit = {"node": node, "op_type": fd.op_type if node == fd.onnx_node else fd.framework.target, "value": fd.onnx_value}
        return DiffAnswer(culprit, departs)

    return culprit_of


def _made_by(spec: Any) -> str:
    """How diff's report names the tool (``report.diff_wording.TOOL_REPOS`` files it by this name), and its version."""
    label = {"fp16": "onnxconverter-common (convert_float_to_float16)",
             "fp16-ort": "onnxruntime.transformers.float16 (convert_float_to_float16)",
             "quantize-dynamic": "onnxruntime.quantization (quantize_dynamic)", "quantize-static": "onnxruntime.quantization (quantize_static)",
             "ort-transformers": "onnxruntime.transformers optimizer (optimize_model)"}.get(spec.name, spec.tool)
    return f"{label} {spec.version()}".strip()
