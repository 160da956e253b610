"""``compare``: when an ONNX Runtime value counts as matching its PyTorch reference."""

from __future__ import annotations

import numpy as np
import pytest

from nodebisect.values.compare import DEFAULT_TOLERANCES, agreeing, compare, resolve_tolerance

NAN, INF = float("nan"), float("inf")
F32 = np.float32


def f32(*values: float) -> np.ndarray:
    return np.array(values, dtype=F32)


@pytest.mark.parametrize(
    ("actual", "expected", "ok"),
    [
        pytest.param(f32(1, NAN, 3), f32(1, 2, 3), False, id="nan-vs-finite"),
        pytest.param(f32(1, 2, 3), f32(1, NAN, 3), False, id="finite-vs-nan"),
        pytest.param(f32(1, NAN, 3), f32(1, NAN, 3), True, id="nan-same-position"),
        pytest.param(f32(NAN, 2, 3), f32(1, NAN, 3), False, id="nan-moved"),
        pytest.param(f32(1, INF, -INF), f32(1, INF, -INF), True, id="inf-same-sign"),
        pytest.param(f32(1, INF, 3), f32(1, -INF, 3), False, id="inf-opposite-sign"),
        pytest.param(f32(1, INF, 3), f32(1, 3e38, 3), False, id="inf-vs-finite"),
        pytest.param(f32(1, NAN, 3), f32(1, INF, 3), False, id="nan-vs-inf"),
        pytest.param(f32(NAN, NAN), f32(NAN, NAN), True, id="all-nan-both"),
    ],
)
def test_non_finite_values(actual: np.ndarray, expected: np.ndarray, ok: bool) -> None:
    cmp = compare("v", actual, expected)
    assert cmp.ok is ok
    assert cmp.metrics.nan == int(np.isnan(actual).sum())
    assert cmp.metrics.expected_nan == int(np.isnan(expected).sum())
    if not ok:
        assert cmp.metrics.mismatch_fraction > 0


def test_nan_divergence_reports_infinite_error_and_fraction() -> None:
    cmp = compare("v", f32(1, NAN, 3, 4), f32(1, 2, 3, 4))
    assert cmp.metrics.max_abs == INF
    assert cmp.metrics.mismatch_fraction == pytest.approx(0.25)


def test_matching_infinities_do_not_poison_the_metrics() -> None:
    cmp = compare("v", f32(INF, 1.0, 2.0), f32(INF, 1.0, 2.0 + 1e-6))
    assert cmp.ok
    assert np.isfinite(cmp.metrics.max_abs)
    assert cmp.metrics.max_abs < 1e-5


@pytest.mark.parametrize(
    ("actual", "expected"),
    [
        pytest.param(np.zeros((2, 3), F32), np.zeros((3, 2), F32), id="transposed"),
        pytest.param(np.zeros((6,), F32), np.zeros((2, 3), F32), id="flattened"),
        pytest.param(np.zeros((1, 4), F32), np.zeros((4,), F32), id="extra-dim"),
        pytest.param(np.zeros((0, 3), F32), np.zeros((0, 4), F32), id="zero-size-different"),
    ],
)
def test_shape_mismatch_is_a_divergence(actual: np.ndarray, expected: np.ndarray) -> None:
    cmp = compare("v", actual, expected)
    assert not cmp.ok
    assert "shape" in cmp.metrics.reason
    assert cmp.metrics.shape == list(actual.shape)
    assert cmp.metrics.expected_shape == list(expected.shape)


def test_scalar_vs_one_element_is_not_a_shape_defect() -> None:
    assert compare("v", np.array(2.0, F32), f32(2.0)).ok
    assert not compare("v", np.array(2.0, F32), f32(3.0)).ok  # the values are still compared


@pytest.mark.parametrize(
    ("actual", "expected"),
    [
        pytest.param(np.array([1, 2], np.int64), f32(1, 2), id="int-vs-float"),
        pytest.param(f32(1, 0), np.array([True, False]), id="float-vs-bool"),
        pytest.param(np.array([1, 0], np.int32), np.array([True, False]), id="int-vs-bool"),
    ],
)
def test_dtype_kind_mismatch_is_a_divergence(actual: np.ndarray, expected: np.ndarray) -> None:
    cmp = compare("v", actual, expected)
    assert not cmp.ok
    assert "dtype" in cmp.metrics.reason


def test_same_kind_different_width_is_compared_by_value() -> None:
    # int32 vs int64 and float16 vs float32 are the same numbers in another width.
    assert compare("v", np.array([1, 2], np.int32), np.array([1, 2], np.int64)).ok
    assert compare("v", np.array([0.5, 1.5], np.float16), f32(0.5, 1.5)).ok
    assert not compare("v", np.array([1, 3], np.int32), np.array([1, 2], np.int64)).ok


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, np.bool_])
def test_integers_and_bools_must_match_exactly_whatever_the_tolerance(dtype: type) -> None:
    expected = np.array([0, 1, 1, 0], dtype)
    actual = expected.copy()
    actual[2] = 0
    assert compare("v", expected.copy(), expected).ok
    cmp = compare("v", actual, expected, rtol=0.5, atol=10.0)
    assert not cmp.ok
    assert cmp.metrics.mismatch_fraction == pytest.approx(0.25)
    assert cmp.tolerance.rtol == 0.0 and cmp.tolerance.atol == 0.0


