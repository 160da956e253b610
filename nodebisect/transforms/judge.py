"""Does a transformed candidate still compute what the reference computes? (numpy only)

The knob searches ask this many times, on final outputs. A float16 or int8
candidate always differs from a float32 reference, so the tolerance is the
candidate's precision's: the largest difference, relative to the output's own
scale (its largest magnitude), must stay within what that precision's rounding
explains (``PRECISION_TOLERANCE``). Integer outputs must be equal; NaN or an
infinity where the reference has none, or another shape, never matches.

With a mask input (a left-padded batch), an output that holds the mask's positions
is judged where the mask keeps them (``values.masks``), as ``diff`` and ``locate``
judge by default: a float16 candidate's fully masked rows (the mask's fill clamped
to float16's range) are garbage on both sides, and no fix is owed for them.
``strict_masked`` judges every position.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nodebisect.values.masks import output_masks

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
    keep: dict[str, np.ndarray] = field(default_factory=dict)  # output -> kept positions (bool, its shape)

    @classmethod
    def for_feeds(cls, expected: dict[str, np.ndarray], feeds: dict[str, np.ndarray], precision: str = "float32",
                  tolerance: float | None = None, strict_masked: bool = False) -> Judge:
        """The judge of ``expected``, each output judged where the feeds' mask inputs keep positions."""
        keep = {} if strict_masked else output_masks(feeds, {k: np.shape(v) for k, v in expected.items()})
        return cls(expected, precision, tolerance, keep)

    @property
    def limit(self) -> float:
        return self.tolerance if self.tolerance is not None else PRECISION_TOLERANCE[self.precision]

    def error(self, name: str, actual: np.ndarray | None) -> float:
        """Output ``name``'s error relative to its scale, at the positions its mask keeps."""
        expected, keep = self.expected[name], self.keep.get(name)
        if keep is None or actual is None or np.shape(actual) != np.shape(expected):
            return relative_error(actual, expected)
        return relative_error(np.asarray(actual)[keep], np.asarray(expected)[keep])

    def score(self, actual: dict[str, np.ndarray]) -> float:
        """The worst output's error relative to its scale (``DIVERGED_SCORE`` for NaN/Inf/shape)."""
        return max((self.error(name, actual.get(name)) for name in self.expected), default=0.0)

    def matches(self, actual: dict[str, np.ndarray]) -> bool:
        return self.score(actual) <= self.limit

    def worst_output(self, actual: dict[str, np.ndarray]) -> str:
        return max(self.expected, key=lambda name: self.error(name, actual.get(name)), default="")


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
