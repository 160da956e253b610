"""``onnxgraph.inferred_value_info``: shape inference without the weights gives the types and shapes
inference with them gives, the values a shape depends on (a Reshape's target) kept."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from nodebisect.onnxgraph import INFER_INLINE_BYTES, inferred_value_info, value_infos


def _model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((64, 96)).astype(np.float32), "w")  # 24 KB: goes in as a typed input
    shape = numpy_helper.from_array(np.array([2, 4, 48], np.int64), "shape")  # read by Reshape: kept
    half = numpy_helper.from_array(np.full((48,), 0.5, np.float16), "half")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("Reshape", ["h", "shape"], ["r"], name="reshape"),
        helper.make_node("Cast", ["r"], ["r16"], to=TensorProto.FLOAT16, name="cast"),
        helper.make_node("Add", ["r16", "half"], ["y"], name="add"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT16, None)], [w, shape, half])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_inference_without_the_weights_matches_inference_with_them() -> None:
    model = _model()
    assert model.graph.initializer[0].ByteSize() > INFER_INLINE_BYTES
    light = {vi.name: vi for vi in inferred_value_info(model)}
    full = {vi.name: vi for vi in onnx.shape_inference.infer_shapes(model).graph.value_info}
    assert light == full and set(light) == {"h", "r", "r16"}
    dims = [d.dim_value for d in light["r"].type.tensor_type.shape.dim]
    assert dims == [2, 4, 48]  # the Reshape read its target: the small initializer stayed in
    assert light["r16"].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert len(model.graph.input) == 1 and len(model.graph.initializer) == 3  # the caller's model is left as it was


def test_value_infos_types_every_intermediate_of_a_model_that_has_none() -> None:
    model = _model()
    types = value_infos(model)
    assert {"x", "h", "r", "r16", "y"} <= set(types)
    assert types["h"].type.tensor_type.elem_type == TensorProto.FLOAT
