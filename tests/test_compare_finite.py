"""``values.compare`` and ``values.noise.judge`` on arrays with no NaN or inf (the fast path ``diff``'s hundreds of
comparisons take): the metrics are the documented formulas, for 0-d, transposed and signed-zero arrays too."""

from __future__ import annotations

import numpy as np
import pytest

from nodebisect.values.compare import compare, widened
from nodebisect.values.noise import judge


def _expected_metrics(a: np.ndarray, e: np.ndarray, rtol: float, atol: float) -> dict[str, float]:
    a64, e64 = a.astype(np.float64).ravel(), e.astype(np.float64).ravel()
    d = np.abs(a64 - e64)
    rel = np.where(d == 0, 0.0, d / np.maximum(np.abs(e64), atol))
    cos = (a64 * e64).sum() / (np.sqrt((a64 * a64).sum()) * np.sqrt((e64 * e64).sum()))
    return {"max_abs": float(d.max()), "mean_abs": float(d.mean()), "max_rel": float(rel.max()),
            "mismatch_fraction": float(1.0 - (d <= atol + rtol * np.abs(e64)).mean()), "cosine": float(np.clip(cos, -1, 1))}


@pytest.mark.parametrize(
    "shape, transpose, dtype",
    [((), False, np.float32), ((1,), False, np.float16), ((5, 7), True, np.float32), ((3, 4, 2), False, np.float64)],
)
def test_finite_arrays_give_the_formulas(shape: tuple[int, ...], transpose: bool, dtype: type) -> None:
    rng = np.random.default_rng(3)
    e = (rng.standard_normal(shape) + 2.0).astype(dtype)
    a = (e.astype(np.float64) * (1 + 1e-3 * rng.standard_normal(shape))).astype(dtype)
    if transpose:
        a, e = a.T, e.T
    cmp = compare("v", a, e, 1e-3, 1e-4, None)
    got = {k: getattr(cmp.metrics, k) for k in ("max_abs", "mean_abs", "max_rel", "mismatch_fraction", "cosine")}
    want = _expected_metrics(np.ascontiguousarray(a), np.ascontiguousarray(e), 1e-3, 1e-4)
    assert got == pytest.approx(want, rel=1e-12, abs=1e-15)
    assert cmp.metrics.nan == cmp.metrics.inf == 0 and cmp.ok == (want["mismatch_fraction"] == 0.0)
    oracle = e.astype(np.float64) + 1e-9
    judged = judge(cmp, a, e, oracle, "float32")
    assert judged.metrics.noise == pytest.approx(float(np.abs(e.astype(np.float64) - oracle).max()), rel=1e-12)
    # the float64 copies made once for both (the search's way) give the same numbers
    wide = widened(a, e)
    again = judge(compare("v", a, e, 1e-3, 1e-4, None, wide=wide), a, e, oracle, "float32", wide=wide).metrics
    assert (again.noise, again.noise_ratio, again.max_abs, again.cosine) == (judged.metrics.noise, judged.metrics.noise_ratio,
                                                                            judged.metrics.max_abs, judged.metrics.cosine)


def test_signed_zeros_are_still_told_apart() -> None:
    a, e = np.array([0.0, -0.0, 1.0], np.float32), np.array([-0.0, -0.0, 1.0], np.float32)
    assert not compare("v", a, e, signed_zeros=True).ok
    assert compare("v", a, e).ok
    zero = -np.zeros((2, 2), np.float32)
    cmp = compare("v", zero, zero, dtype="float16")
    assert cmp.ok and str(cmp.metrics.range_used) == "0.0"  # not -0.0


@pytest.mark.parametrize("dtype, outside", [(np.float32, 0), (np.float32, 3), (np.float16, 2)])
def test_a_reference_that_is_its_own_oracle_is_judged_as_a_copy_of_it_would_be(dtype: type, outside: int) -> None:
    """diff's float16 and int8 candidates pass the reference itself as the oracle (``judge``'s shortcut):
    the same noise, ratio, criterion and verdict as the same numbers in another array."""
    rng = np.random.default_rng(7)
    e = rng.standard_normal((4, 33)).astype(dtype)
    a = (e.astype(np.float64) + 1e-5 * rng.standard_normal(e.shape)).astype(dtype)
    a.flat[:outside] += np.asarray(0.5, dtype)
    judged = []
    for oracle in (e, e.copy()):
        cmp = compare("v", a, e, None, None, "float16" if dtype == np.float16 else "float32")
        m = judge(cmp, a, e, oracle, str(np.dtype(dtype))).metrics
        judged.append((m.noise, m.noise_ratio, m.criterion, m.max_abs, m.mismatch_fraction, m.range_used))
    assert judged[0] == judged[1]
    assert (judged[0][4] > 0) == (outside > 0)
    if dtype == np.float16:
        assert judged[0][5] == float(np.abs(e.astype(np.float64)).max()) / 65504.0
