"""Start Mirasol from pretrained backbones: a Llama-family language model and a ViT-style vision tower.

`from_pretrained_backbones(text_model, vision_model, audio_model)` builds a `MirasolForConditionalGeneration` whose
text decoder is the language model (its weights; the gated cross-attention blocks are new, gates at zero, so the
decoder starts out as exactly that LM) and whose video encoder (and optionally audio encoder) is the vision tower:

* transformer layers and final LayerNorm: copied one to one (q/k/v/o, the two LayerNorms, the MLP);
* the tower's Conv2d patch kernel (hidden, 3, p, p) becomes the 1 x p x p tube as it is, and every other tube
  (t, h, w) gets it resized to h x w (pseudo-inverse resize, FlexiViT) and spread over t frames divided by t, so a
  static video gives each tube the response the 2D kernel gives one frame;
* dropped: the tower's learned position embeddings (Mirasol's encoders use fixed sin-cos positions at the tubes'
  centres), its CLS token, CLIP's `pre_layrnorm`, pooling heads;
* the audio encoder can take the same tower, AST-style: the RGB kernel summed to one channel.

The combiner, latent model, reconstruction decoder and cross-attention blocks are initialised fresh, sized by a
preset. See docs/backbones.md.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    CLIPVisionModel,
    PreTrainedConfig,
    SiglipVisionModel,
    ViTModel,
)
from transformers.activations import ACT2FN
from transformers.image_processing_base import ImageProcessingMixin
from transformers.utils.constants import (
    IMAGENET_STANDARD_MEAN,
    IMAGENET_STANDARD_STD,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
)

from .configuration_mirasol import PRESETS, MirasolConfig, MirasolVideoConfig
from .modeling_mirasol import MirasolForConditionalGeneration
from .processing_mirasol import MirasolProcessor

logger = logging.getLogger(__name__)

# The new parts (combiner, latent model, reconstruction decoder, audio encoder when not from a tower) and the chunking
# come from this preset; the paper's two presets agree on all of them.
DEFAULT_PRESET = "mirasol-3b"
# A gated cross-attention block before every third decoder layer, counted from the last one: the paper's 3B model
# has six in 18 layers (before layers 2, 5, ..., 17).
CROSS_ATTENTION_EVERY = 3
RGB_CHANNELS = 3
# Source-model weights that Mirasol's text decoder takes: `model.*` (the decoder) and the LM head.
TEXT_DECODER_PREFIX = "model."
LM_HEAD_WEIGHT = "lm_head.weight"
# Fields of a video/audio sub-config that a user may set although the encoder comes from a tower.
VIDEO_FIELDS_FREE = ("image_size", "tubes")


# ----------------------------------------------------------------------------------------------------------------
# Supported families
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextFamily:
    """A causal LM family whose decoder has Llama's parameter names and layer structure."""

    name: str
    # (q/k/v bias, o bias, MLP bias) read from the family's config.
    biases: Callable[[PreTrainedConfig], tuple[bool, bool, bool]]


TEXT_FAMILIES = {
    "llama": TextFamily("Llama (and SmolLM)", lambda c: (c.attention_bias, c.attention_bias, c.mlp_bias)),
    "mistral": TextFamily("Mistral", lambda c: (False, False, False)),
    "qwen2": TextFamily("Qwen2 / Qwen2.5", lambda c: (True, False, False)),
}


@dataclass(frozen=True)
class VisionFamily:
    """Where a ViT-style tower keeps each weight Mirasol's encoders take (names of the loaded transformers model)."""

    name: str
    tower_class: type
    patch_conv: str  # the Conv2d patch embedding
    layers: str  # the list of pre-LayerNorm blocks
    attention: str  # a block's attention (q_proj, k_proj, v_proj and `output_proj` inside)
    output_proj: str
    norm_before: str
    norm_after: str
    mlp_in: str
    mlp_out: str
    final_norm: str
    unused: tuple[str, ...]  # prefixes of tower weights Mirasol has no place for (documented)
    image_mean: tuple[float, ...]  # the family's normalization, when the checkpoint has no image processor config
    image_std: tuple[float, ...]
    tower_kwargs: dict | None = None


