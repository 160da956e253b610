"""Keras models through tf2onnx: the second reference (TensorFlow's frozen graph) and tf2onnx's stages.

Nothing here imports TensorFlow at module level: ``is_keras_model`` and
``is_keras_file`` only look at a class's module and a file's suffix, so a PyTorch
locate never pays for (or needs) the ``nodebisect[keras]`` extra.

Modules: ``load`` (a Keras model, factory result or ``.keras`` file + inputs),
``convert`` (freeze, grappler, tf2onnx under a chosen optimizer set),
``graphrun`` (a GraphDef run fetching every op output), ``mapping`` (ONNX value
names -> TF tensors, the three rules), ``reference`` (``KerasReference``),
``stages`` (capture, TF optimization, graph optimization, a TF-side approximation),
``prepare`` (all of it -> ``Prepared``).
"""

from __future__ import annotations

import os
from typing import Any

EXTRA_TIP = "pip install 'nodebisect[keras]'"


def is_keras_model(obj: Any) -> bool:
    """A Keras model (or a (model, inputs) pair a factory returned), without importing Keras."""
    if isinstance(obj, tuple) and obj:
        obj = obj[0]
    return any(c.__module__.split(".")[0] in ("keras", "tf_keras") and c.__name__ in ("Model", "Layer") for c in type(obj).__mro__)


def is_keras_file(model: Any) -> bool:
    """A path to a Keras 3 ``.keras`` archive."""
    return isinstance(model, (str, os.PathLike)) and str(model).endswith(".keras")


__all__ = ["EXTRA_TIP", "is_keras_file", "is_keras_model"]
