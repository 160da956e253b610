"""Compare an actual tensor with its reference under a dtype-aware tolerance.

Pure numpy: the reports and the TUI reuse these metrics without torch.
"""

from __future__ import annotations

import numpy as np

from nodebisect.records import Comparison, Metrics, Tolerance

# Defaults per dtype family. fp32 leaves room for the reordering of reductions
# between PyTorch and ONNX Runtime kernels (observed drift on small transformer
# blocks is ~1e-6 absolute) while catching any real semantic change; half
# precision keeps ~3 significant digits (fp16) or ~2 (bf16); integers and bools
# must match exactly.
DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "float64": Tolerance(rtol=1e-7, atol=1e-9),
    "float32": Tolerance(rtol=1e-3, atol=1e-4),
    "float16": Tolerance(rtol=1e-2, atol=1e-3),
    "bfloat16": Tolerance(rtol=5e-2, atol=1e-2),
    "exact": Tolerance(rtol=0.0, atol=0.0),
}


# Largest finite values of the half-precision types (headroom before overflow).
_HALF_MAX = {"float16": 65504.0, "bfloat16": 3.3895313892515355e38}


def default_tolerance(dtype: str) -> Tolerance:
    """Return the documented default tolerance for a numpy/torch dtype name."""
    name = str(dtype).replace("torch.", "")
    if name in DEFAULT_TOLERANCES:
        return DEFAULT_TOLERANCES[name]
    if name.startswith(("int", "uint", "bool")):
        return DEFAULT_TOLERANCES["exact"]
    return DEFAULT_TOLERANCES["float32"]


def resolve_tolerance(dtype: str, rtol: float | None = None, atol: float | None = None) -> Tolerance:
    """The default tolerance for ``dtype`` with the user's overrides applied."""
    base = default_tolerance(dtype)
    if base.rtol == 0.0 and base.atol == 0.0:
        return base  # integers stay exact whatever float tolerance was asked for
    return Tolerance(rtol=base.rtol if rtol is None else rtol, atol=base.atol if atol is None else atol)


# ``actual`` and ``expected`` in float64: what every metric is computed in.
Wide = tuple[np.ndarray, np.ndarray]


def widened(actual: np.ndarray, expected: np.ndarray) -> Wide:
    """Both arrays in float64, made once for a comparison and its noise judgement.

    A float16 array widens at ~5 ns an element (numpy has no vector path for it): on a
    float16 candidate of BERT-base, making these twice was a third of the comparisons' time.
    """
    return np.asarray(actual).astype(np.float64), np.asarray(expected).astype(np.float64)


def compare(
    onnx_value: str,
    actual: np.ndarray,
    expected: np.ndarray,
    rtol: float | None = None,
    atol: float | None = None,
    dtype: str | None = None,
    signed_zeros: bool = False,
    wide: Wide | None = None,
) -> Comparison:
    """Compare ``actual`` (ONNX Runtime) with ``expected`` (the framework).

    NaN where the reference is finite is a divergence; NaN on both sides at the
    same positions, or the same infinity on both sides, is a match. ``dtype``
    names the framework dtype when ``expected`` was widened (bfloat16 -> float32).
    ``signed_zeros``: a zero of the opposite sign is a divergence too; set it for
    values a later node divides by or takes the sign of (``values.signs``), where
    -0.0 and +0.0 lead to -inf and +inf. Off, every tolerance calls them equal.
    ``wide``: ``widened(actual, expected)`` when the caller made it already (``noise.judge`` reads it too).
    """
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    tol = resolve_tolerance(dtype or str(expected.dtype), rtol, atol)
    metrics = Metrics(
        shape=list(actual.shape),
        expected_shape=list(expected.shape),
        dtype=str(actual.dtype),
        expected_dtype=str(expected.dtype),
    )
    if actual.shape != expected.shape:
        if actual.size == expected.size == 1:
            actual = actual.reshape(expected.shape)  # a 0-d vs [1] scalar is no conversion defect
            wide = None
        else:
            metrics.reason = f"shape {list(actual.shape)} != expected {list(expected.shape)}"
            metrics.mismatch_fraction = 1.0
            return Comparison(onnx_value, False, metrics, tol)
    if _kind(actual.dtype) != _kind(expected.dtype):
        metrics.reason = f"dtype {actual.dtype} != expected {expected.dtype}"
        metrics.mismatch_fraction = 1.0
        return Comparison(onnx_value, False, metrics, tol)
    if actual.size == 0:
        return Comparison(onnx_value, True, metrics, tol)

    # The share of a half-precision type's range the reference uses (its headroom before overflow).
    half_max = _HALF_MAX.get(str(dtype or expected.dtype).replace("torch.", "")) or 0.0
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        return _compare_values(onnx_value, actual, expected, tol, metrics, signed_zeros, half_max, wide)


