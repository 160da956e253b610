"""Output types a ``.pt2`` archive names, registered so that it deserializes.

``torch.export.save`` writes the program's input and output tree specs as JSON
naming each container type (``transformers.modeling_outputs.SequenceClassifierOutput``).
``torch.export.load`` refuses a type no pytree registration in this process knows,
and a ``transformers`` output class is registered only once its module is
imported, which loading a ``.pt2`` never does by itself.

So before loading, the type names are read from the archive's JSON (no pickle,
no code from the file) and each unknown one is resolved:

* a model library already imported, or one of a few known model libraries
  installed in site-packages: its module is imported by the qualified name (the
  installed package's own code, as ``import transformers.modeling_outputs``
  would run), which registers ModelOutput classes;
* otherwise, or where that registered nothing: a generic dict-like container of
  that name is registered (keys from the spec's context, leaves as values), so the
  outputs flatten and compare by position as any other.

The pickle guard of ``loading._weights_only_unless`` is untouched: nothing here
unpickles.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import torch.utils._pytree as pytree

# Model libraries whose output containers may be imported by name when installed.
MODEL_LIBRARIES = ("transformers", "diffusers", "timm", "torchvision", "sentence_transformers", "peft")


def register_archive_types(path: Path) -> list[str]:
    """Make every container type named in ``path``'s tree specs deserializable; returns the names handled.

    Each entry is ``NAME (imported)`` or ``NAME (generic container)``.
    """
    handled = []
    for name in sorted(spec_type_names(path)):
        if name in pytree.SERIALIZED_TYPE_TO_PYTHON_TYPE:
            continue
        if _import_installed(name) and name in pytree.SERIALIZED_TYPE_TO_PYTHON_TYPE:
            handled.append(f"{name} (imported)")
            continue
        _register_generic(name)
        handled.append(f"{name} (generic container)")
    return handled


def spec_type_names(path: Path) -> set[str]:
    """Type names in the tree specs of the archive's ``models/*.json`` (empty if unreadable)."""
    names: set[str] = set()
    try:
        with zipfile.ZipFile(path) as zf:
            for member in zf.namelist():
                if "/models/" in f"/{member}" and member.endswith(".json"):
                    _walk(json.loads(zf.read(member)), names)
    except (OSError, ValueError, zipfile.BadZipFile, RecursionError):
        return set()
    return names


def _walk(obj: Any, names: set[str]) -> None:
    stack = [obj]
    while stack:
        cur = stack.pop()
        if isinstance(cur, dict):
            typ = cur.get("type")
            if isinstance(typ, str) and "children_spec" in cur:
                names.add(typ)
            stack.extend(cur.values())
        elif isinstance(cur, list):
            stack.extend(cur)
        elif isinstance(cur, str) and cur.startswith("[1, {"):
            try:
                stack.append(json.loads(cur))  # a serialized treespec: [protocol, {...}]
            except ValueError:
                pass


def _import_installed(name: str) -> bool:
    """Import ``name``'s module where that runs only an installed model library's code."""
    module, _, attr = name.rpartition(".")
    top = module.split(".", 1)[0]
    if not module or not attr:
        return False
    if top not in sys.modules:
        if top not in MODEL_LIBRARIES:
            return False
        spec = importlib.util.find_spec(top)
        origin = (spec.origin or "") if spec is not None else ""
        if not ("site-packages" in origin or "dist-packages" in origin):
            return False  # a same-named file beside the archive is not an installed library
    try:
        mod = importlib.import_module(module)
    except Exception:  # noqa: BLE001 - not importable: a generic container stands in
        return False
    return isinstance(getattr(mod, attr, None), type)


def _register_generic(name: str) -> None:
    short = name.rsplit(".", 1)[-1]
    cls = type(short, (dict,), {"__module__": "nodebisect.frontends.loading.pt2_types", "__doc__": f"Stand-in for {name} (not importable here)."})

    def flatten(d: dict[str, Any]) -> tuple[list[Any], list[str]]:
        return list(d.values()), list(d.keys())

    def unflatten(values: Any, context: Any) -> dict[str, Any]:
        keys = _keys(context)
        return cls(zip(keys, values)) if keys else cls(enumerate(values))

    pytree.register_pytree_node(cls, flatten, unflatten, serialized_type_name=name)


def _keys(context: Any) -> list[Any]:
    """Keys from a spec context: a list of names (ModelOutput, dict) or [names, none_names] (dataclass)."""
    if isinstance(context, list) and len(context) == 2 and all(isinstance(c, list) for c in context):
        return list(context[0])
    if isinstance(context, list):
        return list(context)
    return []
