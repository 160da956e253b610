"""Turn the sweep's SOURCES into an ordered list of ``ModelTask``.

A source is a directory of ``.pt2`` archives (``NAME.inputs.pt`` beside one is
its ``--inputs``), or a list file:

- ``.txt``: one model a line, ``SPEC [inputs=FILE] [name=NAME] [KEY=VALUE ...]``
  (``#`` starts a comment; KEY is a per-model option such as ``rtol`` or ``timeout``,
  or ``model_setting=use_cache=False``, repeatable);
- ``.toml``: ``[[model]]`` tables with ``spec``, optional ``name``, ``inputs``
  (a path or a list), ``options`` (a table) and ``model_settings`` (a list of ``KEY=VALUE``);
- ``.yaml`` / ``.yml``: a list of such mappings (or ``{models: [...]}``), or of bare specs.

Relative paths in a list are relative to the list file, so a list travels with its models.
Everything is checked while planning, so a typo is exit 2 naming it, not a failed row
an hour later: a model or inputs file that does not exist, an unknown key (with the
nearest known one), a bad option value.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
import shlex
from pathlib import Path
from typing import Any

from nodebisect.errors import BadInputError
from nodebisect.sweep.tasks import SETTING_ALIASES, ModelTask, SweepOptions

LIST_SUFFIXES = (".txt", ".list", ".toml", ".yaml", ".yml")
# The keys of one entry of a .toml / .yaml list.
ENTRY_KEYS = ("spec", "name", "inputs", "options", "model_settings")


def tasks_from_sources(sources: list[str]) -> list[ModelTask]:
    """Every task the sources name, in order, with names made unique.

    Raises:
        BadInputError: a source is missing, empty or malformed.
    """
    tasks: list[ModelTask] = []
    for source in sources:
        path = Path(source).expanduser().absolute()
        if path.is_dir():
            tasks += tasks_from_directory(path)
        elif path.is_file() and path.suffix.lower() == ".pt2":
            tasks.append(ModelTask(name=path.stem, spec=str(path), inputs=_inputs_beside(path), group=str(path.parent)))
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            tasks += tasks_from_list(path)
        elif path.is_file():
            raise BadInputError(f"cannot read models from {source}: not a directory, .pt2 or a list ({', '.join(LIST_SUFFIXES)})")
        elif ":" in source:
            spec = _resolve_spec(source, Path.cwd())
            _check_exists(spec, (), source)
            tasks.append(ModelTask(name=_name_of(source), spec=spec, group="argv"))
        else:
            raise BadInputError(f"source not found: {source}", tip="pass a directory of .pt2 files, a model list, or --zoo transformers")
    return unique_names(tasks)


def tasks_from_directory(directory: Path) -> list[ModelTask]:
    """The ``.pt2`` archives of ``directory`` (not recursive), sorted by name."""
    archives = sorted(p for p in directory.iterdir() if p.suffix.lower() == ".pt2" and p.is_file())
    if not archives:
        raise BadInputError(f"no .pt2 files in {directory}", tip="save models with torch.export.save(ep, 'NAME.pt2')")
    return [ModelTask(name=p.stem, spec=str(p), inputs=_inputs_beside(p), group=str(directory)) for p in archives]


def tasks_from_list(path: Path) -> list[ModelTask]:
    """The models of a ``.txt`` / ``.toml`` / ``.yaml`` list file."""
    suffix = path.suffix.lower()
    lines: list[int] = []  # a .txt entry's line number, for its errors
    try:
        if suffix == ".toml":
            import tomllib

            data = tomllib.loads(path.read_text())
            entries = data.get("model", data.get("models", []))
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError as exc:
                raise BadInputError(f"{path}: reading YAML needs PyYAML", tip="pip install pyyaml, or use a .toml/.txt list") from exc
            data = yaml.safe_load(path.read_text())
            entries = data.get("models", []) if isinstance(data, dict) else data
        else:
            entries = [_parse_line(line, path, n) for n, line in enumerate(path.read_text().splitlines(), 1)]
            entries = [e for e in entries if e]
            lines = [e.pop("_line") for e in entries]
    except BadInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parse error is a bad list
        raise BadInputError(f"cannot parse {path}: {exc}") from exc
    if not isinstance(entries, list) or not entries:
        raise BadInputError(f"{path} lists no models")
    if suffix not in (".toml", ".yaml", ".yml"):
        return [_task_from_entry(entry, path, f"{path}:{n}") for n, entry in zip(lines, entries)]
    return [_task_from_entry(entry, path, f"{path}: entry {n}") for n, entry in enumerate(entries, 1)]


def select(tasks: list[ModelTask], pattern: str = "", limit: int = 0, shard: str = "") -> list[ModelTask]:
    """Apply ``--filter`` (glob, or regex when it is not a plain glob), ``--limit`` then ``--shard i/n``.

    Limit before shard, so ``--limit 40 --shard 1/2`` and ``--shard 2/2`` split the same 40 models.
    """
    if pattern:
        tasks = [t for t in tasks if _matches(pattern, t)]
    if limit and limit > 0:
        tasks = tasks[:limit]
    if shard:
        index, count = parse_shard(shard)
        tasks = [t for i, t in enumerate(tasks) if i % count == index - 1]
    return tasks


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/4"`` -> ``(2, 4)``; shards are numbered from 1."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not (1 <= int(match[1]) <= int(match[2])):
        raise BadInputError(f"bad --shard {text!r}", tip="use i/n with 1 <= i <= n, e.g. 1/4")
    return int(match[1]), int(match[2])


def unique_names(tasks: list[ModelTask]) -> list[ModelTask]:
    """Suffix repeated names (``name~2``): the name is the key of resume and compare."""
    seen: dict[str, int] = {}
    out = []
    for task in tasks:
        count = seen.get(task.name, 0) + 1
        seen[task.name] = count
        if count > 1:
            task = ModelTask(**{**task.__dict__, "name": f"{task.name}~{count}"})
        out.append(task)
    return out


def _matches(pattern: str, task: ModelTask) -> bool:
    haystacks = (task.name, task.spec, str(task.meta.get("class", "")))
    if any(ch in pattern for ch in "*?["):
        return any(fnmatch.fnmatch(h, pattern) for h in haystacks)
    try:
        regex = re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise BadInputError(f"bad --filter {pattern!r}: {exc}") from exc
    return any(regex.search(h) for h in haystacks)


def _parse_line(line: str, path: Path, number: int) -> dict[str, Any] | None:
    line = line.split("#", 1)[0].strip() if not line.lstrip().startswith("#") else ""
    if not line:
        return None
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise BadInputError(f"{path}:{number}: {exc}") from exc
    entry: dict[str, Any] = {"spec": words[0], "options": {}, "_line": number}
    for word in words[1:]:
        if "=" not in word:
            raise BadInputError(f"{path}:{number}: expected KEY=VALUE, got {word!r}", tip="e.g. inputs=x.pt rtol=1e-2 timeout=60")
        key, value = word.split("=", 1)
        if key == "inputs":
            entry.setdefault("inputs", []).append(value)
        elif key == "name":
            entry["name"] = value
        elif SETTING_ALIASES.get(key, key) == "model_settings":  # repeatable: model_setting=use_cache=False
            entry.setdefault("model_settings", []).append(value)
        else:
            entry["options"][key.replace("-", "_")] = value
    return entry


def _task_from_entry(entry: Any, path: Path, where: str) -> ModelTask:
    """One entry as a task, every key, option and path checked (``where`` names the entry in errors)."""
    if isinstance(entry, str):
        entry = {"spec": entry}
    if not isinstance(entry, dict) or "spec" not in entry:
        raise BadInputError(f"{where} has no 'spec'")
    for key in entry:
        if key not in ENTRY_KEYS and SETTING_ALIASES.get(key) != "model_settings":
            raise BadInputError(f"{where}: unknown key {key!r}{_did_you_mean(key, [*ENTRY_KEYS, *SweepOptions().to_dict()])}",
                                tip=f"an entry holds {', '.join(ENTRY_KEYS)}; per-model options go in 'options'")
    spec = _resolve_spec(str(entry["spec"]), path.parent)
    inputs = entry.get("inputs") or []
    if isinstance(inputs, str):
        inputs = [inputs]
    inputs = tuple(str(_resolve(Path(i), path.parent)) for i in inputs)
    _check_exists(spec, inputs, where, base=path.parent)
    if not inputs and spec.lower().endswith(".pt2"):
        inputs = _inputs_beside(Path(spec))
    options = dict(entry.get("options") or {})
    settings = [s for k, v in entry.items() if SETTING_ALIASES.get(k, k) == "model_settings"
                for s in ([v] if isinstance(v, str) else list(v or []))]
    if settings:
        options["model_settings"] = [*_as_list(options.get("model_settings")), *settings]
    try:
        SweepOptions().merged(options)
    except (ValueError, TypeError) as exc:
        raise BadInputError(f"{where}: {exc}") from exc
    return ModelTask(name=str(entry.get("name") or _name_of(spec)), spec=spec, inputs=inputs, options=options, group=str(path))


def _check_exists(spec: str, inputs: tuple[str, ...], where: str, base: Path | None = None) -> None:
    """A model or inputs file the entry names must exist (a ``pkg.module:fn`` spec is left to import)."""
    file_part = spec.rpartition(":")[0] if ":" in spec else spec
    files = [("model", file_part)] if (":" not in spec or file_part.endswith(".py") or "/" in file_part) else []
    for kind, name in [*files, *(("inputs", i) for i in inputs)]:
        if not Path(name).exists():
            relative = f" (relative paths in a list are relative to its folder, {base})" if base is not None else ""
            raise BadInputError(f"{where}: {kind} file not found: {name}{_near(Path(name))}{relative}")


def _near(path: Path) -> str:
    try:
        siblings = [p.name for p in path.parent.iterdir()] if path.parent.is_dir() else []
    except OSError:
        siblings = []
    near = difflib.get_close_matches(path.name, siblings, n=1)
    return f" (did you mean {near[0]}?)" if near else ""


def _did_you_mean(word: str, known: list[str]) -> str:
    near = difflib.get_close_matches(word, known, n=1)
    return f" (did you mean {near[0]!r}?)" if near else ""


def _as_list(value: Any) -> list[str]:
    return [] if value is None else [value] if isinstance(value, str) else [str(v) for v in value]


def _resolve_spec(spec: str, base: Path) -> str:
    """Make a file spec relative to the list's folder; leave ``pkg.module:fn`` alone."""
    file_part, sep, attr = spec.rpartition(":") if ":" in spec else (spec, "", "")
    if not sep:
        return str(_resolve(Path(spec), base))
    if file_part.endswith(".py") or "/" in file_part:
        return f"{_resolve(Path(file_part), base)}:{attr}"
    return spec


def _resolve(path: Path, base: Path) -> Path:
    path = path.expanduser()
    # Absolute: a Ray worker runs in another directory (and maybe on another machine with the same layout).
    return (path if path.is_absolute() else (base / path)).absolute()


def _inputs_beside(archive: Path) -> tuple[str, ...]:
    beside = archive.with_name(archive.stem + ".inputs.pt")
    return (str(beside),) if beside.is_file() else ()


def _name_of(spec: str) -> str:
    """A readable model name: ``models.py:build`` -> ``models.build``, ``x/y.pt2`` -> ``y``."""
    if ":" in spec:
        file_part, attr = spec.rsplit(":", 1)
        stem = Path(file_part).stem if file_part.endswith(".py") else file_part.rsplit(".", 1)[-1]
        return f"{stem}.{attr}"
    return Path(spec).stem
