"""A ``transformers`` zoo built offline: small configs, random weights, no downloads.

One generic builder, no per-architecture code (see ZOO-NOTES): start from the
config class's defaults, shrink size attributes by name (layers 2, hidden 64,
heads 4, key/value heads 2, intermediate 128, vocabulary 1000, images 64 px),
recurse into sub-configs, count parameters on the meta device before allocating,
then build the model and its example inputs from ``main_input_name``, the
forward signature and the config.

Variants, each its own sweep model:

- ``default``: the config's defaults (cache on, the library's attention) and the
  model's own return type: what users export, so a ``DynamicCache`` that will not
  export is a finding, not noise;
- ``export-friendly``: ``use_cache=False`` and a wrapper returning a flat tuple of tensors;
- ``eager``: export-friendly with ``attn_implementation="eager"`` (opt-in: a labelled retry).

The sweep hands each model to ``locate`` as a generated factory file
(``DIR/zoo/NAME.py:build``) that calls ``build_model``; what the builder learned
(parameters, repairs, flags) goes to ``NAME.build.json`` beside it. Models that
cannot be built for reasons outside the model (a missing optional package, config
defaults that do not construct) raise ``ZooSkipped``, whose message starts with
``skipped (``: the sweep reports them as skipped, not failed.
"""

from __future__ import annotations

import keyword
import re

import dataclasses
import inspect
import json
import time
from pathlib import Path
from typing import Any

from nodebisect.sweep.tasks import ModelTask

VARIANTS = ("default", "export-friendly", "eager")
DEFAULT_VARIANTS = ("default", "export-friendly")
REQUIRES = ("transformers", "zoo")  # (package, the extra that installs it): the zoos registry checks it
MAX_PARAMS = 60_000_000
REPAIR_TRIES = 6
LEFT_PAD = 3  # padded positions at the start of the second text sequence
REPAIR_BUDGET_S = 60.0
SMALL = {"layers": 2, "hidden": 64, "heads": 4, "kv_heads": 2, "intermediate": 128, "vocab": 1000, "image": 64}

# Popular architectures first, in the classes users pass, so --limit N is reproducible and useful.
POPULAR = (
    "BertForSequenceClassification", "GPT2LMHeadModel", "LlamaForCausalLM", "ViTForImageClassification",
    "T5ForConditionalGeneration", "BartForConditionalGeneration", "DistilBertForSequenceClassification",
    "RobertaForSequenceClassification", "GPTNeoForCausalLM", "OPTForCausalLM", "BloomForCausalLM",
    "MistralForCausalLM", "Qwen2ForCausalLM", "PhiForCausalLM", "GemmaForCausalLM", "FalconForCausalLM",
    "WhisperForConditionalGeneration", "Wav2Vec2ForSequenceClassification", "SwinForImageClassification",
    "ConvNextForImageClassification", "ResNetForImageClassification", "MobileViTForImageClassification",
    "DeiTForImageClassification", "ElectraForSequenceClassification", "AlbertForSequenceClassification",
    "Qwen3ForCausalLM", "Gemma2ForCausalLM", "Phi3ForCausalLM", "GPTJForCausalLM", "GPTNeoXForCausalLM",
    "MBartForConditionalGeneration", "PegasusForConditionalGeneration", "BeitForImageClassification",
    "HubertForSequenceClassification", "WavLMForSequenceClassification", "XLMRobertaForSequenceClassification",
    "DebertaV2ForSequenceClassification", "MobileNetV2ForImageClassification", "EfficientNetForImageClassification",
    "RegNetForImageClassification", "SegformerForImageClassification", "Dinov2ForImageClassification",
    "StableLmForCausalLM", "OlmoForCausalLM", "CodeGenForCausalLM", "BertForMaskedLM", "GPT2ForSequenceClassification",
    "LlamaForSequenceClassification", "MistralForSequenceClassification",
)
# After the popular ones: every architecture of these heads, by model type.
MAPPINGS = (
    "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
    "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES", "MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES",
    "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES", "MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES",
)

_LAYERS = {"num_hidden_layers", "num_layers", "n_layer", "n_layers", "encoder_layers", "decoder_layers",
           "num_encoder_layers", "num_decoder_layers", "num_decoder_layer"}
