"""The JSON contract ``nodebisect.report/1``: fields may be added, never renamed. A result
written by a newer nodebisect, with fields this one does not know in every record, still loads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nodebisect import load_result
from nodebisect.records import (
    ExportFailure,
    FirstDivergent,
    FrameworkRef,
    LocateResult,
    Metrics,
    NodeRecord,
    OutputComparison,
    Step,
    Suspect,
)

ADDED = {"added_in_a_later_version": {"any": ["json"]}}


def full_result() -> LocateResult:
    metrics = Metrics(max_abs=0.5, cosine=0.9, shape=[2, 3], dtype="float32")
    ref = FrameworkRef(target="aten.gelu.default", fx_node="gelu", module="mlp", source="model.py:7")
    return LocateResult(
        verdict="diverged",
        model="model.py:make",
        first_divergent=FirstDivergent(
            onnx_node="node_gelu", op_type="Gelu", onnx_value="gelu", stage="conversion", cause="conversion",
            segment=["node_gelu"], segment_op_types=["Gelu"], framework=ref, metrics=metrics,
            suspects=[Suspect("node_gelu", "Gelu", 0.9, "approximate tanh")], isolated_metrics=metrics,
        ),
        nodes=[NodeRecord(0, "node_gelu", "Gelu", "gelu", "diverged", ["x"], ["gelu"], ref, metrics)],
        outputs=[OutputComparison("out", False, metrics)],
        steps=[Step(1, ["gelu"], ["gelu"], 0.01)],
        export_failure=ExportFailure(step="translation", message="m", exporter="dynamo"),
    )


def with_added_fields(data: dict[str, Any]) -> dict[str, Any]:
    """The saved result as a newer version might write it: an unknown field in every record."""
    fd = data["first_divergent"]
    records = [data, fd, fd["framework"], fd["metrics"], fd["isolated_metrics"], data["export_failure"]]
    records += fd["suspects"] + data["steps"] + data["outputs"] + [o["metrics"] for o in data["outputs"]]
    records += data["nodes"] + [n["framework"] for n in data["nodes"]] + [n["metrics"] for n in data["nodes"]]
    for record in records:
        record.update(ADDED)
    return data


def test_a_result_with_added_fields_in_every_record_loads(tmp_path: Path) -> None:
    result = full_result()
    newer = with_added_fields(result.to_dict())
    assert newer["steps"][0]["added_in_a_later_version"] and newer["first_divergent"]["suspects"][0]["added_in_a_later_version"]
    path = tmp_path / "newer.json"
    path.write_text(json.dumps(newer))
    loaded = load_result(path)
    assert loaded.to_dict() == result.to_dict()
    assert loaded.steps == result.steps and loaded.first_divergent.suspects == result.first_divergent.suspects
