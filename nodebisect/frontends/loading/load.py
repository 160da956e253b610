"""Load the framework model and its example inputs from what the user names.

A model may be a ``torch.export`` archive (``.pt2``), a TorchScript archive, a
pickled ``nn.Module`` (only with ``trust_pickle``: unpickling runs code from the
file), or a factory spec ``path/to/file.py:factory`` / ``package.module:factory``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import os
import re
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nodebisect.errors import BadInputError, UntrustedPickleError
from nodebisect.frontends.quiet import quiet_native_stderr

_DTYPES = {
    "float32": torch.float32, "float": torch.float32, "fp32": torch.float32,
    "float16": torch.float16, "half": torch.float16, "fp16": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float64": torch.float64, "double": torch.float64,
    "int64": torch.int64, "long": torch.int64, "int32": torch.int32, "int": torch.int32,
    "int16": torch.int16, "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool,
}


@dataclass
class LoadedModel:
    """A framework model ready to export, with the inputs to run it on.

    Attributes:
        module: the eager ``nn.Module`` where one exists (None for a ``.pt2``,
            whose eager code is gone).
        exported: a ``torch.export.ExportedProgram`` where the file held one.
        args / kwargs: the example inputs.
        source: what the user named, for reports.
        kind: "pt2" | "torchscript" | "pickle" | "factory" | "module" | "keras" (exported: a frontends.keras.load.KerasLoaded).
    """

    module: torch.nn.Module | None
    exported: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    kind: str = "module"
    # --model-setting KEY=VALUE applied to the model before export, as "KEY=VALUE" (see model_settings.py).
    applied_settings: list[str] = field(default_factory=list)
    # The further calls an InputObserver recorded (label, args, kwargs): compared as --trials are.
    observed: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = field(default_factory=list)


def load_model(spec: str, trust_pickle: bool = False) -> tuple[torch.nn.Module | None, Any, tuple | None, str]:
    """Load a model from a path or factory spec.

    Returns:
        (eager module or None, ExportedProgram or None, example (args, kwargs) or None, kind)
    """
    path = Path(spec)
    if path.suffix == ".py" or (":" in spec and not path.exists()):
        return _load_factory(spec)
    if not path.exists():
        from nodebisect.frontends.loading.hints import near_files

        raise BadInputError(f"model file not found: {spec}{near_files(path)}", tip="check the path, or pass a factory as file.py:factory")
    if path.is_dir():
        raise BadInputError(f"model path is a directory: {spec}", tip="pass a .pt2, TorchScript or .pt file")
    if not os.access(path, os.R_OK):
        raise BadInputError(f"model file is not readable: {spec}", tip="check the file's permissions")
    if path.stat().st_size == 0:
        raise BadInputError(f"model file is empty: {spec}", tip="re-save the model")
    if path.suffix == ".onnx":
        raise BadInputError(
            f"{spec} is an ONNX file, not a framework model",
            tip="pass the PyTorch model as MODEL and the ONNX file with --onnx FILE",
        )
    if not zipfile.is_zipfile(path):
        raise BadInputError(
            f"{spec} is not a PyTorch archive (not a zip file)",
            tip="save models with torch.export.save, torch.jit.save or torch.save",
        )
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:  # ValueError: undecodable member names
        raise BadInputError(f"cannot read {spec}: {_first_line(exc)}", tip="the archive looks truncated or corrupted; re-save it") from exc
    if any(n.endswith("archive_format") or "/models/" in n or n.startswith("models/") for n in names) and not any(
        n.endswith("constants.pkl") for n in names
    ):
        return None, _load_pt2(path, trust_pickle), None, "pt2"
    if any(n.endswith("constants.pkl") for n in names) and any("/code/" in n or n.startswith("code/") for n in names):
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:  # noqa: BLE001 - any load failure is a bad file
            raise BadInputError(f"cannot load TorchScript archive {spec}: {_first_line(exc)}") from exc
        return module, None, None, "torchscript"
    module = _load_pickle(path, trust_pickle)
    example = _example_inputs(module)
    return module, None, None if example is None else (example, {}), "pickle"


def _load_pt2(path: Path, trust_pickle: bool = False) -> Any:
    from nodebisect.frontends.loading.pt2_types import register_archive_types
    from nodebisect.frontends.quiet import quiet_torch

    # Output containers named in the archive (a transformers ModelOutput) must be
    # registered before it deserializes; read from its JSON, nothing unpickled.
    register_archive_types(path)
    try:
        # torch.export.load logs a traceback per failed attempt; the one-line error below says it all.
        with quiet_torch(), _weights_only_unless(trust_pickle):
            return torch.export.load(str(path))
    except _PickleRefused as exc:
        raise UntrustedPickleError(
            f"{path} stores pickled objects beside its tensors: loading them would run code from the file, so it needs --trust-pickle",
            tip="pass --trust-pickle only if you trust this file, or re-save it with plain tensor inputs",
        ) from exc
    except Exception as exc:  # noqa: BLE001
        raise BadInputError(
            f"cannot load torch.export archive {path}: {_first_line(exc)}",
            tip="the .pt2 may be truncated or saved by an incompatible torch version",
        ) from exc


class _PickleRefused(Exception):
    """torch.export.load wanted to unpickle beyond tensors and the user did not allow it."""


@contextlib.contextmanager
def _weights_only_unless(trust_pickle: bool) -> Any:
    """Hold torch.load to ``weights_only=True`` while a .pt2 loads.

    ``torch.export.load`` retries the archive's example inputs and constants with
    ``torch.load(weights_only=False)`` when the safe load fails: a crafted .pt2
    would run code. Refuse that retry unless the user passed --trust-pickle.
    """
    if trust_pickle:
        yield
        return
    original = torch.load

    def guarded(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("weights_only") is False:
            raise _PickleRefused("weights_only=False refused")
        kwargs["weights_only"] = True
        return original(*args, **kwargs)

    torch.load = guarded
    try:
        yield
    finally:
        torch.load = original


def _load_pickle(path: Path, trust_pickle: bool) -> torch.nn.Module:
    if not trust_pickle:
        # weights_only=True refuses to build arbitrary objects, so nothing in the file runs.
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001
            raise UntrustedPickleError(
                f"{path} is a pickled object: loading it would run code from the file, so it needs --trust-pickle",
                tip="pass --trust-pickle only if you trust this file, or save the model with torch.export.save",
            ) from exc
        raise BadInputError(
            f"{path} holds {type(obj).__name__}, not a model (a state_dict or tensors?)",
            tip="pass a factory file.py:factory that builds the model and loads this state_dict",
        )
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001
        from nodebisect.frontends.loading.hints import unpickle_error

        raise unpickle_error(path, exc) from exc
    if not isinstance(obj, torch.nn.Module):
        raise BadInputError(f"{path} holds {type(obj).__name__}, not an nn.Module", tip="save the module itself with torch.save(model)")
    return obj


def _load_factory(spec: str) -> tuple[torch.nn.Module | None, Any, tuple | None, str]:
    target, sep, attr = spec.rpartition(":")
    if not sep or not attr or not target:
        raise BadInputError(f"bad factory spec {spec!r}", tip="use path/to/file.py:factory or package.module:factory")
    if target.endswith(".py") or os.sep in target:
        file = Path(target)
        if not file.exists():
            from nodebisect.frontends.loading.hints import near_files

            raise BadInputError(f"factory file not found: {target}{near_files(file)}", tip="check the path before ':'")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ log lines, should the file import it
        mod_name = "_nodebisect_user_" + re.sub(r"\W", "_", file.stem)
        module_spec = importlib.util.spec_from_file_location(mod_name, file)
        if module_spec is None or module_spec.loader is None:
            raise BadInputError(f"cannot import {target}")
        mod = importlib.util.module_from_spec(module_spec)
        sys.modules[mod_name] = mod
        sys.path.insert(0, str(file.resolve().parent))
        try:
            with quiet_native_stderr():  # a file importing tensorflow: its native log lines
                module_spec.loader.exec_module(mod)
        except Exception as exc:  # noqa: BLE001 - user code failed to import
            raise BadInputError(f"importing {target} failed: {_first_line(exc)}", tip="run the file with python to see the error") from exc
        finally:
            sys.path.pop(0)
    else:
        try:
            with quiet_native_stderr():
                mod = importlib.import_module(target)
        except Exception as exc:  # noqa: BLE001
            raise BadInputError(f"cannot import module {target!r}: {_first_line(exc)}", tip="is it on PYTHONPATH?") from exc
    factory = getattr(mod, attr, None)
    if factory is None:
        from nodebisect.frontends.loading.hints import missing_factory_tip

        raise BadInputError(f"{target} has no attribute {attr!r}", tip=missing_factory_tip(mod, attr))
    try:
        with quiet_native_stderr():  # a factory importing tensorflow lazily
            built = factory()
    except Exception as exc:  # noqa: BLE001
        raise BadInputError(f"calling {attr}() failed: {_first_line(exc)}") from exc
    from nodebisect.frontends.keras import is_keras_model

    if is_keras_model(built):  # a Keras model (and its inputs): frontends.keras takes it from here
        return None, built, None, "keras"
    example: Any = None
    if isinstance(built, tuple) and len(built) == 3 and isinstance(built[0], torch.nn.Module) and isinstance(built[2], dict):
        built, args, kwargs = built  # (model, args, kwargs), as torch.export.export takes them
        example = (tuple(args) if isinstance(args, (tuple, list)) else (args,), dict(kwargs))
    elif isinstance(built, tuple) and len(built) == 2 and isinstance(built[0], torch.nn.Module):
        built, example = built
        if isinstance(example, dict):  # keyword inputs: model(input_ids=..., attention_mask=...)
            example = ((), dict(example))
        else:
            example = (example if isinstance(example, tuple) else (example,), {})
    if not isinstance(built, torch.nn.Module):
        raise BadInputError(f"{spec} returned {type(built).__name__}, not an nn.Module")
    if example is None:
        example = _example_inputs(built, factory)
        example = None if example is None else (example, {})
    return built, None, example, "factory"


def _example_inputs(module: torch.nn.Module, factory: Any = None) -> tuple | None:
    """``example_inputs()`` of the module (or its factory), as a tuple; None where there is none."""
    maker = getattr(module, "example_inputs", None) or getattr(factory, "example_inputs", None)
    if not callable(maker):
        return None
    try:
        example = maker()
    except Exception as exc:  # noqa: BLE001 - the user's code
        raise BadInputError(f"example_inputs() of {type(module).__name__} failed: {_first_line(exc)}") from exc
    return example if isinstance(example, tuple) else (example,)


def parse_input_spec(text: str) -> tuple[str, list[int], torch.dtype]:
    """Parse ``NAME=1x3x224x224[:float32]``."""
    name, sep, rest = text.partition("=")
    if not sep or not name:
        raise BadInputError(f"bad --input {text!r}", tip="use NAME=1x3x224x224[:float32]")
    shape_text, _, dtype_text = rest.partition(":")
    try:
        shape = [int(d) for d in shape_text.lower().split("x")] if shape_text else []
    except ValueError as exc:
        raise BadInputError(f"bad shape in --input {text!r}", tip="dimensions are integers joined by 'x'") from exc
    if any(d < 0 for d in shape):
        raise BadInputError(f"negative dimension in --input {text!r}")
    dtype_name = dtype_text or "float32"
    if dtype_name not in _DTYPES:
        raise BadInputError(f"unknown dtype {dtype_name!r} in --input {text!r}", tip="one of " + ", ".join(sorted(_DTYPES)))
    return name.strip(), shape, _DTYPES[dtype_name]


def random_tensor(shape: list[int], dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor:
    """A random tensor for a ``--input`` spec: normal floats, small non-negative ints."""
    if dtype.is_floating_point:
        return torch.randn(shape, generator=generator, dtype=torch.float32).to(dtype)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=generator).bool()
    return torch.randint(0, 8, shape, generator=generator, dtype=torch.int64).to(dtype)


def load_inputs_file(path: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Read inputs from ``.pt`` (tensor, tuple/list, or dict of kwargs) or ``.npz``."""
    file = Path(path)
    if not file.exists():
        raise BadInputError(f"inputs file not found: {path}")
    if file.stat().st_size == 0:
        raise BadInputError(f"inputs file is empty: {path}")
    if file.suffix == ".npz":
        try:
            with np.load(file, allow_pickle=False) as data:
                return tuple(torch.from_numpy(np.array(data[k])) for k in data.files), {}
        except Exception as exc:  # noqa: BLE001
            raise BadInputError(f"cannot read {path} as .npz: {_first_line(exc)}") from exc
    try:
        obj = torch.load(str(file), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise BadInputError(
            f"cannot read inputs {path}: only tensors, tuples/lists and dicts of tensors are loaded",
            tip="save inputs with torch.save((t1, t2)) or numpy.savez",
        ) from exc
    if isinstance(obj, torch.Tensor):
        return (obj,), {}
    if isinstance(obj, (tuple, list)):
        _check_tensors(obj, path)
        return tuple(obj), {}
    if isinstance(obj, dict):
        _check_tensors(list(obj.values()), path)
        return (), dict(obj)
    raise BadInputError(f"{path} holds {type(obj).__name__}; expected a tensor, a tuple/list or a dict of tensors")


def _check_tensors(values: list[Any], path: str) -> None:
    for v in values:
        if not isinstance(v, (torch.Tensor, int, float, bool)) and v is not None:
            raise BadInputError(f"{path} holds a {type(v).__name__} among the inputs; only tensors and numbers can be fed")


def build_loaded_model(
    model: Any,
    inputs: Any = None,
    *,
    input_specs: list[str] | None = None,
    inputs_file: str | None = None,
    seed: int = 0,
    trust_pickle: bool = False,
    model_settings: list[str] | None = None,
) -> LoadedModel:
    """Resolve the model and its inputs from any of the accepted forms.

    ``model`` may be an ``nn.Module``, an ``ExportedProgram``, or a path/spec
    string. ``inputs`` (a tensor, tuple or dict) wins over ``inputs_file`` and
    ``input_specs``, which win over example inputs stored with the model.
    ``model_settings`` (``KEY=VALUE``) are applied to the model's configs or
    attributes right after it is built (``LoadedModel.applied_settings``).
    """
    module: torch.nn.Module | None
    exported = None
    example: tuple | None = None  # (args, kwargs)
    source = ""
    from nodebisect.frontends.keras import is_keras_file, is_keras_model

    if is_keras_model(model) or is_keras_file(model):
        return _keras_loaded(model, inputs, inputs_file, input_specs, seed, trust_pickle, "")
    if isinstance(model, (str, os.PathLike)):
        source = str(model)
        module, exported, example, kind = load_model(str(model), trust_pickle=trust_pickle)
        if kind == "keras":
            return _keras_loaded(exported, inputs, inputs_file, input_specs, seed, trust_pickle, source)
    elif isinstance(model, torch.export.ExportedProgram):
        module, exported, kind = None, model, "pt2"
    elif isinstance(model, torch.nn.Module):
        module, kind = model, "module"
        source = type(model).__name__
    else:
        raise BadInputError(f"cannot debug a {type(model).__name__}; pass an nn.Module, an ExportedProgram or a path")

    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = {}
    from nodebisect.frontends.observed_inputs import observed_calls

    observed = observed_calls(inputs, inputs_file)  # an InputObserver or a saved capture: every recorded call
    if observed:
        _label, args, kwargs = observed[0]
    elif inputs is not None:
        if isinstance(inputs, dict):
            kwargs = dict(inputs)
        elif isinstance(inputs, (tuple, list)):
            args = tuple(inputs)
        else:
            args = (inputs,)
    elif inputs_file:
        args, kwargs = load_inputs_file(inputs_file)
    elif input_specs:
        gen = torch.Generator().manual_seed(seed)
        parsed = [parse_input_spec(s) for s in input_specs]
        names = _forward_arg_names(module, exported)
        named = {name: random_tensor(shape, dtype, gen) for name, shape, dtype in parsed}
        if names and all(n in names for n in named):
            ordered = [n for n in names if n in named]
            args = tuple(named[n] for n in ordered)
        elif names:
            unknown = [n for n in named if n not in names]
            raise BadInputError(f"--input names {unknown} are not arguments of the model", tip=f"the model takes {names}")
        else:
            args = tuple(named.values())
    elif exported is not None and getattr(exported, "example_inputs", None):
        args, kwargs = exported.example_inputs
        args = tuple(args)
        kwargs = dict(kwargs or {})
    elif example is not None:
        args, kwargs = example
    else:
        raise BadInputError(
            "no inputs: the model carries no example inputs",
            tip="pass --inputs FILE (.pt/.npz) or --input NAME=1x3x224x224[:float32]",
        )
    applied: list[str] = []
    if model_settings:
        from nodebisect.frontends.loading.settings import apply_model_settings

        applied = apply_model_settings(module, model_settings)
    if module is not None:
        from nodebisect.frontends.loading.settings import register_cache_outputs

        module = module.eval()
        register_cache_outputs(module)  # a transformers model's cache outputs export as users run it
        _check_signature(module, args, kwargs)
    elif exported is not None and (inputs is not None or inputs_file or input_specs):
        from nodebisect.frontends.loading.hints import check_pt2_inputs

        check_pt2_inputs(exported, args, kwargs)  # shapes and dtypes are fixed in the archive: say so before exporting
    if exported is None and kind == "torchscript":
        exported = _torchscript_to_exported(module, args)
    return LoadedModel(module=module, exported=exported, args=args, kwargs=kwargs, source=source, kind=kind, applied_settings=applied, observed=observed[1:])


def _keras_loaded(model: Any, inputs: Any, inputs_file: str | None, input_specs: list[str] | None, seed: int, trust: bool, source: str) -> LoadedModel:
    """A Keras model (object, factory result or .keras file): its numpy inputs resolved by frontends.keras.load."""
    from nodebisect.frontends.keras.load import load_keras

    keras = load_keras(model, inputs, inputs_file=inputs_file, input_specs=input_specs, seed=seed, trust_code=trust, source=source)
    return LoadedModel(module=None, exported=keras, args=tuple(keras.inputs), source=keras.source, kind="keras")


def _check_signature(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Wrong input counts are the user's to fix (exit 2), not an export failure."""
    if isinstance(module, torch.jit.ScriptModule):
        return
    try:
        sig = inspect.signature(module.forward)
    except (TypeError, ValueError):
        return
    try:
        sig.bind(*args, **kwargs)
    except TypeError as exc:
        names = [p for p in sig.parameters]
        raise BadInputError(f"the inputs do not fit {type(module).__name__}.forward{tuple(names)}: {exc}", tip="pass one tensor per forward argument") from exc


def _torchscript_to_exported(module: Any, args: tuple[Any, ...]) -> Any:
    """TorchScript cannot go through torch.export directly; convert its graph to an ExportedProgram."""
    try:
        from torch._export.converter import TS2EPConverter

        return TS2EPConverter(module, args).convert()
    except Exception as exc:  # noqa: BLE001
        from nodebisect.errors import ExportFailedError

        raise ExportFailedError(
            f"cannot convert the TorchScript archive to an ExportedProgram: {_first_line(exc)}",
            tip="save the model with torch.export.save, or pass a factory file.py:factory",
            step="torchscript_to_exported_program",
        ) from exc


def _forward_arg_names(module: torch.nn.Module | None, exported: Any) -> list[str]:
    if exported is not None:
        try:
            return [s.arg.name for s in exported.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
        except Exception:  # noqa: BLE001
            return []
    if module is None:
        return []
    try:
        params = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return []
    return [p for p, v in params.items() if v.kind in (v.POSITIONAL_OR_KEYWORD, v.POSITIONAL_ONLY)]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
