"""A ``diffusers`` zoo built offline: small configs (the library's own test sizes), random weights.

diffusers' sizes are coupled inside the modeling code (group norms over the channel
counts, patch sizes against the sample size, ControlNet's conditioning image at
pixel resolution), so each architecture is a curated small config rather than a
generic shrink. Inputs are what a pipeline feeds: a noisy ``sample`` (or packed
latents), integer ``timestep`` per batch element, ``encoder_hidden_states`` from a
text encoder, pooled projections and micro-conditioning ids where the model takes
them. Every model is called with ``return_dict=False`` and returns a flat tuple of
tensors, as users export it. Popular architectures first (Stable Diffusion's UNet
and VAE, ControlNet, DiT/PixArt/SD3/Flux backbones), so ``--limit N`` is useful.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nodebisect.sweep.tasks import ModelTask
from nodebisect.sweep.zoo_curated import Entry, build_entry, curated_tasks

# masked: the text-conditioned models also given the prompt's padding mask (encoder_attention_mask), as the
# PixArt and Sana pipelines feed it: the second prompt's last PAD tokens are padding.
VARIANTS = ("default", "masked")
DEFAULT_VARIANTS = VARIANTS
PAD = 3
REQUIRES = ("diffusers", "diffusers")
B = 2  # batch: classifier-free guidance runs two
_T = ("timestep", "timestep", (B,))
_UNET = {"block_out_channels": (32, 64), "layers_per_block": 2, "sample_size": 32, "norm_num_groups": 32}
_COND_UNET = {**_UNET, "in_channels": 4, "out_channels": 4, "cross_attention_dim": 32, "attention_head_dim": 8,
              "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"), "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D")}
_VAE = {"block_out_channels": (32, 64), "in_channels": 3, "out_channels": 3, "latent_channels": 4, "norm_num_groups": 32,
        "down_block_types": ("DownEncoderBlock2D", "DownEncoderBlock2D"), "up_block_types": ("UpDecoderBlock2D", "UpDecoderBlock2D")}
_NO_DICT = {"return_dict": False}

ENTRIES: list[Entry] = [
    Entry("UNet2DConditionModel", "default", "diffusers.UNet2DConditionModel", _COND_UNET,
          [("sample", "randn", (B, 4, 32, 32)), _T, ("encoder_hidden_states", "randn", (B, 8, 32))], constants=_NO_DICT),
    Entry("AutoencoderKL", "default", "diffusers.AutoencoderKL", _VAE, [("sample", "randn", (B, 3, 32, 32))], constants=_NO_DICT),
    Entry("AutoencoderKL.decode", "default", "diffusers.AutoencoderKL", _VAE, [("z", "randn", (B, 4, 16, 16))],
          method="decode", constants=_NO_DICT),
    Entry("UNet2DModel", "default", "diffusers.UNet2DModel",
          {**_UNET, "in_channels": 3, "out_channels": 3, "down_block_types": ("DownBlock2D", "AttnDownBlock2D"),
           "up_block_types": ("AttnUpBlock2D", "UpBlock2D"), "attention_head_dim": 8},
          [("sample", "randn", (B, 3, 32, 32)), _T], constants=_NO_DICT),
    Entry("ControlNetModel", "default", "diffusers.ControlNetModel",
          {**{k: v for k, v in _COND_UNET.items() if k not in ("sample_size", "out_channels", "up_block_types")},
           "conditioning_embedding_out_channels": (16, 32)},
          [("sample", "randn", (B, 4, 32, 32)), _T, ("encoder_hidden_states", "randn", (B, 8, 32)),
           ("controlnet_cond", "randn", (B, 3, 64, 64))], constants=_NO_DICT),
    Entry("UNet2DConditionModel.sdxl", "default", "diffusers.UNet2DConditionModel",
          {**_COND_UNET, "addition_embed_type": "text_time", "addition_time_embed_dim": 8,
           "projection_class_embeddings_input_dim": 80, "transformer_layers_per_block": (1, 2)},
          [("sample", "randn", (B, 4, 32, 32)), _T, ("encoder_hidden_states", "randn", (B, 8, 32)),
           ("added_cond_kwargs.text_embeds", "randn", (B, 32)), ("added_cond_kwargs.time_ids", "randn", (B, 6))],
          constants=_NO_DICT),
    Entry("DiTTransformer2DModel", "default", "diffusers.DiTTransformer2DModel",
          {"num_attention_heads": 2, "attention_head_dim": 8, "in_channels": 4, "out_channels": 8, "num_layers": 2,
           "sample_size": 8, "patch_size": 2, "num_embeds_ada_norm": 1000},
          [("hidden_states", "randn", (B, 4, 8, 8)), _T, ("class_labels", "int:1000", (B,))], constants=_NO_DICT),
    Entry("PixArtTransformer2DModel", "default", "diffusers.PixArtTransformer2DModel",
          {"sample_size": 8, "num_layers": 2, "patch_size": 2, "attention_head_dim": 8, "num_attention_heads": 3,
           "caption_channels": 32, "in_channels": 4, "cross_attention_dim": 24, "out_channels": 8, "attention_bias": True,
           "activation_fn": "gelu-approximate", "num_embeds_ada_norm": 1000, "norm_type": "ada_norm_single",
           "norm_elementwise_affine": False, "norm_eps": 1e-6},
          [("hidden_states", "randn", (B, 4, 8, 8)), ("encoder_hidden_states", "randn", (B, 8, 32)), _T],
          constants={**_NO_DICT, "added_cond_kwargs": {"resolution": None, "aspect_ratio": None}}),
    Entry("SD3Transformer2DModel", "default", "diffusers.SD3Transformer2DModel",
          {"sample_size": 16, "patch_size": 2, "in_channels": 4, "num_layers": 2, "attention_head_dim": 8,
           "num_attention_heads": 4, "caption_projection_dim": 32, "joint_attention_dim": 32, "pooled_projection_dim": 64,
           "out_channels": 4},
          [("hidden_states", "randn", (B, 4, 16, 16)), ("encoder_hidden_states", "randn", (B, 8, 32)),
           ("pooled_projections", "randn", (B, 64)), _T], constants=_NO_DICT),
    Entry("FluxTransformer2DModel", "default", "diffusers.FluxTransformer2DModel",
          {"patch_size": 1, "in_channels": 4, "num_layers": 1, "num_single_layers": 1, "attention_head_dim": 16,
           "num_attention_heads": 2, "joint_attention_dim": 32, "pooled_projection_dim": 32, "axes_dims_rope": (4, 4, 8)},
          [("hidden_states", "randn", (B, 16, 4)), ("encoder_hidden_states", "randn", (B, 8, 32)),
           ("pooled_projections", "randn", (B, 32)), _T, ("img_ids", "randn", (16, 3)), ("txt_ids", "zeros", (8, 3))],
          constants=_NO_DICT),
    Entry("UNet3DConditionModel", "default", "diffusers.UNet3DConditionModel",
          {"block_out_channels": (32, 64), "layers_per_block": 1, "sample_size": 16, "norm_num_groups": 32,
           "in_channels": 4, "out_channels": 4, "cross_attention_dim": 32, "attention_head_dim": 8,
           "down_block_types": ("CrossAttnDownBlock3D", "DownBlock3D"), "up_block_types": ("UpBlock3D", "CrossAttnUpBlock3D")},
          [("sample", "randn", (B, 4, 2, 16, 16)), _T, ("encoder_hidden_states", "randn", (B, 8, 32))], constants=_NO_DICT),
    Entry("VQModel", "default", "diffusers.VQModel",
          {"block_out_channels": (32, 64), "in_channels": 3, "out_channels": 3, "latent_channels": 3, "norm_num_groups": 32,
           "down_block_types": ("DownEncoderBlock2D", "DownEncoderBlock2D"), "up_block_types": ("UpDecoderBlock2D", "UpDecoderBlock2D")},
          [("sample", "randn", (B, 3, 32, 32))], constants=_NO_DICT),
    Entry("AutoencoderTiny", "default", "diffusers.AutoencoderTiny",
          {"in_channels": 3, "out_channels": 3, "encoder_block_out_channels": (32, 32), "decoder_block_out_channels": (32, 32),
           "num_encoder_blocks": (1, 2), "num_decoder_blocks": (2, 1), "latent_channels": 4},
          [("sample", "randn", (B, 3, 32, 32))], constants=_NO_DICT),
    Entry("PriorTransformer", "default", "diffusers.PriorTransformer",
          {"num_attention_heads": 2, "attention_head_dim": 4, "num_layers": 2, "embedding_dim": 8, "num_embeddings": 7,
           "additional_embeddings": 4},
          [("hidden_states", "randn", (B, 8)), _T, ("proj_embedding", "randn", (B, 8)), ("encoder_hidden_states", "randn", (B, 7, 8))],
          constants=_NO_DICT),
    Entry("UNet1DModel", "default", "diffusers.UNet1DModel",
          {"block_out_channels": (32, 64), "in_channels": 14, "out_channels": 14, "time_embedding_type": "positional",
           "use_timestep_embedding": True, "flip_sin_to_cos": False, "freq_shift": 1.0, "out_block_type": "OutConv1DBlock",
           "mid_block_type": "MidResTemporalBlock1D", "down_block_types": ("DownResnetBlock1D", "DownResnetBlock1D"),
           "up_block_types": ("UpResnetBlock1D",), "act_fn": "swish"},
          [("sample", "randn", (B, 14, 16)), _T], constants=_NO_DICT),
    Entry("SanaTransformer2DModel", "default", "diffusers.SanaTransformer2DModel",
          {"patch_size": 1, "in_channels": 4, "out_channels": 4, "num_layers": 1, "attention_head_dim": 4,
           "num_attention_heads": 2, "num_cross_attention_heads": 2, "cross_attention_head_dim": 4, "cross_attention_dim": 8,
           "caption_channels": 8, "sample_size": 32},
          [("hidden_states", "randn", (B, 4, 32, 32)), ("encoder_hidden_states", "randn", (B, 8, 8)), _T], constants=_NO_DICT),
    Entry("Transformer2DModel", "default", "diffusers.Transformer2DModel",
          {"num_attention_heads": 2, "attention_head_dim": 16, "in_channels": 32, "num_layers": 1, "norm_num_groups": 32,
           "cross_attention_dim": 32},
          [("hidden_states", "randn", (B, 32, 8, 8)), ("encoder_hidden_states", "randn", (B, 8, 32))], constants=_NO_DICT),
    Entry("CogVideoXTransformer3DModel", "default", "diffusers.CogVideoXTransformer3DModel",
          {"num_attention_heads": 4, "attention_head_dim": 8, "in_channels": 4, "out_channels": 4, "time_embed_dim": 2,
           "text_embed_dim": 8, "num_layers": 1, "sample_width": 8, "sample_height": 8, "sample_frames": 8, "patch_size": 2,
           "temporal_compression_ratio": 4, "max_text_seq_length": 8},
          [("hidden_states", "randn", (B, 1, 4, 8, 8)), ("encoder_hidden_states", "randn", (B, 8, 8)), _T], constants=_NO_DICT),
    Entry("WanTransformer3DModel", "default", "diffusers.WanTransformer3DModel",
          {"patch_size": (1, 2, 2), "num_attention_heads": 2, "attention_head_dim": 12, "in_channels": 4, "out_channels": 4,
           "text_dim": 16, "freq_dim": 256, "ffn_dim": 32, "num_layers": 2, "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads",
           "rope_max_seq_len": 32},
          [("hidden_states", "randn", (B, 4, 2, 16, 16)), _T, ("encoder_hidden_states", "randn", (B, 12, 16))], constants=_NO_DICT),
    Entry("AuraFlowTransformer2DModel", "default", "diffusers.AuraFlowTransformer2DModel",
          {"sample_size": 32, "patch_size": 2, "in_channels": 4, "num_mmdit_layers": 1, "num_single_dit_layers": 1,
           "attention_head_dim": 8, "num_attention_heads": 4, "caption_projection_dim": 32, "joint_attention_dim": 32,
           "out_channels": 4, "pos_embed_max_size": 256},
          [("hidden_states", "randn", (B, 4, 32, 32)), ("encoder_hidden_states", "randn", (B, 8, 32)), _T], constants=_NO_DICT),
    Entry("UNetSpatioTemporalConditionModel", "default", "diffusers.UNetSpatioTemporalConditionModel",
          {"block_out_channels": (32, 64), "sample_size": 32, "in_channels": 8, "out_channels": 4, "layers_per_block": 2,
           "cross_attention_dim": 32, "num_attention_heads": (8, 16), "projection_class_embeddings_input_dim": 96,
           "addition_time_embed_dim": 32, "down_block_types": ("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
           "up_block_types": ("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal")},
          [("sample", "randn", (B, 2, 8, 32, 32)), _T, ("encoder_hidden_states", "randn", (B, 1, 32)),
           ("added_time_ids", "randn", (B, 3))], constants=_NO_DICT),
    Entry("AsymmetricAutoencoderKL", "default", "diffusers.AsymmetricAutoencoderKL",
          {"in_channels": 3, "out_channels": 3, "down_block_types": ("DownEncoderBlock2D", "DownEncoderBlock2D"),
           "down_block_out_channels": (32, 64), "layers_per_down_block": 1, "up_block_types": ("UpDecoderBlock2D", "UpDecoderBlock2D"),
           "up_block_out_channels": (32, 64), "layers_per_up_block": 1, "latent_channels": 4, "norm_num_groups": 32, "sample_size": 32},
          [("sample", "randn", (B, 3, 32, 32))], constants=_NO_DICT),
    Entry("AutoencoderKLTemporalDecoder", "default", "diffusers.AutoencoderKLTemporalDecoder",
          {"block_out_channels": (32, 64), "in_channels": 3, "out_channels": 3, "down_block_types": ("DownEncoderBlock2D", "DownEncoderBlock2D"),
           "latent_channels": 4, "layers_per_block": 2},
          [("sample", "randn", (B, 3, 32, 32))], constants={**_NO_DICT, "num_frames": 2}),
]

MASKED = ("UNet2DConditionModel", "UNet2DConditionModel.sdxl", "PixArtTransformer2DModel", "SanaTransformer2DModel",
          "Transformer2DModel")


def _masked(entry: Entry) -> Entry:
    """``entry`` with a padding mask over its text tokens."""
    tokens = next(shape[1] for name, _, shape in entry.inputs if name == "encoder_hidden_states")
    return Entry(entry.arch, "masked", entry.cls, entry.config,
                 [*entry.inputs, ("encoder_attention_mask", f"padmask:{PAD}", (B, tokens))], entry.method, entry.constants)


ENTRIES += [_masked(e) for e in ENTRIES if e.arch in MASKED]


def zoo_entries() -> list[str]:
    return [f"{e.arch}.{e.variant}" for e in ENTRIES]


def zoo_tasks(directory: Path, variants: list[str] | None = None, write: bool = True) -> list[ModelTask]:
    return curated_tasks("diffusers", __name__, ENTRIES, directory, list(variants or DEFAULT_VARIANTS), write)


def build_model(arch: str, variant: str = "default", record: str = "") -> tuple[Any, tuple[Any, ...]]:
    """``arch`` small with random weights, and its example inputs (see ``zoos.build_entry``)."""
    return build_entry("diffusers", ENTRIES, arch, variant, record)
