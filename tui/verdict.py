"""The verdict in words: the banner's short lines, and the full text of the verdict screen.

The banner keeps one line per fact and the stylesheet cuts each with an ellipsis;
``v`` (or a click on the banner) opens ``VerdictScreen`` with everything, wrapped.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from nodebisect.records import MATCH, Metrics
from nodebisect.report.transform_wording import transform_lines
from nodebisect.report.wording import capture_sentences

from .view import ResultIndex, fmt, fmt_cos, verdict_line

HINT = "  (v: full verdict)"


def banner_text(index: ResultIndex) -> Text:
    """At most five short lines: verdict, origin, cause and numbers, where to look, why."""
    result = index.result
    fd = result.first_divergent
    text = Text(verdict_line(result), style="bold")
    if result.verdict != MATCH:
        text.append(HINT, style="dim")
    if fd is not None:
        fw = fd.framework
        origin = " · ".join(p for p in (fw.source, fw.module and f"module {fw.module}", fw.target) if p)
        if origin:
            text.append("\n" + origin)
        numbers = f"max abs {fmt(fd.metrics.max_abs)} · cos {fmt_cos(fd.metrics.cosine)}"
        if index.capture:
            carrier = f"carried by ONNX node {index.culprit} (j)" if index.culprit else "no ONNX node carries it"
            text.append(f"\nstage capture · eager vs export: {numbers} · ONNX matches the export · {carrier}")
        else:
            where = f" · segment {len(fd.segment)} node{'s' if len(fd.segment) != 1 else ''}" if len(fd.segment) > 1 else ""
            suspect = f" · most suspect {fd.suspects[0].onnx_node}" if fd.suspects else ""
            stage = f"cause {fd.cause}" + (f" (stage {fd.stage})" if fd.stage != fd.cause else "")
            text.append(f"\n{stage} · {numbers}{where}{suspect}")
        if fd.explanation:
            text.append("\n" + fd.explanation, style="italic")
    elif result.export_failure is not None:
        text.append("\n" + result.export_failure.message.strip().replace("\n", " "))
    elif result.notes:
        text.append("\n" + result.notes[0])
    if result.transform:  # --transform NAME: the transformation's headline (the fix is on the verdict screen)
        text.append("\n" + transform_lines(result.transform)[0], style="bold")
    return text


def verdict_text(index: ResultIndex) -> Text:
    """Everything the result says about its verdict, unabridged."""
    result = index.result
    fd = result.first_divergent
    text = Text(verdict_line(result), style="bold")
    if result.model:
        text.append(f"\nmodel     {result.model}")
    if fd is not None:
        fw = fd.framework
        for label, value in (("value", fd.onnx_value), ("torch op", fw.target), ("FX node", fw.fx_node),
                             ("module", fw.module), ("source", fw.source)):
            if value:
                text.append(f"\n{label:<9} {value}")
        if fw.code:
            text.append(f"\n  {fw.code.strip()}", style="cyan")
        text.append(f"\nstage     {fd.stage}\ncause     {fd.cause}")
        _section(text, "why")
        text.append("\n" + (fd.explanation or "(no explanation recorded)"), style="italic")
        if index.capture:
            capture_section(text, index)
        else:
            _section(text, "metrics (ONNX vs PyTorch at the culprit)")
            _metrics(text, fd.metrics)
            _values_behind(text, fd)
            if fd.isolated_metrics is not None:
                _section(text, "the segment run alone on PyTorch's own inputs")
                _metrics(text, fd.isolated_metrics)
        if fd.segment:
            _section(text, f"segment ({len(fd.segment)} nodes, ┃ in the table)")
            ops = fd.segment_op_types if len(fd.segment_op_types) == len(fd.segment) else [""] * len(fd.segment)
            for name, op in zip(fd.segment, ops):
                text.append(f"\n  {name}" + (f" ({op})" if op else ""))
        if fd.suspects:
            _section(text, "suspects, most suspect first (? in the table when outside the segment)")
            for rank, s in enumerate(fd.suspects, start=1):
                text.append(f"\n  {rank}. {s.onnx_node} ({s.op_type}, score {s.score:.2f}): {s.reason}", style="yellow")
        if fd.optimizer:
            _section(text, "optimizer")
            for key, value in fd.optimizer.items():
                text.append(f"\n  {key}: {value}")
    elif result.export_failure is not None:
        ef = result.export_failure
        _section(text, f"export failed at step {ef.step}")
        text.append("\n" + ef.message)
        for label, value in (("torch op", ef.target), ("source", ef.source), ("tip", ef.tip)):
            if value:
                text.append(f"\n{label}: {value}")
    if result.outputs:
        _section(text, "graph outputs")
        for out in result.outputs:
            name = f"{out.label} ({out.name})" if out.label else out.name
            text.append(f"\n  {name}: {'ok' if out.ok else 'DIVERGED'}  max abs {fmt(out.metrics.max_abs)}",
                        style="" if out.ok else "red")
    if result.transform:
        _section(text, f"the transformation (--transform {result.transform.get('name', '')})")
        for line in transform_lines(result.transform):
            text.append("\n  " + line)
    if result.notes:
        _section(text, "notes")
        for note in result.notes:
            text.append(f"\n  · {note}")
    return text


def _values_behind(text: Text, fd: Any) -> None:
    """The values behind the divergence: the verdict view's list, in its order (as the summary and report.md)."""
    from nodebisect.report.verdict import values_behind

    for fact in values_behind(fd):
        text.append(f"\n  {fact.label:<9} {fact.text}")
    if fd.metrics.noise_ratio > 0:
        text.append(f"\n  noise     PyTorch's own rounding error {fmt(fd.metrics.noise)}; onnxruntime's is {fd.metrics.noise_ratio:.3g}x that")


