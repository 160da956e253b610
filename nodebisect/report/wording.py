"""The sentences the terminal summary, report.md and the TUI share (pure text).

One place says what a stage/cause pair means, where to file it, how the
values behind the bug read, and what to do next, so that the three views can
never contradict each other (or themselves).
"""

from __future__ import annotations

import math

from nodebisect.report import tf2onnx_wording
from nodebisect.report import diff_wording as diff_words
from nodebisect.report.diff_wording import is_diff
from nodebisect.report.markup import num, pair_text, value_text
# How the numbers read (re-exported: callers keep importing them from here).
from nodebisect.report.value_wording import (  # noqa: F401
    WITHIN_NOISE,
    amplifier_text,
    constants_text,
    mechanism_text,
    metrics_text,
    nonfinite_sentence,
    precision_text,
    worst_text,
)
from nodebisect.records import (
    NAMED_SUSPECT_SCORE,
    CAUSE_CONVERSION,
    CAUSE_INHERITED,
    CAUSE_OPTIMIZER,
    CAUSE_RUNTIME,
    STAGE_CAPTURE,
    STAGE_DECOMPOSITION,
    STAGE_GRAPH_OPTIMIZATION,
    STAGE_RUNTIME,
    STAGE_RUNTIME_OPTIMIZER,
    FAILED,
    RIGHT,
    WRONG,
    Checks,
    ExportFailure,
    FirstDivergent,
    LocateResult,
    NodeRecord,
)

# Notes about nodebisect's own mechanics: --verbose and the JSON, not the default output.
DETAIL_NOTE_PREFIXES = (
    "marking probes changed what onnxruntime runs",
    "observer effect:",
)

# Where each kind of defect is fixed: (GitHub repository, component).
REPO_EXPORTER = ("pytorch/pytorch", "torch.onnx, the dynamo exporter's op translation (torchlib)")
REPO_TORCHSCRIPT = ("pytorch/pytorch", "torch.onnx, the TorchScript exporter (symbolic_opset*.py)")
REPO_OPTIMIZER = ("microsoft/onnxscript", "the ONNX optimizer / rewrite rules run by torch.onnx.export(optimize=True)")
REPO_RUNTIME = ("microsoft/onnxruntime", "onnxruntime kernels and graph optimizers")
REPO_EXPORT = ("pytorch/pytorch", "torch.export")

_ALONE_RIGHT_TOGETHER_WRONG = "right when run alone on reference inputs but wrong together with the ops producing its inputs"
_CAPTURE_EVIDENCE = "The ONNX graph is innocent; eager mode takes a path (e.g. a fused fast path) the exported program does not."


def stage_sentence(fd: FirstDivergent, exporter: str = "dynamo") -> str:
    """Stage and cause as one sentence a user reads (never two that disagree)."""
    if tf2onnx_wording.is_tensorflow(fd, exporter) and (tf_sentence := tf2onnx_wording.stage_sentence(fd)):
        return tf_sentence
    if is_diff(fd) and (words := diff_words.stage_sentence(fd)):
        return words
    stage, cause = fd.stage, fd.cause
    if stage == STAGE_CAPTURE:
        return "torch.export changed the behaviour: eager PyTorch and the exported program already differ, before any ONNX is written"
    if stage == STAGE_DECOMPOSITION:
        return "a decomposition rule changed the numerics: the exported program and its decomposition differ, before any ONNX is written"
    if stage == STAGE_GRAPH_OPTIMIZATION:
        return (
            "the exporter's ONNX graph optimizer (onnxscript rewrite rules) turned this op into nodes that compute something else: "
            "they are wrong on PyTorch's own inputs, while the same program exported with optimize=False is right"
        ) + exporter_rule_clause(fd)
    if stage == STAGE_RUNTIME_OPTIMIZER or cause == CAUSE_OPTIMIZER:
        level = fd.optimizer.get("level", "")
        named = fd.optimizer.get("optimizer", "")
        text = "onnxruntime's graph optimizations change the result: wrong with them on"
        text += f" (from level {level})" if level else ""
        text += ", right with them disabled"
        return text + (f"; the optimizer at fault is {named}" if named else "")
    if stage == STAGE_RUNTIME or cause == CAUSE_RUNTIME:
        return "onnxruntime computes these nodes differently from the ONNX specification: ONNX's reference evaluator agrees with PyTorch"
    if cause == CAUSE_INHERITED:
        return (
            "no wrong node: on PyTorch's own inputs this node is right; small differences from upstream grow here "
            "(numeric drift, not a defect)"
        )
    if cause == CAUSE_CONVERSION:
        who = "the TorchScript exporter's" if exporter == "torchscript" else "the exporter's"
        text = f"{who} translation of this op into ONNX computes something else: wrong even on PyTorch's own inputs"
        if fd.checks.unoptimized_export == WRONG:  # the optimize=False export was made and is wrong too
            return text + ", also without the graph optimizer"
        # --onnx (no program to export again) or a failed re-export: the optimizer is not ruled out
        return text + ("" if exporter == "torchscript" else "; the exporter's graph optimizer was not ruled out (no optimize=False export was checked)")
    return "the cause could not be isolated: the local subgraph did not run alone"


