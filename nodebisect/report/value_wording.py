"""The sentences about the values behind a verdict: metrics, the worst element, constants, NaN/Inf
placement, precision, amplification, and the mechanism when the evidence shows it (pure text).

Split from ``report.wording`` (which re-exports every name here) so that each stays a small
module: wording says what a stage and cause mean and what to do; this module says how the
numbers read.
"""

from __future__ import annotations

import math
from typing import Any

from nodebisect.records import FirstDivergent, Metrics, op_noise_ratio
from nodebisect.report.markup import constant_text, num, pair_text, short_name, value_text  # noqa: F401

WITHIN_NOISE = "fixed, within noise"  # values.noise's criterion: outside atol/rtol, within PyTorch's own error


def precision_text(m: Metrics, op_noise: dict[str, float] | None = None) -> str:
    """A caution when a float64 oracle says the error is PyTorch's own rounding, or a hidden defect (or "").

    ``op_noise`` (``FirstDivergent.op_noise``, set only on a culprit that stayed a
    divergence) says why the whole-model noise does not excuse it: on the op alone
    PyTorch is much closer to exact than onnxruntime.
    """
    if m.criterion == WITHIN_NOISE and op_noise:
        torch_err, ort_err = op_noise.get("torch", 0.0), op_noise.get("onnxruntime", 0.0)
        ratio = op_noise_ratio(op_noise)
        return (
            f"PyTorch's own {m.expected_dtype} result is already {num(m.noise)} from the exact (float64) answer here, "
            f"but that is the rounding of its inputs: on PyTorch's own inputs the op alone is {num(torch_err)} from its "
            f"exact answer in PyTorch and {num(ort_err)} in onnxruntime ({ratio:.3g}x): the lowering computes something else"
        )
    if m.criterion == WITHIN_NOISE:
        return (
            f"PyTorch's own {m.expected_dtype} result is already {num(m.noise)} from the exact (float64) answer here, "
            f"and onnxruntime is within {m.noise_ratio:.2g}x of that: a defect only if the model relies on PyTorch's "
            "rounding (as an fp16 round-to-integer does); otherwise precision drift"
        )
    if m.criterion == "noise":
        return (
            f"inside --rtol/--atol, but {m.noise_ratio:.3g}x PyTorch's own rounding error against the exact (float64) "
            "answer: a defect too small in magnitude for the fixed tolerance"
        )
    return ""

def metrics_text(m: Metrics, worst: dict[str, Any] | None = None) -> str:
    """The metrics line; NaN/Inf placement in words, and no cosine over only the agreeing positions."""
    if m.reason:
        return m.reason
    nonfinite = nonfinite_sentence(m, worst)
    if nonfinite:
        parts = [nonfinite]
        finite_abs = _finite_max_abs(worst)
        if finite_abs is not None:
            parts.append(f"max_abs={num(finite_abs)} where both are finite")
        parts.append(f"mismatch={m.mismatch_fraction:.1%}")
        return "; ".join(parts)
    text = f"max_abs={num(m.max_abs)} max_rel={num(m.max_rel)} cosine={m.cosine:.4f} mismatch={m.mismatch_fraction:.1%}"
    if m.noise_ratio > 0:  # judged against a float64 oracle too (values.noise)
        text += f" noise={num(m.noise)} ({m.noise_ratio:.3g}x PyTorch's own rounding error)"
    return text

def amplifier_text(fd: FirstDivergent) -> str:
    """The later nodes that only amplify this defect (the search's first stop), or ""."""
    if not fd.amplifiers:
        return ""
    local = fd.local_error
    alone = f"; alone on PyTorch's inputs this node is off by {local['rel_l2']:.2g} (relative L2)" if local.get("rel_l2") else ""
    return f"{', '.join(fd.amplifiers)}: right on PyTorch's inputs, they push this node's error past the tolerance{alone}"