_HIDDEN = {"hidden_size", "d_model", "n_embd", "n_embed", "dim", "embed_dim", "embedding_dim"}
_HEADS = {"num_attention_heads", "n_head", "n_heads", "num_heads", "encoder_attention_heads", "decoder_attention_heads"}
_KV_HEADS = {"num_key_value_heads", "num_kv_heads", "multi_query_group_num"}
_INTERMEDIATE = {"intermediate_size", "ffn_dim", "encoder_ffn_dim", "decoder_ffn_dim", "n_inner", "d_ff", "hidden_dim",
                 "decoder_intermediate_size"}
_IMAGE = {"image_size"}
_POSITIONS = {"max_source_positions": 64, "max_target_positions": 64, "num_conv_pos_embeddings": 16}


class ZooSkipped(Exception):
    """Not a failure of the model: the environment or the builder cannot produce it."""


# ----------------------------------------------------------------------------- the list
def zoo_entries() -> list[str]:
    """Model class names: the popular ones first, then every other one of the listed heads."""
    from transformers.models.auto import modeling_auto

    names = list(POPULAR)
    seen = set(names)
    for mapping in MAPPINGS:
        for _model_type, cls in sorted(getattr(modeling_auto, mapping, {}).items()):
            for name in (cls if isinstance(cls, (tuple, list)) else (cls,)):
                if name not in seen:
                    seen.add(name)
                    names.append(name)
    return names


def zoo_tasks(directory: Path, variants: list[str] | None = None, write: bool = True) -> list[ModelTask]:
    """One task per (class, variant), with its generated factory file written to ``directory``."""
    variants = list(variants or ("default", "export-friendly"))
    for variant in variants:
        if variant not in VARIANTS:
            from nodebisect.errors import BadInputError

            raise BadInputError(f"unknown zoo variant {variant!r}", tip="one of " + ", ".join(VARIANTS))
    tasks = []
    for cls in zoo_entries():
        for variant in variants:
            name = f"{cls}.{variant}"
            source = factory_source(cls, variant)
            path = directory / f"{name}.py"
            if write:
                directory.mkdir(parents=True, exist_ok=True)
                if not path.exists() or path.read_text() != source:
                    path.write_text(source)
            tasks.append(ModelTask(name=name, spec=f"{path}:build", factory_source=source, group="zoo:transformers",
                                   meta={"family": "transformers", "class": cls, "variant": variant}))
    return tasks


def factory_source(cls: str, variant: str) -> str:
    """The generated factory: ``build()`` returns ``(module, example_inputs)``."""
    return (
        f'"""Generated by nodebisect sweep --zoo transformers: {cls}, variant {variant}."""\n\n\n'
        "def build():\n"
        "    from nodebisect.sweep.zoo import build_model\n\n"
        f"    return build_model({cls!r}, variant={variant!r}, record=__file__[:-3] + \".build.json\")\n"
    )


# ----------------------------------------------------------------------------- the builder
def build_model(cls_name: str, variant: str = "default", record: str = "") -> tuple[Any, tuple[Any, ...]]:
    """Build ``cls_name`` small, with random weights, and its example inputs.

    Args:
        cls_name: a ``transformers`` model class (``BertForSequenceClassification``).
        variant: ``default`` | ``export-friendly`` | ``eager``.
        record: where to write what the builder learned (JSON), or "".

    Raises:
        ZooSkipped: an optional package is missing, the config defaults do not
            construct, the model stays too big, or it is nondeterministic.
    """
    started = time.monotonic()
    info: dict[str, Any] = {"class": cls_name, "variant": variant, "repairs": [], "flags": []}
    try:
        model_cls = _model_class(cls_name)
        config_cls, overrides = small_overrides(model_cls, variant, cls_name)
        try:
            model, names, values, first = _attempt(model_cls, config_cls, overrides, info)
        except (ZooSkipped, ImportError):
            raise
        except Exception as exc:  # noqa: BLE001 - error-driven repair: undo one shrink at a time
            model, names, values, first = _repair(model_cls, config_cls, overrides, info, exc)
        floats = [t for t in first if t.is_floating_point() and t.numel()]
        if floats and max(float(t.abs().max()) for t in floats) < 1e-6:
            info["flags"].append("vacuous_match")
        module = wrap(model, names, flat=variant != "default")
        info["seconds"] = round(time.monotonic() - started, 2)
        return module, tuple(values)
    except ZooSkipped as exc:
        info["skipped"] = str(exc)
        raise
    except ImportError as exc:  # a missing optional package (timm, scipy, PIL, ...)
        info["skipped"] = f"skipped (environment): {_first(exc)}"
        raise ZooSkipped(info["skipped"]) from exc
    finally:
        if record:
            Path(record).write_text(json.dumps(info, default=str))


