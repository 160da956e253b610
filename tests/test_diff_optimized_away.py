"""``nodebisect diff`` where the optimizer leaves almost nothing, and what the --transform search costs (issue #21).

onnxoptimizer 0.4.2 (real, default passes) turns Identity -> Transpose(no-op) -> Exp -> ArgMax
into one ArgMax reading the graph input: eliminate_nop_monotone_argmax drops the Exp, so
two infinities no longer tie. The candidate keeps one node, whose only tie to the reference
is the graph input it reads and the output it makes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import transform_models as tm  # noqa: E402

import nodebisect  # noqa: E402
from nodebisect.vocab import Cause, Stage  # noqa: E402


def test_a_candidate_reduced_to_one_node_is_diffed_not_refused() -> None:
    onnxoptimizer = pytest.importorskip("onnxoptimizer")
    model, feeds = tm.argmax_of_exp()
    candidate = onnxoptimizer.optimize(model)
    assert [n.op_type for n in candidate.graph.node] == ["ArgMax"] and list(candidate.graph.node[0].input) == ["x"]
    result = nodebisect.diff(model, candidate, feeds, isolate_crashes=False)
    fd = result.first_divergent
    assert result.verdict == "diverged" and fd is not None
    assert fd.onnx_node == "argmax" and fd.stage == Stage.TRANSFORMATION and fd.cause == Cause.CONVERSION
    assert fd.checks.replaced == "identity, nop_transpose, exp, argmax"  # the nodes the optimizer folded into it
    assert result.stats["mapping"]["coverage"] == 1.0


def test_an_unrelated_candidate_reading_the_same_input_is_still_refused(cli, tmp_path: Path) -> None:
    """The graph input is evidence of a fusion only for a node whose output maps: a different model is still refused."""
    import onnx

    model, _ = tm.argmax_of_exp()
    other, _ = tm.logsoftmax_of_constant()  # reads x too, and makes y
    onnx.save(model, tmp_path / "a.onnx")
    onnx.save(other, tmp_path / "b.onnx")
    run = cli("diff", tmp_path / "a.onnx", tmp_path / "b.onnx", "-q")
    assert run.code == 2 and "does not look derived from the reference" in run.err


def test_the_transform_record_counts_candidate_runs(tmp_path: Path) -> None:
    """Each knob setting is one application of the tool and one run of its candidate, the re-check one more."""
    pytest.importorskip("onnxoptimizer")
    from nodebisect.transforms.bisect import transform_and_bisect

    model, feeds = tm.argmax_of_exp()
    record = transform_and_bisect(model, "onnxoptimizer", feeds, tmp_path, isolate_crashes=False)
    assert record.rules == ["eliminate_nop_monotone_argmax"] and record.rechecked
    assert record.candidate_runs >= record.applications > 2  # one run per application (+ the culprit's all-values run)
    assert record.to_dict()["candidate_runs"] == record.candidate_runs
