"""``diff`` and ``--transform`` on models with external data, and past protobuf's 2 GB limit.

The models are small and saved with every tensor as external data (``size_threshold=0``),
as a model over 2 GB must be. The code paths a model past 2 GB takes (the weights
written beside a model file, never serialized in the proto; shape inference without
the weights) are taken here by lowering ``onnx_reference.large.LIMIT``, the size past
which a model counts as too large, to one byte: the same real tools and onnxruntime
then read and write these small models as files with external data. The multi-GB run
is ``benchmarks/bench_diff_large.py`` (BENCHMARKS.md).
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nodebisect
from nodebisect.onnx_reference import large
from nodebisect.result_file import without_timings
from nodebisect.vocab import Cause

sys.path.insert(0, str(Path(__file__).parent))
import transform_models as tm  # noqa: E402

float16 = pytest.importorskip("onnxconverter_common.float16")
D = 64


def constant_model() -> onnx.ModelProto:
    """A scale of 2e4 that convert_float_to_float16 clamps to its max_finite_val (1e4), after a 64x64 MatMul."""
    w = (np.random.default_rng(1).standard_normal((D, D)) * 0.125).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
         helper.make_node("Mul", ["h", "big"], ["hb"], name="scale_up"),
         helper.make_node("Mul", ["hb", "small"], ["hs"], name="scale_down"),
         helper.make_node("Tanh", ["hs"], ["y"], name="tanh")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, D])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, D])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.float32(2e4), "big"), numpy_helper.from_array(np.float32(1e-4), "small")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _external(model: onnx.ModelProto, path: Path) -> Path:
    """``model`` saved as the user would save one over 2 GB: every tensor in ``<name>.data``."""
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=path.name + ".data", size_threshold=0)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("external")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        candidate = float16.convert_float_to_float16(constant_model(), keep_io_types=True)
    outlier, feeds = tm.two_matmuls(weight_outlier=True)
    np.savez(folder / "outlier_inputs.npz", **feeds)
    return {"reference": _external(constant_model(), folder / "ref.onnx"), "candidate": _external(candidate, folder / "cand16.onnx"),
            "outlier": _external(outlier, folder / "outlier.onnx"), "outlier_inputs": folder / "outlier_inputs.npz"}




def test_external_data_files_are_compared_and_the_changed_constant_named(files: dict[str, Path], cli: object, tmp_path: Path) -> None:
    """Reference and candidate both keep their tensors in .data files beside them: diff reads them like any model."""
    out = tmp_path / "r.json"
    run = cli("diff", str(files["reference"]), str(files["candidate"]), "--json", str(out), "-q")  # type: ignore[operator]
    assert run.code == 1, run.err
    fd = json.loads(out.read_text())["first_divergent"]
    assert fd["onnx_node"] == "scale_up" and fd["cause"] == Cause.CONSTANT_CHANGED


def test_past_the_limit_the_same_answer_and_the_models_untouched(files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Every model counted past 2 GB: onnxruntime reads files with external data, the verdict and the JSON do not move."""
    reference, candidate = onnx.load(str(files["reference"])), onnx.load(str(files["candidate"]))
    before = [t.raw_data for t in reference.graph.initializer]
    plain = nodebisect.diff(reference, candidate, isolate_crashes=False)
    monkeypatch.setattr(large, "LIMIT", 1)
    assert large.too_large(reference)
    past = nodebisect.diff(reference, candidate, isolate_crashes=False)
    assert past.first_divergent is not None and past.first_divergent.onnx_node == "scale_up"
    assert without_timings(json.loads(past.to_json())) == without_timings(json.loads(plain.to_json()))
    assert [t.raw_data for t in reference.graph.initializer] == before  # the weights were written from the model, not moved out of it


def test_write_model_past_the_limit_puts_the_weights_beside_it(files: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(large, "LIMIT", 1)
    model = onnx.load(str(files["reference"]))
    written = large.write_model(model, tmp_path / "m.onnx")
    assert written == [str(tmp_path / "m.onnx"), str(tmp_path / "m.onnx.data")]
    onnx.checker.check_model(str(tmp_path / "m.onnx"))  # by path: the checker reads the external data
    back = onnx.load(str(tmp_path / "m.onnx"))
    assert {t.name for t in back.graph.initializer} == {t.name for t in model.graph.initializer}
    for a, b in zip(back.graph.initializer, model.graph.initializer):
        assert np.array_equal(numpy_helper.to_array(a), numpy_helper.to_array(b))
    assert all(t.raw_data for t in model.graph.initializer)  # the model given is whole


def test_quantize_dynamic_past_the_limit_names_the_node_and_writes_both_candidates(files: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The quantizer gets and gives files with external data; the fixed candidate is re-checked and written beside its .data."""
    pytest.importorskip("onnxruntime.quantization")
    from nodebisect.transforms.api import transform

    monkeypatch.setattr(large, "LIMIT", 1)
    result = transform(files["outlier"], "quantize-dynamic", files["outlier_inputs"], report=tmp_path / "rep", isolate_crashes=False)
    record = result.transform
    assert record["keep_nodes"] == ["mm_in"] and record["rechecked"]
    for name in ("candidate.onnx", "fixed_candidate.onnx"):
        path = tmp_path / "rep" / "transform" / name
        assert (tmp_path / "rep" / "transform" / f"{name}.data").is_file()
        onnx.checker.check_model(str(path))
        assert any(n.op_type == "DynamicQuantizeLinear" for n in onnx.load(str(path)).graph.node)


@pytest.mark.slow
def test_fp16_transform_past_the_limit_matches_as_without_it(files: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The converter's shape inference cannot take a model past 2 GB: the types come from the graph without its weights,
    and the conversion is the same (the clamped constant named, no keep-list fixes it, as without the limit)."""
    from nodebisect.transforms.api import transform

    plain = transform(files["reference"], "fp16", isolate_crashes=False).transform
    monkeypatch.setattr(large, "LIMIT", 1)
    past = transform(files["reference"], "fp16", report=tmp_path / "rep", isolate_crashes=False).transform
    keys = ("matched", "keep_nodes", "fixable", "unfixable_constants", "culprit", "score")
    assert {k: past.get(k) for k in keys} == {k: plain.get(k) for k in keys}
    assert (tmp_path / "rep" / "transform" / "candidate.onnx.data").is_file()


def test_transform_past_the_limit_writes_the_reference_s_weights_once(files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Every run of the reference (its values, each quantizer application, each diff) reads one shared weights file.

    Without the sharing a 2 GB reference was written again for each of them. ``w2`` (mm_out's weight) is quantized
    in every candidate this search makes (it keeps out mm_in only), so its float32 bytes are the reference's alone."""
    pytest.importorskip("onnxruntime.quantization")
    from nodebisect.transforms.api import transform

    w2 = numpy_helper.to_array(next(t for t in onnx.load(str(files["outlier"])).graph.initializer if t.name == "w2")).tobytes()
    writes: list[str] = []
    externalized = large.externalized

    def counting(initializers, fh, location):  # type: ignore[no-untyped-def]
        initializers = list(initializers)
        writes.extend(t.name for t in initializers if t.name == "w2" and t.raw_data == w2)
        return externalized(initializers, fh, location)

    monkeypatch.setattr(large, "LIMIT", 1)
    monkeypatch.setattr(large, "externalized", counting)
    record = transform(files["outlier"], "quantize-dynamic", files["outlier_inputs"], isolate_crashes=False).transform
    assert record["keep_nodes"] == ["mm_in"] and record["rechecked"] and record["applications"] >= 3, record
    assert writes == ["w2"], f"the reference's weight was written {len(writes)} times"