def _attempt(model_cls: Any, config_cls: Any, overrides: dict[str, Any], info: dict[str, Any]) -> tuple[Any, list[str], list[Any], list[Any]]:
    """Config, parameter count, model, inputs and two eager runs: one try of the builder."""
    import torch

    config = make_config(config_cls, overrides)
    info["config"] = {k: v for k, v in config.to_dict().items() if isinstance(v, (int, float, str, bool)) and k != "transformers_version"}
    params = meta_param_count(model_cls, config)
    info["params"] = params
    if params > MAX_PARAMS:
        raise ZooSkipped(f"skipped (too big): {params / 1e6:.0f} M parameters after shrinking (limit {MAX_PARAMS / 1e6:.0f} M)")
    torch.manual_seed(0)
    model = model_cls(config).eval()
    names, values = example_inputs(model, config)
    info["inputs"] = {n: list(v.shape) for n, v in zip(names, values)}
    if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        _reset_batchnorm(model, names, values)
        if "BatchNorm" not in " ".join(info["repairs"]):
            info["repairs"].append("BatchNorm statistics set by two training-mode passes on the example input")
    with torch.no_grad():
        first = flat_tensors(model(**dict(zip(names, values))))
        torch.manual_seed(1)
        again = flat_tensors(model(**dict(zip(names, values))))
    if len(first) != len(again) or any(not torch.equal(a, b) for a, b in zip(first, again)):
        raise ZooSkipped("skipped (nondeterministic): two eager runs on the same input differ (random masking?)")
    return model, names, values, first


def _repair(model_cls: Any, config_cls: Any, overrides: dict[str, Any], info: dict[str, Any], error: Exception) -> tuple[Any, list[str], list[Any], list[Any]]:
    """Retry with one shrink undone, most likely culprits first; the fewest changes win.

    Sizes coupled inside the modeling code (Swin's window vs the image size, GPT-Neo's
    per-layer attention pattern vs the depth) break a generic shrink; undoing the one
    shrink that breaks them keeps the model small everywhere else.
    """
    first_error = f"{type(error).__name__}: {_first(error)}"
    priority = [k for k in ("image_size", *sorted(_LAYERS), *sorted(_HEADS), *sorted(_KV_HEADS), *sorted(_HIDDEN)) if k in overrides]
    priority += [k for k in overrides if k not in priority and k not in ("use_cache", "attn_implementation", "pad_token_id")]
    deadline = time.monotonic() + REPAIR_BUDGET_S
    for key in priority[:REPAIR_TRIES]:
        if time.monotonic() > deadline:
            break
        trial = {k: v for k, v in overrides.items() if k != key}
        try:
            built = _attempt(model_cls, config_cls, trial, info)
        except ZooSkipped:
            raise
        except Exception:  # noqa: BLE001 - try the next shrink
            continue
        info["repairs"].append(f"kept the default {key} (the shrunk one failed: {first_error})")
        return built
    info["build_error"] = first_error
    raise RuntimeError(f"zoo builder: {first_error}") from error


def make_config(config_cls: Any, overrides: dict[str, Any]) -> Any:
    try:
        return config_cls(**overrides)
    except ImportError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"the shrunk {config_cls.__name__} does not construct: {_first(exc)}") from exc


def small_overrides(model_cls: Any, variant: str, cls_name: str = "") -> tuple[Any, dict[str, Any]]:
    """The config class, and constructor overrides shrinking it and setting the variant."""
    config_cls = model_cls.config_class
    try:
        defaults = config_cls()
    except ImportError as exc:
        raise ZooSkipped(f"skipped (environment): {_first(exc)}") from exc
    except Exception as exc:  # noqa: BLE001 - config defaults that do not construct are not the model's fault
        raise ZooSkipped(f"skipped (environment): {config_cls.__name__}() defaults do not construct: {_first(exc)}") from exc
    overrides = shrink(defaults)
    if variant in ("export-friendly", "eager") and "use_cache" in _init_fields(config_cls):
        overrides["use_cache"] = False
    if variant == "eager":
        overrides["attn_implementation"] = "eager"
    if cls_name.endswith("ForSequenceClassification") and getattr(defaults, "pad_token_id", 0) is None:
        overrides["pad_token_id"] = 0  # batch 2 needs a pad token to find each row's last token
    return config_cls, overrides


