"""Does a transformed candidate still compute what the reference computes? (numpy only)

The knob searches ask this many times, on final outputs. A float16 or int8
candidate always differs from a float32 reference, so the tolerance is the
candidate's precision's: the largest difference, relative to the output's own
scale (its largest magnitude), must stay within what that precision's rounding
explains (``PRECISION_TOLERANCE``). Integer outputs must be equal; NaN or an
infinity where the reference has none, or another shape, never matches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Largest |candidate - reference| / max|reference| that rounding of the candidate's
# precision explains on a final output. float32: reorderings and fusions; float16: its
# 2**-11 unit roundoff grown through a few dozen ops; int8: 1/255 steps accumulated over a
# MatMul's reduction. A defect (overflow, a clamped constant, a quantization scale swamped
# by an outlier) is at 0.1 and far above.
PRECISION_TOLERANCE = {"float32": 1e-4, "float16": 1e-2, "int8": 5e-2}
DIVERGED_SCORE = 1e30  # a shape, NaN or Inf mismatch: worse than any finite error


@dataclass(frozen=True)
class Judge:
    """The reference's final outputs and the precision the candidate was made in."""

    expected: dict[str, np.ndarray]
    precision: str = "float32"
    tolerance: float | None = None

    @property
    def limit(self) -> float:
        return self.tolerance if self.tolerance is not None else PRECISION_TOLERANCE[self.precision]

    def score(self, actual: dict[str, np.ndarray]) -> float:
        """The worst output's error relative to its scale (``DIVERGED_SCORE`` for NaN/Inf/shape)."""
        return max((relative_error(actual.get(name), ref) for name, ref in self.expected.items()), default=0.0)

    def matches(self, actual: dict[str, np.ndarray]) -> bool:
        return self.score(actual) <= self.limit

    def worst_output(self, actual: dict[str, np.ndarray]) -> str:
        return max(self.expected, key=lambda name: relative_error(actual.get(name), self.expected[name]), default="")


def relative_error(actual: np.ndarray | None, expected: np.ndarray) -> float:
    """``max|a - e| / max|e|`` (exact comparison for integers and booleans)."""
    if actual is None:
        return DIVERGED_SCORE
    a, e = np.asarray(actual), np.asarray(expected)
    if a.shape != e.shape:
        if a.size != e.size:
            return DIVERGED_SCORE
        a = a.reshape(e.shape)
    if e.dtype.kind in "iub" or a.dtype.kind in "iub":
        return 0.0 if np.array_equal(a, e) else DIVERGED_SCORE
    a64, e64 = a.astype(np.float64), e.astype(np.float64)
    finite_e, finite_a = np.isfinite(e64), np.isfinite(a64)
    if not np.array_equal(finite_e, finite_a):
        return DIVERGED_SCORE
    if not finite_e.all() and not np.array_equal(np.where(finite_e, 0, e64), np.where(finite_a, 0, a64), equal_nan=True):
        return DIVERGED_SCORE  # an infinity of the other sign, or NaN where the reference has an infinity
    if not finite_e.any():
        return 0.0
    diff = np.abs(a64[finite_e] - e64[finite_e])
    scale = float(np.abs(e64[finite_e]).max())
    return float(diff.max()) / scale if scale > 0 else float(diff.max())
