"""A pytest assertion that guards a model's export: ``assert_export_matches(model, inputs)``.

In a test suite (CI), the question is only "does the ONNX export still compute what the
model computes?"; when it does not, the failure message should already be the answer:
the terminal summary (the culprit node, why, what to file, the repro's path). The report
bundle is written under the folder given (pytest's ``tmp_path``), so CI can keep it as an
artifact::

    from nodebisect.testing import assert_export_matches

    def test_export(tmp_path):
        assert_export_matches(MyModel().eval(), (torch.randn(2, 8),), report_dir=tmp_path)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nodebisect.records import LocateResult


def assert_export_matches(model: Any, inputs: Any = None, *, report_dir: str | Path | None = None, **options: Any) -> LocateResult:
    """Locate ``model``'s export and raise ``AssertionError`` (the terminal summary) unless it matches.

    Args:
        model: anything ``nodebisect.locate`` takes: an ``nn.Module``, an ``ExportedProgram``,
            a ``.pt2`` path, a ``file.py:factory`` spec.
        inputs: a tensor, a tuple of tensors, a dict of keyword tensors (or a
            ``torch.onnx.InputObserver``); None for the model's stored example inputs.
        report_dir: where to write the report bundle (report.md, report.json, repro/,
            the Model Explorer overlays); pytest's ``tmp_path`` is the usual choice.
        **options: ``locate`` options (``rtol``, ``atol``, ``onnx_path``, ``trials``, ...).

    Returns:
        The ``LocateResult`` of a match (to assert more on it).
    """
    from nodebisect import locate
    from nodebisect.report.summary import summary

    result = locate(model, inputs, **options)
    written = None
    if report_dir is not None:
        from nodebisect.report.bundle import write_report

        written = write_report(result, report_dir)
    if result:
        return result
    repro = written is not None and (written / "repro" / "repro.py").exists()
    raise AssertionError(summary(result, report_dir=str(written) if written else None, repro=repro))


__all__ = ["assert_export_matches"]