def _compare_values(
    onnx_value: str, actual: np.ndarray, expected: np.ndarray, tol: Tolerance, metrics: Metrics, signed_zeros: bool = False,
    half_max: float = 0.0, wide: Wide | None = None,
) -> Comparison:
    a, e = wide if wide is not None else widened(actual, expected)
    if _kind(expected.dtype) == "float":
        diff = np.asarray(np.subtract(a, e))  # (a 0-d subtraction gives a scalar: made an array to be written in place)
        np.abs(diff, out=diff)
        largest = float(diff.max())
        if np.isfinite(largest):  # a NaN or an infinity on either side makes the largest difference NaN or inf
            return _compare_finite(onnx_value, a, e, diff, largest, tol, metrics, signed_zeros, half_max)
    if half_max:
        finite = np.abs(e[np.isfinite(e)])
        metrics.range_used = float(finite.max() / half_max) if finite.size else 0.0
    a_nan, e_nan = np.isnan(a), np.isnan(e)
    a_inf, e_inf = np.isinf(a), np.isinf(e)
    metrics.nan, metrics.expected_nan = int(a_nan.sum()), int(e_nan.sum())
    metrics.inf, metrics.expected_inf = int(a_inf.sum()), int(e_inf.sum())

    both_finite = np.isfinite(a) & np.isfinite(e)
    special_match = (a_nan & e_nan) | (a_inf & e_inf & (np.sign(a) == np.sign(e)))
    diff = np.where(both_finite, np.abs(a - e), 0.0)
    good = _good(actual, expected, a, e, tol)
    if _kind(expected.dtype) == "float" and signed_zeros:
        flipped = (a == 0) & (e == 0) & (np.signbit(a) != np.signbit(e))
        if flipped.any():
            if good.all():
                metrics.reason = _signed_zero_reason(a, e, flipped)
            good = good & ~flipped
    metrics.mismatch_fraction = float(1.0 - good.mean())

    if both_finite.any():
        d = diff[both_finite]
        metrics.max_abs = float(d.max())
        metrics.mean_abs = float(d.mean())
        # Relative error near zero is meaningless; floor the denominator at atol
        # so a 0-vs-0.5 element reads as large, not as 1e307.
        floor = tol.atol if tol.atol > 0 else np.finfo(np.float64).tiny
        denom = np.abs(e[both_finite])
        rel = d / np.maximum(denom, floor)
        rel = np.where(d == 0, 0.0, rel)
        metrics.max_rel = float(rel.max())
    nonfinite_bad = ~both_finite & ~special_match
    if nonfinite_bad.any():
        metrics.max_abs = float("inf")
        metrics.max_rel = float("inf")
    metrics.cosine = _cosine(np.where(both_finite, a, 0.0), np.where(both_finite, e, 0.0))
    return Comparison(onnx_value, metrics.mismatch_fraction == 0.0, metrics, tol)


def _compare_finite(
    onnx_value: str, a: np.ndarray, e: np.ndarray, diff: np.ndarray, largest: float, tol: Tolerance, metrics: Metrics,
    signed_zeros: bool, half_max: float = 0.0,
) -> Comparison:
    """``_compare_values`` where every element on both sides is finite (the common case): the same
    numbers as the general path, without the masks the special values need.

    ``diff`` is ``|a - e|`` and ``largest`` its maximum, both already computed to tell this case
    apart. The passes over the arrays are what a ``diff`` of BERT-base pays for its 800 values
    (35 M elements): each one saved here is ~1% of that diff's floor.
    """
    metrics.nan = metrics.expected_nan = metrics.inf = metrics.expected_inf = 0
    abs_e = np.abs(e)
    if half_max:
        metrics.range_used = float(abs_e.max()) / half_max if abs_e.size else 0.0
    # Within atol everywhere is within atol + rtol * |e| everywhere (the bound rounds to at least atol).
    good = None if largest <= tol.atol else diff <= np.add(np.multiply(abs_e, tol.rtol), tol.atol)
    if signed_zeros:
        flipped = (a == 0) & (e == 0) & (np.signbit(a) != np.signbit(e))
        if flipped.any():
            if good is None or good.all():
                metrics.reason = _signed_zero_reason(a, e, flipped)
            good = ~flipped if good is None else good & ~flipped
    # the count of agreeing elements over their number: the mean of the mask, without a float pass over it
    metrics.mismatch_fraction = 0.0 if good is None else float(1.0 - np.count_nonzero(good) / good.size)
    d = diff.ravel()  # C order, as a boolean mask would pick them: the same sums
    metrics.max_abs = largest
    metrics.mean_abs = float(d.mean())
    floor = tol.atol if tol.atol > 0 else np.finfo(np.float64).tiny
    rel = np.maximum(abs_e.ravel(), floor, out=abs_e.ravel())  # abs_e is not read again: its buffer holds the ratios
    np.divide(d, rel, out=rel)  # where d is 0 this is 0 already (the denominator is at least the floor, > 0)
    metrics.max_rel = float(rel.max())
    metrics.cosine = _cosine(a, e)
    return Comparison(onnx_value, metrics.mismatch_fraction == 0.0, metrics, tol)