def file_at(fd: FirstDivergent | None, exporter: str = "dynamo") -> tuple[str, str] | None:
    """(repository, component) where this defect is fixed, or None (drift, unknown)."""
    if fd is None:
        return None
    if tf2onnx_wording.is_tensorflow(fd, exporter) and (tf_repo := tf2onnx_wording.file_at(fd)):
        return tf_repo
    if is_diff(fd):
        return diff_words.file_at(fd)
    if fd.stage in (STAGE_CAPTURE, STAGE_DECOMPOSITION):
        return REPO_EXPORT
    if fd.stage == STAGE_GRAPH_OPTIMIZATION:
        return REPO_OPTIMIZER
    if fd.stage in (STAGE_RUNTIME, STAGE_RUNTIME_OPTIMIZER) or fd.cause in (CAUSE_RUNTIME, CAUSE_OPTIMIZER):
        return REPO_RUNTIME
    if fd.cause == CAUSE_CONVERSION:
        return REPO_TORCHSCRIPT if exporter == "torchscript" else REPO_EXPORTER
    return None


# An export failure's stage (frontends.export_failure) -> where it is fixed; the TorchScript exporter's are its own.
_EXPORT_FAILURE_REPOS = {
    "capture (torch.export)": REPO_EXPORT,
    "decomposition": REPO_EXPORT,
    "ONNX optimizer": REPO_OPTIMIZER,
}


def export_failure_file_at(failure: ExportFailure) -> tuple[str, str]:
    """(repository, component) where an export failure is filed: the stage that failed decides."""
    if failure.exporter == "torchscript" or failure.stage == "torchscript export":
        return REPO_TORCHSCRIPT
    return _EXPORT_FAILURE_REPOS.get(failure.stage, ("pytorch/pytorch", "torch.onnx, the dynamo exporter"))


def export_failure_title(failure: ExportFailure) -> str:
    """The issue title of an export failure: which export, where, on which op, its cause (no local path)."""
    on = f" on {failure.target}" if failure.target else ""
    cause = f": {failure.cause}" if failure.cause else f": {failure.message.strip().splitlines()[0][:80]}" if failure.message.strip() else ""
    if failure.exporter == "torchscript" or failure.stage == "torchscript export":
        return f"torch.onnx.export(dynamo=False) fails{on}{cause}"
    if failure.stage in ("capture (torch.export)", "decomposition"):
        return f"torch.export fails in {failure.stage}{on}{cause}"
    return f"torch.onnx.export(dynamo=True) fails in {failure.stage or failure.step or 'export'}{on}{cause}"


