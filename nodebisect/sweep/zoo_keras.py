"""A Keras zoo: ``keras.applications`` architectures with ``weights=None`` at small input sizes.

Listing it imports nothing (the names and sizes are below); TensorFlow and Keras are
imported only inside a model's factory, in the worker that runs it. Each model is
built with random weights (seed 0), ten classes, and the smallest input side its
builder accepts (32, or more where the architecture needs it), fed a batch of one
random image in [0, 1). The models go through tf2onnx (``nodebisect[keras]``); see
``benchmarks/keras_applications.py`` for where these sizes come from. tf2onnx peaks
at several GiB on the ResNet/VGG/Inception families: give those ``--memory-mib 12000``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from nodebisect.sweep.tasks import ModelTask
from nodebisect.sweep.zoos import factory_task, generated_factory, skip_reason

VARIANTS = ("default",)
DEFAULT_VARIANTS = VARIANTS
REQUIRES = ("keras,tf2onnx", "keras")
# name -> smallest input side its builder accepts; the light ones (under 4 GiB through tf2onnx) first
SIZES = {
    "MobileNet": 32, "MobileNetV2": 32, "MobileNetV3Small": 32, "MobileNetV3Large": 32, "EfficientNetB0": 32,
    "EfficientNetV2B0": 32, "DenseNet121": 32, "NASNetMobile": 32, "EfficientNetB1": 32, "EfficientNetV2B1": 32,
    "DenseNet169": 32, "ResNet50": 32, "ResNet50V2": 32, "ConvNeXtTiny": 32, "ResNet101": 32, "ResNet101V2": 32,
    "VGG16": 32, "VGG19": 32, "Xception": 71, "InceptionV3": 75, "InceptionResNetV2": 75,
    # every other architecture of keras.applications, by size (tens to hundreds of M parameters)
    "EfficientNetB2": 32, "EfficientNetV2B2": 32, "EfficientNetB3": 32, "EfficientNetV2B3": 32, "EfficientNetB4": 32,
    "DenseNet201": 32, "EfficientNetV2S": 32, "EfficientNetB5": 32, "EfficientNetB6": 32, "ConvNeXtSmall": 32,
    "EfficientNetV2M": 32, "ResNet152V2": 32, "ResNet152": 32, "EfficientNetB7": 32, "NASNetLarge": 32, "ConvNeXtBase": 32,
    "EfficientNetV2L": 32, "ConvNeXtLarge": 32, "ConvNeXtXLarge": 32,
}


def zoo_entries() -> list[str]:
    return [f"{name}.default" for name in SIZES]


def zoo_tasks(directory: Path, variants: list[str] | None = None, write: bool = True) -> list[ModelTask]:
    return [factory_task(directory, "keras", name, "default", generated_factory("keras", __name__, name, "default"), write,
                         {"library_class": f"keras.applications.{name}"}) for name in SIZES]


def build_model(arch: str, variant: str = "default", record: str = "") -> tuple[Any, Any]:
    """``keras.applications.<arch>(weights=None)`` at its small size, and a batch of one random image.

    Raises:
        ZooSkipped: Keras is not installed, or the zoo does not know ``arch``.
    """
    from nodebisect.sweep.zoo import ZooSkipped

    started = time.monotonic()
    info: dict[str, Any] = {"family": "keras", "class": arch, "variant": variant, "repairs": [], "flags": []}
    try:
        if arch not in SIZES:
            raise ZooSkipped(f"skipped (builder): the keras zoo has no {arch}")
        try:
            import keras
            import numpy as np
        except ImportError as exc:
            raise ZooSkipped(f"skipped (environment): {skip_reason(exc)} (pip install 'nodebisect[keras]')") from exc
        size = SIZES[arch]
        keras.utils.set_random_seed(0)
        model = getattr(keras.applications, arch)(input_shape=(size, size, 3), weights=None, classes=10)
        info["params"] = int(model.count_params())
        info["inputs"] = {"input": [1, size, size, 3]}
        info["seconds"] = round(time.monotonic() - started, 2)
        return model, np.random.default_rng(0).uniform(0, 1, (1, size, size, 3)).astype(np.float32)
    except ZooSkipped as exc:
        info["skipped"] = str(exc)
        raise
    finally:
        if record:
            Path(record).write_text(json.dumps(info, default=str))
