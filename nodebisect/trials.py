"""Input sets for ``--trials``: the user's inputs, then draws that reach edge cases.

A conversion defect often hides on typical inputs: it needs negatives
(floor vs trunc division), zeros and ties (argmax, rounding, sign), or large
magnitudes (overflow, cancellation). Each trial keeps every tensor's shape and
dtype; integers stay inside the range the example used (token ids must remain
valid) and only go negative if the example did.
"""

from __future__ import annotations

from typing import Any

import torch

DISTRIBUTIONS = ("normal", "negative", "ties", "large", "tiny", "zeros")


def trial_inputs(args: tuple[Any, ...], kwargs: dict[str, Any], trial: int, seed: int) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
    """The inputs of trial ``trial`` (1-based; trial 0 is the user's own)."""
    name = DISTRIBUTIONS[(trial - 1) % len(DISTRIBUTIONS)]
    gen = torch.Generator().manual_seed(seed * 1000 + trial)

    def draw(t: Any) -> Any:
        return _draw(t, name, gen) if isinstance(t, torch.Tensor) else t

    return name, tuple(draw(a) for a in args), {k: draw(v) for k, v in kwargs.items()}


def _draw(t: torch.Tensor, name: str, gen: torch.Generator) -> torch.Tensor:
    shape, dtype = tuple(t.shape), t.dtype
    if dtype == torch.bool:
        return torch.rand(shape, generator=gen) < (0.0 if name == "zeros" else 0.5)
    if not dtype.is_floating_point:
        lo, hi = (int(t.min()), int(t.max())) if t.numel() else (0, 1)
        if name == "zeros":
            return torch.full(shape, max(lo, min(0, hi)), dtype=dtype)
        if name == "ties":
            return torch.full(shape, lo, dtype=dtype)
        return torch.randint(lo, hi + 1, shape, generator=gen, dtype=torch.int64).to(dtype)
    base = torch.randn(shape, generator=gen, dtype=torch.float32)
    if name == "negative":
        base = -base.abs()
    elif name == "ties":
        base = torch.round(base * 2) / 2  # many exact ties and exact zeros
    elif name == "large":
        base = base * (1e2 if dtype in (torch.float16, torch.bfloat16) else 1e4)
    elif name == "tiny":
        base = base * 1e-4
    elif name == "zeros":
        base = torch.zeros(shape)
    return base.to(dtype)
