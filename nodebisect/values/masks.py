"""Which positions of an output a mask input keeps, so a divergence at excluded positions is told apart.

A left-padded batch through an attention model makes query rows the mask
excludes entirely; PyTorch's safe softmax gives them 0, a lowering without the
guard the mean of V. The logits at those positions are garbage on both sides and
no user reads them, while every attended token may agree (issue #22.2). The
model's inputs say which positions are kept: an input named like a mask
(``attention_mask``, ``attn_mask``, ``mask``, ``src_key_padding_mask``...):

* bool or 0/1 integers: True/1 keeps (``*padding_mask``: True excludes, as in
  ``nn.MultiheadAttention``'s ``key_padding_mask``);
* float: 0/1 values as a multiplicative mask, otherwise an additive mask where
  ``-inf`` or a large negative fill (``finfo.min``) excludes;
* a per-token mask ``[B, S]`` keeps token positions as they are; a query-by-key mask
  (``[Q, K]``, ``[B, Q, K]``, ``[B, H, Q, K]``) keeps a query row when it keeps any key.

The kept query positions apply to an output whose shape holds them as consecutive
axes after leading 1s (logits ``[B, S, V]`` for ``[B, S]``; ``[1, Q, D]`` for ``[Q, K]``).
Outputs of another shape (a pooled ``[B, D]``) are not split. Pure numpy.
"""

from __future__ import annotations

import numpy as np

# Additive masks exclude with -inf or finfo.min; anything at or below this is a fill, not a bias.
ADDITIVE_FILL = -1.0e4
_PADDING_WORDS = ("padding_mask", "pad_mask")  # True marks a padded (excluded) position
_PER_TOKEN_WORDS = ("attention_mask", "padding_mask", "pad_mask", "input_mask", "token_mask")


def is_mask_name(name: str) -> bool:
    """An input the user's model reads as a mask (by the name its forward gives it)."""
    return "mask" in name.lower()


def kept_positions(name: str, mask: np.ndarray) -> np.ndarray | None:
    """The query positions the mask ``name`` keeps (bool), or None when it is no mask we can read or excludes nothing."""
    mask = np.asarray(mask)
    if not is_mask_name(name) or mask.ndim == 0 or mask.size == 0:
        return None
    keep = _keep_elements(name, mask)
    if keep is None:
        return None
    lowered = name.lower()
    per_token = keep.ndim == 2 and (any(w in lowered for w in _PER_TOKEN_WORDS) or keep.shape[0] != keep.shape[1])
    if keep.ndim >= 2 and not per_token:
        keep = keep.any(axis=-1)  # a query row is kept when it sees any key
        if keep.ndim == 3:  # [B, H, Q]: kept when kept for any head
            keep = keep.any(axis=1)
    if keep.all():
        return None
    return keep


def output_keep(keep: np.ndarray, shape: tuple[int, ...] | list[int]) -> np.ndarray | None:
    """``keep`` broadcast to an output of ``shape`` (None when the output does not hold those positions)."""
    shape, k = tuple(shape), keep.ndim
    for start in range(0, len(shape) - k + 1):
        if any(d != 1 for d in shape[:start]):
            break
        if shape[start : start + k] == keep.shape:
            view = keep.reshape((1,) * start + keep.shape + (1,) * (len(shape) - start - k))
            return np.broadcast_to(view, shape)
    return _heads_layout_keep(keep, shape)


def _heads_layout_keep(keep: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """A per-token ``keep`` ``[B, S]`` broadcast to an attention-layout output ``[B, H, S, D]``.

    A ``*ForCausalLM`` run with its cache returns each layer's keys and values in that
    layout: the token axis is not next to the batch axis. The token axis is the one
    axis after the batch whose size is S, or, when several are (S equal to H or D), the
    ``[B, H, S, D]`` convention's axis 2. Anything else is judged whole (None).
    """
    if keep.ndim != 2 or len(shape) < 3 or shape[0] != keep.shape[0]:
        return None
    axes = [j for j in range(1, len(shape)) if shape[j] == keep.shape[1]]
    if len(axes) > 1 and len(shape) == 4 and 2 in axes:
        axes = [2]
    if len(axes) != 1:
        return None
    view = np.expand_dims(keep, tuple(j for j in range(1, len(shape)) if j != axes[0]))
    return np.broadcast_to(view, shape)


def output_masks(feeds: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Each output's kept positions (bool, the output's shape), for the outputs a mask input applies to.

    When several mask inputs apply to one output, a position is kept only where all keep it.
    """
    masks = [m for m in (kept_positions(n, v) for n, v in feeds.items()) if m is not None]
    out: dict[str, np.ndarray] = {}
    for name, shape in shapes.items():
        for keep in masks:
            aligned = output_keep(keep, shape)
            if aligned is not None:
                out[name] = aligned if name not in out else (out[name] & aligned)
    return {k: v for k, v in out.items() if not v.all() and v.any()}


def _keep_elements(name: str, mask: np.ndarray) -> np.ndarray | None:
    """Per element of the mask: kept (True) or excluded."""
    padding = any(w in name.lower() for w in _PADDING_WORDS)
    if mask.dtype == np.bool_:
        return ~mask if padding else mask.copy()
    if np.issubdtype(mask.dtype, np.integer):
        if not np.isin(mask, (0, 1)).all():
            return None  # token ids or counts, not a mask
        return (mask == 0) if padding else (mask == 1)
    if mask.dtype.kind != "f":
        return None
    values = mask.astype(np.float64)
    if np.isnan(values).any():
        return None
    if np.isin(values, (0.0, 1.0)).all() and (values == 1.0).any():
        return (values == 0.0) if padding else (values == 1.0)
    return values > ADDITIVE_FILL
