"""keras.applications architectures as sweep factories: weights=None, small inputs, random batch of 1.

    nodebisect sweep benchmarks/keras_applications.txt --out keras-sweep --jobs 1

(``nodebisect sweep --zoo keras`` now builds the same architectures: ``nodebisect/sweep/zoo_keras.py``.)
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

# name -> smallest input side its builder accepts (at least 32)
SIZES = {
    "MobileNet": 32, "MobileNetV2": 32, "MobileNetV3Small": 32, "EfficientNetB0": 32, "EfficientNetV2B0": 32,
    "ResNet50": 32, "ResNet50V2": 32, "DenseNet121": 32, "NASNetMobile": 32, "ConvNeXtTiny": 32,
    "Xception": 71, "InceptionV3": 75, "VGG16": 32,
}


def build(name: str) -> tuple[Any, np.ndarray]:
    import keras

    size = SIZES[name]
    model = getattr(keras.applications, name)(input_shape=(size, size, 3), weights=None, classes=10)
    return model, np.random.default_rng(0).uniform(0, 1, (1, size, size, 3)).astype(np.float32)


for _name in SIZES:
    globals()[_name] = partial(build, _name)
