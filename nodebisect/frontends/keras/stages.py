"""tf2onnx's stages: where a Keras model's numerics first change on the way to onnxruntime.

* capture: Keras eager vs the frozen ``tf.function`` graph (outputs);
* TF optimization: the frozen graph before vs after grappler (``tf_optimize``);
* conversion: tf2onnx's handlers, judged by the ``{remove_identity}`` baseline;
* graph optimization: the default optimizers wrong where the baseline is right,
  then the one optimizer to blame (optimizers added in tf2onnx's order, bisected);
* framework: the TF kernel approximates where onnxruntime computes the ONNX op
  exactly (``onnx.reference`` in float64 agrees with onnxruntime): nothing to fix in
  tf2onnx.

The first two run before the search (``check_capture_and_grappler``); the others
need a culprit and run in ``attribute``, the pipeline's post-search hook.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np

from nodebisect.frontends.keras.convert import BASELINE, Frozen
from nodebisect.frontends.keras.graphrun import GraphValues, run_graph
from nodebisect.frontends.keras.load import KerasLoaded
from nodebisect.frontends.keras.mapping import layouts
from nodebisect.records import CAUSE_CONVERSION, DIVERGED, RIGHT, WRONG, Cause, FirstDivergent, FrameworkRef, Metrics, Stage
from nodebisect.run import Options, RunLog
from nodebisect.values.compare import compare

# TF kernels known to approximate their op (what they do, for the report). The numbers decide; this only names suspects.
APPROXIMATE_TF_KERNELS = {
    "ResizeBicubic": ("Resize", "TensorFlow's bicubic resize weighs pixels with a precomputed coefficient table, not the exact cubic"),
}
APPROXIMATION_MARGIN = 10.0  # onnxruntime at least this many times closer to the exact float64 op than TensorFlow


@dataclass
class KerasStages:
    """What the stage checks reuse: the model, both GraphDefs, both sides' values, the converter."""

    loaded: KerasLoaded
    frozen: Frozen
    tf_values: GraphValues
    onnx_values: dict[str, np.ndarray]
    convert: Callable[..., Any]
    model: Any = None  # the converted model (tf2onnx's default optimizers)
    optimizers: list[str] = field(default_factory=list)  # the optimizers the model was converted with
    base: dict[str, str] = field(default_factory=dict)  # ONNX node -> the TF op it was converted from (mapping.Mapped.base)
    before_search: FirstDivergent | None = None


def check_capture_and_grappler(ctx: KerasStages, opts: Options, log: RunLog) -> FirstDivergent | None:
    """A culprit before ONNX exists: Keras eager vs the frozen graph, then grappler's before vs after."""
    frozen, graph_out = ctx.frozen, [ctx.tf_values.values[n] for n in ctx.frozen.output_names]
    model, inputs = ctx.loaded.model, ctx.loaded.inputs
    with log.timed("capture_check", "check the frozen graph against Keras eager"):
        eager = model(inputs[0] if len(inputs) == 1 else list(inputs), training=False)
        eager_out = [np.asarray(e) for e in (eager if isinstance(eager, (list, tuple)) else list(eager.values()) if isinstance(eager, dict) else [eager])]
        for name, e, g in zip(frozen.output_names, eager_out, graph_out) if opts.check_capture else ():
            c = compare(name, g, e, opts.rtol, opts.atol, str(e.dtype))
            if not c.ok:
                return _before_onnx(Stage.CAPTURE, name, "", c.metrics)
    with log.timed("tf_optimization_check", "check grappler (tf2onnx's tf_optimize)"):
        outputs = run_graph(frozen.before, frozen.input_names, inputs, only=frozen.output_names).values
        if all(compare(n, ctx.tf_values.values[n], v, opts.rtol, opts.atol, str(v.dtype)).ok for n, v in outputs.items()):
            return None  # the outputs agree: no op-by-op run of the graph before grappler
        before = run_graph(frozen.before, frozen.input_names, inputs)
        for name in [t for t in before.values if t in ctx.tf_values.values]:
            c = compare(name, ctx.tf_values.values[name], before.values[name], opts.rtol, opts.atol, str(before.values[name].dtype))
            if not c.ok:
                op = name.rpartition(":")[0]
                return _before_onnx(Stage.TF_OPTIMIZATION, name, before.op_type.get(op, ""), c.metrics)
    return None


def _before_onnx(stage: Stage, tensor: str, op_type: str, metrics: Metrics) -> FirstDivergent:
    op = tensor.rpartition(":")[0]
    return FirstDivergent(
        onnx_node=op, op_type=op_type, onnx_value=tensor, stage=stage, cause=Cause(stage.value), segment=[op],
        segment_op_types=[op_type] if op_type else [], framework=FrameworkRef(fx_node=op, target=f"tf.{op_type}" if op_type else ""),
        metrics=metrics,
    )


