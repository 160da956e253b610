"""A real onnxruntime 1.32 transformer-fusion defect (issue #21: "No ort-transformers fusion defect").

``optimize_model(model_type="bert")`` fuses a normalization over the time axis into a
LayerNormalization over the features (tests/ort_fusion_models.py says why). ``diff`` names the
fused node and the reference nodes it replaced; ``--transform ort-transformers:bert`` names the
FusionOptions flag to switch off, re-checked by applying it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ort_fusion_models  # noqa: E402

import nodebisect  # noqa: E402
from nodebisect.vocab import Cause, Stage  # noqa: E402

pytest.importorskip("onnxruntime.transformers.optimizer")
pytestmark = pytest.mark.slow  # one dynamo export (a few seconds)


@pytest.fixture(scope="module")
def time_norm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, dict[str, np.ndarray]]:
    model, feeds = ort_fusion_models.time_norm()
    return model, ort_fusion_models.bert_fused(model, str(tmp_path_factory.mktemp("fusion"))), feeds


def test_the_layer_norm_fusion_over_the_wrong_axis_is_named(time_norm: tuple[Any, Any, dict[str, np.ndarray]]) -> None:
    import onnxruntime as ort

    reference, fused, feeds = time_norm
    assert [n.op_type for n in fused.graph.node][-1] == "LayerNormalization"
    got, want = (ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0] for m in (fused, reference))
    assert np.abs(got - want).max() > 0.1  # independently of nodebisect: the fused model computes something else
    fd = nodebisect.diff(reference, fused, feeds, isolate_crashes=False).first_divergent
    assert fd is not None and fd.op_type == "LayerNormalization"
    assert fd.stage == Stage.TRANSFORMATION and fd.cause == Cause.CONVERSION
    assert fd.checks.replaced.split(", ")[:2] == ["node_mean", "node_sub"] and "node_mean_1" in fd.checks.replaced


def test_transform_names_the_fusion_flag_to_switch_off(time_norm: tuple[Any, Any, dict[str, np.ndarray]], tmp_path: Path) -> None:
    from nodebisect.transforms.bisect import transform_and_bisect

    reference, _, feeds = time_norm
    record = transform_and_bisect(reference, "ort-transformers:bert", feeds, tmp_path, isolate_crashes=False)
    assert not record.matched and record.rules == ["enable_layer_norm"] and record.rechecked
    assert record.tool_kwargs == {"enable_layer_norm": False}