def test_large_integers_are_not_rounded_through_float() -> None:
    big = 2**53
    assert not compare("v", np.array([big + 1], np.int64), np.array([big], np.int64)).ok


def test_default_float32_tolerance_catches_a_real_change_and_passes_drift() -> None:
    expected = np.linspace(-3, 3, 50, dtype=F32)
    assert compare("v", expected + F32(1e-6), expected).ok  # kernel reordering drift
    assert not compare("v", expected + F32(5e-3), expected).ok
    assert not compare("v", expected * F32(1.01), expected).ok


def test_tolerance_overrides_apply_to_floats() -> None:
    expected = f32(1.0, 2.0, 100.0)
    actual = expected + F32(0.05)
    assert not compare("v", actual, expected).ok
    assert compare("v", actual, expected, atol=0.1).ok
    assert compare("v", actual, expected, rtol=0.06, atol=0.0).ok  # 0.05 <= 0.06 * 1.0
    assert not compare("v", actual, expected, rtol=0.01, atol=0.0).ok
    cmp = compare("v", actual, expected, atol=0.1)
    assert cmp.tolerance.atol == 0.1
    assert cmp.tolerance.rtol == DEFAULT_TOLERANCES["float32"].rtol  # the other one keeps its default


def test_dtype_argument_names_the_framework_precision() -> None:
    # bfloat16 references are stored widened to float32 but judged as bfloat16.
    expected = f32(1.0, 2.0, 4.0)
    actual = expected * F32(1.02)
    assert not compare("v", actual, expected).ok
    assert compare("v", actual, expected, dtype="bfloat16").ok
    assert compare("v", actual, expected, dtype="torch.bfloat16").ok


def test_half_precision_defaults_are_looser_than_float32() -> None:
    expected = np.array([1.0, 2.0], np.float16)
    actual = np.array([1.005, 2.01], np.float16)
    assert compare("v", actual, expected).ok
    assert not compare("v", actual.astype(F32), expected.astype(F32)).ok


@pytest.mark.parametrize(
    "shape",
    [pytest.param((0,), id="empty"), pytest.param((2, 0, 3), id="zero-dim-inside")],
)
def test_zero_size_tensors_of_the_same_shape_match(shape: tuple[int, ...]) -> None:
    cmp = compare("v", np.zeros(shape, F32), np.ones(shape, F32))
    assert cmp.ok
    assert cmp.metrics.mismatch_fraction == 0.0


def test_zero_size_still_checks_dtype_kind() -> None:
    assert not compare("v", np.zeros((0,), np.int64), np.zeros((0,), F32)).ok


def test_metrics_describe_the_difference() -> None:
    expected = f32(1.0, 2.0, 3.0, 4.0)
    actual = f32(1.0, 2.5, 3.0, 4.0)
    cmp = compare("name_of_value", actual, expected)
    assert cmp.onnx_value == "name_of_value"
    assert not cmp.ok
    assert cmp.metrics.max_abs == pytest.approx(0.5)
    assert cmp.metrics.max_rel == pytest.approx(0.25)
    assert cmp.metrics.mean_abs == pytest.approx(0.125)
    assert cmp.metrics.mismatch_fraction == pytest.approx(0.25)
    assert 0.9 < cmp.metrics.cosine < 1.0


def test_all_zero_tensors_match_with_cosine_one() -> None:
    cmp = compare("v", np.zeros(4, F32), np.zeros(4, F32))
    assert cmp.ok and cmp.metrics.cosine == 1.0


def test_integer_tolerance_ignores_overrides() -> None:
    assert resolve_tolerance("int64", rtol=1.0, atol=1.0) == DEFAULT_TOLERANCES["exact"]
    assert resolve_tolerance("float32", atol=0.5).atol == 0.5


@pytest.mark.parametrize(
    ("actual", "expected", "dtype"),
    [
        pytest.param(f32(1, NAN, 3, INF, 1e-3), f32(1, 2, NAN, -INF, 1.2e-3), "float32", id="float32-specials"),
        pytest.param(np.array([1, 1.004, 2.5], np.float16), np.array([1, 1.0, 2.0], np.float16), "float16", id="float16-looser"),
        pytest.param(np.array([2**40 + 1, 7]), np.array([2**40, 7]), "int64", id="int64-exact"),
    ],
)
def test_agreeing_marks_exactly_the_elements_compare_counts(actual: np.ndarray, expected: np.ndarray, dtype: str) -> None:
    """The per-element mask (used to say *where* an op is wrong) and ``compare`` are one rule."""
    mask = agreeing(actual, expected, resolve_tolerance(dtype))
    metrics = compare("v", actual, expected, dtype=dtype).metrics
    assert 0 < mask.sum() < mask.size, mask  # a mix, so the test can tell the two apart
    assert 1.0 - mask.mean() == pytest.approx(metrics.mismatch_fraction)
    # Element by element: each element alone is judged the same way.
    for i in range(mask.size):
        assert bool(mask[i]) == compare("v", actual[i : i + 1], expected[i : i + 1], dtype=dtype).ok, i
