"""A Keras model -> ``Prepared``: tf2onnx's conversion, TensorFlow's values under ONNX names, the stage context.

Steps, each timed in the run's log: freeze (trace + grappler, both GraphDefs
kept), convert (tf2onnx, default optimizers), run the converted GraphDef fetching
every op output, run onnxruntime once on every ONNX value (the layouts and chains
of ``mapping`` are decided on those values), map. The capture and TF
optimization checks run here too (they compare outputs only, one eager call and
one more Session run); the graph optimization and TF-side checks wait for a
culprit (``stages.attribute``, the pipeline's post-search hook).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from nodebisect.frontends.keras.load import KerasLoaded
from nodebisect.prepared import Prepared
from nodebisect.run import Options, RunLog


def prepare_keras(loaded: KerasLoaded, opts: Options, log: RunLog, ort: Any) -> Prepared:
    """Convert ``loaded.model`` with tf2onnx and build its TensorFlow reference.

    Raises:
        ExportFailedError: tf2onnx failed or returned an invalid model.
        BadInputError: no input signature, inputs that do not fit, ``--onnx`` given.
    """
    from nodebisect.errors import BadInputError, ExportFailedError
    from nodebisect.frontends.keras import stages
    from nodebisect.frontends.keras.convert import chosen_optimizers, convert, freeze, optimizer_names
    from nodebisect.frontends.keras.graphrun import run_graph
    from nodebisect.frontends.keras.mapping import map_values
    from nodebisect.frontends.keras.reference import KerasReference, keras_layers, tf_ref
    from nodebisect.values.compare import compare

    if opts.onnx_path:
        raise BadInputError("--onnx is not supported with a Keras model yet", tip="let nodebisect convert it with tf2onnx (drop --onnx)")
    with log.timed("freeze", "trace and freeze the Keras model (tf.function, grappler)"):
        frozen = freeze(loaded.model, opts.opset)
    if len(frozen.input_names) != len(loaded.inputs):
        raise BadInputError(f"the Keras model takes {len(frozen.input_names)} input(s), it was given {len(loaded.inputs)}")
    chosen = chosen_optimizers(opts.tf2onnx_optimizers)
    with log.timed("export", "convert with tf2onnx"):
        model = convert(frozen, chosen)
    if ort is not None:
        ort.warm_up(model)
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    feeds = {i.name: x for i, x in zip([i for i in graph.input if i.name not in inits], loaded.inputs)}
    with log.timed("capture", "run the frozen graph (every op output)"):
        tf_values = run_graph(frozen.after, frozen.input_names, loaded.inputs)
    with log.timed("map", "map ONNX values onto TensorFlow tensors"):
        names = [v for n in graph.node for v in n.output if v]
        onnx_values = ort.counted_run(model, feeds, names)
        mapped = map_values(model, onnx_values, tf_values, frozen.rename, lambda n, a, b: compare(n, a, b, opts.rtol, opts.atol, str(b.dtype)).ok)
    if not any(o.name in mapped.values for o in graph.output):
        raise ExportFailedError("no output of tf2onnx's model matches a TensorFlow output (names or dtypes differ)", step="conversion")
    layers = keras_layers(loaded.model)
    order = [v for v in names if v in mapped.values]
    acts = KerasReference(
        values=mapped.values, dtypes={k: str(v.dtype) for k, v in mapped.values.items()}, order=order,
        outputs=[o.name for o in graph.output], tensor=mapped.tensor, op_type=tf_values.op_type, layers=layers,
    )
    refs = {n.name: tf_ref(mapped.base[n.name], tf_values.op_type, layers) for n in graph.node if mapped.base.get(n.name)}
    prep = Prepared(onnx_model=model, acts=acts, flat_inputs=list(loaded.inputs), refs=refs, feeds=feeds,
                    opset=next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0))
    prep.mapping_quality = {"mapped_values": len(mapped.values), "onnx_values": len(names), "layouts": _count(mapped.layout)}
    prep.notes.append("no float64 reference for TensorFlow (not cheap to build): values are judged by the fixed tolerance")
    context = stages.KerasStages(loaded=loaded, frozen=frozen, tf_values=tf_values, onnx_values=onnx_values, convert=convert, model=model, optimizers=optimizer_names() if chosen is None else chosen,
                                  base=mapped.base)
    context.before_search = stages.check_capture_and_grappler(context, opts, log)
    prep.attribute = partial(stages.attribute, context)
    return prep


def _count(layouts: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name in layouts.values():
        counts[name] = counts.get(name, 0) + 1
    return counts