VISION_FAMILIES = {
    "vit": VisionFamily(
        name="ViT",
        tower_class=ViTModel,
        patch_conv="embeddings.patch_embeddings.projection",
        layers="layers",
        attention="attention",
        output_proj="o_proj",
        norm_before="layernorm_before",
        norm_after="layernorm_after",
        mlp_in="mlp.fc1",
        mlp_out="mlp.fc2",
        final_norm="layernorm",
        unused=("embeddings.cls_token", "embeddings.position_embeddings", "embeddings.mask_token", "pooler."),
        image_mean=tuple(IMAGENET_STANDARD_MEAN),
        image_std=tuple(IMAGENET_STANDARD_STD),
        tower_kwargs={"add_pooling_layer": False},
    ),
    "clip_vision_model": VisionFamily(
        name="CLIP vision",
        tower_class=CLIPVisionModel,
        patch_conv="embeddings.patch_embedding",
        layers="encoder.layers",
        attention="self_attn",
        output_proj="out_proj",
        norm_before="layer_norm1",
        norm_after="layer_norm2",
        mlp_in="mlp.fc1",
        mlp_out="mlp.fc2",
        final_norm="post_layernorm",
        unused=("embeddings.class_embedding", "embeddings.position_embedding.", "pre_layrnorm."),
        image_mean=tuple(OPENAI_CLIP_MEAN),
        image_std=tuple(OPENAI_CLIP_STD),
    ),
    "siglip_vision_model": VisionFamily(
        name="SigLIP vision",
        tower_class=SiglipVisionModel,
        patch_conv="embeddings.patch_embedding",
        layers="encoder.layers",
        attention="self_attn",
        output_proj="out_proj",
        norm_before="layer_norm1",
        norm_after="layer_norm2",
        mlp_in="mlp.fc1",
        mlp_out="mlp.fc2",
        final_norm="post_layernorm",
        unused=("embeddings.position_embedding.", "head."),
        image_mean=tuple(IMAGENET_STANDARD_MEAN),
        image_std=tuple(IMAGENET_STANDARD_STD),
    ),
}
# Image-text checkpoints (CLIPModel, SiglipModel) -> the model type of their vision tower.
DUAL_ENCODER_TOWERS = {"clip": "clip_vision_model", "siglip": "siglip_vision_model"}

_TEXT_REQUIREMENT = (
    "the Mirasol text decoder needs a Llama-style decoder (RMSNorm, rotary positions, SwiGLU MLP, separate "
    "q/k/v/o projections, Llama's parameter names)"
)
_VISION_REQUIREMENT = (
    "Mirasol's encoders need a ViT-style tower (a Conv2d patch embedding with a square patch over RGB frames, "
    "pre-LayerNorm blocks with separate q/k/v/o projections and a two-layer MLP)"
)


def text_family(config: PreTrainedConfig, source: str = "text_model") -> TextFamily:
    """The supported family of a causal LM config, or a ValueError saying what is missing."""
    family = TEXT_FAMILIES.get(config.model_type)
    if family is None:
        supported = ", ".join(f"{f.name} ({t!r})" for t, f in TEXT_FAMILIES.items())
        raise ValueError(
            f"{source} is a {config.model_type!r} model; {_TEXT_REQUIREMENT}. Supported families: {supported}"
        )
    return family


def vision_tower_config(config: PreTrainedConfig, source: str = "vision_model") -> PreTrainedConfig:
    """The vision tower's config of a ViT / CLIP / SigLIP checkpoint (an image-text one included), checked."""
    if config.model_type in DUAL_ENCODER_TOWERS:
        config = config.vision_config
    if config.model_type not in VISION_FAMILIES:
        supported = ", ".join(f"{f.name} ({t!r})" for t, f in VISION_FAMILIES.items())
        raise ValueError(
            f"{source} is a {config.model_type!r} model; {_VISION_REQUIREMENT}. Supported towers: {supported}, "
            f"and the vision towers of {sorted(DUAL_ENCODER_TOWERS)} checkpoints"
        )
    _square(config.patch_size, "patch", source)
    _square(config.image_size, "image size", source)
    if config.num_channels != RGB_CHANNELS:
        raise ValueError(f"{source} takes {config.num_channels}-channel images; Mirasol's video frames are RGB")
    if config.hidden_act not in ACT2FN:
        raise ValueError(f"{source} uses the activation {config.hidden_act!r}, which transformers' ACT2FN lacks")
    return config


def _square(value, what: str, source: str) -> int:
    sizes = list(value) if isinstance(value, (list, tuple)) else [value, value]
    if len(sizes) != 2 or sizes[0] != sizes[1]:
        raise ValueError(
            f"{source} has a non-square {what} {value}; the video encoder's 2D-patch tube (1 x p x p) reuses a "
            "square patch kernel over square frames"
        )
    return int(sizes[0])


