"""The same inputs for both models: given arrays, an .npz, ``NAME=SHAPE`` specs or random draws from the input types.

Each model gets them in its own input dtypes (a float16 candidate gets the float16
rounding of the float32 reference's inputs). Inputs that fit one model and not the
other are refused with the input names and shapes each model takes.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import onnx
from onnx import helper

from nodebisect.errors import BadInputError


def signature(model: onnx.ModelProto) -> dict[str, tuple[str, list[int | str]]]:
    """Graph input name -> (dtype name, dims: ints, or names of dynamic dims)."""
    inits = {t.name for t in model.graph.initializer}
    out: dict[str, tuple[str, list[int | str]]] = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type)).name
        except (KeyError, TypeError, ValueError):
            dtype = "?"
        dims: list[int | str] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim]
        out[vi.name] = (dtype, dims)
    return out


def describe(sig: dict[str, tuple[str, list[int | str]]]) -> str:
    return ", ".join(f"{n} ({t} [{'x'.join(str(d) for d in dims)}])" for n, (t, dims) in sig.items()) or "no inputs"


def both_feeds(
    reference: onnx.ModelProto, candidate: onnx.ModelProto, inputs: Any, specs: list[str] | None, seed: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(reference feeds, candidate feeds): the same values, each in its model's input dtypes."""
    ref_sig, cand_sig = signature(reference), signature(candidate)
    takes = f"the reference takes {describe(ref_sig)}; the candidate takes {describe(cand_sig)}"
    if set(ref_sig) != set(cand_sig):
        raise BadInputError(f"the two models take different inputs: {takes}", tip="the candidate must be derived from the reference, with the same graph inputs")
    given = _given(inputs)
    for spec in specs or []:
        name, array = _from_spec(spec, ref_sig, seed + len(given))
        given[name] = array
    unknown = [n for n in given if n not in ref_sig]
    if unknown:
        raise BadInputError(f"input {', '.join(unknown)} fits neither model: {takes}", tip="name the inputs as the models do (--input NAME=SHAPE)")
    rng = np.random.default_rng(seed)
    for name, (dtype, dims) in ref_sig.items():
        if name not in given:
            given[name] = _draw(name, dtype, dims, rng, takes)
    for name, array in given.items():
        for side, sig in (("reference", ref_sig), ("candidate", cand_sig)):
            dims = sig[name][1]
            if len(dims) != array.ndim or any(isinstance(d, int) and d > 0 and d != s for d, s in zip(dims, array.shape)):
                raise BadInputError(f"input {name} of shape {list(array.shape)} does not fit the {side}: {takes}", tip="give inputs both models accept (--input NAME=SHAPE)")
    return _cast(given, ref_sig), _cast(given, cand_sig)


def _given(inputs: Any) -> dict[str, np.ndarray]:
    if inputs is None:
        return {}
    if isinstance(inputs, dict):
        return {str(k): np.asarray(v) for k, v in inputs.items()}
    path = os.fspath(inputs)
    if not os.path.exists(path):
        raise BadInputError(f"inputs file not found: {path}", tip="give an .npz whose keys are the models' input names")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: np.asarray(data[k]) for k in data.files}
    except (ValueError, OSError, AttributeError) as exc:
        raise BadInputError(f"cannot read inputs file {path}: {str(exc).splitlines()[0][:160]}", tip="give an .npz (numpy.savez) keyed by the models' input names") from None


def _from_spec(spec: str, sig: dict[str, tuple[str, list[int | str]]], seed: int) -> tuple[str, np.ndarray]:
    name, _, rest = spec.partition("=")
    shape_text, _, dtype = rest.partition(":")
    try:
        shape = [int(s) for s in shape_text.lower().split("x") if s]
    except ValueError:
        raise BadInputError(f"bad --input {spec!r}", tip="write NAME=1x3x224x224 or NAME=2x8:int64") from None
    if not name or not shape_text:
        raise BadInputError(f"bad --input {spec!r}", tip="write NAME=1x3x224x224 or NAME=2x8:int64")
    dtype = dtype or (sig[name][0] if name in sig else "float32")
    return name, _draw(name, dtype, shape, np.random.default_rng(seed), "")


def _draw(name: str, dtype: str, dims: list[int | str], rng: np.random.Generator, takes: str) -> np.ndarray:
    if any(not isinstance(d, int) or d <= 0 for d in dims):
        raise BadInputError(f"input {name} has dynamic dimensions {dims}: {takes}".rstrip(": "), tip=f"give its shape: --input {name}=SHAPE")
    try:
        kind = np.dtype(dtype)
    except TypeError:
        raise BadInputError(f"input {name}: unknown dtype {dtype!r}", tip="use float32, float16, int64, int32 or bool") from None
    if kind.kind == "f":
        return rng.standard_normal(dims).astype(kind)
    if kind.kind == "b":
        return rng.integers(0, 2, dims).astype(bool)
    return rng.integers(0, 10, dims).astype(kind)


def _cast(given: dict[str, np.ndarray], sig: dict[str, tuple[str, list[int | str]]]) -> dict[str, np.ndarray]:
    out = {}
    for name, (dtype, _dims) in sig.items():
        array = given[name]
        out[name] = array.astype(dtype) if dtype != "?" and array.dtype.name != dtype else array
    return out
