"""values.worst (the values behind a divergence) and user_onnx.check_signature (an --onnx of another model).

Real arrays, real ONNX protos and a real dynamo export: no mocks.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from nodebisect.errors import BadInputError
from nodebisect.frontends.user_onnx import check_signature
from nodebisect.values.worst import small_constants, worst_element


def test_worst_element_is_the_sign_flip_of_atan2_at_signed_zero() -> None:
    y = np.array([[0.5, 0.0], [-0.25, 1.0]], dtype=np.float32)  # +0.0 from a relu
    x = np.array([[1.0, -0.52], [2.0, -1.0]], dtype=np.float32)
    expected = np.arctan2(y, x)
    # The lowering's branch on y > 0 sends +0.0 to atan(y/x) - pi.
    actual = np.where(x < 0, np.arctan(y / x) + np.where(y > 0, np.pi, -np.pi), np.arctan(y / x)).astype(np.float32)
    worst = worst_element(expected, actual, {"y": y, "x": x, "bias": np.float32(2.0), "w": np.ones((3, 3), np.float32)})
    assert worst["index"] == [0, 1]
    assert worst["expected"] == pytest.approx(np.pi) and worst["actual"] == pytest.approx(-np.pi)
    assert worst["inputs"]["x"] == pytest.approx(-0.52)
    assert worst["inputs"]["y"] == 0.0 and np.copysign(1.0, worst["inputs"]["y"]) > 0
    assert worst["inputs"]["bias"] == 2.0 and "w" not in worst["inputs"]  # no element of w belongs here
    assert "nan_mismatch" not in worst


def test_worst_element_counts_nan_placement_and_ranks_it_first() -> None:
    expected = np.array([np.nan, 1.0, np.nan, 3.0, np.nan])
    actual = np.array([0.5, 1.5, np.nan, 3.0, 0.25])
    worst = worst_element(expected, actual)
    assert worst["index"] == [0] and np.isnan(worst["expected"]) and worst["actual"] == 0.5
    assert worst["nan_mismatch"] == {"finite_where_expected_nan": 2, "nan_where_expected_finite": 0, "nan_both": 1}
    assert worst["finite_max_abs"] == pytest.approx(0.5)
    assert worst_element(np.zeros(3), np.zeros(4)) == {}


def test_small_constants_finds_mask_fill_epsilon_and_scalars() -> None:
    fill = numpy_helper.from_array(np.array([-3.4028234663852886e38], dtype=np.float32), "value")
    eps = numpy_helper.from_array(np.array(1e-5, dtype=np.float32), "value")
    big = numpy_helper.from_array(np.arange(64, dtype=np.float32).reshape(8, 8), "W")
    scale = numpy_helper.from_array(np.array(0.125, dtype=np.float32), "scale")
    nodes = [
        helper.make_node("Shape", ["scores"], ["shape"], name="shape"),
        helper.make_node("ConstantOfShape", ["shape"], ["filled"], name="fill", value=fill),
        helper.make_node("Where", ["mask", "scores", "filled"], ["masked"], name="where"),
        helper.make_node("Constant", [], ["eps"], name="eps_const", value=eps),
        helper.make_node("Add", ["masked", "eps"], ["plus"], name="add"),
        helper.make_node("Mul", ["plus", "scale"], ["scaled"], name="mul"),
        helper.make_node("MatMul", ["scaled", "W"], ["product"], name="matmul"),
        helper.make_node("Reshape", ["product", "target_shape"], ["out"], name="reshape"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [8, 8]), helper.make_tensor_value_info("mask", TensorProto.BOOL, [8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [8, 8])],
        initializer=[big, scale, numpy_helper.from_array(np.array([8, 8], dtype=np.int64), "target_shape")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    found = small_constants(model, ["where", "add", "mul", "matmul", "reshape"])
    assert found["filled (into Where)"] == {"fill": [pytest.approx(-3.4028234663852886e38)]}
    assert found["eps (into Add)"] == pytest.approx(1e-5)
    assert found["scale (into Mul)"] == 0.125
    assert found["W (into MatMul)"] == {"shape": [8, 8], "dtype": "float32", "min": 0.0, "max": 63.0}
    assert not any(k.startswith("target_shape") for k in found)  # a shape argument is plumbing
    assert small_constants(model, ["fill"])["filled (ConstantOfShape fill)"] == [pytest.approx(-3.4028234663852886e38)]


@pytest.fixture(scope="module")
def tanh_onnx() -> onnx.ModelProto:
    import torch

    class LinearTanh(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tanh(self.linear(x))

    program = torch.onnx.export(LinearTanh().eval(), (torch.randn(2, 4),), dynamo=True, verbose=False)
    return program.model_proto


def test_check_signature_accepts_the_models_own_shapes(tanh_onnx: onnx.ModelProto) -> None:
    name = tanh_onnx.graph.input[0].name
    check_signature(tanh_onnx, {name: np.zeros((2, 4), np.float32)}, [np.zeros((2, 3), np.float32)])


@pytest.mark.parametrize(
    "feeds, outputs, reason",
    [
        pytest.param({"x": np.zeros((2, 4), np.float32)}, [np.zeros((2, 5), np.float32)], "has shape [2, 3], the model's is [2, 5]", id="output-shape"),
        pytest.param({"x": np.zeros((2, 6), np.float32)}, [np.zeros((2, 3), np.float32)], "has shape [2, 4], the model's is [2, 6]", id="input-shape"),
        pytest.param({"x": np.zeros((2, 4), np.float64)}, [np.zeros((2, 3), np.float32)], "is float32, the model's is float64", id="input-dtype"),
        pytest.param({"x": np.zeros((2, 4), np.float32)}, [np.zeros((2, 3), np.float32)] * 2, "1 output(s), the model 2", id="output-count"),
        pytest.param({"tokens": np.zeros((2, 4), np.float32)}, [np.zeros((2, 3), np.float32)], "takes input(s)", id="input-name"),
    ],
)
def test_check_signature_refuses_another_models_graph(tanh_onnx: onnx.ModelProto, feeds: dict, outputs: list, reason: str) -> None:
    name = tanh_onnx.graph.input[0].name
    feeds = {name if k == "x" else k: v for k, v in feeds.items()}
    with pytest.raises(BadInputError) as err:
        check_signature(tanh_onnx, feeds, outputs)
    assert "not an export of this model" in err.value.message and reason in err.value.message
    assert err.value.exit_code == 2
