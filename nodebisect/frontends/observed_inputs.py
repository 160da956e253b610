"""``torch.onnx.InputObserver`` captures as input sets: every recorded call is compared, as ``--trials`` does.

An ``InputObserver`` (torch >= 2.11) records real calls of a model (an LLM's prefill and
its decode steps included); its own ``check_discrepancies`` compares final outputs only.
nodebisect exports on the first call and searches each call's values node by node.
``infer_arguments(i, as_args_kwargs=True)`` gives each call aligned on the union of the
inputs any call passed (a missing one as an empty tensor), so one export takes them all.

A capture saved with ``save_capture(observer, path)`` is a plain ``torch.save`` of tensors
(loadable with ``weights_only=True``): ``--inputs capture.pt`` compares every call too.
"""

from __future__ import annotations

from typing import Any

import torch

CALLS_KEY = "nodebisect.observed_calls"

InputSet = tuple[str, tuple[Any, ...], dict[str, Any]]


def is_observer(obj: Any) -> bool:
    """An ``InputObserver`` (checked by its API, so a torch without it never fails here)."""
    return type(obj).__name__ == "InputObserver" and hasattr(obj, "infer_arguments") and hasattr(obj, "num_obs")


def observed_sets(observer: Any) -> list[InputSet]:
    """One input set per recorded call, in call order."""
    from nodebisect.errors import BadInputError

    count = observer.num_obs()
    if not count:
        raise BadInputError("the InputObserver recorded no call", tip="run the model inside `with observer(model): ...` first")
    sets = []
    for index in range(count):
        args, kwargs = observer.infer_arguments(index, as_args_kwargs=True)
        sets.append((f"observed call {index + 1}", tuple(args), dict(kwargs)))
    return sets


def save_capture(observer: Any, path: str) -> None:
    """Save every recorded call as tensors only (``--inputs path`` then compares each)."""
    calls = [{"args": list(args), "kwargs": kwargs} for _label, args, kwargs in observed_sets(observer)]
    torch.save({CALLS_KEY: calls}, path)


def capture_sets(obj: Any) -> list[InputSet] | None:
    """The calls of a loaded capture file's object, or None when it is not one."""
    if not (isinstance(obj, dict) and CALLS_KEY in obj):
        return None
    return [(f"observed call {i + 1}", tuple(c.get("args", ())), dict(c.get("kwargs", {}))) for i, c in enumerate(obj[CALLS_KEY])]


def shapes_vary(sets: list[InputSet]) -> bool:
    """Calls whose tensors differ in shape: the export must leave those dimensions dynamic."""

    def shapes(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
        leaves = torch.utils._pytree.tree_leaves((args, kwargs))
        return [tuple(t.shape) if isinstance(t, torch.Tensor) else None for t in leaves]

    return len({tuple(shapes(a, k)) for _l, a, k in sets}) > 1


__all__ = ["CALLS_KEY", "capture_sets", "is_observer", "observed_calls", "observed_sets", "save_capture", "shapes_vary"]


def observed_calls(inputs: Any, inputs_file: str | None) -> list[InputSet]:
    """The recorded calls an ``InputObserver`` (``inputs``) or a saved capture (``inputs_file``) holds; [] otherwise."""
    if is_observer(inputs):
        return observed_sets(inputs)
    if inputs is None and inputs_file and str(inputs_file).endswith(".pt"):
        try:
            obj = torch.load(str(inputs_file), map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - not a capture: load_inputs_file says what is wrong with it
            return []
        return capture_sets(obj) or []
    return []