# ----------------------------------------------------------------------------------------------------------------
# Configs: backbone sizes + a preset for the new parts + user overrides
# ----------------------------------------------------------------------------------------------------------------


def text_config_fields(config: PreTrainedConfig) -> dict:
    """`MirasolTextConfig` fields of a Llama / Mistral / Qwen2 config."""
    family = text_family(config)
    qkv_bias, output_bias, mlp_bias = family.biases(config)
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if window is not None and (layer_types is None or "sliding_attention" in layer_types):
        # Sliding-window attention equals full causal attention up to the window; Mirasol's QA prompts are far
        # shorter than the windows these models use (4096), so the window is dropped rather than implemented.
        warnings.warn(
            f"the {family.name} model uses sliding-window attention ({window} tokens); Mirasol's text decoder attends "
            f"to the whole prefix, which gives the same outputs for sequences up to {window} tokens",
            stacklevel=2,
        )
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return {
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": config.num_key_value_heads or config.num_attention_heads,
        "head_dim": head_dim,
        "hidden_act": config.hidden_act,
        "max_position_embeddings": config.max_position_embeddings,
        "rms_norm_eps": config.rms_norm_eps,
        "rope_parameters": copy.deepcopy(dict(config.rope_parameters)),
        "attention_bias": qkv_bias,
        "attention_output_bias": output_bias,
        "mlp_bias": mlp_bias,
        "tie_word_embeddings": config.tie_word_embeddings,
        "pad_token_id": config.pad_token_id,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
    }


def encoder_config_fields(config: PreTrainedConfig) -> dict:
    """`MirasolEncoderConfig` fields (the ViT part) of a ViT / CLIP / SigLIP vision config."""
    return {
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "head_dim": getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads,
        "intermediate_size": config.intermediate_size,
        "hidden_act": config.hidden_act,
        "layer_norm_eps": config.layer_norm_eps,
    }


def cross_attention_layers(num_hidden_layers: int) -> list[int]:
    """Decoder layers that get a cross-attention block: every `CROSS_ATTENTION_EVERY`-th, ending at the last."""
    return sorted(range(num_hidden_layers - 1, -1, -CROSS_ATTENTION_EVERY))


def _tubes_for_patch(tubes: list[dict], patch: int) -> list[dict]:
    """The preset's tubes with the 2D-patch tube (temporal kernel 1) resized to the tower's patch."""
    tubes = copy.deepcopy(tubes)
    flat = [tube for tube in tubes if tube["kernel"][0] == 1]
    if len(flat) != 1:
        raise ValueError(f"the preset's tubes need exactly one 2D-patch tube (temporal kernel 1), got {tubes}")
    flat[0]["kernel"] = [1, patch, patch]
    flat[0]["stride"] = [flat[0]["stride"][0], patch, patch]
    return tubes


def _merge(name: str, base: dict, derived: dict, user: dict, source: str, free: tuple[str, ...] = ()) -> dict:
    """`base` updated by the backbone's `derived` fields, then by the user's (who may not contradict the backbone)."""
    for key, value in user.items():
        if key in derived and key not in free and value != derived[key]:
            raise ValueError(
                f"{name}.{key}={value!r} contradicts the {source} backbone ({key}={derived[key]!r}); this field comes "
                "from the backbone's weights"
            )
    return {**base, **derived, **user}


