"""The reference's values as the candidate holds them, judged under the candidate's precision.

A float16 or int8 candidate always differs from its float32 reference; what the
search must see is the difference beyond what the precision change causes:

* each reference value is handed to the comparison in the candidate's dtype (a
  float16 value is the float16 rounding of the reference's, saturated at float16's
  largest finite value so an overflow to inf still departs);
* each value is judged with the tolerance of the lowest precision anywhere in its
  computation (a float32 output computed from float16 values carries float16 error),
  and against the float64 run's exact answer, so its expected error is the float16
  rounding of the value plus the noise ``values.noise`` allows for that precision;
* the isolation feeds the candidate's node the reference's values in the dtypes the
  candidate expects (these same arrays).
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import numpy as np
import onnx
from onnx import helper

from nodebisect.onnxgraph import node_keys, subgraph_inputs
from nodebisect.records import FrameworkRef
from nodebisect.reference import Reference
from nodebisect.values.noise import WITHIN_NOISE

# The criterion of a value cleared as its precision's drift (``ModelReference.tolerate``).
WITHIN_PRECISION = "within the candidate's precision"

# Precisions from the finest down; a value's precision is the coarsest among what computes it.
_RANK = {"float64": 0, "float32": 1, "float16": 2, "bfloat16": 3, "int8": 4}
_QUANTIZED = {"QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "QLinearMatMul", "QLinearConv", "MatMulIntegerToFloat", "DynamicQuantizeMatMul"}
HALF_MAX = {"float16": 65504.0}
# The precision of a value computed from constants only (no graph input reaches it).
CONSTANT = "constant"


class ModelReference(Reference):
    """An ONNX model's values as a ``Reference`` keyed by the candidate's value names."""

    def __init__(self, *, names: dict[str, str], ref_ops: dict[str, tuple[str, str]], replaced: dict[str, list[str]], reduced: set[str], **fields: Any) -> None:
        super().__init__(**fields)
        self.names = names  # candidate value -> reference value
        self.ref_ops = ref_ops  # reference value -> (node, op type)
        self.replaced = replaced  # candidate node -> reference nodes it replaced
        self.reduced = reduced  # candidate values computed below the reference's precision

    def tolerate(self, name: str, cmp: Any) -> Any:
        """A reduced-precision value beyond the dtype's fixed bounds but within its noise is the precision's drift.

        ``values.noise`` measured it against the float64 run: its error is within
        ``NOISE_FACTOR`` of the value's own rounding in the candidate's dtype plus one ulp
        of its largest magnitude. For a float32 model that would still be worth saying
        (the model may rely on a rounding); for a candidate made *to* compute at lower
        precision it is what the conversion must cause. NaN, inf and anything beyond
        that noise stay divergences.
        """
        if cmp.ok or name not in self.reduced or cmp.metrics.criterion != WITHIN_NOISE:
            return cmp
        cmp.metrics.criterion = WITHIN_PRECISION
        return replace(cmp, ok=True)

    def elementwise_noise(self, name: str) -> bool:
        """A reduced-precision value's error has its tensor's scale (one quantization scale, float16's range)."""
        return name not in self.reduced

    def describe(self, name: str) -> FrameworkRef:
        """The reference's value and node behind candidate value ``name`` (its op as the target)."""
        ref = self.names.get(name, name)
        node, op = self.ref_ops.get(ref, ("", ""))
        return FrameworkRef(fx_node=ref, target=op, module=node)


def candidate_dtypes(model: onnx.ModelProto) -> dict[str, str]:
    """Every typed value of ``model`` -> its numpy dtype name (initializers included)."""
    from nodebisect.onnx_reference.evaluate import element_types

    out: dict[str, str] = {}
    types = {**element_types(model), **{init.name: init.data_type for init in model.graph.initializer}}
    for name, elem in types.items():
        try:
            out[name] = np.dtype(helper.tensor_dtype_to_np_dtype(elem)).name
        except (KeyError, TypeError, ValueError):
            continue
    return out


def precisions(model: onnx.ModelProto, dtypes: dict[str, str]) -> dict[str, str]:
    """Each node output -> the coarsest precision among the values that compute it ("float16", "int8"...)."""
    prec: dict[str, str] = {}

    def own(value: str) -> str:
        name = dtypes.get(value, "")
        if name in ("int8", "uint8"):
            return "int8"
        return name if name in _RANK else "float64"

    varies = {i.name for i in model.graph.input} - {t.name for t in model.graph.initializer}
    for i in model.graph.input:
        prec[i.name] = own(i.name)
    for init in model.graph.initializer:
        prec[init.name] = own(init.name) if own(init.name) != "int8" else "int8"
    for _, node in node_keys(model):
        coarsest = "float64"
        reads = subgraph_inputs(node)
        for x in reads:
            p = prec.get(x, "float64")
            p = "float64" if p == CONSTANT else p
            coarsest = p if _RANK[p] > _RANK[coarsest] else coarsest
        if node.op_type in _QUANTIZED:
            coarsest = "int8"
        moves = bool(reads & varies)
        for o in node.output:
            if o:
                mine = own(o)
                prec[o] = mine if _RANK[mine] > _RANK[coarsest] and mine != "float64" else coarsest
                if moves:
                    varies.add(o)
                else:
                    prec[o] = CONSTANT  # computed from constants only: the same in any precision run
    return prec


def held_as(array: np.ndarray, dtype: str) -> np.ndarray:
    """``array`` in the candidate's ``dtype``: float16 rounded and saturated at its largest finite value."""
    array = np.asarray(array)
    if not dtype or array.dtype.name == dtype:
        return array
    try:
        target = np.dtype(dtype)
    except TypeError:
        return array
    if target.kind != array.dtype.kind and not (target.kind == "f" and array.dtype.kind == "f"):
        return array  # an integer value held as another integer type: compared as is
    if dtype in HALF_MAX:
        limit = HALF_MAX[dtype]
        with np.errstate(invalid="ignore", over="ignore"):
            if np.isfinite(array.sum()):  # no NaN or inf to keep: the clip alone, one pass fewer
                return np.clip(array, -limit, limit).astype(target)
            array = np.where(np.isfinite(array), np.clip(array, -limit, limit), array)
    return array.astype(target)


def tolerance_dtype(precision: str, held: str) -> str:
    """The dtype whose tolerance judges a value of this precision (int8: bfloat16's, the coarsest float's)."""
    if not held.startswith("float"):
        return held
    if precision == "int8":
        return "bfloat16"
    return precision if _RANK.get(precision, 1) > _RANK.get(held, 1) else held


def model_reference(
    mapping: Any, values: dict[str, np.ndarray], exact: dict[str, np.ndarray], candidate: onnx.ModelProto, order: list[str]
) -> tuple[ModelReference, dict[str, str]]:
    """The ``Reference`` the search reads, and each mapped value's precision."""
    dtypes = candidate_dtypes(candidate)
    prec = precisions(candidate, dtypes)
    held: dict[str, np.ndarray] = {}
    judged: dict[str, str] = {}
    wide: dict[str, np.ndarray] = {}
    pairs = list(mapping.to_reference.items())
    for (cand, ref), array in zip(pairs, _converted(values, pairs, dtypes)):
        held[cand] = array
        judged[cand] = tolerance_dtype(prec.get(cand, "float32") if prec.get(cand) != CONSTANT else "float32", array.dtype.name)
        if ref in exact and array.dtype.kind == "f":
            wide[cand] = exact[ref]
    outputs = [o.name for o in candidate.graph.output]
    acts = ModelReference(
        names=dict(mapping.to_reference), ref_ops=mapping.ref_producer, replaced=mapping.replaced,
        reduced={k for k in held if _RANK.get(prec.get(k, ""), 1) > _RANK["float32"]},
        values=held, dtypes=judged, order=[v for v in order if v in held], outputs=outputs, exact=wide, kind="onnx",
    )
    return acts, {k: prec.get(k, "") for k in held}


def _converted(values: dict[str, np.ndarray], pairs: list[tuple[str, str]], dtypes: dict[str, str]) -> list[np.ndarray]:
    """``held_as`` of each mapped value, on a few threads (numpy's float16 cast has no SIMD path and releases the GIL)."""
    def one(pair: tuple[str, str]) -> np.ndarray:
        return held_as(values[pair[1]], dtypes.get(pair[0], ""))

    threads = min(4, os.cpu_count() or 1)
    if threads < 2 or len(pairs) < 64:
        return [one(p) for p in pairs]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads, thread_name_prefix="nodebisect-held") as pool:
        return list(pool.map(one, pairs))


__all__ = ["HALF_MAX", "ModelReference", "candidate_dtypes", "held_as", "model_reference", "precisions", "tolerance_dtype"]
