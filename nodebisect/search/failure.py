"""onnxruntime cannot load or run the model: name the first node that makes it fail."""

from __future__ import annotations

from typing import Any

from nodebisect.errors import RuntimeFailedError
from nodebisect.onnxgraph import node_attributes
from nodebisect.records import RUNTIME_FAILED, Cause, Checks, FirstDivergent, LocateResult, Metrics, Stage
from nodebisect.run import RunLog
from nodebisect.search.outcome import node_records
from nodebisect.search.strategy import SearchOutcome


def runtime_failure_result(outcome: SearchOutcome, exc: RuntimeFailedError, environment: dict[str, Any], log: RunLog) -> LocateResult:
    """Bisect graph prefixes to the failing node; verdict ``runtime_failed``."""
    from nodebisect.runtime.crash import localize_failure

    gm, runner = outcome.gm, outcome.prober.runner
    log.stage("localize the onnxruntime failure")
    point = localize_failure(runner, gm.order)
    failure: dict[str, Any] = {"error": exc.message, "kind": type(exc).__name__}
    fd = None
    if point is not None:
        node = gm.nodes[point.node]
        failure.update(node=point.node, op_type=node.op_type, attributes=node_attributes(node), error=point.error, kind=point.kind, runs=point.runs)
        fd = FirstDivergent(
            onnx_node=point.node,
            op_type=node.op_type,
            onnx_value=next((o for o in node.output if o), ""),
            stage=Stage.RUNTIME,
            cause=Cause.RUNTIME_FAILED,
            segment=[point.node],
            segment_op_types=[node.op_type],
            framework=gm.refs[point.node],
            metrics=Metrics(reason=point.error),
            checks=Checks(runtime_failure=point.kind),
        )
    else:
        log.note("the failure did not reproduce on any prefix of the graph")
    result = LocateResult(verdict=RUNTIME_FAILED, first_divergent=fd, nodes=node_records(gm, {}), environment=environment)
    result.runtime_failure = failure
    result.stats = {"onnx_nodes": len(gm.order), "ort_sessions": runner.sessions, "strategy": "localize_failure"}
    return result