def config_from_backbones(
    text_backbone: PreTrainedConfig,
    vision_backbone: PreTrainedConfig | None = None,
    audio_backbone: PreTrainedConfig | None = None,
    /,
    *,
    preset: str = DEFAULT_PRESET,
    **overrides,
) -> MirasolConfig:
    """A `MirasolConfig` for these backbone configs; reads no weights (count parameters on the meta device with it).

    The text decoder (and video / audio encoder when a tower config is given) takes its sizes from the backbone;
    everything else comes from `preset`. `overrides` are top-level fields or sub-config dicts, as for
    `MirasolConfig.from_preset`; they may not contradict a backbone's sizes. A video tower also sets `image_size` and
    the 2D-patch tube's size (both overridable; given `tubes` must include a 1 x p x p tube).
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    kwargs = copy.deepcopy(PRESETS[preset])
    for key, value in overrides.items():
        if key in MirasolConfig.sub_configs_defaults and not isinstance(value, dict):
            raise ValueError(f"pass {key} overrides as a dict of fields, got {type(value).__name__}")
    user = {key: overrides.pop(key, {}) for key in MirasolConfig.sub_configs_defaults}

    text = text_config_fields(text_backbone)
    preset_text = kwargs["text_config"]
    text_defaults = {"cross_attention_layers": cross_attention_layers(text["num_hidden_layers"])}
    if "cross_attention_intermediate_size" in preset_text:
        text_defaults["cross_attention_intermediate_size"] = preset_text["cross_attention_intermediate_size"]
    kwargs["text_config"] = _merge("text_config", text_defaults, text, user.pop("text_config"), "text")

    patch = None
    if vision_backbone is not None:
        vision_backbone = vision_tower_config(vision_backbone)
        patch = _square(vision_backbone.patch_size, "patch", "vision_model")
        derived = encoder_config_fields(vision_backbone)
        derived["num_channels"] = RGB_CHANNELS
        preset_video = kwargs["video_config"]
        derived["image_size"] = _square(vision_backbone.image_size, "image size", "vision_model")
        derived["tubes"] = _tubes_for_patch(preset_video.get("tubes") or MirasolVideoConfig().tubes, patch)
        kwargs["video_config"] = _merge(
            "video_config", preset_video, derived, user.pop("video_config"), "vision", VIDEO_FIELDS_FREE
        )
    if audio_backbone is not None:
        derived = encoder_config_fields(vision_tower_config(audio_backbone, "audio_model"))
        preset_audio = kwargs["audio_config"]
        kwargs["audio_config"] = _merge("audio_config", preset_audio, derived, user.pop("audio_config"), "audio")
    for key, value in user.items():
        kwargs.setdefault(key, {}).update(value)
    kwargs.update(overrides)
    config = MirasolConfig(**kwargs)

    if patch is not None and [1, patch, patch] not in [list(tube["kernel"]) for tube in config.video_config.tubes]:
        raise ValueError(
            f"video_config.tubes {config.video_config.tubes} have no 1 x {patch} x {patch} tube to take the vision "
            f"tower's {patch} x {patch} patch kernel as it is"
        )
    return config


# ----------------------------------------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------------------------------------


def resize_patch_kernel(kernel: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Patch kernel (..., p_h, p_w) -> (..., h, w) by pseudo-inverse resize (FlexiViT, Beyer et al. 2023).

    The new kernel on a patch resized (bilinear, antialiased) to h x w gives the response the old kernel gives the
    original patch: exactly when enlarging, the least-squares best when shrinking.
    """
    old = tuple(kernel.shape[-2:])
    if old == tuple(size):
        return kernel.clone()
    old_pixels = old[0] * old[1]
    basis = torch.eye(old_pixels, dtype=torch.float64).reshape(old_pixels, 1, *old)
    # resize (p_h*p_w, h*w): a patch x (as a row) resized is x @ resize; the new kernel w' must satisfy
    # <x @ resize, w'> = <x, w> for every x, i.e. resize @ w' = w, solved by the pseudo-inverse.
    resize = F.interpolate(basis, size=size, mode="bilinear", antialias=True, align_corners=False).flatten(1)
    flat = kernel.to(torch.float64).flatten(-2)  # (..., p_h * p_w)
    resized = flat @ torch.linalg.pinv(resize).T  # (..., h * w)
    return resized.reshape(*kernel.shape[:-2], *size).to(kernel.dtype)


def inflate_patch_kernel(kernel: torch.Tensor, tube_kernel: tuple[int, int, int]) -> torch.Tensor:
    """2D patch kernel (hidden, C, p, p) -> Conv3d kernel (hidden, C, t, h, w) for a tube.

    Resized to h x w (`resize_patch_kernel`) and repeated over the t frames divided by t: on a static video the tube
    responds as the 2D kernel does on one frame. The 1 x p x p tube gets the kernel unchanged.
    """
    frames, height, width = tube_kernel
    spatial = resize_patch_kernel(kernel, (height, width))
    return spatial[:, :, None].repeat(1, 1, frames, 1, 1) / frames


def _patch_conv(tower: torch.nn.Module, family: VisionFamily) -> tuple[torch.Tensor, torch.Tensor]:
    conv = tower.get_submodule(family.patch_conv)
    bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels, dtype=conv.weight.dtype)
    return conv.weight.detach(), bias.detach()


