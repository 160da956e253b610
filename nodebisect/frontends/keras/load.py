"""A Keras model and its inputs: a model object, a factory's (model, inputs), or a ``.keras`` file.

``.keras`` files load with Keras' ``safe_mode`` on: a file that carries Python code
(a ``Lambda`` layer's bytecode) is refused unless the user says ``--trust-pickle``,
the same consent the PyTorch loader asks before unpickling.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nodebisect.errors import BadInputError, UntrustedPickleError
from nodebisect.frontends.keras import EXTRA_TIP


@dataclass
class KerasLoaded:
    """A Keras model ready to trace, with numpy inputs in the model's input order."""

    model: Any
    inputs: list[np.ndarray] = field(default_factory=list)
    source: str = ""


def import_stack() -> tuple[Any, Any, Any]:
    """(tensorflow, keras, tf2onnx), quiet; exit 2 naming the extra when one is missing."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from nodebisect.frontends.quiet import quiet_native_stderr

    try:
        with warnings.catch_warnings(), quiet_native_stderr():
            warnings.simplefilter("ignore")
            import tensorflow as tf
            import keras
            import tf2onnx
    except ImportError as exc:
        raise BadInputError(f"a Keras model needs the keras extra ({exc.name or exc} is not importable)", tip=EXTRA_TIP) from exc
    for name in ("tf2onnx", "tensorflow", "absl"):  # errors reach convert's own handler, never the console
        logging.getLogger(name).setLevel(logging.ERROR)
        logging.getLogger(name).propagate = False
    tf.get_logger().setLevel(logging.ERROR)
    return tf, keras, tf2onnx


def load_keras(model: Any, inputs: Any = None, *, inputs_file: str | None = None, input_specs: list[str] | None = None,
               seed: int = 0, trust_code: bool = False, source: str = "") -> KerasLoaded:
    """Resolve the Keras model (object, factory result or ``.keras`` path) and its inputs as numpy arrays."""
    _, keras, _ = import_stack()
    example: Any = None
    if isinstance(model, tuple):
        model, example = model[0], (model[1] if len(model) > 1 else None)
    if isinstance(model, (str, os.PathLike)):
        source = source or str(model)
        model = _load_file(keras, Path(model), trust_code)
    source = source or type(model).__name__
    if inputs is None and inputs_file:
        inputs = _read_npz(inputs_file)
    elif inputs is None and input_specs:
        inputs = [_random(spec, np.random.default_rng(seed)) for spec in input_specs]
    inputs = inputs if inputs is not None else example
    if inputs is None:
        raise BadInputError("no inputs: the Keras model carries no example inputs", tip="pass --inputs FILE.npz, or return (model, inputs) from the factory")
    arrays = [np.asarray(x) for x in (inputs if isinstance(inputs, (list, tuple)) else [inputs])]
    return KerasLoaded(model=model, inputs=arrays, source=source)


def _load_file(keras: Any, path: Path, trust_code: bool) -> Any:
    if not path.exists():
        raise BadInputError(f"model file not found: {path}")
    try:
        return keras.saving.load_model(str(path), compile=False, safe_mode=not trust_code)
    except Exception as exc:  # noqa: BLE001 - every load failure is a bad file; say which kind
        text = str(exc)
        if "safe_mode" in text or "Lambda" in text and "deserializ" in text:
            raise UntrustedPickleError(
                f"{path.name} carries Python code (a Lambda layer); nodebisect does not run it unasked",
                tip="pass --trust-pickle if you trust the file (Keras' safe_mode=False)",
            ) from exc
        if "custom_objects" in text or "Could not locate" in text or "Unknown" in text:
            raise BadInputError(
                f"{path.name} needs custom objects Keras cannot find: {text.splitlines()[0][:160]}",
                tip="pass a factory instead (file.py:factory) that imports the custom layers and loads the file",
            ) from exc
        raise BadInputError(f"cannot load {path.name} as a Keras model: {text.splitlines()[0][:160]}") from exc


def _read_npz(path: str) -> list[np.ndarray]:
    if not path.endswith(".npz"):
        raise BadInputError(f"a Keras model reads its inputs from .npz, not {Path(path).suffix or path}", tip="save them with numpy.savez")
    try:
        with np.load(path, allow_pickle=False) as data:
            return [np.array(data[k]) for k in data.files]
    except Exception as exc:  # noqa: BLE001
        raise BadInputError(f"cannot read {path} as .npz: {str(exc).splitlines()[0][:160]}") from exc


def _random(spec: str, rng: np.random.Generator) -> np.ndarray:
    """NAME=2x3x16[:float32] -> a random array (the name is the Keras input's, order as given)."""
    _, _, shape_dtype = spec.rpartition("=")
    shape_text, _, dtype = shape_dtype.partition(":")
    try:
        shape = [int(d) for d in shape_text.split("x")]
    except ValueError as exc:
        raise BadInputError(f"bad --input {spec!r}", tip="use NAME=1x3x224x224[:float32]") from exc
    return rng.standard_normal(shape).astype(dtype or "float32")