def nonfinite_sentence(m: Metrics, worst: dict[str, Any] | None = None) -> str:
    """"onnxruntime is finite at 10 positions where PyTorch is NaN", or "" when NaN/Inf agree."""
    counts = (worst or {}).get("nan_mismatch") or {}
    parts = []
    if counts:
        if counts.get("finite_where_expected_nan"):
            parts.append(f"onnxruntime is finite at {counts['finite_where_expected_nan']} position(s) where PyTorch is NaN")
        if counts.get("nan_where_expected_finite"):
            parts.append(f"onnxruntime is NaN at {counts['nan_where_expected_finite']} position(s) where PyTorch is finite")
    else:
        if m.expected_nan > m.nan:
            parts.append(f"onnxruntime is finite at {m.expected_nan - m.nan} position(s) where PyTorch is NaN")
        elif m.nan > m.expected_nan:
            parts.append(f"onnxruntime is NaN at {m.nan - m.expected_nan} position(s) where PyTorch is finite")
    if m.inf != m.expected_inf:
        parts.append(f"onnxruntime has {m.inf} Inf where PyTorch has {m.expected_inf}")
    if not parts and not math.isfinite(m.max_abs) and (m.nan or m.expected_nan or m.inf or m.expected_inf):
        parts.append(f"NaN/Inf at different positions (onnxruntime {m.nan} NaN / {m.inf} Inf, PyTorch {m.expected_nan} / {m.expected_inf})")
    return "; ".join(parts)

def worst_text(worst: dict[str, Any] | None, side: str = "PyTorch") -> str:
    """``at [0, 3]: y=+0, x=-0.52 -> PyTorch +3.1416, onnxruntime -3.1416`` (or "")."""
    if not worst or "expected" not in worst:
        return ""
    index = worst.get("index") or []
    where = f"at [{', '.join(str(i) for i in index)}]" if index else "at the scalar"
    inputs = ", ".join(f"{short_name(k)}={value_text(v)}" for k, v in (worst.get("inputs") or {}).items())
    text = f"{where}: " + (f"{inputs} -> " if inputs else "")
    expected, actual = pair_text(worst["expected"], worst["actual"])
    return text + f"{side} {expected}, onnxruntime {actual}"

def constants_text(worst: dict[str, Any] | None, limit: int = 0) -> str:
    """The small constants of the culprit and its segment, each whole (or "")."""
    consts = (worst or {}).get("constants") or {}
    items = [f"{short_name(k)}={constant_text(v)}" for k, v in consts.items()]
    if limit and len(items) > limit:
        items = items[:limit] + [f"… {len(consts) - limit} more"]
    return ", ".join(items)

# A constant at or below float16's finfo.min feeding a mask: a fill standing for -inf (finfo.min in every dtype).
_MASK_FILL = -65504.0

def mechanism_text(fd: FirstDivergent) -> str:
    """How the culprit goes wrong, when its evidence shows it ("" otherwise): a mask fill feeding a Softmax.

    Read from the lead suspect (a Softmax) and the small constants of the segment (a finite
    fill at ``finfo.min``), or the worst element (NaN where PyTorch has 0): the missing-guard
    case of the README's convention, said as a mechanism a maintainer can check.
    """
    lead = fd.segment_op_types[0] if fd.segment_op_types else fd.op_type
    if lead != "Softmax":
        return ""
    w = fd.worst or {}
    fills = [(k, v) for k, v in (w.get("constants") or {}).items() if isinstance(v, (int, float)) and v <= _MASK_FILL]
    guard = ", and the NaN guard after it never fires" if "IsNaN" in fd.segment_op_types else ""
    if fills:
        name, value = fills[0]
        return (
            f"the lowering fills masked scores with {constant_text(value)} ({short_name(name)}), a finite number, where "
            "PyTorch uses -inf; in a row where every score is masked the Softmax then spreads the weight evenly over the "
            f"row instead of giving PyTorch's 0{guard}"
        )
    actual, expected = w.get("actual"), w.get("expected")
    if isinstance(actual, float) and math.isnan(actual) and expected == 0.0:
        return (
            "a row where every score is -inf (fully masked) makes the Softmax NaN; PyTorch's safe softmax gives 0 there, "
            "the lowering has no guard and passes the NaN on"
        )
    return ""

def _finite_max_abs(worst: dict[str, Any] | None) -> float | None:
    value = (worst or {}).get("finite_max_abs")
    return float(value) if isinstance(value, (int, float)) else None
