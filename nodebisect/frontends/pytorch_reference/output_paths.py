"""The user's names for a model's outputs, read from the exported program's output structure.

An exported graph names its outputs after the last op that made them (``linear``,
``cat_1``); the user knows them as ``logits`` and ``past_key_values``. torch.export keeps
the structure of what ``forward`` returned (``call_spec.out_spec``: a ``ModelOutput``'s
field names, a dict's keys, a tuple's positions, a cache's layers), so each flat output
can carry the path a user would write to reach it. Reports then say ``logits`` beside
the graph's name instead of leaving the reader to count outputs.
"""

from __future__ import annotations

from typing import Any


def leaf_labels(spec: Any) -> list[str]:
    """One path per leaf of a pytree ``TreeSpec``, in flatten order; [] when no leaf has a name.

    A tuple's or list's child is ``[i]``; a dict's, a ``ModelOutput``'s or a namedtuple's is
    ``.key``; a class registered with a serialized context (transformers' caches) is read
    for the path to each tensor it holds (``cache.layers[0].keys``), else ``[i]``.
    """
    labels: list[str] = []
    _walk(spec, "", labels)
    if not any(any(c.isalpha() for c in label) for label in labels):
        return []  # positions only ("[0]", "[1]"): the graph's own names say as much
    return [f"output{label}" if label.startswith("[") else label.lstrip(".") or "output" for label in labels]


def _walk(spec: Any, prefix: str, labels: list[str]) -> None:
    if spec.is_leaf():
        labels.append(prefix)
        return
    # torch 2.13 deprecates ``children_specs`` (a FutureWarning on the user's terminal) for ``children()``.
    children = list(spec.children()) if callable(getattr(spec, "children", None)) else list(spec.children_specs)
    for key, child in zip(_child_keys(spec, len(children)), children):
        _walk(child, prefix + key, labels)


def _child_keys(spec: Any, count: int) -> list[str]:
    context = spec.context
    fields = getattr(spec.type, "_fields", None)  # a namedtuple
    if fields and len(fields) == count:
        return [f".{f}" for f in fields]
    if isinstance(context, (list, tuple)) and len(context) == count and all(isinstance(k, str) for k in context):
        return [f".{k}" for k in context]  # dict keys, ModelOutput fields
    found: dict[int, str] = {}
    _tensor_paths(context, "", found)
    if sorted(found) == list(range(count)):
        return [found[i] for i in range(count)]
    return [f"[{i}]" for i in range(count)]


def _tensor_paths(context: Any, path: str, found: dict[int, str]) -> None:
    """Paths to ``{"_t": "tensor", "i": k}`` markers: how transformers serializes a cache's structure."""
    if isinstance(context, dict):
        if context.get("_t") == "tensor" and isinstance(context.get("i"), int):
            found[context["i"]] = path
            return
        for key, value in context.items():
            if key in ("_t", "p"):
                continue
            _tensor_paths(value, path if key == "s" else f"{path}.{key}", found)
    elif isinstance(context, (list, tuple)):
        for i, value in enumerate(context):
            _tensor_paths(value, f"{path}[{i}]", found)
