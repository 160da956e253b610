"""onnxruntime failing (an error, or a hang) is localized to the node that causes it, in a child process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import nodebisect
from nodebisect.cli.main import main
from nodebisect.frontends.dynamo import export_onnx
from nodebisect.frontends.loading.load import build_loaded_model
from nodebisect.runtime.sandbox import OrtChild, OrtCrashed


class Chain(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Linear(8, 8)
        self.b = torch.nn.Linear(8, 8)
        self.c = torch.nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.a(x))
        h = torch.tanh(self.b(h)).reshape(2, 16)
        return self.c(h)


ARGS = (torch.randn(4, 8, generator=torch.Generator().manual_seed(0)),)


@pytest.fixture(scope="module")
def clean() -> onnx.ModelProto:
    return export_onnx(build_loaded_model(Chain().eval(), ARGS)).model


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def test_a_reshape_that_cannot_run_is_named(clean: onnx.ModelProto, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = _copy(clean)
    reshape = next(n for n in model.graph.node if n.op_type == "Reshape")
    shape_name = reshape.input[1]
    bad = numpy_helper.from_array(np.array([3, 5], dtype=np.int64), name=shape_name)
    kept = [t for t in model.graph.initializer if t.name != shape_name]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept + [bad])
    # Drop the now-wrong shape annotations so the model loads and fails when it runs.
    del model.graph.value_info[:]
    path = tmp_path / "bad_reshape.onnx"
    onnx.save(model, path)

    result = nodebisect.locate(Chain().eval(), ARGS, onnx_path=str(path), check_capture=False)
    assert result.verdict == "runtime_failed"
    assert result.first_divergent is not None
    assert result.first_divergent.onnx_node == reshape.name
    assert result.runtime_failure["op_type"] == "Reshape"
    assert result.runtime_failure["kind"] == "raised"
    assert "reshape" in result.runtime_failure["error"].lower()

    out_json = tmp_path / "r.json"
    code = main(["locate", "--onnx", str(path), "--json", str(out_json), "-q", "--no-capture-check", f"{Path(__file__).resolve()}:Chain", "--input", "x=4x8"])
    captured = capsys.readouterr()
    assert code == 4, captured.err
    assert json.loads(out_json.read_text())["verdict"] == "runtime_failed"


def _endless_loop(value_in: str, value_out: str, name: str) -> list[onnx.NodeProto]:
    """A Loop with an astronomically large trip count whose body passes its value through."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Identity", ["v_in"], ["v_out"])],
        "endless_body",
        [
            helper.make_tensor_value_info("iter", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_in", TensorProto.FLOAT, None),
        ],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info("v_out", TensorProto.FLOAT, None)],
    )
    trip = helper.make_node("Constant", [], [f"{name}_trip"], value=numpy_helper.from_array(np.array(2**62, dtype=np.int64)))
    cond = helper.make_node("Constant", [], [f"{name}_cond"], value=numpy_helper.from_array(np.array(True)))
    loop = helper.make_node("Loop", [f"{name}_trip", f"{name}_cond", value_in], [value_out], name=name, body=body)
    return [trip, cond, loop]


@pytest.mark.slow  # waits out a 3 s timeout
def test_a_node_that_hangs_is_named_after_the_timeout(clean: onnx.ModelProto, tmp_path: Path) -> None:
    model = _copy(clean)
    nodes = list(model.graph.node)
    idx = next(i for i, n in enumerate(nodes) if n.op_type == "Tanh")
    tanh = nodes[idx]
    # Tanh's output now comes from an endless Loop over Tanh's input (a real hang inside onnxruntime).
    replacement = _endless_loop(tanh.input[0], tanh.output[0], "endless_loop")
    del model.graph.node[:]
    model.graph.node.extend(nodes[:idx] + replacement + nodes[idx + 1 :])
    path = tmp_path / "hang.onnx"
    onnx.save(model, path)

    result = nodebisect.locate(Chain().eval(), ARGS, onnx_path=str(path), check_capture=False, timeout_s=3.0)
    assert result.verdict == "runtime_failed"
    assert result.first_divergent is not None
    assert result.first_divergent.onnx_node == "endless_loop"
    assert result.runtime_failure["kind"] == "hung"


def test_a_dead_child_is_reported_as_a_crash_and_replaced(clean: onnx.ModelProto) -> None:
    import os
    import signal

    sandbox = OrtChild(timeout_s=60)
    feeds = {clean.graph.input[0].name: ARGS[0].numpy()}
    outputs = [clean.graph.output[0].name]
    try:
        first = sandbox.run(clean.SerializeToString(), feeds, outputs, ["CPUExecutionProvider"], "all")
        pid = sandbox.pid
        assert pid is not None
        # What a segfault inside onnxruntime does to the child, delivered while it serves the request.
        # Killed outright before the request, the child may already be dead when the request starts, and
        # be replaced without a word: the test raced with the signal. Stopped first, it is alive when the
        # request is sent and cannot answer it; the SIGSEGV, pending until SIGCONT, then kills it mid-request.
        import threading
        import time

        os.kill(pid, signal.SIGSTOP)
        while _proc_state(pid) != "T":
            time.sleep(0.01)

        def segfault_now() -> None:
            os.kill(pid, signal.SIGSEGV)
            os.kill(pid, signal.SIGCONT)

        threading.Timer(1.0, segfault_now).start()
        with pytest.raises(OrtCrashed, match="SIGSEGV"):
            sandbox.run(clean.SerializeToString(), feeds, outputs, ["CPUExecutionProvider"], "all")
        again = sandbox.run(clean.SerializeToString(), feeds, outputs, ["CPUExecutionProvider"], "all")
        assert sandbox.pid != pid
        np.testing.assert_array_equal(first[0], again[0])
    finally:
        sandbox.close()


def _proc_state(pid: int) -> str:
    """The process state letter from /proc (R, S, T for stopped, Z...)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0]


def test_a_large_answer_comes_back_through_shared_memory_equal_and_writable() -> None:
    """Past ``SHARED_ANSWER_BYTES`` the child's arrays come back through a file in /dev/shm, unlinked once mapped."""
    import glob

    from nodebisect.runtime import sandbox

    if sandbox._shared_dir() is None:
        pytest.skip("no /dev/shm here: answers go through the pipe")
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Neg", ["y"], ["z"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1024, 1024])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1024, 1024]),
                               helper.make_tensor_value_info("z", TensorProto.FLOAT, [1024, 1024])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
    before = set(glob.glob("/dev/shm/nodebisect-answer-*"))
    child = OrtChild(timeout_s=60)
    try:
        y, z = child.run(model.SerializeToString(), {"x": x}, ["y", "z"], ["CPUExecutionProvider"], "disabled")
    finally:
        child.close()
    assert y.nbytes + z.nbytes >= sandbox.SHARED_ANSWER_BYTES
    assert np.array_equal(y, np.maximum(x, 0)) and np.array_equal(z, -np.maximum(x, 0))
    y[0, 0] = 42.0  # copy-on-write: the parent may write into its arrays
    assert y[0, 0] == 42.0
    assert set(glob.glob("/dev/shm/nodebisect-answer-*")) == before, "the shared file is unlinked once mapped"