def attribute(ctx: KerasStages, fd: FirstDivergent | None, verdict: str, opts: Options, log: RunLog, ort: Any) -> tuple[FirstDivergent | None, str]:
    """The pipeline's post-search hook: a stage before ONNX first; a conversion culprit's stage in tf2onnx's terms."""
    if ctx.before_search is not None:
        if fd is not None:
            log.note(f"the ONNX graph also departs from TensorFlow at {fd.onnx_node} ({fd.op_type}); fix the {ctx.before_search.stage} stage first")
        return ctx.before_search, DIVERGED
    if fd is None or fd.cause != CAUSE_CONVERSION:
        return fd, verdict
    approximated = _tf_approximation(ctx, fd, opts)
    if approximated is not None:
        return approximated, verdict
    fd = _shape_birth(ctx, fd)
    with log.timed("graph_optimization_check", "convert again with tf2onnx's {remove_identity} baseline"):
        return _graph_optimization(ctx, fd, opts, log, ort), verdict


def _shape_birth(ctx: KerasStages, fd: FirstDivergent) -> FirstDivergent:
    """A value of the wrong shape: the node where that shape is born, and the TF op whose handler made it.

    A shape is carried unchanged through elementwise nodes (the ``BiasAdd`` the
    search stops at); the defect is where it first appears (the crop a handler
    adds under a fresh name), made by the nearest TF op upstream.
    """
    from nodebisect.frontends.keras.reference import keras_layers, tf_ref

    got = ctx.onnx_values.get(fd.onnx_value)
    if got is None or not fd.metrics.reason.startswith("shape"):
        return fd
    nodes = {n.name: n for n in ctx.model.graph.node}
    producer = {o: n for n in nodes.values() for o in n.output if o}
    birth = nodes.get(fd.onnx_node)
    while birth is not None:
        same = [i for i in birth.input if i in producer and getattr(ctx.onnx_values.get(i), "shape", None) == got.shape]
        if not same:
            break
        birth = producer[same[0]]
    maker = birth
    while maker is not None and not ctx.base.get(maker.name):
        maker = next((producer[i] for i in maker.input if i in producer), None)
    if birth is None or maker is None or birth.name == fd.onnx_node:
        return fd
    ref = tf_ref(ctx.base[maker.name], ctx.tf_values.op_type, keras_layers(ctx.loaded.model))
    segment = [birth.name] + [n for n in fd.segment if n != birth.name]  # the shape's birth is the first suspect
    return replace(fd, onnx_node=birth.name, op_type=birth.op_type, onnx_value=birth.output[0], framework=ref, segment=segment,
                   segment_op_types=[nodes[n].op_type if n in nodes else "" for n in segment], suspects=[])


def _graph_optimization(ctx: KerasStages, fd: FirstDivergent, opts: Options, log: RunLog, ort: Any) -> FirstDivergent:
    """Baseline right where the default optimizers are wrong: bisect the optimizers, in tf2onnx's order."""
    names = [n for n in ctx.optimizers if n not in BASELINE]
    try:
        if _wrong(ctx, fd, list(BASELINE), opts, ort):
            return replace(fd, checks=replace(fd.checks, unoptimized_export=WRONG), optimizer={"tool": "tf2onnx"})
        lo, hi = 0, len(names)  # the first prefix of optimizers that is wrong: names[:hi] wrong, names[:lo] right
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if _wrong(ctx, fd, list(BASELINE) + names[:mid], opts, ort):
                hi = mid
            else:
                lo = mid
    except Exception as exc:  # noqa: BLE001 - attribution is a refinement, never a failure
        log.note(f"could not convert again to attribute the stage: {str(exc).splitlines()[0][:160]}")
        return fd
    blamed = names[hi - 1] if hi else ""
    return replace(
        fd, stage=Stage.GRAPH_OPTIMIZATION, checks=replace(fd.checks, unoptimized_export=RIGHT),
        optimizer={"tool": "tf2onnx", "optimizer": blamed, "baseline": ",".join(BASELINE)},
    )


