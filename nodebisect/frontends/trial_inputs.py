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


def trial_inputs(
    args: tuple[Any, ...], kwargs: dict[str, Any], trial: int, seed: int, dynamic: list[list[int]] | None = None
) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
    """The inputs of trial ``trial`` (1-based; trial 0 is the user's own).

    ``dynamic``: per positional input, the dimensions the export left dynamic;
    every even trial then changes those sizes (+1, x2, +3, ...), since constants
    baked for the example's shape only show at another shape.
    """
    name = DISTRIBUTIONS[(trial - 1) % len(DISTRIBUTIONS)]
    gen = torch.Generator().manual_seed(seed * 1000 + trial)
    resize = bool(dynamic) and any(dynamic) and trial % 2 == 0

    def draw(t: Any, dims: list[int]) -> Any:
        if not isinstance(t, torch.Tensor):
            return t
        if resize and dims:
            shape = list(t.shape)
            for d in dims:
                shape[d] = _resized(shape[d], trial)
            t = _like(t, shape)
        return _draw(t, name, gen)

    dims_of = list(dynamic or []) + [[]] * len(args)
    new_args = tuple(draw(a, dims_of[i]) for i, a in enumerate(args))
    label = name + (" @ " + " ".join("x".join(str(s) for s in a.shape) for a in new_args if isinstance(a, torch.Tensor)) if resize else "")
    return label, new_args, {k: draw(v, []) for k, v in kwargs.items()}


def _resized(size: int, trial: int) -> int:
    step = trial // 2
    return {1: size + 1, 2: size * 2}.get(step % 3, size + 3)


def _like(t: torch.Tensor, shape: list[int]) -> torch.Tensor:
    """A tensor of ``shape`` whose values keep the example's range (ints stay valid ids)."""
    if t.numel() == 0:
        return torch.zeros(shape, dtype=t.dtype)
    flat = t.reshape(-1)
    index = torch.arange(int(torch.tensor(shape).prod())) % flat.numel()
    return flat[index].reshape(shape)


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


def input_sets(loaded: Any, onnx_model: Any, opts: Any) -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
    """Every input set beyond the given one: observed calls, ``--inputs`` files after the first, then N-1 drawn trials.

    Files are read up front, so a bad file is reported before any trial runs.
    """
    from nodebisect.frontends.dynamo import dynamic_dims
    from nodebisect.frontends.loading.load import load_inputs_file

    sets = list(getattr(loaded, "observed", None) or [])  # the further calls an InputObserver recorded
    sets += [(path, *load_inputs_file(path)) for path in opts.extra_inputs or []]
    dims = dynamic_dims(onnx_model) if opts.dynamic else None
    sets.extend(trial_inputs(loaded.args, loaded.kwargs, i, opts.seed, dims) for i in range(1, max(opts.trials, 1)))
    return sets
