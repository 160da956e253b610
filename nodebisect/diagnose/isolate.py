"""Run the culprit's local subgraph on the framework's reference inputs.

The local subgraph is every ONNX node between the culprit value and its nearest
mapped inputs (or graph inputs / initializers). Fed with the *reference* values
of those inputs, it tells a local defect (still wrong: ``conversion``) from drift
it only amplifies (right again: ``inherited``). Running it with ORT's graph
optimizations off, and in ONNX's reference evaluator, separates ``optimizer``
and ``runtime`` causes from a wrong conversion.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np
import onnx

from nodebisect.values.compare import compare
from nodebisect.onnxgraph import first_nonfinite_node, sub_model, value_infos
from nodebisect.values.signs import sign_sensitive_values
from nodebisect.values.graphmap import GraphMap
from nodebisect.records import (
    CAUSE_CONVERSION,
    CAUSE_INHERITED,
    CAUSE_OPTIMIZER,
    CAUSE_RUNTIME,
    CAUSE_UNKNOWN,
    FAILED,
    RIGHT,
    WRONG,
    Checks,
    Metrics,
)
from nodebisect.runtime.handle import Ort


@dataclass
class LocalGraph:
    """The culprit's local subgraph: its nodes (graph order) and boundary inputs."""

    nodes: list[str]
    inputs: list[str]  # mapped values fed from the framework
    model: onnx.ModelProto
    internal_values: list[str] = field(default_factory=list)


@dataclass
class Isolation:
    """Outcome of running the local subgraph alone: the cause, and what each run found (``Checks``)."""

    cause: str
    metrics: Metrics | None
    checks: Checks
    nan_source: str = ""  # first node making NaN/Inf from finite inputs, if any
    internal: dict[str, np.ndarray] = field(default_factory=dict)
    # The subgraph and feeds that showed the cause, to dig further (which fusion).
    model: onnx.ModelProto | None = None
    feeds: dict[str, np.ndarray] = field(default_factory=dict)


def local_graph(model: onnx.ModelProto, gm: GraphMap, value: str, depth: int = 0) -> LocalGraph:
    """Cut the nodes between ``value`` and its nearest mapped inputs.

    With ``depth=1`` the cut goes one mapped level further up, so the window
    also holds the ops producing the culprit's inputs: effects that span nodes
    (runtime casts, fusions) show there but not in the node alone.
    """
    ordered, boundary_sorted = gm.cut(value, depth)
    graph = model.graph
    used: set[str] = set()
    for n in ordered:
        used |= gm.reads[n]
    types = value_infos(model)
    graph_inputs = [i for i in graph.input if i.name in used and i.name not in gm.initializers]
    internal = [o for n in ordered for o in gm.nodes[n].output if o]
    sub = sub_model(
        model,
        [gm.nodes[n] for n in ordered],
        [t for t in graph.initializer if t.name in used],
        [types.get(b) or onnx.ValueInfoProto(name=b) for b in boundary_sorted] + graph_inputs,
        [types.get(value) or onnx.ValueInfoProto(name=value)],
        [types[o] for o in internal if o in types and o != value],
        name="nodebisect_local",
    )
    return LocalGraph(nodes=ordered, inputs=boundary_sorted + [i.name for i in graph_inputs], model=sub, internal_values=internal)


def isolate(
    local: LocalGraph,
    value: str,
    reference: Callable[[str], np.ndarray],
    graph_feeds: dict[str, np.ndarray],
    expected: np.ndarray,
    ort: Ort,
    rtol: float | None,
    atol: float | None,
    dtype: str | None = None,
    signed_zeros: bool = False,
) -> Isolation:
    """Decide the culprit's cause by running its local subgraph on reference inputs."""
    feeds = {name: graph_feeds[name] if name in graph_feeds else reference(name) for name in local.inputs}
    internal = [v for v in local.internal_values if v != value]
    try:
        runner = ort.runner(local.model, feeds)
        # The verdict from a run marking only the value: marking internal values as
        # outputs would stop onnxruntime from fusing across them (observer effect).
        got = runner.run([value])
        if internal:
            got.update(runner.run(internal))
    except Exception as exc:  # noqa: BLE001 - isolation is evidence, not a requirement
        return Isolation(CAUSE_UNKNOWN, None, Checks(alone=FAILED, alone_error=str(exc).splitlines()[0][:200], opt_level=ort.opt_level))
    cmp = compare(value, got[value], expected, rtol, atol, dtype, signed_zeros=signed_zeros)
    nan_source = first_nonfinite_node(zip(local.nodes, local.model.graph.node), {**feeds, **got})
    if cmp.ok:
        return Isolation(CAUSE_INHERITED, cmp.metrics, Checks(alone=RIGHT, opt_level=ort.opt_level), nan_source, got)
    wrong = Checks(alone=WRONG, opt_level=ort.opt_level)
    try:
        plain = ort.runner(local.model, feeds, opt_level="disabled").run([value])[value]
        if ort.opt_level != "disabled" and compare(value, plain, expected, rtol, atol, dtype, signed_zeros=signed_zeros).ok:
            return Isolation(
                CAUSE_OPTIMIZER,
                cmp.metrics,
                replace(wrong, optimizations_off=RIGHT),
                nan_source,
                got,
                model=local.model,
                feeds=feeds,
            )
    except Exception:  # noqa: BLE001
        pass
    try:
        from onnx.reference import ReferenceEvaluator

        with np.errstate(all="ignore"):  # the evaluator's numpy warns on the very NaN we study
            ref_out = ReferenceEvaluator(local.model).run([value], feeds)[0]
        if compare(value, np.asarray(ref_out), expected, rtol, atol, dtype, signed_zeros=signed_zeros).ok:
            return Isolation(CAUSE_RUNTIME, cmp.metrics, replace(wrong, reference_evaluator=RIGHT), nan_source, got)
    except Exception:  # noqa: BLE001 - the reference evaluator lacks some ops
        pass
    return Isolation(CAUSE_CONVERSION, cmp.metrics, wrong, nan_source, got)


def isolate_value(local: LocalGraph, value: str, gm: GraphMap, prep: Any, opts: Any, ort: Ort) -> Isolation:
    """``isolate`` on the prepared model's reference values and the run's options."""
    acts = prep.acts
    fx_name = gm.mapped[value]
    return isolate(
        local,
        value,
        reference=lambda v: acts.values[gm.mapped[v]],
        graph_feeds=prep.feeds,
        expected=acts.values[fx_name],
        ort=ort,
        rtol=opts.rtol,
        atol=opts.atol,
        dtype=acts.dtypes.get(fx_name),
        signed_zeros=value in sign_sensitive_values(gm),
    )


def context_check(iso: Isolation, value: str, gm: GraphMap, prep: Any, opts: Any, ort: Ort) -> Isolation:
    """Right alone but wrong in the graph: drift, or an effect spanning nodes?

    Runs a window one mapped level wider (the culprit plus the ops producing
    its inputs) on reference values. Still wrong there means the runtime
    treats the pair differently from the ONNX semantics: wrong only with
    optimizations on is ``optimizer``; right in ONNX's reference evaluator
    is ``runtime``. Right in the window means genuine upstream drift.
    """
    window = local_graph(prep.onnx_model, gm, value, depth=1)
    if not window.inputs and not window.nodes:
        return iso
    wider = isolate_value(window, value, gm, prep, opts, ort)
    if wider.cause in (CAUSE_OPTIMIZER, CAUSE_RUNTIME):  # right alone, wrong with the ops producing its inputs
        return replace(wider, checks=replace(wider.checks, alone=RIGHT, with_producers=WRONG))
    return iso