def agreeing(actual: np.ndarray, expected: np.ndarray, tol: Tolerance) -> np.ndarray:
    """Per element, whether onnxruntime agrees with PyTorch under ``tol``: the rule ``compare`` applies.

    For checks that need *where* a value is wrong, not only how much (the repair
    evidence marks the wrong elements of an op): one rule, so an element a verdict
    calls wrong is the element the evidence looks at, in every dtype.
    """
    actual, expected = np.asarray(actual), np.asarray(expected)
    with np.errstate(invalid="ignore", over="ignore"):
        return _good(actual, expected, actual.astype(np.float64), expected.astype(np.float64), tol)


def _good(actual: np.ndarray, expected: np.ndarray, a: np.ndarray, e: np.ndarray, tol: Tolerance) -> np.ndarray:
    """The agreement mask of ``agreeing`` over the float64 views ``a``/``e`` the caller already made."""
    if _kind(expected.dtype) != "float":
        return np.asarray(actual == expected)  # exact: float64 would round integers above 2**53
    both_finite = np.isfinite(a) & np.isfinite(e)
    # Non-finite positions match only when both sides hold the same special value.
    special_match = (np.isnan(a) & np.isnan(e)) | (np.isinf(a) & np.isinf(e) & (np.sign(a) == np.sign(e)))
    diff = np.where(both_finite, np.abs(a - e), 0.0)
    within = diff <= tol.atol + tol.rtol * np.abs(np.where(both_finite, e, 0.0))
    return np.where(both_finite, within, special_match)


def _signed_zero_reason(a: np.ndarray, e: np.ndarray, flipped: np.ndarray) -> str:
    """The sign flips in words: every value is within tolerance, only zeros changed sign."""
    to_plus = int((flipped & np.signbit(e)).sum())
    to_minus = int(flipped.sum()) - to_plus
    parts = []
    if to_plus:
        parts.append(f"+0.0 at {to_plus} position(s) where PyTorch has -0.0")
    if to_minus:
        parts.append(f"-0.0 at {to_minus} position(s) where PyTorch has +0.0")
    return "onnxruntime has " + " and ".join(parts) + " (equal under any tolerance, but a later node divides by it or takes its sign)"


def _kind(dtype: np.dtype) -> str:
    if dtype == np.bool_:
        return "bool"
    if np.issubdtype(dtype, np.integer):
        return "int"
    return "float"


def _cosine(a: np.ndarray, e: np.ndarray) -> float:
    """Cosine similarity of the flattened tensors; 1.0 when both are all zeros.

    Products summed by ``np.einsum``, not ``np.dot``/``norm``: those go through
    multi-threaded BLAS, which made this metric most of the search's time on a
    loaded machine (GPT-2: 16 of 17 s of comparisons).
    """
    a, e = a.ravel().astype(np.float64, copy=False), e.ravel().astype(np.float64, copy=False)
    # one pass each, no product array (half the passes of ``(a * e).sum()``)
    na, ne = float(np.sqrt(np.einsum("i,i->", a, a))), float(np.sqrt(np.einsum("i,i->", e, e)))
    if na == 0.0 and ne == 0.0:
        return 1.0
    if na == 0.0 or ne == 0.0:
        return 0.0
    return float(np.clip(np.einsum("i,i->", a, e) / (na * ne), -1.0, 1.0))
