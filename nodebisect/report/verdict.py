"""The verdict of one result, assembled once: every screen formats this view, none composes its own.

The values behind a divergence (``values_behind``) are the one list every screen shows,
in one order; report.md and the TUI read it for any named node, a match's included.

The terminal summary, report.md and the TUI each used to build the headline and
the "values behind it" lines themselves, each with its own subset and order. They
now read one ``VerdictView``: the headline, the labelled facts of a divergence in
one order, the values behind it in one order, where to file it and what to do
meanwhile. The sentences themselves come from ``report.wording``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nodebisect.frames import USER, frame_kind
from nodebisect.records import DIVERGED, EXPORT_FAILED, MATCH, RUNTIME_FAILED, STAGE_CAPTURE, FirstDivergent, LocateResult
from nodebisect.report import tf2onnx_wording
from nodebisect.report.diff_wording import in_reference_terms, is_diff, reference_facts
from nodebisect.report.scope_wording import headline_suffix, masked_meanwhile, scope_text
from nodebisect.report.wording import (
    amplifier_text,
    constants_text,
    evidence_text,
    export_failure_file_at,
    file_at,
    isolation_text,
    mechanism_text,
    metrics_text,
    named_suspect,
    nonfinite_sentence,
    precision_text,
    stage_sentence,
    what_to_do,
    worst_text,
)

# The values behind a divergence, in the one order every screen shows them.
WORST, NONFINITE, CONSTANTS, ISOLATED, PRECISION, AMPLIFIED, SUSPECT = (
    "worst", "nan/inf", "constants", "isolated", "precision", "amplified", "suspect",
)
MECHANISM = "mechanism"  # how the lead suspect goes wrong, when the evidence shows it (issue #22.9)


@dataclass(frozen=True)
class Fact:
    """One labelled line of the verdict (``label`` is the terminal's and the TUI's column)."""

    label: str
    text: str


@dataclass(frozen=True)
class VerdictView:
    """What a result says, once.

    Attributes:
        headline: the first line: "DIVERGED at node (Op)", "MATCH: ...", "EXPORT FAILED ...".
        banner: the same in one short line (the TUI's banner title).
        facts: the facts of a divergence, in order (value, stage, framework, source, worst,
            constants, metrics, isolated, precision, amplified, segment, suspect, why, outputs).
        file_at: (repository, component) where the defect is fixed, or None.
        meanwhile: what to do until it is fixed ("" when there is nothing to file).
    """

    headline: str
    banner: str
    facts: list[Fact] = field(default_factory=list)
    file_at: tuple[str, str] | None = None
    meanwhile: str = ""


def verdict_view(result: LocateResult) -> VerdictView:
    """The one view of ``result`` the summary, report.md and the TUI format."""
    fd = result.first_divergent
    exporter = result.environment.get("exporter", "dynamo")
    if result.verdict == MATCH:
        return VerdictView(headline=match_headline(result), banner=_match_banner(result))
    if fd is None or result.verdict not in (DIVERGED, RUNTIME_FAILED):
        failure = result.export_failure
        if result.verdict == EXPORT_FAILED and failure is not None:
            headline = f"EXPORT FAILED at step '{failure.step}'" + (f" on {failure.target}" if failure.target else "")
            return VerdictView(headline=headline, banner=f"EXPORT FAILED at step {failure.step}", file_at=export_failure_file_at(failure))
        return VerdictView(headline=result.verdict.upper(), banner=result.verdict.upper().replace("_", " "))
    where = file_at(fd, exporter)
    facts = _facts(result, fd, exporter, values_behind(fd))
    return VerdictView(
        headline=f"DIVERGED at {fd.onnx_node} ({fd.op_type}){headline_suffix(result)}",
        banner=_diverged_banner(fd) + headline_suffix(result),
        facts=[Fact(f.label, in_reference_terms(f.text)) for f in reference_facts(fd, facts)] if is_diff(fd) else facts,
        file_at=where,
        meanwhile=masked_meanwhile(result, what_to_do(fd, exporter)),
    )


def values_behind(fd: FirstDivergent) -> list[Fact]:
    """The worst element, NaN/Inf placement, constants, isolation, precision, amplifiers, suspect."""
    candidates = (
        (WORST, worst_text(fd.worst, "TensorFlow" if tf2onnx_wording.is_tensorflow(fd) else "PyTorch")),
        (NONFINITE, nonfinite_sentence(fd.metrics, fd.worst)),
        (CONSTANTS, constants_text(fd.worst)),
        (ISOLATED, isolation_text(fd)),
        (PRECISION, precision_text(fd.metrics, fd.op_noise)),
        (AMPLIFIED, amplifier_text(fd)),
        (SUSPECT, named_suspect(fd)),
        (MECHANISM, mechanism_text(fd)),
    )
    return [Fact(label, text) for label, text in candidates if text]


def match_headline(result: LocateResult) -> str:
    """The MATCH line: what agreed, within which drift, and the exact ops that are not bit-exact."""
    stats = result.stats
    drift = stats.get("precision_drift")
    within = f" within {drift.get('dtype') or 'float'} precision drift (note below)" if drift else ""
    inexact = stats.get("inexact_ops") or []
    caveat = f"; but {len(inexact)} exact op(s) are not bit-exact on PyTorch's inputs (note below)" if inexact else ""
    exporter = result.environment.get("exporter")
    who = "the reference model" if result.environment.get("command") == "diff" else "TensorFlow" if exporter == "tf2onnx" else "PyTorch"
    return f"MATCH: all {len(result.outputs)} output(s) and {stats.get('compared_values', 0)} compared value(s) agree with {who}{within}{caveat}."


def _match_banner(result: LocateResult) -> str:
    inexact = result.stats.get("inexact_ops") or []
    if inexact:  # diagnose.exact_ops: the note says which, the verdict view (v) shows it
        return f"MATCH within tolerance, but {len(inexact)} exact op(s) are not bit-exact on PyTorch's inputs (v)"
    return "MATCH: every compared value is within tolerance"


def _diverged_banner(fd: FirstDivergent) -> str:
    if fd.stage == STAGE_CAPTURE:
        return f"DIVERGED before ONNX: eager PyTorch vs torch.export differ at FX node {fd.onnx_node} ({fd.op_type})"
    return f"DIVERGED at {fd.onnx_node} ({fd.op_type})"


def _facts(result: LocateResult, fd: FirstDivergent, exporter: str, values: list[Fact]) -> list[Fact]:
    """Each fact of a divergence once, stage and cause in one sentence, in the summary's order."""
    fw = fd.framework
    facts = [Fact("value", fd.onnx_value), Fact("stage", f"{fd.stage} (cause {fd.cause}): {stage_sentence(fd, exporter)}")]
    if fw.target or fw.fx_node:
        # The TorchScript exporter has no FX graph: its segments are module scopes, or traced
        # aten calls between modules (function-level references) when fx_node is not the module.
        kind = "TF op" if exporter == "tf2onnx" else "FX node" if exporter != "torchscript" else ("scope" if fw.fx_node == fw.module else "traced call")
        facts.append(Fact("framework", f"{fw.target or '?'} ({kind} {fw.fx_node or '?'})" + (f" in module '{fw.module}'" if fw.module else "")))
    if fw.source:
        library = frame_kind(fw.source.rsplit(":", 1)[0]) != USER  # no frame of the user's own code (frames.py's one rule)
        facts.append(Fact("source (library code)" if library else "source", fw.source + (f"  {fw.code}" if fw.code else "")))
    by_label = {f.label: f for f in values}
    facts += [by_label[k] for k in (WORST, CONSTANTS) if k in by_label]
    facts.append(Fact("metrics", metrics_text(fd.metrics, fd.worst)))  # NaN/Inf placement is part of this line
    facts += [by_label[k] for k in (ISOLATED, PRECISION, AMPLIFIED) if k in by_label]
    if len(fd.segment) > 1:
        listed = ", ".join(f"{n} ({t})" for n, t in zip(fd.segment[:5], fd.segment_op_types[:5]))
        facts.append(Fact(f"segment ({len(fd.segment)} nodes, most suspect first)", listed))
    facts += [by_label[k] for k in (SUSPECT, MECHANISM) if k in by_label]
    why = evidence_text(fd)
    if why:
        facts.append(Fact("why", why))
    bad = [o for o in result.outputs if not o.ok]
    if bad:
        reasons = [o.metrics.reason for o in bad if o.metrics.reason]
        size = reasons[0] if reasons else f"worst max_abs={max(o.metrics.max_abs for o in bad):.3g}"
        facts.append(Fact("outputs", f"{len(bad)}/{len(result.outputs)} diverge ({size})"))
    scope = scope_text(result)
    if scope:
        facts.append(Fact("scope", scope))
    return facts


__all__ = ["Fact", "VerdictView", "match_headline", "values_behind", "verdict_view"]
