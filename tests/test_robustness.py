"""Robustness: determinism of results, and fuzzed files through the loading path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nodebisect
from hypothesis_profiles import examples
from nodebisect.errors import NodebisectError
from nodebisect.frontends.loading.load import build_loaded_model, parse_input_spec

TIMING_KEYS = {"seconds", "timings", "ort_seconds"}


@pytest.fixture(scope="module")
def faulted(broken_block: Any) -> tuple[torch.nn.Module, tuple[torch.Tensor], Path]:
    """models.Block with its LayerNorm epsilon broken (conftest's broken_block)."""
    return broken_block.model, broken_block.args, broken_block.path


def _strip_timings(data: object) -> object:
    if isinstance(data, dict):
        return {k: _strip_timings(v) for k, v in data.items() if k not in TIMING_KEYS}
    if isinstance(data, list):
        return [_strip_timings(v) for v in data]
    return data


@pytest.mark.parametrize("strategy", [pytest.param("all", marks=pytest.mark.slow), "bisect"])
def test_same_inputs_give_byte_identical_json_apart_from_timings(faulted: tuple, strategy: str) -> None:
    model, args, path = faulted
    runs = [nodebisect.locate(model, args, onnx_path=str(path), strategy=strategy).to_dict() for _ in range(2)]
    texts = [json.dumps(_strip_timings(r), sort_keys=True) for r in runs]
    assert runs[0]["verdict"] == "diverged"
    assert texts[0] == texts[1]


@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=0, max_size=2048), suffix=st.sampled_from([".pt2", ".pt", ".onnx", ".bin"]))
def test_fuzzed_model_files_only_give_clean_errors(tmp_path: Path, data: bytes, suffix: str) -> None:
    path = tmp_path / f"model{suffix}"
    path.write_bytes(data)
    with pytest.raises(NodebisectError) as info:
        build_loaded_model(str(path))
    assert info.value.message and "\n" not in info.value.message


@pytest.mark.slow  # a locate per example
@settings(max_examples=examples(15), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=1, max_size=4096))
def test_fuzzed_onnx_next_to_a_real_model_gives_clean_errors(faulted: tuple, tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    model, args, good = faulted
    raw = bytearray(good.read_bytes())
    # Mutate: either random bytes, or a real ONNX file cut short / with a random slice overwritten.
    if data[0] % 3 == 0:
        blob = bytes(data)
    elif data[0] % 3 == 1:
        blob = bytes(raw[: max(1, len(raw) * (data[-1] % 100) // 100)])
    else:
        at = (int.from_bytes(data[:4].ljust(4, b"\0"), "little")) % max(1, len(raw) - len(data))
        raw[at : at + len(data)] = data
        blob = bytes(raw)
    path = tmp_path_factory.mktemp("fuzz") / "mutated.onnx"
    path.write_bytes(blob)
    try:
        result = nodebisect.locate(model, args, onnx_path=str(path), strategy="bisect", check_capture=False)
    except NodebisectError as exc:
        assert exc.message and "\n" not in exc.message
    else:
        assert result.verdict in ("match", "diverged")


@given(text=st.text(max_size=40))
def test_fuzzed_input_specs_parse_or_fail_cleanly(text: str) -> None:
    try:
        name, shape, _dtype = parse_input_spec(text)
    except NodebisectError as exc:
        assert exc.message
    else:
        assert name and all(d >= 0 for d in shape)


def test_zip_with_undecodable_member_names_is_a_clean_error(tmp_path: Path) -> None:
    # Found by the fuzz campaign: zipfile raises UnicodeDecodeError on such archives.
    import zipfile

    path = tmp_path / "model.pt2"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data/w\u00e9ights", b"0" * 16)  # non-ASCII: stored as UTF-8 with the UTF-8 flag
    raw = path.read_bytes().replace("w\u00e9ights".encode("utf-8"), b"w\xc3\x28ights")  # invalid UTF-8
    path.write_bytes(raw)
    with pytest.raises(NodebisectError) as info:
        build_loaded_model(str(path))
    assert "cannot read" in info.value.message
