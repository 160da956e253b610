"""Small Keras models for tests/test_keras.py, each a factory returning (model, inputs).

Weights are drawn at random (biases, BatchNorm statistics included): Keras'
zero-initialised biases would hide a bias folded into the wrong node.
Also usable from the command line: ``nodebisect locate tests/keras_models.py:gelu``.
"""

from __future__ import annotations

import numpy as np
import keras
from keras import layers


def _random_weights(model: keras.Model, seed: int = 0) -> keras.Model:
    rng = np.random.default_rng(seed)
    for w in model.weights:
        shape, dtype = tuple(w.shape), w.dtype
        if "variance" in w.path:
            w.assign(rng.uniform(0.5, 1.5, shape).astype(dtype))
        else:
            w.assign((rng.standard_normal(shape) * 0.3).astype(dtype))
    return model


def _x(*shape: int) -> np.ndarray:
    return np.random.default_rng(1).standard_normal(shape).astype(np.float32)


def cnn() -> tuple[keras.Model, np.ndarray]:
    inp = keras.Input((16, 16, 3), name="x")
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = layers.BatchNormalization()(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(4, 3, activation="swish")(x)  # Sigmoid * x: the session's grappler would fuse it away
    x = layers.Flatten()(x)
    return _random_weights(keras.Model(inp, layers.Dense(4)(x))), _x(2, 16, 16, 3)


def mobilenet() -> tuple[keras.Model, np.ndarray]:
    model = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10)
    return _random_weights(model), _x(1, 32, 32, 3)


def transformer() -> tuple[keras.Model, np.ndarray]:
    inp = keras.Input((6, 16), name="x")
    x = layers.LayerNormalization()(inp + layers.MultiHeadAttention(num_heads=2, key_dim=8)(inp, inp))
    f = layers.Dense(16)(layers.Dense(32, activation="relu")(x))
    return _random_weights(keras.Model(inp, layers.LayerNormalization()(x + f))), _x(2, 6, 16)


def lstm() -> tuple[keras.Model, np.ndarray]:
    inp = keras.Input((5, 4), name="x")
    x = layers.LSTM(8, return_sequences=True)(inp)
    return _random_weights(keras.Model(inp, layers.Dense(3)(x))), _x(2, 5, 4)


def gelu() -> tuple[keras.Model, np.ndarray]:
    """Keras 3's exact GELU: TF's Erfc, which tf2onnx cannot convert (tensorflow-onnx #2347/#2463)."""
    inp = keras.Input((8,), name="x")
    x = layers.Activation(lambda t: keras.activations.gelu(t, approximate=False))(layers.Dense(8)(inp))
    return _random_weights(keras.Model(inp, layers.Dense(2)(x))), _x(2, 8)


def bicubic(interpolation: str = "bicubic") -> tuple[keras.Model, np.ndarray]:
    """TF's bicubic kernel approximates the cubic: 1e-3 from the exact answer onnxruntime computes."""
    inp = keras.Input((8, 8, 3), name="x")
    x = layers.Resizing(13, 13, interpolation=interpolation)(layers.Conv2D(4, 1)(inp))
    return _random_weights(keras.Model(inp, layers.Conv2D(2, 1)(x))), _x(1, 8, 8, 3)


def conv3d_transpose(depth: int | None = None) -> tuple[keras.Model, np.ndarray]:
    """padding="same", strides (1, 2, 2), channels_first: with a dynamic depth tf2onnx crops one axis only (tensorflow-onnx #2286)."""
    inp = keras.Input((2, depth, 6, 6), name="x")
    x = layers.Conv3DTranspose(3, 3, strides=(1, 2, 2), padding="same", data_format="channels_first")(inp)
    return _random_weights(keras.Model(inp, layers.Activation("relu")(x))), _x(1, 2, 4, 6, 6)