def what_to_do(fd: FirstDivergent, exporter: str = "dynamo") -> str:
    """One line: what the user can do meanwhile (besides filing it)."""
    if is_diff(fd) and (words := diff_words.what_to_do(fd)):
        return words
    where = file_at(fd, exporter)
    if tf2onnx_wording.is_tensorflow(fd, exporter) and (tf_line := tf2onnx_wording.what_to_do(fd)):
        return tf_line
    if fd.cause == CAUSE_INHERITED and where is None:
        return "no node is wrong: loosen --rtol/--atol if the drift is acceptable, or keep this part in higher precision"
    if where is None:
        return "re-run with --debug to see why the culprit could not run alone"
    if where == REPO_RUNTIME and (fd.stage == STAGE_RUNTIME_OPTIMIZER or fd.cause == CAUSE_OPTIMIZER):
        return "meanwhile, run with a lower onnxruntime graph optimization level (SessionOptions.graph_optimization_level; --opt-level here)"
    if where == REPO_RUNTIME:
        return "meanwhile, check whether another execution provider or onnxruntime version agrees (--ep, repro/repro.py)"
    if where == REPO_OPTIMIZER:
        return "meanwhile, export with torch.onnx.export(..., optimize=False): the unoptimized graph is right here"
    if fd.stage == STAGE_CAPTURE:
        return "meanwhile, export the model in a mode where eager takes the same path (e.g. without the fused fast path), or compare ONNX against the exported program, not eager"
    if fd.stage == STAGE_DECOMPOSITION:
        return "meanwhile, keep the op out of the decomposition table, or rewrite it in the model"
    return "meanwhile, rewrite the op in the model (the source line above) or give the exporter a custom translation (torch.onnx.export(..., custom_translation_table=...))"


def isolation_text(fd: FirstDivergent) -> str:
    """"Node alone" vs "with its producers", each with its own number (or "")."""
    iso = fd.isolated_metrics
    side = "TensorFlow" if tf2onnx_wording.is_tensorflow(fd) else "PyTorch"
    if fd.checks.with_producers == WRONG:
        with_producers = f"max_abs={num(iso.max_abs)}" if iso is not None else "wrong"
        return f"node alone on {side}'s inputs: right (within tolerance); with the ops producing its inputs: {with_producers}"
    if iso is None:
        return ""
    if fd.cause == CAUSE_INHERITED:
        return f"node alone on {side}'s inputs: right (max_abs={num(iso.max_abs)}, within tolerance)"
    if iso.reason:
        return f"node alone on {side}'s inputs: still wrong ({iso.reason})"
    if not math.isfinite(iso.max_abs) and nonfinite_sentence(iso):
        return f"node alone on {side}'s inputs: still wrong ({nonfinite_sentence(iso)})"
    return f"node alone on {side}'s inputs: still wrong (max_abs={num(iso.max_abs)})"


def explanation(fd: FirstDivergent) -> str:
    """The whole diagnosis of the culprit in words: ``FirstDivergent.explanation`` in the JSON.

    Composed once, by the pipeline, from the typed checks; the terminal and report.md
    print ``evidence_text`` beside the stage, isolation and suspect lines instead.
    """
    if tf2onnx_wording.is_tensorflow(fd) and (tf_text := tf2onnx_wording.explanation(fd)):
        return tf_text
    if fd.stage == STAGE_CAPTURE:
        return f"torch.export changed the model's behaviour: eager PyTorch and the exported program already differ at {_capture_where(fd)}. {_CAPTURE_EVIDENCE}"
    if fd.stage == STAGE_DECOMPOSITION:
        at = f" at FX node {fd.onnx_node}" if fd.onnx_node else ""
        return (
            f"the ExportedProgram and its decomposition (the program the ONNX exporter translates) already differ{at}: "
            "a decomposition rule changed the numerics before any ONNX was written"
        )
    if fd.checks.runtime_failure:
        return _runtime_failure_sentence(fd)
    if is_diff(fd) and (words := diff_words.stage_sentence(fd)):
        return words + (f"; {isolation_text(fd).replace('PyTorch', 'the reference')}" if isolation_text(fd) else "")
    text = _local_error_sentence(fd) if _small_local_defect(fd) else _diagnosis_clauses(fd)
    if fd.checks.amplified_at:
        text += f"; downstream, {fd.checks.amplified_at} is right on PyTorch's inputs but amplifies this error past the tolerance"
    if fd.checks.unoptimized_export == RIGHT:
        text += (
            "; the same program exported with optimize=False is right at this value, so the exporter's ONNX graph "
            "optimizer (onnxscript rewrite rules) introduced the defect"
        )
        text += exporter_rule_clause(fd)
    elif fd.checks.unoptimized_export == WRONG:
        text += "; the unoptimized export is wrong here too, so the defect is in the op's conversion itself"
    return text


