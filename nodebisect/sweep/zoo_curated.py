"""Curated zoos (diffusers, MONAI): a small config per architecture, random weights, inputs users feed.

Where a library's sizes are coupled inside its modeling code, a generic shrink (as
``zoo.py`` does for transformers) does not build; each architecture is an ``Entry``:
its class, a small config, and the inputs a pipeline or a training loop feeds it.
``build_entry`` builds one (seed 0), sets BatchNorm statistics on the example input so
outputs do not vanish, runs it twice to catch nondeterministic models, and wraps it to
take positional tensors and return a flat tuple of tensors, as users export it.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from nodebisect.sweep.tasks import ModelTask
from nodebisect.sweep.zoos import factory_task, generated_factory, skip_reason


class Entry:
    """One curated model: its class, a small config, and inputs of the kind users feed.

    Attributes:
        arch: the name in the sweep (``UNet2DConditionModel``, ``AutoencoderKL.decode``).
        variant: ``default`` | ``2d`` | ``3d`` | ...
        cls: ``package.Class`` (or ``package.module:function`` for a factory function).
        config: the constructor's keyword arguments.
        inputs: ``(name, kind, shape)`` (a ``#k`` name is the k-th positional argument): kind ``randn`` (floats), ``timestep`` (integer steps
            below 1000), ``int:N`` (integers below N), ``zeros``, ``padmask:N`` (ones, the last
            row's last N positions 0: a padded prompt); a ``a.b`` name goes into dict ``a``.
        method: call this method instead of ``forward``.
        constants: keyword arguments every call passes.
    """

    def __init__(self, arch: str, variant: str, cls: str, config: dict[str, Any], inputs: list[tuple[str, str, tuple[int, ...]]],
                 method: str = "", constants: dict[str, Any] | None = None) -> None:
        self.arch, self.variant, self.cls, self.config = arch, variant, cls, config
        self.inputs, self.method, self.constants = inputs, method, dict(constants or {})


def curated_tasks(family: str, module: str, entries: list[Entry], directory: Path, variants: list[str], write: bool) -> list[ModelTask]:
    return [factory_task(directory, family, e.arch, e.variant, generated_factory(family, module, e.arch, e.variant), write,
                         {"library_class": e.cls})
            for e in entries if e.variant in variants]


def build_entry(family: str, entries: list[Entry], arch: str, variant: str, record: str = "") -> tuple[Any, tuple[Any, ...]]:
    """Build a curated entry with random weights (seed 0) and its example inputs; what was learned goes to ``record``.

    Raises:
        ZooSkipped: the library or one of its optional packages is missing, or the
            model is nondeterministic (two eager runs differ).
    """
    import json
    import time

    from nodebisect.sweep.zoo import ZooSkipped

    started = time.monotonic()
    info: dict[str, Any] = {"family": family, "class": arch, "variant": variant, "repairs": [], "flags": []}
    try:
        entry = next((e for e in entries if e.arch == arch and e.variant == variant), None)
        if entry is None:
            raise ZooSkipped(f"skipped (builder): the {family} zoo has no {arch} {variant}")
        info["config"] = {k: v for k, v in entry.config.items() if isinstance(v, (int, float, str, bool, list, tuple))}
        module, inputs = _build(entry, info)
        info["seconds"] = round(time.monotonic() - started, 2)
        return module, inputs
    except ZooSkipped as exc:
        info["skipped"] = str(exc)
        raise
    except ImportError as exc:
        info["skipped"] = f"skipped (environment): {skip_reason(exc)}"
        raise ZooSkipped(info["skipped"]) from exc
    finally:
        if record:
            Path(record).write_text(json.dumps(info, default=str))


def _build(entry: Entry, info: dict[str, Any]) -> tuple[Any, tuple[Any, ...]]:
    import torch

    from nodebisect.sweep.zoo import ZooSkipped, flat_tensors

    owner, _, attr = entry.cls.rpartition(":") if ":" in entry.cls else entry.cls.rpartition(".")
    factory = getattr(importlib.import_module(owner), attr)
    torch.manual_seed(0)
    model = factory(**entry.config).eval()
    info["params"] = sum(p.numel() for p in model.parameters())
    g = torch.Generator().manual_seed(0)
    values = [_input(kind, shape, g) for _, kind, shape in entry.inputs]
    names = [name for name, _, _ in entry.inputs]
    info["inputs"] = {n: list(v.shape) for n, v in zip(names, values)}
    module = wrap_module(model, names, entry.method, entry.constants)
    if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        module.train()
        with torch.no_grad():
            for _ in range(2):
                module(*values)
        module.eval()
        info["repairs"].append("BatchNorm statistics set by two training-mode passes on the example input")
    with torch.no_grad():
        first = flat_tensors(module(*values))
        torch.manual_seed(1)
        again = flat_tensors(module(*values))
    if len(first) != len(again) or any(not torch.equal(a, b) for a, b in zip(first, again)):
        raise ZooSkipped("skipped (nondeterministic): two eager runs on the same input differ (random sampling?)")
    floats = [t for t in first if t.is_floating_point() and t.numel()]
    if floats and max(float(t.abs().max()) for t in floats) < 1e-6:
        info["flags"].append("vacuous_match")
    return module, tuple(values)


def _input(kind: str, shape: tuple[int, ...], g: Any) -> Any:
    import torch

    if kind == "randn":
        return torch.randn(*shape, generator=g)
    if kind == "timestep":
        return torch.randint(1, 1000, shape, generator=g)
    if kind.startswith("int:"):
        return torch.randint(0, int(kind[4:]), shape, generator=g)
    if kind == "zeros":
        return torch.zeros(*shape)
    if kind.startswith("padmask:"):  # ones; the last row's last N positions are padding (0)
        mask = torch.ones(*shape, dtype=torch.long)
        mask[-1, -int(kind[8:]):] = 0
        return mask
    raise ValueError(f"unknown input kind {kind!r}")


def wrap_module(model: Any, names: list[str], method: str = "", constants: dict[str, Any] | None = None) -> Any:
    """Positional inputs onto ``model``'s keyword inputs (``a.b`` names go into a dict ``a``); a flat tuple of tensors out.

    ``method`` calls another entry point (``decode`` of a VAE) instead of ``forward``;
    ``constants`` are keyword arguments every call passes (``return_dict=False``).
    """
    from nodebisect.sweep.zoo import flat_tensors, zoo_module

    fixed = dict(constants or {})

    def call(inner: Any, *args: Any) -> Any:
        kwargs: dict[str, Any] = {}
        positional = [value for name, value in zip(names, args) if name.startswith("#")]
        for name, value in zip(names, args):
            outer, _, nested = name.partition(".")
            if name.startswith("#"):
                continue
            if nested:
                kwargs.setdefault(outer, {})[nested] = value
            else:
                kwargs[name] = value
        entry = getattr(inner, method) if method else inner
        return tuple(flat_tensors(entry(*positional, **kwargs, **fixed)))

    return zoo_module(model, names, call)
