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

"Within noise" is also judged element by element (issue #22.1): one inherently noisy
element (``3e7 + 0.9``, where float32's spacing is 2) must not excuse a neighbour
PyTorch computes exactly and onnxruntime gets wrong. At each element outside the fixed
tolerance, ONNX's error is set against the noise PyTorch has *there*: the largest error
PyTorch makes at elements no larger than it (twice its magnitude, at least the median
magnitude, so drift spread evenly over a tensor counts everywhere) plus ``SLACK_ULPS``
ulps of the element itself. Past ``NOISE_FACTOR`` at any such element, it is a
divergence (criterion "fixed").

Pure numpy. The user's explicit ``--rtol/--atol`` keep the fixed bounds only.
"""

from __future__ import annotations

import numpy as np

from nodebisect.records import Comparison

NOISE_FACTOR = 10.0
HIDDEN_FACTOR = 100.0
ULPS = 16
SLACK_ULPS = 4  # an element's own rounding slack in the element-wise judgement
WITHIN_NOISE = "fixed, within noise"
_EPS = {"float16": float(np.finfo(np.float16).eps), "bfloat16": 2.0**-7, "float32": float(np.finfo(np.float32).eps)}


def judge(
    cmp: Comparison, actual: np.ndarray, expected: np.ndarray, oracle: np.ndarray | None, dtype: str, elementwise: bool = True,
    wide: tuple[np.ndarray, np.ndarray] | None = None,
) -> Comparison:
    """``cmp`` (the fixed-tolerance verdict) re-judged against the value's natural noise.

    ``elementwise``: also hold each element outside the fixed tolerance to the noise there
    (``element_ratio``); off where the reference's error has no per-element scale (a value
    quantized with one scale per tensor, ``Reference.elementwise_noise``).
    ``wide``: ``actual`` and ``expected`` in float64 (``values.compare.widened``), when the caller has them.
    """
    m = cmp.metrics
    kind = dtype or str(expected.dtype)
    if oracle is None or kind not in _EPS or m.reason or actual.shape != oracle.shape or expected.shape != oracle.shape:
        m.criterion = "fixed"
        return cmp
    if m.nan or m.inf or m.expected_nan or m.expected_inf:
        m.criterion = "fixed"  # NaN/Inf placement is judged exactly, not by noise
        return cmp
    if oracle is expected and m.max_abs is not None:
        # The reference is its own exact answer (diff's float16 and int8 candidates): it has no noise,
        # and ONNX's error against it is the comparison's largest difference, already measured.
        noise, error, largest = 0.0, float(m.max_abs), _magnitude(expected)
        o = oracle
    elif (o := oracle.astype(np.float64)).size and np.isfinite(o.sum()):
        # every element finite (``compare`` counted none in the other two): no mask
        a64, e64 = wide if wide is not None and wide[0].shape == o.shape == wide[1].shape else (actual, expected)
        noise, error, largest = _largest(e64, o), _largest(a64, o), _magnitude(o)
    else:
        finite = np.isfinite(o) & np.isfinite(expected) & np.isfinite(actual)
        if not finite.any():
            m.criterion = "fixed"
            return cmp
        noise = float(np.abs(expected.astype(np.float64)[finite] - o[finite]).max())
        error = float(np.abs(actual.astype(np.float64)[finite] - o[finite]).max())
        largest = float(np.abs(o[finite]).max())
    ok = cmp.ok
    # The floor guards the hidden-defect side against a noise of ~0 (an exact value); accepting
    # drift must rest on PyTorch's own measured error, so that side gets a floor of one ulp only
    # (16 bfloat16 ulps are 12% of the value: "within noise" would accept anything).
    ulps = ULPS if ok else 1
    floor = ulps * _EPS[kind] * largest
    ratio = error / (noise + floor) if noise + floor > 0 else (0.0 if error == 0 else float("inf"))
    if elementwise and not ok and ratio <= NOISE_FACTOR:
        ratio = max(ratio, element_ratio(actual, expected, o, _outside(actual, expected, cmp), _EPS[kind]))
    m.noise, m.noise_ratio = noise, ratio
    if ok and ratio > HIDDEN_FACTOR:
        ok, m.criterion = False, "noise"
    else:
        m.criterion = WITHIN_NOISE if not ok and ratio <= NOISE_FACTOR else "fixed"
    return Comparison(onnx_value=cmp.onnx_value, ok=ok, metrics=m, tolerance=cmp.tolerance)


def _magnitude(x: np.ndarray) -> float:
    """max |x| of a finite, non-empty array (two passes in its own dtype, no abs copy)."""
    return abs(max(float(x.max()), -float(x.min())))


def _largest(x: np.ndarray, o: np.ndarray) -> float:
    """max |x - o| over finite arrays: the same number as ``np.abs(x - o).max()``, in one buffer."""
    if x.dtype == np.float64:
        d = np.asarray(np.subtract(x, o))  # a new buffer (an array even for 0-d)
    else:
        d = np.array(x, dtype=np.float64)  # a copy, an array even for a numpy scalar
        np.subtract(d, o, out=d)
    return _magnitude(d)


def local_noise(noise: np.ndarray, magnitude: np.ndarray) -> np.ndarray:
    """Per element: the largest ``noise`` among elements of magnitude at most max(2 |x|, median |x|).

    PyTorch's rounding error at one element is a poor scale alone (it may be 0 by chance in a
    drifting tensor); over the whole tensor it lets one large element excuse every small one.
    Elements no larger than this one (and at least the smaller half of the tensor) are the
    rounding this element could plausibly share.
    """
    noise, magnitude = noise.ravel(), magnitude.ravel()
    order = np.argsort(magnitude, kind="stable")
    sorted_mag = magnitude[order]
    running = np.maximum.accumulate(noise[order])
    bound = np.maximum(2.0 * magnitude, np.median(magnitude))
    upto = np.searchsorted(sorted_mag, bound, side="right") - 1
    return running[np.clip(upto, 0, None)]


def element_ratio(actual: np.ndarray, expected: np.ndarray, oracle: np.ndarray, outside: np.ndarray, eps: float) -> float:
    """The largest ONNX error, over the elements ``outside`` the fixed tolerance, as a multiple of the noise there.

    The noise at an element is ``local_noise`` of PyTorch's errors plus ``SLACK_ULPS`` ulps of
    its exact value. 0.0 when no finite element is outside.
    """
    o = np.asarray(oracle, dtype=np.float64).ravel()
    e = np.asarray(expected).astype(np.float64).ravel()
    a = np.asarray(actual).astype(np.float64).ravel()
    finite = np.isfinite(o) & np.isfinite(e) & np.isfinite(a)
    pick = finite & np.asarray(outside).ravel()
    if not pick.any():
        return 0.0
    magnitude = np.abs(o[finite])
    allowance = local_noise(np.abs(e[finite] - o[finite]), magnitude) + SLACK_ULPS * eps * magnitude
    error = np.abs(a[finite] - o[finite])
    chosen = pick[finite]
    return float((error[chosen] / np.maximum(allowance[chosen], np.finfo(np.float64).tiny)).max())


def _outside(actual: np.ndarray, expected: np.ndarray, cmp: Comparison) -> np.ndarray:
    """The elements the fixed tolerance calls wrong (``values.compare``'s own rule)."""
    from nodebisect.values.compare import agreeing

    return ~agreeing(actual, expected, cmp.tolerance)
