"""Small ONNX models with real transformation defects, built inline for tests/test_transforms.py.

Each is made with onnx.helper (no exporter involved: the transformation under test is
the only tool between the reference and its candidate) and comes with its feeds.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

OPSET = 18


def _model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto], inits: list[onnx.TensorProto]) -> onnx.ModelProto:
    model = h.make_model(h.make_graph(nodes, "g", inputs, outputs, inits), opset_imports=[h.make_opsetid("", OPSET)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def fp16_layernorm_overflow() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A LayerNormalization whose input (~1e5) is over float16's range: onnxruntime's CPU runs LayerNormalization
    in float16, so its input overflows to inf; keeping `layer_norm` in float32 fixes it (the scale-up Mul, run in
    float32 by onnxruntime's CPU anyway, need not be kept)."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2, 16)) * 40 + 300).astype(np.float32)
    nodes = [
        h.make_node("Mul", ["x", "up"], ["xs"], name="scale_up"),
        h.make_node("LayerNormalization", ["xs", "gamma", "beta"], ["normed"], name="layer_norm", axis=-1, epsilon=1e-5),
        h.make_node("Relu", ["normed"], ["r"], name="relu"),
        h.make_node("Mul", ["r", "half"], ["y"], name="halve"),
    ]
    inits = [
        nh.from_array(np.array(400.0, np.float32), "up"),
        nh.from_array(np.linspace(0.5, 1.5, 16).astype(np.float32), "gamma"),
        nh.from_array(np.zeros(16, np.float32), "beta"),
        nh.from_array(np.array(0.5, np.float32), "half"),
    ]
    io = [h.make_tensor_value_info("x", T.FLOAT, [2, 16])], [h.make_tensor_value_info("y", T.FLOAT, [2, 16])]
    return _model(nodes, *io, inits), {"x": x}


def fp16_clamped_constant(held_by: str = "constant_node") -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A divisor 1e5 the converter clamps to its max_finite_val 1e4, whatever is kept: held by a Constant node
    (``constant_node``), or an initializer the model lists in value_info, as the dynamo exporter writes it
    (``listed_initializer``): kept, `div` reads it through a Cast from float16 all the same."""
    x = np.linspace(1, 8, 8, dtype=np.float32).reshape(1, 8)
    nodes = [h.make_node("Relu", ["x"], ["r"], name="relu"), h.make_node("Div", ["r", "divisor"], ["y"], name="div")]
    inits: list[onnx.TensorProto] = []
    if held_by == "constant_node":
        nodes.insert(0, h.make_node("Constant", [], ["divisor"], name="divisor_const", value=nh.from_array(np.array(1e5, np.float32))))
    else:
        inits.append(nh.from_array(np.array(1e5, np.float32), "divisor"))
    io = [h.make_tensor_value_info("x", T.FLOAT, [1, 8])], [h.make_tensor_value_info("y", T.FLOAT, [1, 8])]
    model = _model(nodes, *io, inits)
    if held_by != "constant_node":
        model.graph.value_info.append(h.make_tensor_value_info("divisor", T.FLOAT, []))
    return model, {"x": x}