def capture_section(text: Text, index: ResultIndex) -> None:
    """Eager PyTorch vs ``torch.export``: what differs, and what that means for the ONNX graph."""
    fd = index.result.first_divergent
    if fd is None:
        return
    module = fd.framework.module or index.result.capture.get("first_module", "")
    _section(text, "eager PyTorch vs torch.export (stage capture)")
    carrier = index.by_name[index.culprit] if index.culprit else None
    differ, carried, report_at = capture_sentences(fd, module, carrier)
    text.append(f"\n  {differ}")
    _metrics(text, fd.metrics, "eager vs export")
    text.append(f"\n  {carried}", style="" if carrier is not None else "dim")
    text.append(f"\n  {report_at}")


def _section(text: Text, title: str) -> None:
    text.append(f"\n\n{title}", style="bold underline")


def _metrics(text: Text, m: Metrics, label: str = "") -> None:
    prefix = f"{label}: " if label else ""
    if m.reason:
        text.append(f"\n  {m.reason}", style="red")
    text.append(f"\n  {prefix}max abs {fmt(m.max_abs)} · max rel {fmt(m.max_rel)} · mean abs {fmt(m.mean_abs)}"
                f" · cos {fmt_cos(m.cosine)} · mismatch {m.mismatch_fraction * 100:.1f}%")
    if m.nan or m.inf or m.expected_nan or m.expected_inf:
        text.append(f"\n  nan/inf onnx {m.nan}/{m.inf}  torch {m.expected_nan}/{m.expected_inf}", style="yellow")


class VerdictScreen(Screen):
    """The verdict in full, scrollable: nothing cut."""

    BINDINGS = [
        Binding("escape,v,enter", "close", "Table", tooltip="Return to the node table", id="close-verdict"),
        Binding("j", "culprit", "Culprit", tooltip="Close and jump to the culprit", id="verdict-culprit"),
    ]

    def __init__(self, index: ResultIndex) -> None:
        super().__init__()
        self.index = index

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="verdict-scroll"):
            yield Static(verdict_text(self.index), id="verdict-view")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        scroll = self.query_one("#verdict-scroll")
        scroll.border_title = "verdict"
        scroll.focus()

    def action_close(self) -> None:
        self.dismiss()

    def action_culprit(self) -> None:
        if not self.index.culprit:
            self.notify("no ONNX node to jump to: " + ("no ONNX node carries the capture culprit's value"
                        if self.index.capture else f"verdict {self.index.result.verdict}"))
            return
        self.dismiss()
        self.app.main.action_culprit()  # type: ignore[attr-defined]
