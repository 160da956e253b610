"""A MONAI zoo built offline: ``monai.networks.nets`` at small sizes, random weights, 2D and 3D.

Each network is built as users configure it for segmentation or classification
(channels, strides and feature sizes cut down so a 3D volume of 32^3 stays cheap),
in the spatial dimensions users run it in: 3D volumes (CT, MRI) for the segmentation
networks, 2D for the ones also used on slices and pathology tiles. The variant is the
dimensionality (``2d`` / ``3d``). Input: one batch of two single-channel (or RGB for
2D classifiers) images of random intensities. BatchNorm statistics are set by two
training-mode passes so outputs do not vanish (see ``zoos.build_entry``). Popular
networks first (UNet, BasicUNet, SwinUNETR, UNETR, SegResNet, DenseNet121).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nodebisect.sweep.tasks import ModelTask
from nodebisect.sweep.zoo_curated import Entry, build_entry, curated_tasks

VARIANTS = ("3d", "2d")
DEFAULT_VARIANTS = VARIANTS
REQUIRES = ("monai", "monai")
B = 2
_N = "monai.networks.nets."


def _img(dims: int, channels: int = 1, side: int = 0) -> list[tuple[str, str, tuple[int, ...]]]:
    side = side or (32 if dims == 3 else 64)
    return [("#0", "randn", (B, channels) + (side,) * dims)]  # positional: the networks name it x, x_in, inputs


def _entries() -> list[Entry]:
    out: list[Entry] = []
    for dims in (3, 2):
        v = f"{dims}d"
        out += [
            Entry("UNet", v, _N + "UNet", {"spatial_dims": dims, "in_channels": 1, "out_channels": 2, "channels": (8, 16, 32),
                                          "strides": (2, 2), "num_res_units": 2}, _img(dims)),
            Entry("BasicUNet", v, _N + "BasicUNet", {"spatial_dims": dims, "in_channels": 1, "out_channels": 2,
                                                    "features": (8, 8, 16, 32, 64, 8)}, _img(dims)),
            Entry("SwinUNETR", v, _N + "SwinUNETR", {"spatial_dims": dims, "in_channels": 1, "out_channels": 2, "feature_size": 12,
                                                    "depths": (1, 1, 1, 1), "num_heads": (3, 3, 3, 3)}, _img(dims)),
            Entry("UNETR", v, _N + "UNETR", {"spatial_dims": dims, "in_channels": 1, "out_channels": 2, "img_size": (32,) * dims,
                                            "feature_size": 8, "hidden_size": 48, "mlp_dim": 96, "num_heads": 4}, _img(dims, side=32)),
            Entry("SegResNet", v, _N + "SegResNet", {"spatial_dims": dims, "in_channels": 1, "out_channels": 2, "init_filters": 8},
                  _img(dims)),
            Entry("DenseNet121", v, _N + "DenseNet121", {"spatial_dims": dims, "in_channels": 1 if dims == 3 else 3, "out_channels": 2,
                                                        "init_features": 16, "growth_rate": 8, "block_config": (2, 2, 2, 2)},
                  _img(dims, 1 if dims == 3 else 3)),
            Entry("ResNet", v, _N + "ResNet", {"spatial_dims": dims, "n_input_channels": 1, "num_classes": 2, "block": "basic",
                                              "layers": (1, 1, 1, 1), "block_inplanes": (8, 16, 32, 64)}, _img(dims)),
            Entry("AttentionUnet", v, _N + "AttentionUnet", {"spatial_dims": dims, "in_channels": 1, "out_channels": 2,
                                                            "channels": (8, 16, 32), "strides": (2, 2)}, _img(dims)),
            Entry("DynUNet", v, _N + "DynUNet", {"spatial_dims": dims, "in_channels": 1, "out_channels": 2, "kernel_size": (3, 3, 3),
                                                "strides": (1, 2, 2), "upsample_kernel_size": (2, 2), "filters": (8, 16, 32)}, _img(dims)),
            Entry("SegResNetDS", v, _N + "SegResNetDS", {"spatial_dims": dims, "in_channels": 1, "out_channels": 2, "init_filters": 8,
                                                        "blocks_down": (1, 1, 1)}, _img(dims)),
            Entry("MedNeXt", v, _N + "MedNeXt", {"spatial_dims": dims, "in_channels": 1, "out_channels": 2, "init_filters": 8,
                                                "blocks_down": (1, 1, 1, 1), "blocks_bottleneck": 1, "blocks_up": (1, 1, 1, 1)},
                  _img(dims)),
            Entry("BasicUNetPlusPlus", v, _N + "BasicUNetPlusPlus", {"spatial_dims": dims, "in_channels": 1, "out_channels": 2,
                                                                    "features": (8, 8, 16, 32, 64, 8)}, _img(dims)),
            Entry("VNet", v, _N + "VNet", {"spatial_dims": dims, "in_channels": 1, "out_channels": 2}, _img(dims)),
            Entry("HighResNet", v, _N + "HighResNet", {"spatial_dims": dims, "in_channels": 1, "out_channels": 2}, _img(dims, side=16)),
            Entry("ViT", v, _N + "ViT", {"in_channels": 1, "img_size": (32,) * dims, "patch_size": (8,) * dims, "hidden_size": 48,
                                        "mlp_dim": 96, "num_layers": 2, "num_heads": 4, "classification": True, "num_classes": 2,
                                        "spatial_dims": dims}, _img(dims, side=32)),
            Entry("EfficientNetBN", v, _N + "EfficientNetBN", {"model_name": "efficientnet-b0", "pretrained": False, "spatial_dims": dims,
                                                              "in_channels": 1, "num_classes": 2}, _img(dims)),
            Entry("DenseNet169", v, _N + "DenseNet169", {"spatial_dims": dims, "in_channels": 1, "out_channels": 2,
                                                        "init_features": 16, "growth_rate": 8}, _img(dims)),
            Entry("SEResNet50", v, _N + "SEResNet50", {"spatial_dims": dims, "in_channels": 1, "num_classes": 2,
                                                      "layers": (1, 1, 1, 1)}, _img(dims)),
            Entry("SEResNext50", v, _N + "SEResNext50", {"spatial_dims": dims, "in_channels": 1, "num_classes": 2,
                                                        "layers": (1, 1, 1, 1)}, _img(dims)),
            Entry("SwinUNETR.v2", v, _N + "SwinUNETR", {"spatial_dims": dims, "in_channels": 1, "out_channels": 2, "feature_size": 12,
                                                       "depths": (1, 1, 1, 1), "num_heads": (3, 3, 3, 3), "use_v2": True}, _img(dims)),
            Entry("Classifier", v, _N + "Classifier", {"in_shape": (1,) + (32,) * dims, "classes": 2, "channels": (8, 16, 32),
                                                      "strides": (2, 2, 2)}, _img(dims, side=32)),
            Entry("Regressor", v, _N + "Regressor", {"in_shape": (1,) + (32,) * dims, "out_shape": (3,), "channels": (8, 16, 32),
                                                    "strides": (2, 2, 2)}, _img(dims, side=32)),
            Entry("AutoEncoder", v, _N + "AutoEncoder", {"spatial_dims": dims, "in_channels": 1, "out_channels": 1, "channels": (8, 16, 32),
                                                        "strides": (2, 2, 2)}, _img(dims)),
        ]
    out.append(Entry("FlexibleUNet", "2d", _N + "FlexibleUNet", {"in_channels": 3, "out_channels": 2, "backbone": "efficientnet-b0",
                                                                 "pretrained": False, "decoder_channels": (32, 16, 16, 8, 8)},
                     _img(2, 3)))
    return out


ENTRIES = _entries()


def zoo_entries() -> list[str]:
    return [f"{e.arch}.{e.variant}" for e in ENTRIES]


def zoo_tasks(directory: Path, variants: list[str] | None = None, write: bool = True) -> list[ModelTask]:
    return curated_tasks("monai", __name__, ENTRIES, directory, list(variants or DEFAULT_VARIANTS), write)


def build_model(arch: str, variant: str = "3d", record: str = "") -> tuple[Any, tuple[Any, ...]]:
    """``arch`` small with random weights in ``variant`` dimensions, and its example inputs."""
    return build_entry("monai", ENTRIES, arch, variant, record)