def two_matmuls(weight_outlier: bool = False, activation_outlier: bool = False) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """x -> mm_in -> Relu -> mm_out: an outlier in mm_in's weight, or one outlier feature of x (mm_in's activation)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 32)).astype(np.float32)
    w1 = (rng.standard_normal((32, 32)) * 0.2).astype(np.float32)
    w2 = (rng.standard_normal((32, 16)) * 0.2).astype(np.float32)
    if weight_outlier:
        w1[3, 5] = 400.0
        x[:, 3] *= 0.001  # the outlier meets a small feature: no activation downstream is an outlier
    if activation_outlier:
        x[:, 7] = 3000.0
        w1[7, :] = 0.0  # the outlier feature matters to no output: all of the error is quantization's
    nodes = [
        h.make_node("MatMul", ["x", "w1"], ["h"], name="mm_in"),
        h.make_node("Relu", ["h"], ["hr"], name="relu"),
        h.make_node("MatMul", ["hr", "w2"], ["y"], name="mm_out"),
    ]
    io = [h.make_tensor_value_info("x", T.FLOAT, [8, 32])], [h.make_tensor_value_info("y", T.FLOAT, [8, 16])]
    return _model(nodes, *io, [nh.from_array(w1, "w1"), nh.from_array(w2, "w2")]), {"x": x}


def outlier_channel_softmax() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """x -> mm -> mul (a per-channel scale, one channel x1000) -> add (x, the residual) -> softmax.

    One channel sets the int8 scale of every tensor it flows through (static quantization
    gives each activation one scale), and the other channels round to a few steps of it:
    within int8's precision of those tensors, until the Softmax reads their absolute
    differences. Mul, Add and Softmax are ops only the QLinear registry of
    onnxruntime.quantization lists, which ``quantize_static`` quantizes in QDQ format too.
    """
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 32)).astype(np.float32)
    w = (rng.standard_normal((32, 32)) * 0.2).astype(np.float32)
    scale = np.ones(32, np.float32)
    scale[0] = 1000.0
    nodes = [
        h.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        h.make_node("Mul", ["h", "scale"], ["m"], name="mul"),
        h.make_node("Add", ["m", "x"], ["r"], name="add"),
        h.make_node("Softmax", ["r"], ["y"], name="softmax", axis=-1),
    ]
    io = [h.make_tensor_value_info("x", T.FLOAT, [8, 32])], [h.make_tensor_value_info("y", T.FLOAT, [8, 32])]
    return _model(nodes, *io, [nh.from_array(w, "w"), nh.from_array(scale, "scale")]), {"x": x}


def argmax_of_exp() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """ArgMax(Exp(x)) with scores whose exp overflows: onnxoptimizer's eliminate_nop_monotone_argmax drops the Exp,
    and the tie between two infinities (first index wins) becomes a strict order; other passes fire harmlessly."""
    x = np.array([[50.0, 100.0, 200.0, 3.0], [1.0, 2.0, 3.0, 4.0]], np.float32)
    nodes = [
        h.make_node("Identity", ["x"], ["xi"], name="identity"),
        h.make_node("Transpose", ["xi"], ["xt"], name="nop_transpose", perm=[0, 1]),
        h.make_node("Exp", ["xt"], ["e"], name="exp"),
        h.make_node("ArgMax", ["e"], ["y"], name="argmax", axis=1, keepdims=0),
    ]
    io = [h.make_tensor_value_info("x", T.FLOAT, [2, 4])], [h.make_tensor_value_info("y", T.INT64, [2])]
    return _model(nodes, *io, []), {"x": x}


def gemm_weight_outlier() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """The weight-outlier case as torch.nn.Linear exports it: Gemm(transB=1). Dynamic quantization renames the Gemm
    `gemm_in` to the MatMul `gemm_in_MatMul` before it reads nodes_to_exclude."""
    model, feeds = two_matmuls(weight_outlier=True)
    w1 = nh.to_array(next(t for t in model.graph.initializer if t.name == "w1"))
    w2 = nh.to_array(next(t for t in model.graph.initializer if t.name == "w2"))
    nodes = [
        h.make_node("Gemm", ["x", "w1t"], ["h"], name="gemm_in", transB=1),
        h.make_node("Relu", ["h"], ["hr"], name="relu"),
        h.make_node("Gemm", ["hr", "w2t"], ["y"], name="gemm_out", transB=1),
    ]
    inits = [nh.from_array(np.ascontiguousarray(w1.T), "w1t"), nh.from_array(np.ascontiguousarray(w2.T), "w2t")]
    io = [h.make_tensor_value_info("x", T.FLOAT, [8, 32])], [h.make_tensor_value_info("y", T.FLOAT, [8, 16])]
    return _model(nodes, *io, inits), feeds


def logsoftmax_of_constant() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """x + LogSoftmax(prior) with a constant prior of wide gaps: onnxscript's constant folding evaluates it with
    ONNX's reference implementation, log(softmax(.)), whose exp underflows to -inf where onnxruntime's stays finite."""
    prior = np.array([[0.0, 200.0, -200.0, 5.0]], np.float32)
    nodes = [h.make_node("LogSoftmax", ["prior"], ["logp"], name="log_prior", axis=-1), h.make_node("Add", ["x", "logp"], ["y"], name="add")]
    io = [h.make_tensor_value_info("x", T.FLOAT, [2, 4])], [h.make_tensor_value_info("y", T.FLOAT, [2, 4])]
    return _model(nodes, *io, [nh.from_array(prior, "prior")]), {"x": np.zeros((2, 4), np.float32)}


def deep_matmul_chain(depth: int = 16, width: int = 32, seed: int = 1) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """MatMul -> Relu, ``depth`` times, random weights: no node is a defect, but int8's drift, grown over 16 layers,
    takes the final output past the quantization limit on final outputs (a clean but deep model)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((8, width)).astype(np.float32)
    nodes, inits, prev = [], [], "x"
    for i in range(depth):
        w = (rng.standard_normal((width, width)) / np.sqrt(width) * 1.4).astype(np.float32)
        inits.append(nh.from_array(w, f"w{i}"))
        nodes.append(h.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"], name=f"mm{i}"))
        if i < depth - 1:
            nodes.append(h.make_node("Relu", [f"m{i}"], [f"r{i}"], name=f"relu{i}"))
            prev = f"r{i}"
    io = [h.make_tensor_value_info("x", T.FLOAT, [8, width])], [h.make_tensor_value_info(f"m{depth - 1}", T.FLOAT, [8, width])]
    return _model(nodes, *io, inits), {"x": x}
