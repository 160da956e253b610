"""Tolerance that knows each value's scale and natural noise (issue #11.2).

Fixed ``rtol/atol`` are wrong both ways: they hide real defects in small-magnitude
tensors and flag legitimate drift in deep or half-precision models. With a
float64 oracle of the same program, PyTorch's own error against it is each
value's natural noise. The judgement of one value:

* ``ratio`` = ONNX's largest error against the oracle / (PyTorch's largest error
  against it + a floor of ``ULPS`` ulps of the value's magnitude, one ulp for a
  value already outside the fixed tolerance);
* inside the fixed tolerance but ``ratio > HIDDEN_FACTOR``: a divergence the
  fixed bound hides (criterion "noise");
* outside the fixed tolerance but ``ratio <= NOISE_FACTOR``: still a divergence,
  marked "fixed, within noise": PyTorch itself is that far from exact, so it is
  either legitimate precision drift or rounding the model relies on (an fp16
  "round to integer" that onnxruntime computes in float32, as in the sample
  Fp16RoundingElided). Only the user can tell, so it is said, never hidden;
* otherwise the fixed tolerance decides (criterion "fixed").

Pure numpy. The user's explicit ``--rtol/--atol`` keep the fixed bounds only.
"""

from __future__ import annotations

import numpy as np

from nodebisect.records import Comparison

NOISE_FACTOR = 10.0
HIDDEN_FACTOR = 100.0
ULPS = 16
WITHIN_NOISE = "fixed, within noise"
_EPS = {"float16": float(np.finfo(np.float16).eps), "bfloat16": 2.0**-7, "float32": float(np.finfo(np.float32).eps)}


def judge(cmp: Comparison, actual: np.ndarray, expected: np.ndarray, oracle: np.ndarray | None, dtype: str) -> Comparison:
    """``cmp`` (the fixed-tolerance verdict) re-judged against the value's natural noise."""
    m = cmp.metrics
    kind = dtype or str(expected.dtype)
    if oracle is None or kind not in _EPS or m.reason or actual.shape != oracle.shape or expected.shape != oracle.shape:
        m.criterion = "fixed"
        return cmp
    o = oracle.astype(np.float64)
    finite = np.isfinite(o) & np.isfinite(expected) & np.isfinite(actual)
    if not finite.any() or m.nan or m.inf or m.expected_nan or m.expected_inf:
        m.criterion = "fixed"  # NaN/Inf placement is judged exactly, not by noise
        return cmp
    noise = float(np.abs(expected.astype(np.float64)[finite] - o[finite]).max())
    error = float(np.abs(actual.astype(np.float64)[finite] - o[finite]).max())
    ok = cmp.ok
    # The floor guards the hidden-defect side against a noise of ~0 (an exact value); accepting
    # drift must rest on PyTorch's own measured error, so that side gets a floor of one ulp only
    # (16 bfloat16 ulps are 12% of the value: "within noise" would accept anything).
    ulps = ULPS if ok else 1
    floor = ulps * _EPS[kind] * float(np.abs(o[finite]).max())
    ratio = error / (noise + floor) if noise + floor > 0 else (0.0 if error == 0 else float("inf"))
    m.noise, m.noise_ratio = noise, ratio
    if ok and ratio > HIDDEN_FACTOR:
        ok, m.criterion = False, "noise"
    else:
        m.criterion = WITHIN_NOISE if not ok and ratio <= NOISE_FACTOR else "fixed"
    return Comparison(onnx_value=cmp.onnx_value, ok=ok, metrics=m, tolerance=cmp.tolerance)