def encoder_state_dict(tower: torch.nn.Module, family: VisionFamily, num_layers: int) -> dict[str, torch.Tensor]:
    """The tower's blocks and final LayerNorm under `MirasolEncoder`'s names; a ValueError for unknown weights."""
    source = tower.state_dict()
    used = set()

    def take(name: str, reference: str) -> torch.Tensor:
        # Absent biases (ViT with qkv_bias=False) are zeros, the same function.
        if name in source:
            used.add(name)
            return source[name]
        return torch.zeros_like(source[reference])

    pairs = [
        (family.norm_before, "layer_norm1"),
        (f"{family.attention}.q_proj", "self_attn.q_proj"),
        (f"{family.attention}.k_proj", "self_attn.k_proj"),
        (f"{family.attention}.v_proj", "self_attn.v_proj"),
        (f"{family.attention}.{family.output_proj}", "self_attn.o_proj"),
        (family.norm_after, "layer_norm2"),
        (family.mlp_in, "mlp.up_proj"),
        (family.mlp_out, "mlp.down_proj"),
    ]
    state = {}
    for index in range(num_layers):
        for theirs, ours in pairs:
            weight = f"{family.layers}.{index}.{theirs}.weight"
            state[f"layers.{index}.{ours}.weight"] = take(weight, weight)
            state[f"layers.{index}.{ours}.bias"] = take(f"{family.layers}.{index}.{theirs}.bias", weight)
    for kind in ("weight", "bias"):
        state[f"norm.{kind}"] = take(f"{family.final_norm}.{kind}", f"{family.final_norm}.weight")
    left = [
        name
        for name in source
        if name not in used and not name.startswith(family.patch_conv + ".") and not name.startswith(family.unused)
    ]
    if left:
        raise ValueError(f"the {family.name} tower has weights Mirasol's encoder has no place for: {left[:8]}")
    return state


def _encoder_weights(encoder: torch.nn.Module, tower: torch.nn.Module, family: VisionFamily) -> dict:
    layers = encoder_state_dict(tower, family, encoder.config.num_hidden_layers)
    return {f"encoder.{name}": value for name, value in layers.items()}


def load_video_tower(video_encoder: torch.nn.Module, tower: torch.nn.Module, family: VisionFamily) -> None:
    """Copies a vision tower into `MirasolVideoEncoder`: blocks one to one, the patch kernel into every tube."""
    state = _encoder_weights(video_encoder, tower, family)
    weight, bias = _patch_conv(tower, family)
    for index, tube in enumerate(video_encoder.config.tubes):
        state[f"tubes.{index}.weight"] = inflate_patch_kernel(weight, tube["kernel"])
        state[f"tubes.{index}.bias"] = bias
    video_encoder.load_state_dict(state, strict=True)


def load_audio_tower(audio_encoder: torch.nn.Module, tower: torch.nn.Module, family: VisionFamily) -> None:
    """Copies a vision tower into `MirasolAudioEncoder`, AST-style.

    The RGB kernel is summed over its channels (AST averages; the sum is what makes a spectrogram read as a grey
    image, the equivalence AST states) and resized to the audio patch.
    """
    state = _encoder_weights(audio_encoder, tower, family)
    weight, bias = _patch_conv(tower, family)
    grey = weight.sum(dim=1, keepdim=True)  # (hidden, 3, p, p) -> (hidden, 1, p, p)
    state["patch_embedding.weight"] = resize_patch_kernel(grey, tuple(audio_encoder.config.patch_size))
    state["patch_embedding.bias"] = bias
    audio_encoder.load_state_dict(state, strict=True)


def load_text_backbone(model: MirasolForConditionalGeneration, causal_lm: torch.nn.Module) -> None:
    """Copies a Llama-family causal LM into the text decoder (and the LM head when untied)."""
    source = causal_lm.state_dict()
    extra = [name for name in source if not name.startswith(TEXT_DECODER_PREFIX) and name != LM_HEAD_WEIGHT]
    if extra:
        raise ValueError(f"the language model has weights Mirasol's text decoder has no place for: {extra[:8]}")
    decoder = {
        name.removeprefix(TEXT_DECODER_PREFIX): value
        for name, value in source.items()
        if name.startswith(TEXT_DECODER_PREFIX)
    }
    missing, unexpected = model.model.text_model.load_state_dict(decoder, strict=False)
    if unexpected:
        raise ValueError(f"the language model has weights Mirasol's text decoder has no place for: {unexpected[:8]}")
    not_loaded = [name for name in missing if not name.startswith("cross_attention_blocks.")]
    if not_loaded:
        raise ValueError(f"the language model lacks weights Mirasol's text decoder needs: {not_loaded[:8]}")
    if not model.config.tie_word_embeddings:
        model.lm_head.weight.copy_(source[LM_HEAD_WEIGHT])


