"""Model Explorer node-data overlays of a result: per node error, local error and role.

Model Explorer (``ai-edge-model-explorer``) colours a graph from "node data" JSON files
``{graphId: {results: {key: {value, bgColor?}}, thresholds?: [...]}}`` (its
``node_data_builder``). The keys must be what its adapters call nodes: for an ONNX model
(``model_explorer_onnx``) the graph id is the ONNX graph's name and the key the ONNX node
name; for a ``.pt2`` (its built-in ExportedProgram adapter) the graph id is ``graph`` and
the key the FX node name. Pure: works from a saved result alone (no torch, no
model_explorer), so every ``--report`` bundle carries the overlays.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from nodebisect.records import NAMED_SUSPECT_SCORE, LocateResult, Metrics, Status
from nodebisect.report.atomic import write_text
from nodebisect.vocab import Role

FOLDER = "model_explorer"
DEFAULT_ONNX_GRAPH = "main_graph"  # the name torch.onnx's exporters give the main graph
PT2_GRAPH = "graph"  # the graph id of Model Explorer's ExportedProgram adapter
# Error colours, best to worst; the bounds are multiples of the run's atol (``thresholds``).
ERROR_COLOURS = ("#388e3c", "#ffeb3b", "#ffa000", "#d32f2f")
ERROR_STEPS = (1.0, 10.0, 1000.0)
ROLE_COLOURS = {
    Role.CULPRIT: "#d32f2f",
    Role.SUSPECT: "#ff5722",
    Role.SEGMENT: "#ffa000",
    Role.INHERITED: "#ffcdd2",
    Role.MATCH: "#388e3c",
}
LARGEST = 1e300  # the last threshold's bound: every finite error is below it


def node_roles(result: LocateResult) -> dict[str, Role]:
    """Each ONNX node's role in the verdict; nodes neither compared nor in the culprit's segment have none."""
    roles: dict[str, Role] = {}
    for n in result.nodes:
        if n.status == Status.OK:
            roles[n.onnx_node] = Role.MATCH
        elif n.status == Status.DIVERGED:
            roles[n.onnx_node] = Role.INHERITED
    fd = result.first_divergent
    if fd is None:
        return roles
    for name in fd.segment:
        roles[name] = Role.SEGMENT
    for s in fd.suspects:
        if s.score >= NAMED_SUSPECT_SCORE:
            roles[s.onnx_node] = Role.SUSPECT
    if fd.onnx_node and result.node(fd.onnx_node) is not None:
        roles[fd.onnx_node] = Role.CULPRIT
    return roles


def atol_of(result: LocateResult) -> float:
    """The absolute tolerance the run used for float32 (else its first dtype's; 1e-4 when none)."""
    tol = result.tolerance.get("float32") or next(iter(result.tolerance.values()), None) or {}
    atol = float(tol.get("atol") or 0.0)
    return atol if atol > 0 else 1e-4


def error_thresholds(atol: float) -> list[dict[str, Any]]:
    """Upper bounds (``<=``) of each error colour: within atol green, up to 10x yellow, up to 1000x orange, then red."""
    bounds = [atol * step for step in ERROR_STEPS] + [LARGEST]
    return [{"value": b, "bgColor": c} for b, c in zip(bounds, ERROR_COLOURS)]


def error_result(value: float, atol: float) -> dict[str, Any]:
    """One node's error as a node-data result; NaN or inf (which JSON cannot hold) is a red word."""
    if math.isnan(value) or math.isinf(value):
        return {"value": "nan" if math.isnan(value) else "inf", "bgColor": ERROR_COLOURS[-1]}
    return {"value": float(value)}


def onnx_graph_id(result: LocateResult) -> str:
    """The ONNX graph's name, as the run recorded it (results of older versions: the exporter's default)."""
    return str(result.environment.get("onnx_graph") or DEFAULT_ONNX_GRAPH)


def overlays(result: LocateResult, pt2_names: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """The node-data files of ``result``, by file name: each a ``{graphId: GraphNodeData}`` dict.

    ``nodebisect_max_abs.json``: each compared node's largest absolute error against the reference;
    ``nodebisect_local_error.json``: the node alone on the reference's inputs, where the run measured it;
    ``nodebisect_status.json``: culprit, suspect, segment, inherited, match.
    ``pt2_names`` (FX node of the compared program -> the ``.pt2``'s own FX node, which the live run
    reads from the decomposition's provenance: the result records the decomposed program's names)
    adds ``nodebisect_pt2_max_abs.json`` and ``nodebisect_pt2_status.json`` for the ``.pt2``'s FX graph.
    """
    atol = atol_of(result)
    graph = onnx_graph_id(result)
    errors = {n.onnx_node: n.metrics for n in result.nodes if n.metrics is not None and not n.metrics.reason}
    roles = node_roles(result)
    files = {
        "nodebisect_max_abs.json": {graph: _errors_data("max_abs vs reference", errors, atol)},
        "nodebisect_local_error.json": {graph: _errors_data("local error (node alone on reference inputs)", _local_errors(result), atol)},
        "nodebisect_status.json": {graph: _roles_data(roles)},
    }
    if pt2_names:
        fx_errors: dict[str, Metrics] = {}
        fx_roles: dict[str, Role] = {}
        for n in result.nodes:
            fx = pt2_names.get(n.mapped_to, "")
            if not fx:  # only nodes carrying an FX node's own value
                continue
            if n.onnx_node in errors:  # the last node lowering an FX node carries its value
                fx_errors[fx] = errors[n.onnx_node]
            if n.onnx_node in roles:
                fx_roles[fx] = _worse(fx_roles.get(fx), roles[n.onnx_node])
        files["nodebisect_pt2_max_abs.json"] = {PT2_GRAPH: _errors_data("max_abs vs reference", fx_errors, atol)}
        files["nodebisect_pt2_status.json"] = {PT2_GRAPH: _roles_data(fx_roles)}
    return files


def write_overlays(result: LocateResult, out_dir: str | Path, pt2_names: dict[str, str] | None = None) -> list[Path]:
    """Write ``overlays(result, pt2_names)`` into ``out_dir`` (atomically); the paths written."""
    out = Path(out_dir)
    written = []
    for name, data in overlays(result, pt2_names).items():
        write_text(out / name, json.dumps(data, indent=1) + "\n")
        written.append(out / name)
    return written


def _local_errors(result: LocateResult) -> dict[str, Metrics]:
    """Each node's error on the reference's own inputs, where the run measured it: the culprit's
    cone when it followed inherited drift upstream (``FirstDivergent.cone_errors``), else the culprit alone."""
    fd = result.first_divergent
    if fd is None or result.node(fd.onnx_node) is None:
        return {}
    if fd.cone_errors:
        known = {n.onnx_node for n in result.nodes}
        return {node: Metrics(max_abs=float(e)) for node, e in fd.cone_errors.items() if node in known}
    if fd.local_error.get("max_abs") is not None:
        return {fd.onnx_node: Metrics(max_abs=float(fd.local_error["max_abs"]))}
    if fd.isolated_metrics is not None and not fd.isolated_metrics.reason:
        return {fd.onnx_node: fd.isolated_metrics}
    return {}


def _errors_data(name: str, errors: dict[str, Metrics], atol: float) -> dict[str, Any]:
    return {
        "name": name,
        "results": {key: error_result(m.max_abs, atol) for key, m in errors.items()},
        "thresholds": error_thresholds(atol),
    }


def _roles_data(roles: dict[str, Role]) -> dict[str, Any]:
    return {
        "name": "nodebisect status",
        "results": {key: {"value": str(role), "bgColor": ROLE_COLOURS[role]} for key, role in roles.items()},
    }


def _worse(old: Role | None, new: Role) -> Role:
    """Of two ONNX nodes lowering one FX node, the role that says more (culprit first)."""
    order = list(ROLE_COLOURS)
    return new if old is None or order.index(new) < order.index(old) else old


__all__ = ["FOLDER", "PT2_GRAPH", "error_thresholds", "node_roles", "onnx_graph_id", "overlays", "write_overlays"]