def shrink(config: Any) -> dict[str, Any]:
    """Constructor overrides that make ``config`` small; derived fields are left to recompute."""
    fields = _init_fields(type(config))
    values = config.to_dict() if hasattr(config, "to_dict") else dict(vars(config))
    old_layers = next((values[k] for k in ("num_hidden_layers", "num_layers", "n_layer") if isinstance(values.get(k), int)), None)
    heads = SMALL["heads"]
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields or key.startswith("_") or isinstance(value, bool):
            continue
        sub = getattr(config, key, None)
        if key.endswith("_config") and hasattr(sub, "to_dict"):
            out[key] = {**sub.to_dict(), **shrink(sub)}
            continue
        new = _shrunk_value(key, value, heads, values)
        if new is not _KEEP:
            out[key] = new
        elif isinstance(value, list) and old_layers and len(value) == old_layers and old_layers > SMALL["layers"] \
                and key not in ("depths", "hidden_sizes"):
            out[key] = value[: SMALL["layers"]]  # a per-layer list (layer_types, ...) cut to the new depth
    vocab = out.get("vocab_size", values.get("vocab_size"))
    if isinstance(vocab, int):
        for key, value in values.items():
            if key.endswith("_token_id") and key in fields:
                remapped = _remap_token(value, vocab)
                if remapped != value:
                    out[key] = remapped
    return out


_KEEP = object()


def _shrunk_value(key: str, value: Any, heads: int, values: dict[str, Any]) -> Any:
    small = SMALL
    if isinstance(value, int):
        if key in _LAYERS and value > small["layers"]:
            return small["layers"]
        if key in _HIDDEN and value > small["hidden"]:
            return small["hidden"]
        if key in _HEADS and value > heads:
            return heads
        if key in _KV_HEADS and value > small["kv_heads"]:
            return small["kv_heads"]
        if key in _INTERMEDIATE and value > small["intermediate"]:
            return small["intermediate"]
        if key == "vocab_size" and value > small["vocab"]:
            return small["vocab"]
        if key in _IMAGE and value > small["image"]:
            return small["image"]
        if key in _POSITIONS and value > _POSITIONS[key]:
            return _POSITIONS[key]
        if key == "embedding_size" and value > 16 and "hidden_sizes" in values:
            return 16  # ResNet/RegNet stems
        if key == "embedding_size" and value > small["hidden"]:
            return small["hidden"]
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        if key == "depths":
            return [1] * len(value)
        if key == "hidden_sizes":
            return [16 * 2**i for i in range(len(value))]
        if key in _HEADS:
            return [2] * len(value)
        if key == "conv_dim":
            return [32] * len(value)
    return _KEEP


def _remap_token(value: Any, vocab: int) -> Any:
    if isinstance(value, int) and value >= vocab:
        return vocab - 1 - (value % 8)
    if isinstance(value, list):
        return [_remap_token(v, vocab) for v in value]
    return value


def meta_param_count(model_cls: Any, config: Any) -> int:
    """Parameters of the model without allocating them (built on the meta device)."""
    import torch

    try:
        with torch.device("meta"):
            model = model_cls(config)
    except ImportError as exc:
        raise ZooSkipped(f"skipped (environment): {_first(exc)}") from exc
    return sum(p.numel() for p in model.parameters())


def example_inputs(model: Any, config: Any) -> tuple[list[str], list[Any]]:
    """Inputs from the model's main input name, its forward signature and the config."""
    import torch

    g = torch.Generator().manual_seed(0)
    params = inspect.signature(model.forward).parameters
    main = getattr(model, "main_input_name", "input_ids")
    batch, seq = 2, 8
    names: list[str] = []
    values: list[Any] = []

    def add(name: str, value: Any) -> None:
        if name in params and name not in names:
            names.append(name)
            values.append(value)

    text = getattr(config, "get_text_config", lambda: config)()
    vocab = int(getattr(text, "vocab_size", None) or getattr(config, "vocab_size", None) or 100)
    if main == "input_ids":
        add("input_ids", torch.randint(3, max(4, vocab), (batch, seq), generator=g))
        # A batch as batched generation feeds it: the second sequence left-padded. Its first
        # query rows then attend to nothing under a causal mask, the case attention lowerings
        # get wrong; an all-ones mask would never reach it.
        mask = torch.ones(batch, seq, dtype=torch.long)
        mask[1, :LEFT_PAD] = 0
        add("attention_mask", mask)
    elif main == "pixel_values":
        vision = getattr(config, "vision_config", None) or config
        size = getattr(vision, "image_size", 64)
        size = size[0] if isinstance(size, (list, tuple)) else int(size or 64)
        channels = int(getattr(vision, "num_channels", 3) or 3)
        add("pixel_values", torch.randn(batch, channels, size, size, generator=g))
    elif main == "input_values":
        add("input_values", torch.randn(batch, 3200, generator=g))
    elif main == "input_features":
        mel = getattr(config, "num_mel_bins", None)
        if mel:
            frames = 2 * int(getattr(config, "max_source_positions", 64) or 64)
            add("input_features", torch.randn(batch, int(mel), frames, generator=g))
        else:
            feat = int(getattr(config, "input_feat_per_channel", None) or getattr(config, "feature_size", None) or 80)
            add("input_features", torch.randn(batch, 32, feat, generator=g))
    else:
        raise ZooSkipped(f"skipped (builder): no input rule for main input {main!r}")
    if getattr(config, "is_encoder_decoder", False) and "decoder_input_ids" in params:
        add("decoder_input_ids", torch.randint(3, max(4, vocab), (batch, 4), generator=g))
    return names, values