# ----------------------------------------------------------------------------------------------------------------
# The one call
# ----------------------------------------------------------------------------------------------------------------


def _load_tower(path, source: str) -> tuple[torch.nn.Module, VisionFamily]:
    config = vision_tower_config(AutoConfig.from_pretrained(path), source)
    family = VISION_FAMILIES[config.model_type]
    return family.tower_class.from_pretrained(path, **(family.tower_kwargs or {})), family


def image_normalization(vision_model, family: VisionFamily) -> tuple[list[float], list[float]]:
    """Mean and std of the tower's image processor config, or its family's defaults when it has none."""
    try:
        processor_dict, _ = ImageProcessingMixin.get_image_processor_dict(vision_model)
    except OSError:
        processor_dict = {}
    if "image_mean" in processor_dict and "image_std" in processor_dict:
        return list(processor_dict["image_mean"]), list(processor_dict["image_std"])
    logger.info("%s has no image processor config with mean/std: using the %s defaults", vision_model, family.name)
    return list(family.image_mean), list(family.image_std)


def from_pretrained_backbones(
    text_model: str | os.PathLike,
    vision_model: str | os.PathLike | None = None,
    audio_model: str | os.PathLike | None = None,
    *,
    preset: str = DEFAULT_PRESET,
    dtype: torch.dtype | None = None,
    **config_overrides,
) -> tuple[MirasolForConditionalGeneration, MirasolProcessor]:
    """A Mirasol model started from pretrained backbones (Hub ids or local folders), and its processor.

    Args:
        text_model: a Llama, Mistral, Qwen2 / Qwen2.5 or SmolLM causal LM with its tokenizer.
        vision_model: a ViT, CLIP or SigLIP checkpoint (image-text ones too: their vision tower) for the video
            encoder; None: a fresh video encoder from `preset`.
        audio_model: the same kinds of tower for the audio encoder (AST-style), e.g. `vision_model` again; None:
            a fresh audio encoder from `preset`.
        preset: sizes of the new parts and the chunking (`MirasolConfig.from_preset` names).
        dtype: cast the model to it at the end (the model is built and loaded in float32).
        config_overrides: as for `config_from_backbones`.

    Returns:
        `(model, processor)`: the model in eval mode, cross-attention gates at zero (its text decoder computes what
        the language model computes); the processor with the LM's tokenizer and the tower's normalization and size.
    """
    text_config = AutoConfig.from_pretrained(text_model)
    text_family(text_config)
    vision_config = vision_tower_config(AutoConfig.from_pretrained(vision_model)) if vision_model else None
    audio_config = vision_tower_config(AutoConfig.from_pretrained(audio_model), "audio_model") if audio_model else None

    tokenizer = AutoTokenizer.from_pretrained(text_model)
    if tokenizer.eos_token is None:
        raise ValueError(f"the tokenizer of {text_model} has no eos token; generation needs one to stop")
    if tokenizer.pad_token is None:
        # Llama and Mistral tokenizers have no pad token; left padding is masked out, so eos serves.
        tokenizer.pad_token = tokenizer.eos_token
    if len(tokenizer) > text_config.vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens, the language model {text_config.vocab_size}")
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        if getattr(text_config, name, None) is None:
            setattr(text_config, name, getattr(tokenizer, name))

    config = config_from_backbones(text_config, vision_config, audio_config, preset=preset, **config_overrides)
    model = MirasolForConditionalGeneration(config)
    towers = {}

    def tower(path, source: str):
        # The same checkpoint for video and audio is read once.
        if os.fspath(path) not in towers:
            towers[os.fspath(path)] = _load_tower(path, source)
        return towers[os.fspath(path)]

    normalization = {}
    with torch.no_grad():
        causal_lm = AutoModelForCausalLM.from_pretrained(text_model)
        load_text_backbone(model, causal_lm)
        del causal_lm
        if vision_model:
            load_video_tower(model.model.video_encoder, *tower(vision_model, "vision_model"))
            image_mean, image_std = image_normalization(vision_model, tower(vision_model, "vision_model")[1])
            normalization = {"image_mean": image_mean, "image_std": image_std}
        if audio_model:
            load_audio_tower(model.model.audio_encoder, *tower(audio_model, "audio_model"))
    model.eval()
    if dtype is not None:
        model.to(dtype)
    return model, MirasolProcessor.from_model_config(config, tokenizer, **normalization)


__all__ = [
    "config_from_backbones",
    "from_pretrained_backbones",
    "inflate_patch_kernel",
    "resize_patch_kernel",
]
