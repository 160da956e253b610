"""``--model-setting KEY=VALUE``: a model setting applied before export (``use_cache=False``).

The remedies the export-failure classifier names for model-library patterns are
settings of the model's config: ``use_cache=False`` (no cache object in the
outputs), ``attn_implementation=eager`` (attention code that exports). Applied
here, explicitly and recorded, so the user's run goes on to the numeric
comparison instead of stopping at the export failure.

A setting goes to every ``transformers``-style config in the model (any
submodule's ``config`` and its sub-configs) that has the key, else to the
top module's attribute of that name. ``attn_implementation`` goes through the
model's ``set_attn_implementation`` where it has one.
"""

from __future__ import annotations

import difflib
from typing import Any

from nodebisect.errors import BadInputError

ATTN = "attn_implementation"


def parse_setting(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` -> (key, value): true/false/none, ints and floats are parsed; the rest stays a string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise BadInputError(f"bad --model-setting {text!r}", tip="use KEY=VALUE, e.g. --model-setting use_cache=False")
    raw = raw.strip()
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return key, lowered == "true"
    if lowered in ("none", "null"):
        return key, None
    for kind in (int, float):
        try:
            return key, kind(raw)
        except ValueError:
            pass
    return key, raw.strip("'\"")


def apply_model_settings(module: Any, settings: list[str]) -> list[str]:
    """Apply each ``KEY=VALUE`` to ``module``; returns them as applied (``KEY=VALUE``, value normalised).

    Raises:
        BadInputError: no module (a ``.pt2`` keeps no config), a bad spec, or a key
            neither a config nor the module has.
    """
    if module is None:
        raise BadInputError(
            "--model-setting needs the eager model, and a .pt2 archive keeps only the exported program",
            tip="pass the model as file.py:factory, or re-export the .pt2 with the setting applied",
        )
    applied = []
    for text in settings:
        key, value = parse_setting(text)
        _apply(module, key, value)
        applied.append(f"{key}={value}")
    return applied


def configs(module: Any) -> list[Any]:
    """Every distinct config object of the model's submodules, sub-configs included."""
    found: list[Any] = []
    seen: set[int] = set()
    subs = list(module.modules()) if hasattr(module, "modules") else [module]
    stack = [getattr(m, "config", None) for m in subs]
    while stack:
        cfg = stack.pop(0)
        if cfg is None or id(cfg) in seen or not hasattr(cfg, "to_dict"):
            continue
        seen.add(id(cfg))
        found.append(cfg)
        stack.extend(v for v in vars(cfg).values() if hasattr(v, "to_dict") and hasattr(v, "model_type"))
    return found


def _apply(module: Any, key: str, value: Any) -> None:
    cfgs = configs(module)
    if key == ATTN and cfgs:
        _set_attention(module, str(value))
        return
    hits = [c for c in cfgs if hasattr(c, key)]
    for cfg in hits:
        setattr(cfg, key, value)
    if hits:
        return
    if hasattr(module, key) and not callable(getattr(module, key)):
        setattr(module, key, value)
        return
    known = sorted({k for c in cfgs for k in c.to_dict()} | {k for k in vars(module) if not k.startswith("_")})
    close = difflib.get_close_matches(key, known, n=3)
    raise BadInputError(
        f"--model-setting {key}: neither the model's config nor the model has a setting {key!r}",
        tip=f"did you mean {', '.join(close)}?" if close else ("the config's keys: " + ", ".join(known[:12]) if known else "the model has no config"),
    )


def _set_attention(module: Any, value: str) -> None:
    """``set_attn_implementation`` on every model that has one (each sets its own sub-models)."""
    done = False
    for sub in module.modules():
        setter = getattr(sub, "set_attn_implementation", None)
        if callable(setter) and hasattr(sub, "config"):
            try:
                setter(value)
            except Exception as exc:  # noqa: BLE001 - the library refuses unknown or unavailable kernels
                raise BadInputError(f"--model-setting {ATTN}={value}: {str(exc).splitlines()[0][:200]}", tip="eager and sdpa are always available") from exc
            done = True
    if not done:
        for cfg in configs(module):
            cfg._attn_implementation = value  # older transformers: the config field the attention code reads


def register_cache_outputs(module: Any) -> bool:
    """Let ``torch.export`` flatten a ``transformers`` model's cache outputs (``DynamicCache`` & co.).

    A ``*ForCausalLM`` in its default setting (``use_cache=True``) returns its key/value
    cache, a class ``torch.export`` cannot flatten unless it is a registered pytree node;
    the export then fails although the prefill computation is fine. ``transformers``
    ships the registration (``exporters.exporter_dynamo.register_cache_pytrees_for_model``,
    the one its own dynamo exporter calls): call it for a ``transformers`` model, so the
    model exports as users run it and the cache tensors are compared as outputs.
    A ``transformers`` model inside a wrapper counts too.
    True when it registered; False for other models or a ``transformers`` without it
    (the export failure then names ``use_cache=False`` as the remedy).
    """
    # The model may be wrapped (the sweep's zoo wrapper, a user's own nn.Module around an
    # ``AutoModelForCausalLM``): register for the outermost ``transformers`` module inside.
    modules = module.modules() if hasattr(module, "modules") else [module]
    module = next((m for m in modules if type(m).__module__.startswith("transformers.")), None)
    if module is None:
        return False
    try:
        from transformers.exporters.exporter_dynamo import register_cache_pytrees_for_model
    except ImportError:
        return False
    try:
        register_cache_pytrees_for_model(module)
    except Exception:  # noqa: BLE001 - only a convenience: the export failure says what to do otherwise
        return False
    return True