def flat_tensors(output: Any) -> list[Any]:
    """Every tensor in a model output (ModelOutput, tuples, dicts), in order; caches and None dropped."""
    import torch

    if isinstance(output, torch.Tensor):
        return [output]
    if hasattr(output, "to_tuple"):
        output = output.to_tuple()
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (list, tuple)):
        return [t for item in output for t in flat_tensors(item)]
    return []


def wrap(model: Any, names: list[str], flat: bool) -> Any:
    """Take the inputs positionally; return a flat tuple of tensors when ``flat``."""

    def call(inner: Any, *args: Any) -> Any:
        out = inner(**dict(zip(names, args)))
        return tuple(flat_tensors(out)) if flat else out

    return zoo_module(model, names, call)


def zoo_module(model: Any, names: list[str], call: Any) -> Any:
    """A module holding ``model`` (its parameters registered) whose ``forward(<names>)`` returns ``call(model, *args)``.

    Every zoo builds its wrapper here: only how the positional inputs reach the model differs.
    """
    import torch

    class ZooModel(torch.nn.Module):
        """Positional inputs, named after the model's own, mapped onto the model by ``call``."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def run(self, *args: Any) -> Any:
            return call(self.model, *args)

    return named_inputs(ZooModel, names)().eval()


def named_inputs(cls: Any, names: list[str]) -> Any:
    """``cls`` with a ``forward(self, <names>)`` calling its ``run(*args)``: the exported graph's inputs keep the names.

    A ``forward(*args)`` exports its inputs as ``args_0, args_1``: nodebisect then finds no
    ``attention_mask`` and cannot say that a divergence lives only at masked positions
    (issue #22). Names that are not identifiers (``#0``, ``added_cond_kwargs.text_embeds``)
    become ones; the order stays the positional one.
    """
    params: list[str] = []
    for raw in names:
        name = re.sub(r"\W", "_", raw).strip("_") or "input"
        name = f"in_{name}" if name[0].isdigit() or keyword.iskeyword(name) or name == "self" else name
        while name in params:
            name += "_"
        params.append(name)
    scope: dict[str, Any] = {}
    exec(f"def forward(self, {', '.join(params)}):\n    return self.run({', '.join(params)})\n", scope)  # noqa: S102 - identifiers only
    forward = scope["forward"]
    forward.__doc__ = f"The zoo model on its inputs {', '.join(names)} (positional, named for the exported graph)."
    return type(cls.__name__, (cls,), {"forward": forward})


def _reset_batchnorm(model: Any, names: list[str], values: list[Any]) -> None:
    """Two training-mode passes so BatchNorm's running statistics fit the input (no vacuous outputs)."""
    import torch

    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(**dict(zip(names, values)))
    model.eval()


def _model_class(name: str) -> Any:
    import transformers

    try:
        return getattr(transformers, name)
    except ImportError as exc:
        raise ZooSkipped(f"skipped (environment): {_first(exc)}") from exc
    except AttributeError as exc:
        raise ZooSkipped(f"skipped (environment): transformers {transformers.__version__} has no {name}") from exc


def _init_fields(config_cls: Any) -> set[str]:
    if dataclasses.is_dataclass(config_cls):
        return {f.name for f in dataclasses.fields(config_cls) if f.init}
    return set(inspect.signature(config_cls.__init__).parameters)


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]
