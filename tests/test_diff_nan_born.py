"""A NaN born in a float16 candidate, on onnxruntime's CPU (issue #21: "NaN born in a reduction").

The real exporter (dynamo) and the real ``convert_float_to_float16``, unmodified, on a small
torch model (tests/fp16_nan_models.py): multi-head attentive pooling whose exp weights the
conversion rounds to zero, so that ``bmm(w, h) / w.sum(-1)`` is 0/0 at the Div. The reference
is finite everywhere; nodebisect must name that Div, with cause ``nan_born``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fp16_nan_models  # noqa: E402

import nodebisect  # noqa: E402
from nodebisect.vocab import Cause, Stage  # noqa: E402

pytest.importorskip("onnxconverter_common")
pytestmark = pytest.mark.slow  # one dynamo export (a few seconds)


@pytest.fixture(scope="module")
def pooling() -> tuple[Any, Any, dict[str, np.ndarray]]:
    return fp16_nan_models.heads_pooling()


def test_the_div_where_nan_is_born_is_named(pooling: tuple[Any, Any, dict[str, np.ndarray]]) -> None:
    import onnxruntime as ort

    reference, candidate, feeds = pooling
    outputs = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0] for m in (reference, candidate)]
    assert np.isfinite(outputs[0]).all() and np.isnan(outputs[1]).any()  # the candidate as onnxruntime runs it, no probes
    result = nodebisect.diff(reference, candidate, feeds, isolate_crashes=False)
    fd = result.first_divergent
    assert result.verdict == "diverged" and fd is not None
    assert (fd.onnx_node, fd.op_type) == ("node_div", "Div")  # bmm(w, h) / w.sum(-1): 0/0
    assert fd.stage == Stage.TRANSFORMATION and fd.cause == Cause.NAN_BORN
    assert fd.metrics.nan > 0 and not fd.metrics.expected_nan
    assert result.stats["first_nonfinite"]["onnx_node"] == "node_div"


def test_transform_fp16_keeps_what_rounds_the_weights_to_zero(pooling: tuple[Any, Any, dict[str, np.ndarray]], tmp_path: Path) -> None:
    """``diff REF --transform fp16``: the keep-list grown from the Div keeps its readers too, and the converter
    still passes a kept node's output listed in value_info through float16; grown from where the values first
    depart (the exp weights entering Transpose -> Reshape) it finds the fix, re-checked by applying it."""
    import onnxruntime as ort

    from nodebisect.transforms.api import transform

    reference, _, feeds = pooling
    result = transform(reference, "fp16", feeds, report=tmp_path, isolate_crashes=False)
    record = result.transform
    assert result.first_divergent.onnx_node == "node_div" and record["culprit"]["node"] == "node_div"
    assert not record["matched"] and record["fixable"] and record["rechecked"]
    assert set(record["keep_nodes"]) <= {"node_exp", "node_transpose", "node__unsafe_view"}, record["keep_nodes"]
    fixed = ort.InferenceSession(record["fixed_candidate"], providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    want = ort.InferenceSession(reference.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert np.isfinite(fixed).all() and np.allclose(fixed, want, rtol=1e-2, atol=1e-2 * np.abs(want).max())
