"""The records a sweep passes around: what to run, how, and what came back.

Kept free of torch and transformers so that planning, resuming and summarising
a sweep never pays for those imports.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any

ROW_SCHEMA = "nodebisect.sweep/1"

# Row statuses: the four locate verdicts, plus what can happen to the child process.
STATUS_MATCH = "match"
STATUS_DIVERGED = "diverged"
STATUS_EXPORT_FAILED = "export_failed"
STATUS_RUNTIME_FAILED = "runtime_failed"
STATUS_BAD_INPUT = "bad_input"  # locate exit 2: the model or its inputs cannot be used
STATUS_ERROR = "error"  # locate exit 70 or an unexpected exit code
STATUS_CRASHED = "crashed"  # the child died on a signal
STATUS_TIMEOUT = "timeout"  # killed after the per-model --timeout
STATUS_OUT_OF_MEMORY = "out_of_memory"  # killed over the per-model memory limit
STATUS_SKIPPED = "skipped"  # not run: an optional package is missing, or the model cannot be compared
STATUS_LOST = "lost"  # Ray lost the task (its node died) after its retries: --resume runs it again
STATUSES = (
    STATUS_MATCH,
    STATUS_DIVERGED,
    STATUS_EXPORT_FAILED,
    STATUS_RUNTIME_FAILED,
    STATUS_BAD_INPUT,
    STATUS_ERROR,
    STATUS_CRASHED,
    STATUS_TIMEOUT,
    STATUS_OUT_OF_MEMORY,
    STATUS_SKIPPED,
    STATUS_LOST,
)
# Statuses the progress bar folds into "errors".
ERROR_STATUSES = (STATUS_BAD_INPUT, STATUS_ERROR, STATUS_CRASHED, STATUS_TIMEOUT, STATUS_OUT_OF_MEMORY, STATUS_LOST)
# Statuses that are no answer: --resume runs these models again.
RETRY_STATUSES = (STATUS_LOST,)


@dataclass(frozen=True)
class SweepOptions:
    """The ``locate`` options every model of a sweep shares (a task may override some).

    Attributes:
        strategy: ``auto`` | ``all`` | ``bisect``.
        rtol: relative tolerance, or None for locate's per-dtype default.
        atol: absolute tolerance, or None.
        exporter: ``dynamo`` | ``torchscript``.
        trials: input sets per model.
        timeout: wall-clock seconds one model may take, start to verdict.
        memory_mib: resident memory one model may use before it is killed.
        reports: write a report bundle for divergent models.
        model_settings: ``--model-setting KEY=VALUE`` for every model (the remedies an
            export failure names, such as ``use_cache=False``); a task's own settings
            are added to them, its value winning for the same KEY.
        transform: ``--transform NAME`` after each export (``locate MODEL --transform NAME``), or "".
    """

    strategy: str = "auto"
    rtol: float | None = None
    atol: float | None = None
    exporter: str = "dynamo"
    trials: int = 1
    timeout: float = 900.0
    memory_mib: float = 4096.0
    reports: bool = False
    model_settings: tuple[str, ...] = ()
    transform: str = ""

    def merged(self, overrides: dict[str, Any]) -> SweepOptions:
        """These options with a task's own (``rtol=1e-2 timeout=60`` in a spec list).

        Raises:
            ValueError: an unknown key (with the nearest known one) or a bad value.
        """
        known = option_keys()
        clean: dict[str, Any] = {}
        for key, value in overrides.items():
            key = SETTING_ALIASES.get(key, key)
            if key not in known:
                near = difflib.get_close_matches(key, known, n=1)
                hint = f"did you mean {near[0]!r}?" if near else f"one of {', '.join(known)}"
                raise ValueError(f"unknown per-model option {key!r} ({hint})")
            current = getattr(self, key)
            if key == "model_settings":
                clean[key] = merge_settings(self.model_settings, [value] if isinstance(value, str) else list(value))
            elif isinstance(current, bool) or key == "reports":
                clean[key] = value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
            elif key in ("rtol", "atol", "timeout", "memory_mib"):
                clean[key] = float(value)
            elif key == "trials":
                clean[key] = int(value)
            else:
                clean[key] = str(value)
        return dataclasses.replace(self, **clean)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["model_settings"] = list(self.model_settings)
        return data


# A list file's spelling of the per-model ``--model-setting`` (``model_setting=use_cache=False``).
SETTING_ALIASES = {"model_setting": "model_settings", "model-setting": "model_settings", "setting": "model_settings",
                   "settings": "model_settings"}


def option_keys() -> list[str]:
    """The per-model option keys a list entry may set, sorted."""
    return sorted(f.name for f in dataclasses.fields(SweepOptions))


def merge_settings(base: tuple[str, ...] | list[str], more: list[str]) -> tuple[str, ...]:
    """``base`` then ``more`` (each ``KEY=VALUE``, checked), one per KEY: the later value wins.

    Raises:
        ValueError: a setting is not ``KEY=VALUE``.
    """
    by_key: dict[str, str] = {}
    for text in [*base, *more]:
        key, sep, _ = str(text).partition("=")
        if not sep or not key.strip().isidentifier():
            raise ValueError(f"bad model setting {text!r}: use KEY=VALUE, e.g. use_cache=False")
        by_key.pop(key.strip(), None)  # re-inserted last: the order says which came later
        by_key[key.strip()] = str(text).strip()
    return tuple(by_key.values())


@dataclass(frozen=True)
class ModelTask:
    """One model of the fleet.

    Attributes:
        name: unique within the sweep; the key for resume and compare.
        spec: what ``locate`` takes (``model.pt2``, ``file.py:factory``, ``pkg.mod:fn``).
        inputs: ``--inputs`` files, when the model needs them.
        options: per-model overrides of the sweep's ``SweepOptions``.
        factory_source: for generated factories (the zoo): the text of ``spec``'s file,
            so a worker on another machine can write it locally before running.
        group: where the task came from (a directory, a list, ``zoo:transformers``).
        meta: free-form facts about the model (the zoo's class and variant).
    """

    name: str
    spec: str
    inputs: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    factory_source: str = ""
    group: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["inputs"] = list(self.inputs)
        data.pop("factory_source")
        return data