def evidence_text(fd: FirstDivergent) -> str:
    """What the diagnosis found beyond the stage, isolation, precision, amplifier and suspect lines (or "").

    Those lines already say the isolation verdicts, the optimize=False check, the
    precision caution and the top suspect; printed again they would say the same
    thing twice. What is left is evidence of its own: why the node could not run
    alone, which onnxruntime level and optimizer break it, how far beyond rounding a
    small defect is, which path eager takes.
    """
    if fd.stage == STAGE_CAPTURE:
        return _CAPTURE_EVIDENCE
    if fd.stage == STAGE_DECOMPOSITION:
        return ""
    if fd.checks.runtime_failure:
        return _runtime_failure_sentence(fd)
    if _small_local_defect(fd):
        return _local_error_sentence(fd)
    clauses = [f"the local subgraph could not run alone: {fd.checks.alone_error}"] if fd.checks.alone == FAILED else []
    return "; ".join(clauses + _fusion_clauses(fd))


def capture_sentences(fd: FirstDivergent, module: str, carrier: NodeRecord | None) -> tuple[str, str, str]:
    """A capture verdict in three sentences: where eager and the export differ, which ONNX node carries
    the value (``carrier``, or none), and where to report it."""
    where = f"module {module!r}, FX node {fd.onnx_node}" if module else f"FX node {fd.onnx_node}"
    if carrier is not None:
        m = carrier.metrics
        against = f", max abs {num(m.max_abs)} against the export" if m is not None else ""
        carried = f"ONNX node carrying its value: {carrier.onnx_node} ({carrier.op_type}, {carrier.status}{against})"
    else:
        carried = "no ONNX node carries this FX value (the exporter fused or renamed it)"
    return (
        f"eager PyTorch and the exported program already differ at {where} ({fd.op_type}).",
        carried,
        "the ONNX graph follows the exported program: report this against torch.export, not the ONNX exporter",
    )


def _diagnosis_clauses(fd: FirstDivergent) -> str:
    """The local checks, the onnxruntime optimizer, drift, precision and the top suspect, in that order."""
    checks = fd.checks
    if checks.alone == FAILED:
        clauses = [f"the local subgraph could not run alone: {checks.alone_error}"]
    elif checks.with_producers == WRONG:
        clauses = [f"{_ALONE_RIGHT_TOGETHER_WRONG}: {_wrong_window_sentence(checks)}"]
    elif checks.alone == RIGHT:
        clauses = ["on the framework's own input values this node matches; it only amplifies drift from upstream"]
    elif checks.alone == WRONG:
        clauses = [_wrong_window_sentence(checks)]
    else:
        clauses = []
    clauses += _fusion_clauses(fd)
    if checks.alone == RIGHT and not checks.with_producers:
        clauses.append("its inputs were within tolerance, so this is accumulated numeric drift rather than a wrong node")
    m = fd.metrics
    if m.criterion == WITHIN_NOISE:
        clauses.append("note: " + precision_text(m, fd.op_noise))
    elif m.criterion == "noise":
        clauses.append(precision_text(m, fd.op_noise))
    text = "; ".join(clauses)
    top = fd.suspects[0] if fd.suspects else None
    if top is not None and top.onnx_node != fd.onnx_node and top.score >= NAMED_SUSPECT_SCORE:
        text += f". Most suspect in the segment: {top.onnx_node} ({top.op_type}): {top.reason.split('; ')[0]}"
    return text


def _wrong_window_sentence(checks: Checks) -> str:
    if checks.optimizations_off == RIGHT:
        return f"wrong with onnxruntime graph optimizations ({checks.opt_level}) but right with them disabled"
    if checks.reference_evaluator == RIGHT:
        return "ONNX's reference evaluator agrees with PyTorch here but onnxruntime does not: a runtime difference"
    return "wrong even when fed the framework's own input values: the ONNX nodes compute something else (a conversion defect)"


def _fusion_clauses(fd: FirstDivergent) -> list[str]:
    """Which onnxruntime level, and which named optimizer, make the window wrong (``FirstDivergent.optimizer``)."""
    level, named = fd.optimizer.get("level", ""), fd.optimizer.get("optimizer", "")
    if not level:
        return []
    first = f"it first goes wrong at optimization level '{level}'"
    if named:
        return [first + f", and disabling onnxruntime's '{named}' alone makes it right (work around with SessionOptions / disabled_optimizers=['{named}'])"]
    return [first, "no single named optimizer explains it"]