def _wrong(ctx: KerasStages, fd: FirstDivergent, optimizers: list[str], opts: Options, ort: Any) -> bool:
    """Is tf2onnx's conversion under ``optimizers`` wrong at the culprit (or, where it has no such value, at the outputs)?"""
    model = ctx.convert(ctx.frozen, optimizers)
    produced = {v for n in model.graph.node for v in n.output}
    reference = ctx.tf_values.values
    tensor = next((t for t in (fd.framework.fx_node + ":0",) if t in reference), "")
    if fd.onnx_value in produced and tensor:
        got = ort.counted_run(model, _feeds(model, ctx.loaded.inputs), [fd.onnx_value])[fd.onnx_value]
        return not any(compare(fd.onnx_value, got, ref, opts.rtol, opts.atol, str(ref.dtype)).ok for _, ref in layouts(reference[tensor], got.shape))
    outputs = [o.name for o in model.graph.output]
    got = ort.counted_run(model, _feeds(model, ctx.loaded.inputs), outputs)
    expected = [reference[n] for n in ctx.frozen.output_names]
    return any(not compare(o, got[o], e, opts.rtol, opts.atol, str(e.dtype)).ok for o, e in zip(outputs, expected))


def _feeds(model: Any, inputs: list[np.ndarray]) -> dict[str, np.ndarray]:
    inits = {t.name for t in model.graph.initializer}
    return {i.name: x for i, x in zip([i for i in model.graph.input if i.name not in inits], inputs)}


def _tf_approximation(ctx: KerasStages, fd: FirstDivergent, opts: Options) -> FirstDivergent | None:
    """TensorFlow's kernel, not tf2onnx: onnxruntime agrees with the ONNX op in float64, TensorFlow departs from it.

    Looks at the culprit's segment for the ONNX op a known-approximating TF kernel
    converts to; the numbers decide (``APPROXIMATION_MARGIN``), the list only names
    where to look.
    """
    from nodebisect.frontends.keras.reference import keras_layers, tf_ref

    nodes = {n.name: n for n in ctx.model.graph.node}
    for kernel, (onnx_type, note) in APPROXIMATE_TF_KERNELS.items():
        tf_ops = [op for op, t in ctx.tf_values.op_type.items() if t == kernel and f"{op}:0" in ctx.tf_values.values]
        for name in [n for n in fd.segment if n in nodes and nodes[n].op_type == onnx_type] if tf_ops else []:
            node, exact = nodes[name], _exact_node(ctx, name)
            got = ctx.onnx_values.get(node.output[0])
            if exact is None or got is None or exact.shape != got.shape:
                continue
            ort_err = float(np.max(np.abs(got.astype(np.float64) - exact)))
            fits = [(float(np.max(np.abs(ref.astype(np.float64) - exact))), op) for op in tf_ops for _, ref in layouts(ctx.tf_values.values[f"{op}:0"], got.shape)]
            if not fits:
                continue
            tf_err, op = min(fits)
            if tf_err > APPROXIMATION_MARGIN * max(ort_err, float(np.finfo(np.float32).eps)):
                ref = next(r for _, r in layouts(ctx.tf_values.values[f"{op}:0"], got.shape))
                return replace(
                    fd, onnx_node=name, op_type=onnx_type, onnx_value=node.output[0], stage=Stage.FRAMEWORK, cause=Cause.FRAMEWORK,
                    metrics=compare(node.output[0], got, ref, opts.rtol, opts.atol, str(ref.dtype)).metrics, worst={},
                    segment=[name], segment_op_types=[onnx_type], suspects=[], isolated_metrics=None,
                    framework=tf_ref(op, ctx.tf_values.op_type, keras_layers(ctx.loaded.model)),
                    op_noise={"tensorflow": tf_err, "onnxruntime": ort_err}, optimizer={"tool": "tf2onnx", "kernel": note},
                )
    return None


def _exact_node(ctx: KerasStages, node_name: str) -> np.ndarray | None:
    """The ONNX node alone in ``onnx.reference`` in float64, on onnxruntime's own inputs to it."""
    import onnx
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    node = next((n for n in ctx.model.graph.node if n.name == node_name), None)
    if node is None:
        return None
    inits = {t.name: numpy_helper.to_array(t) for t in ctx.model.graph.initializer}
    feeds: dict[str, np.ndarray] = {}
    for i, name in enumerate(node.input):
        if not name:
            continue
        value = ctx.onnx_values[name] if name in ctx.onnx_values else inits.get(name, _feeds(ctx.model, ctx.loaded.inputs).get(name))
        if value is None:
            return None
        feeds[name] = value.astype(np.float64) if i == 0 and value.dtype.kind == "f" else value
    one = helper.make_model(
        helper.make_graph([node], "one", [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for n, v in feeds.items()],
                          [helper.make_tensor_value_info(node.output[0], onnx.TensorProto.DOUBLE, None)]),
        opset_imports=list(ctx.model.opset_import),
    )
    try:
        return np.asarray(ReferenceEvaluator(one).run(None, feeds)[0], dtype=np.float64)
    except Exception:  # noqa: BLE001 - no exact answer: no evidence either way
        return None
