"""What to tell a user whose model or inputs do not load: near misses and checks known at load time.

* a model or factory file that is not there: the files beside it with a close name;
* a factory name the file does not define: its ``nn.Module`` classes and callables;
* a pickled module whose class cannot be imported: where Python looks for it;
* a ``.pt2``'s input shapes and dtypes are fixed in the archive: user inputs are
  checked against them before anything is exported.
"""

from __future__ import annotations

import difflib
import inspect
import re
from pathlib import Path
from typing import Any

import torch
import torch.utils._pytree as pytree

from nodebisect.errors import BadInputError

SHOWN = 8


def near_files(path: Path) -> str:
    """" (did you mean a.py, b.pt2?)" for files beside ``path`` with a close name, or ""."""
    folder = path.parent if str(path.parent) else Path(".")
    try:
        names = [p.name for p in folder.iterdir() if p.is_file()]
    except OSError:
        return ""
    close = difflib.get_close_matches(path.name, names, n=3, cutoff=0.6)
    return f" (did you mean {', '.join(str(folder / c) for c in close)}?)" if close else ""


def factory_candidates(mod: Any) -> list[str]:
    """``nn.Module`` classes and functions defined in ``mod`` itself (not imported into it)."""
    found = []
    for name, obj in vars(mod).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != mod.__name__:
            continue
        if (inspect.isclass(obj) and issubclass(obj, torch.nn.Module)) or inspect.isfunction(obj):
            found.append(name)
    return found


def missing_factory_tip(mod: Any, attr: str) -> str:
    names = factory_candidates(mod)
    close = difflib.get_close_matches(attr, names, n=3, cutoff=0.5)
    if close:
        return f"did you mean {', '.join(close)}? (the file defines {', '.join(names[:SHOWN])})"
    if names:
        return f"the file defines {', '.join(names[:SHOWN])}: name a class or a function that returns an nn.Module"
    return "the file defines no nn.Module class or function: name a class or a function that returns an nn.Module"


_MISSING_MODULE = re.compile(r"No module named '([\w.]+)'")
_MISSING_ATTR = re.compile(r"Can't get attribute '(\w+)' on <module '([\w.]+)'")


def unpickle_error(path: Path, exc: BaseException) -> BadInputError:
    """A pickled module that does not load: name the class Python could not find, and where it looks."""
    text = str(exc)
    missing = _MISSING_MODULE.search(text)
    attr = _MISSING_ATTR.search(text)
    if attr and attr.group(2) == "__main__":
        return BadInputError(
            f"cannot unpickle {path}: its class {attr.group(1)} was defined in the script that saved it (__main__), which is not importable",
            tip="save the model from a module that defines the class (or with torch.export.save), or pass file.py:factory",
        )
    if missing or attr:
        what = f"module {missing.group(1)!r}" if missing else f"class {attr.group(1)} in module {attr.group(2)!r}"
        return BadInputError(
            f"cannot unpickle {path}: the {what} that defines the model is not importable here",
            tip=f"set PYTHONPATH to the folder holding that module (or run from the model's folder, e.g. cd {path.parent or '.'})",
        )
    return BadInputError(f"cannot unpickle {path}: {text.strip().splitlines()[0][:300] if text.strip() else type(exc).__name__}",
                         tip="the model's classes must be importable")


def check_pt2_inputs(program: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """User inputs against the ``.pt2``'s own input specs (count, dtype, fixed sizes), before exporting.

    Raises:
        BadInputError: naming the input, what was given and what the archive holds,
            and whether --dynamic can help (it cannot: a saved program's static
            dimensions are fixed).
    """
    try:
        names = [s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
        metas = {n.name: n.meta.get("val") for n in program.graph.nodes if n.op == "placeholder"}
    except Exception:  # noqa: BLE001 - an unusual program: the capture step checks again
        return
    leaves = pytree.tree_leaves((tuple(args), dict(kwargs)))
    if len(leaves) != len(names):
        raise BadInputError(
            f"the .pt2 takes {len(names)} input(s) ({', '.join(names)}) but {len(leaves)} were given",
            tip="pass inputs in the order of the model's forward arguments",
        )
    for name, value in zip(names, leaves):
        expected = metas.get(name)
        if not isinstance(expected, torch.Tensor) or not isinstance(value, torch.Tensor):
            continue
        if expected.dtype != value.dtype:
            raise BadInputError(
                f"input {name!r} has dtype {_dtype(value)}, the .pt2 was exported with {_dtype(expected)}",
                tip=f"cast it (e.g. tensor.to(torch.{_dtype(expected)})) before saving the inputs",
            )
        fixed = [(i, int(d)) for i, d in enumerate(expected.shape) if _is_static(d)]
        if expected.dim() != value.dim() or any(value.shape[i] != d for i, d in fixed):
            shown = [int(d) if _is_static(d) else str(d) for d in expected.shape]
            dynamic = len(fixed) < expected.dim()
            raise BadInputError(
                f"input {name!r} has shape {list(value.shape)}, the .pt2 was exported with {shown}"
                + (" (its symbolic dimensions may vary, the others are fixed)" if dynamic else " (all dimensions fixed)"),
                tip="pass inputs of that shape; --dynamic cannot change a saved program's fixed dimensions: "
                "re-export with torch.export.export(..., dynamic_shapes=...) to vary them",
            )


def _is_static(d: Any) -> bool:
    return isinstance(d, int) or (hasattr(d, "node") and getattr(d.node, "is_constant", lambda: False)())


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).replace("torch.", "")