def _small_local_defect(fd: FirstDivergent) -> bool:
    """Right alone under the tolerance, yet the teacher-forced check found it far beyond rounding (``local_error``)."""
    return bool(fd.local_error) and fd.checks.alone == RIGHT and not fd.checks.with_producers


def _local_error_sentence(fd: FirstDivergent) -> str:
    err = fd.local_error
    return (
        f"run alone on PyTorch's own inputs it is off by {err['rel_l2']:.2g} (relative L2; max {err['max_abs']:.3g}), far beyond "
        f"float rounding of its values and inputs (limit {err['limit']:g}, {err['floor']:.2g} absolute): a conversion defect too "
        "small for the tolerance here"
    )


def _runtime_failure_sentence(fd: FirstDivergent) -> str:
    return (
        f"onnxruntime {fd.checks.runtime_failure} while running node {fd.onnx_node} ({fd.op_type}): "
        "every graph prefix before it runs, the prefix ending with it fails"
    )


def _capture_where(fd: FirstDivergent) -> str:
    module = fd.framework.module
    return f"module {module!r} (FX node {fd.onnx_node})" if module else "the model's outputs"


def named_suspect(fd: FirstDivergent) -> str:
    """The top suspect and its first reason, or "".

    Another node is named whatever its score (the culprit line names the carrier,
    so the reader needs to know the segment points elsewhere). The carrier itself
    is named only with evidence of its own (score >= NAMED_SUSPECT_SCORE: a dropped
    argument, a contradicted attribute, a NaN source): "carries the divergent
    framework value" would only repeat the culprit line, but "label_smoothing=0.1
    appears nowhere in its lowering" is the one sentence a bug report needs.
    """
    if not fd.suspects:
        return ""
    top = fd.suspects[0]
    if top.onnx_node == fd.onnx_node and top.score < NAMED_SUSPECT_SCORE:
        return ""
    return f"{top.onnx_node} ({top.op_type}): {top.reason.split('; ')[0]}"


def next_lines(result: LocateResult, report_dir: str | None = None, repro: bool = False) -> list[str]:
    """What to run next, fitting this run (a report written or not, with a repro or not)."""
    if report_dir:
        d = report_dir.rstrip("/") or "."
        lines = [f"read {d}/report.md (ready to file as a GitHub issue)", f"browse it: nodebisect tui {d}/report.json"]
        if repro:
            lines.append(f"check the repro: python {d}/repro/repro.py (exits 1 while the mismatch reproduces)")
        return lines
    fd = result.first_divergent
    capture = fd is not None and fd.stage == STAGE_CAPTURE
    return [
        "write a bug report: add --report DIR (report.md and graphs" + ("" if capture else ", a minimal repro") + ")",
        "browse it: save --json FILE and run nodebisect tui FILE" if result.environment.get("command") == "diff"
        else "browse it: nodebisect tui MODEL (same options), or save --json FILE and run nodebisect tui FILE",
    ]


def is_detail_note(note: str) -> bool:
    """A note about nodebisect's own mechanics (default output leaves it to --verbose)."""
    return note.startswith(DETAIL_NOTE_PREFIXES)


__all__ = [
    "constants_text",
    "evidence_text",
    "explanation",
    "file_at",
    "is_detail_note",
    "isolation_text",
    "mechanism_text",
    "metrics_text",
    "named_suspect",
    "next_lines",
    "nonfinite_sentence",
    "pair_text",
    "precision_text",
    "amplifier_text",
    "capture_sentences",
    "stage_sentence",
    "value_text",
    "what_to_do",
    "worst_text",
]


def exporter_rule_clause(fd: FirstDivergent) -> str:
    """The onnxscript rule (or pass) named by the graph_optimization stage check, as a clause (or "")."""
    rule, tool = fd.optimizer.get("exporter_rule", ""), fd.optimizer.get("exporter_optimizer", "")
    folded = fd.optimizer.get("exporter_folded", "")
    if folded:
        return f"; {tool}'s constant folding of {folded} is at fault: the optimized graph is right with that node left unfolded"
    return f"; switching off {tool}'s {rule} alone makes the optimized graph right" if rule else ""
