"""A frozen GraphDef run in a ``tf.compat.v1.Session``, fetching every op's outputs in one run.

The values tf2onnx's names refer to: a node tf2onnx converts 1:1 is named after
the TF op and its output ``X:0`` after the TF tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nodebisect.frontends.keras.load import import_stack

_SKIP_OPS = {"Placeholder", "Const", "NoOp", "VarHandleOp", "ReadVariableOp"}


@dataclass
class GraphValues:
    """Every fetchable tensor of a GraphDef on one input set, in the graph's order."""

    values: dict[str, np.ndarray] = field(default_factory=dict)
    op_type: dict[str, str] = field(default_factory=dict)  # op name -> TF op type
    consumers: dict[str, list[str]] = field(default_factory=dict)  # tensor name -> consuming op names
    producer_input: dict[str, str] = field(default_factory=dict)  # op name -> its first non-constant input tensor
    ops_in_order: list[str] = field(default_factory=list)


def run_graph(graph_def: Any, input_names: list[str], inputs: list[np.ndarray], only: list[str] | None = None) -> GraphValues:
    """Run ``graph_def`` on ``inputs``; every op output (or only the tensors ``only`` names)."""
    tf, _, _ = import_stack()
    out = GraphValues()
    with tf.Graph().as_default() as graph:
        tf.import_graph_def(graph_def, name="")
        const = set()
        for op in graph.get_operations():
            out.op_type[op.name] = op.type
            out.ops_in_order.append(op.name)
            if op.type == "Const":
                const.update(t.name for t in op.outputs)
            for t in op.inputs:
                out.consumers.setdefault(t.name, []).append(op.name)
            live = [t.name for t in op.inputs if t.name not in const]
            if live:
                out.producer_input[op.name] = live[0]
        if only is not None:
            fetch = [graph.get_tensor_by_name(n) for n in only]
        else:
            fetch = [t for op in graph.get_operations() if op.type not in _SKIP_OPS for t in op.outputs
                     if t.dtype.is_numpy_compatible and (t.dtype.is_floating or t.dtype.is_integer or t.dtype.is_bool)]
        feed = {graph.get_tensor_by_name(n): x for n, x in zip(input_names, inputs)}
        with tf.compat.v1.Session(graph=graph, config=_plain_config(tf)) as session:
            got = session.run(fetch, feed_dict=feed)
    out.values = {t.name: np.asarray(v) for t, v in zip(fetch, got)}
    return out


def _plain_config(tf: Any) -> Any:
    """A session that runs every op as written: the session's own grappler would fuse ops (Sigmoid+Mul into
    a Swish) and drop the tensors it fused, which can then no longer be fetched (EfficientNet)."""
    config = tf.compat.v1.ConfigProto()
    config.graph_options.rewrite_options.disable_meta_optimizer = True
    config.graph_options.optimizer_options.opt_level = tf.compat.v1.OptimizerOptions.L0
    return config
