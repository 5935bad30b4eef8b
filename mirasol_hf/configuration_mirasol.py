"""Configuration of Mirasol3B: one sub-config per part of the architecture, chunking and loss weights on top.

Sizes live here and nowhere else. `MirasolConfig.from_preset(name)` gives the paper's models ("mirasol-3b",
"mirasol-small") and a "tiny" one for tests. Details the paper leaves open are switches documented in
`docs/architecture.md`.
"""

from __future__ import annotations

import copy
import math

from transformers import PreTrainedConfig

from .hub import without_remote_pipelines_when_installed


def _check_heads(name: str, num_attention_heads: int, head_dim: int | None, hidden_size: int) -> int:
    """Returns the head size, checking it can be derived when not given."""
    if num_attention_heads < 1:
        raise ValueError(f"{name}.num_attention_heads must be >= 1, got {num_attention_heads}")
    if head_dim is None:
        if hidden_size % num_attention_heads != 0:
            raise ValueError(
                f"{name}.hidden_size ({hidden_size}) is not divisible by num_attention_heads ({num_attention_heads}); "
                "set head_dim explicitly"
            )
        head_dim = hidden_size // num_attention_heads
    return head_dim


class MirasolEncoderConfig(PreTrainedConfig):
    """Shared fields of the ViT-style transformers (encoders, combiner, latent model, reconstruction decoder).

    The attention width is `num_attention_heads * head_dim` and may differ from `hidden_size` (the paper's ViT-L uses
    16 heads of 80 on a 1024-wide residual stream).
    """

    hidden_size: int = 32
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    head_dim: int | None = None
    intermediate_size: int = 64
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-6
    attention_dropout: float = 0.0
    hidden_dropout: float = 0.0
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        self.head_dim = _check_heads(self.model_type, self.num_attention_heads, self.head_dim, self.hidden_size)
        if self.hidden_size < 6:
            # The 3D sin-cos position embedding needs at least one frequency per axis (sin + cos for t, y, x).
            raise ValueError(f"{self.model_type}.hidden_size must be >= 6, got {self.hidden_size}")
        super().__post_init__(**kwargs)


def _default_tubes():
    # TubeViT-style sparse tubes adapted to 8-frame chunks at 224x224: the 1x16x16 tube is the 2D-patch path.
    return [
        {"kernel": [1, 16, 16], "stride": [8, 16, 16], "offset": [0, 0, 0]},
        {"kernel": [8, 8, 8], "stride": [8, 32, 32], "offset": [0, 0, 0]},
        {"kernel": [4, 12, 12], "stride": [4, 32, 32], "offset": [0, 16, 16]},
    ]


class MirasolVideoConfig(MirasolEncoderConfig):
    """Video encoder: sparse tubes (one Conv3d each) into a ViT, applied to each chunk of frames.

    `tubes` is a list of `{"kernel": [t, h, w], "stride": [t, h, w], "offset": [t, y, x]}`.
    """

    model_type = "mirasol_video"
    base_config_key = "video_config"

    image_size: int = 224
    num_channels: int = 3
    tubes: list | None = None

    def __post_init__(self, **kwargs):
        if self.tubes is None:
            self.tubes = _default_tubes()
        for tube in self.tubes:
            for key in ("kernel", "stride", "offset"):
                if key not in tube or len(tube[key]) != 3:
                    raise ValueError(f"each video tube needs a 3-element '{key}', got {tube}")
        super().__post_init__(**kwargs)


class MirasolAudioConfig(MirasolEncoderConfig):
    """Audio encoder: 2D patches over (mel, time) of one chunk's log-mel spectrogram, into a ViT."""

    model_type = "mirasol_audio"
    base_config_key = "audio_config"

    num_mel_bins: int = 128
    patch_size: list | None = None  # (mel, time)

    def __post_init__(self, **kwargs):
        if self.patch_size is None:
            self.patch_size = [16, 16]
        if self.num_mel_bins % self.patch_size[0] != 0:
            raise ValueError(
                f"audio_config.num_mel_bins ({self.num_mel_bins}) must be a multiple of patch_size[0] "
                f"({self.patch_size[0]})"
            )
        super().__post_init__(**kwargs)


class MirasolCombinerConfig(MirasolEncoderConfig):
    """Combiner: fuses one chunk's video and audio tokens into `num_output_tokens` (the paper's m) tokens.

    `combiner_type` picks the combiner (see `docs/long_video.md`):

    * "transformer" (the paper's main combiner) runs a transformer over [video; audio] and keeps the last
      `num_output_tokens` outputs; `attention_type` is "causal" or "full" (the paper does not say which).
    * "ttm": Token Turing Machine. A memory of `ttm_memory_tokens` tokens is carried from chunk to chunk; each chunk
      a TokenLearner reads `ttm_read_tokens` tokens from [memory; chunk], a `ttm_process_*` transformer processes
      them, a TokenLearner writes the next memory from [memory; chunk; processed], and a TokenLearner keeps
      `num_output_tokens` of the processed tokens as the output (none is needed when the two counts are equal).
      The `ttm_process_*` sizes left None default to the combiner's own; `ttm_token_learner_hidden_size` is the
      bottleneck of the TokenLearner MLPs.
    * "perceiver": `num_output_tokens` learned queries cross-attend to the chunk's tokens, `num_hidden_layers` times.
    * "cls": `num_output_tokens` learned tokens appended to the chunk's tokens, a transformer, the learned tokens
      read out.
    """

    model_type = "mirasol_combiner"
    base_config_key = "combiner_config"

    combiner_type: str = "transformer"
    num_output_tokens: int = 32
    attention_type: str = "causal"
    ttm_memory_tokens: int = 8
    ttm_read_tokens: int = 8
    ttm_process_num_layers: int = 2
    ttm_process_hidden_size: int | None = None
    ttm_process_num_heads: int | None = None
    ttm_process_head_dim: int | None = None
    ttm_process_intermediate_size: int | None = None
    ttm_token_learner_hidden_size: int = 64

    def __post_init__(self, **kwargs):
        if self.attention_type not in ("causal", "full"):
            raise ValueError(f"combiner_config.attention_type must be 'causal' or 'full', got {self.attention_type!r}")
        if self.num_output_tokens < 1:
            raise ValueError(f"combiner_config.num_output_tokens must be >= 1, got {self.num_output_tokens}")
        if self.ttm_process_hidden_size is None:
            self.ttm_process_hidden_size = self.hidden_size
        if self.ttm_process_num_heads is None:
            self.ttm_process_num_heads = self.num_attention_heads
        if self.ttm_process_intermediate_size is None:
            self.ttm_process_intermediate_size = self.intermediate_size
        for name in (
            "ttm_memory_tokens",
            "ttm_read_tokens",
            "ttm_process_num_layers",
            "ttm_process_hidden_size",
            "ttm_process_intermediate_size",
            "ttm_token_learner_hidden_size",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"combiner_config.{name} must be >= 1, got {getattr(self, name)}")
        if self.ttm_process_num_heads < 1:
            raise ValueError(f"combiner_config.ttm_process_num_heads must be >= 1, got {self.ttm_process_num_heads}")
        if self.ttm_process_head_dim is None:
            if self.ttm_process_hidden_size % self.ttm_process_num_heads:
                raise ValueError(
                    f"combiner_config.ttm_process_hidden_size ({self.ttm_process_hidden_size}) is not divisible by "
                    f"ttm_process_num_heads ({self.ttm_process_num_heads}); set ttm_process_head_dim explicitly"
                )
            self.ttm_process_head_dim = self.ttm_process_hidden_size // self.ttm_process_num_heads
        elif self.ttm_process_head_dim < 1:
            raise ValueError(f"combiner_config.ttm_process_head_dim must be >= 1, got {self.ttm_process_head_dim}")
        super().__post_init__(**kwargs)


class MirasolLatentConfig(MirasolEncoderConfig):
    """Latent model: a block-causal transformer over the chunks' combined tokens.

    It trains with the latent loss: a predictor on `h_t` regresses the stop-gradient combiner output `x_{t+1}`,
    by `latent_loss_type` "cosine" (default) or "l2". With `latent_loss_detach_input` (default) the latent loss
    trains only the latent model and its predictor: it is computed on a second latent-model pass over a detached x,
    because its gradient through x would push the combiner to make chunks predictable by discarding their content
    (seen here as collapse on a tiny model). False lets it reach the combiner and encoders, one pass only.

    `context_chunks` bounds what the latent model sees: chunk t attends to chunks t-N+1..t only, with chunk positions
    counted from the window's first chunk, so a window at chunk 10,000 is encoded as a clip of N chunks would be
    (and a stream's state stays the same size). None (default): every chunk so far, positions from the clip's start.
    """

    model_type = "mirasol_latent"
    base_config_key = "latent_config"

    latent_loss_type: str = "cosine"
    latent_loss_detach_input: bool = True
    context_chunks: int | None = None

    def __post_init__(self, **kwargs):
        if self.latent_loss_type not in ("cosine", "l2"):
            raise ValueError(f"latent_config.latent_loss_type must be 'cosine' or 'l2', got {self.latent_loss_type!r}")
        if self.context_chunks is not None and self.context_chunks < 1:
            raise ValueError(f"latent_config.context_chunks must be >= 1 or None, got {self.context_chunks}")
        super().__post_init__(**kwargs)


class MirasolReconstructionConfig(MirasolEncoderConfig):
    """Reconstruction decoder: a small transformer from `h_t` to the patches of the next chunk, downsampled.

    The target is chunk `t+1` resized to `num_frames` x `image_size` x `image_size` and cut into patches of
    `patch_size` (t, h, w); the loss is the mean squared error on the (already normalized) pixels.
    """

    model_type = "mirasol_reconstruction"
    base_config_key = "reconstruction_config"

    num_frames: int = 2
    image_size: int = 8
    patch_size: list | None = None

    def __post_init__(self, **kwargs):
        if self.patch_size is None:
            self.patch_size = [1, 4, 4]
        pt, ph, pw = self.patch_size
        if self.num_frames % pt or self.image_size % ph or self.image_size % pw:
            raise ValueError(
                f"reconstruction_config.patch_size {self.patch_size} must divide (num_frames, image_size, image_size) "
                f"= ({self.num_frames}, {self.image_size}, {self.image_size})"
            )
        super().__post_init__(**kwargs)


class MirasolTextConfig(PreTrainedConfig):
    """Llama-style text decoder with gated cross-attention blocks before the layers in `cross_attention_layers`.

    Field names follow `LlamaConfig` so that a Llama-family checkpoint's config maps onto it. The cross-attention
    blocks attend to the latent model's outputs (width `cross_attention_hidden_size`); a block's MLP has
    `cross_attention_intermediate_size` units (None: same as `intermediate_size`; 0: attention only). The blocks'
    tanh gates start at `cross_attention_gate_init`: 0 (Flamingo's choice) keeps a pretrained language model's
    outputs unchanged at the start; a decoder trained from scratch has nothing to protect and may start them open.
    """

    model_type = "mirasol_text"
    base_config_key = "text_config"

    vocab_size: int = 256
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    hidden_act: str = "silu"
    max_position_embeddings: int = 2048
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-6
    use_cache: bool = True
    rope_parameters: dict | None = None
    attention_bias: bool = False
    attention_output_bias: bool = False
    attention_dropout: float = 0.0
    mlp_bias: bool = False
    tie_word_embeddings: bool = True
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | list | None = 2
    cross_attention_layers: list | None = None
    cross_attention_hidden_size: int = 32
    cross_attention_intermediate_size: int | None = None
    cross_attention_mode: str = "global"
    cross_attention_gate_init: float = 0.0

    def __post_init__(self, **kwargs):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        self.head_dim = _check_heads("text_config", self.num_attention_heads, self.head_dim, self.hidden_size)
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"text_config.num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        if self.cross_attention_layers is None:
            self.cross_attention_layers = list(range(self.num_hidden_layers))
        bad = [i for i in self.cross_attention_layers if not 0 <= i < self.num_hidden_layers]
        if bad:
            raise ValueError(f"text_config.cross_attention_layers {bad} are outside [0, {self.num_hidden_layers})")
        if self.cross_attention_intermediate_size is None:
            self.cross_attention_intermediate_size = self.intermediate_size
        if self.cross_attention_mode != "global":
            raise ValueError(f"text_config.cross_attention_mode must be 'global', got {self.cross_attention_mode!r}")
        if self.rope_parameters is None:
            self.rope_parameters = {"rope_type": "default", "rope_theta": 10000.0}
        super().__post_init__(**kwargs)


class MirasolConfig(PreTrainedConfig):
    """Configuration of a Mirasol model.

    A clip is `num_chunks` chunks of `frames_per_chunk` frames; chunk `t`'s audio is `audio_frames_per_chunk` log-mel
    frames covering the same time window. Losses: `text_loss_weight * text + latent_loss_weight * latent +
    reconstruction_loss_weight * reconstruction`. `encode_media` runs the encoders and the combiner over
    `media_group_chunks` chunks at a time (None: all at once), so its peak memory does not grow with the clip length.

    Example:
        >>> config = MirasolConfig.from_preset("tiny")
        >>> model = MirasolForConditionalGeneration(config)
    """

    model_type = "mirasol"
    # Parallelism plans of `MirasolModel` (the LM head's are on `MirasolForConditionalGeneration`). Tensor parallelism
    # shards the text decoder as Llama's plan does, its cross-attention blocks alike (their heads split the same way);
    # the small media encoders are replicated. FSDP wraps each transformer block of every part.
    base_model_tp_plan = {
        "text_model.embed_tokens": "embedding_rowwise",
        **{
            f"text_model.{blocks}.*.{attention}.{projection}": "colwise"
            for blocks, attention in (("layers", "self_attn"), ("cross_attention_blocks", "cross_attn"))
            for projection in ("q_proj", "k_proj", "v_proj")
        },
        "text_model.layers.*.self_attn.o_proj": "rowwise",
        "text_model.cross_attention_blocks.*.cross_attn.o_proj": "rowwise",
        **{
            f"text_model.{blocks}.*.mlp.{projection}": style
            for blocks in ("layers", "cross_attention_blocks")
            for projection, style in (("gate_proj", "colwise"), ("up_proj", "colwise"), ("down_proj", "rowwise"))
        },
    }
    base_model_fsdp_plan = {
        "video_encoder.encoder.layers.*": "free_full_weight",
        "audio_encoder.encoder.layers.*": "free_full_weight",
        "latent_model.encoder.layers.*": "free_full_weight",
        "text_model.embed_tokens": "free_full_weight",
        "text_model.cross_attention_blocks.*": "free_full_weight",
        "text_model.layers.*": "free_full_weight",
        "text_model.norm": "keep_full_weight",
    }
    sub_configs_defaults = {
        "video_config": MirasolVideoConfig,
        "audio_config": MirasolAudioConfig,
        "combiner_config": MirasolCombinerConfig,
        "latent_config": MirasolLatentConfig,
        "reconstruction_config": MirasolReconstructionConfig,
        "text_config": MirasolTextConfig,
    }

    video_config: dict | PreTrainedConfig | None = None
    audio_config: dict | PreTrainedConfig | None = None
    combiner_config: dict | PreTrainedConfig | None = None
    latent_config: dict | PreTrainedConfig | None = None
    reconstruction_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    num_chunks: int = 4
    frames_per_chunk: int = 8
    audio_frames_per_chunk: int = 128
    text_loss_weight: float = 1.0
    latent_loss_weight: float = 1.0
    reconstruction_loss_weight: float = 1.0
    label_smoothing: float = 0.0
    media_group_chunks: int | None = 8
    tie_word_embeddings: bool = True
    # What the model card says about training data and metrics ({"training_data", "metrics", "notes"}).
    model_card: dict | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**without_remote_pipelines_when_installed(kwargs))
        # The text decoder's cross-attention reads the latent model's outputs.
        self.text_config.cross_attention_hidden_size = self.latent_config.hidden_size
        self.tie_word_embeddings = self.text_config.tie_word_embeddings
        for name in ("num_chunks", "frames_per_chunk", "audio_frames_per_chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.media_group_chunks is not None and self.media_group_chunks < 1:
            raise ValueError(f"media_group_chunks must be >= 1 or None, got {self.media_group_chunks}")
        if self.audio_frames_per_chunk % self.audio_config.patch_size[1] != 0:
            raise ValueError(
                f"audio_frames_per_chunk ({self.audio_frames_per_chunk}) must be a multiple of "
                f"audio_config.patch_size[1] ({self.audio_config.patch_size[1]})"
            )

    # Token ids and the vocabulary live on the text decoder; mirrored here (read and set) because generation, the
    # processor, `resize_token_embeddings` and user code written for other models look for them on the top config.
    @property
    def pad_token_id(self):
        return self.text_config.pad_token_id

    @pad_token_id.setter
    def pad_token_id(self, value):
        self.text_config.pad_token_id = value

    @property
    def bos_token_id(self):
        return self.text_config.bos_token_id

    @bos_token_id.setter
    def bos_token_id(self, value):
        self.text_config.bos_token_id = value

    @property
    def eos_token_id(self):
        return self.text_config.eos_token_id

    @eos_token_id.setter
    def eos_token_id(self, value):
        self.text_config.eos_token_id = value

    @property
    def vocab_size(self):
        return self.text_config.vocab_size

    @vocab_size.setter
    def vocab_size(self, value):
        self.text_config.vocab_size = value

    @property
    def num_frames(self) -> int:
        """Frames per clip at the default chunking."""
        return self.num_chunks * self.frames_per_chunk

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "MirasolConfig":
        """A named configuration: "tiny" (tests), "mirasol-small" (~1.15B), "mirasol-3b" (~3B).

        `overrides` are top-level fields, or sub-config dicts that update the preset's sub-config fields
        (e.g. `text_config={"vocab_size": 1000}`).
        """
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        kwargs = copy.deepcopy(PRESETS[name])
        for key, value in overrides.items():
            if key in cls.sub_configs_defaults and isinstance(value, dict):
                kwargs.setdefault(key, {}).update(value)
            else:
                kwargs[key] = value
        return cls(**kwargs)


def _vit(hidden, layers, heads, mlp, head_dim=None):
    return {
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "head_dim": head_dim,
        "intermediate_size": mlp,
    }


# Sizes from the paper and its supplement (see ../shared/DESIGN.md section 1 and docs/architecture.md).
_COMBINER_SIZED = _vit(1024, 8, 16, 4096, 64)
_PAPER_AUDIO = {**_vit(768, 12, 12, 3072), "num_mel_bins": 128, "patch_size": [16, 16]}
_PAPER_RECONSTRUCTION = {**_COMBINER_SIZED, "num_frames": 4, "image_size": 56, "patch_size": [2, 8, 8]}
_PAPER_CHUNKING = {"num_chunks": 16, "frames_per_chunk": 8, "audio_frames_per_chunk": 128}
# The paper's TTM combiner ("Read 512, Write 256; process transformer 2 layers, hidden 128, 12 heads"), read as: the
# read TokenLearner selects 512 tokens, the memory (what the write TokenLearner produces) holds 256, and the process
# transformer has 2 layers of 12 heads x 128 on the combiner's width. Used when combiner_type="ttm"; see
# docs/long_video.md for why and for the other reading.
_PAPER_TTM = {
    "ttm_memory_tokens": 256,
    "ttm_read_tokens": 512,
    "ttm_process_num_layers": 2,
    "ttm_process_num_heads": 12,
    "ttm_process_head_dim": 128,
}

PRESETS = {
    "tiny": {
        "video_config": {
            **_vit(32, 2, 2, 64),
            "image_size": 32,
            "tubes": [
                {"kernel": [1, 8, 8], "stride": [2, 8, 8], "offset": [0, 0, 0]},
                {"kernel": [4, 8, 8], "stride": [4, 16, 16], "offset": [0, 0, 0]},
                {"kernel": [2, 4, 4], "stride": [2, 16, 16], "offset": [0, 8, 8]},
            ],
        },
        "audio_config": {**_vit(32, 2, 2, 64), "num_mel_bins": 16, "patch_size": [8, 8]},
        "combiner_config": {**_vit(32, 2, 2, 64), "num_output_tokens": 4},
        "latent_config": _vit(32, 2, 2, 64),
        "reconstruction_config": {**_vit(32, 1, 2, 64), "num_frames": 2, "image_size": 8, "patch_size": [1, 4, 4]},
        "text_config": {
            "vocab_size": 128,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "cross_attention_layers": [1],
            "max_position_embeddings": 256,
        },
        "num_chunks": 4,
        "frames_per_chunk": 4,
        "audio_frames_per_chunk": 16,
    },
    "mirasol-small": {
        "video_config": {**_vit(1024, 24, 16, 4096, 80), "image_size": 224},
        "audio_config": _PAPER_AUDIO,
        "combiner_config": {**_COMBINER_SIZED, **_PAPER_TTM, "num_output_tokens": 32},
        "latent_config": _COMBINER_SIZED,
        "reconstruction_config": _PAPER_RECONSTRUCTION,
        "text_config": {
            "vocab_size": 256000,
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_hidden_layers": 8,
            "num_attention_heads": 16,
            "cross_attention_layers": [1, 3, 5, 7],
            "cross_attention_intermediate_size": 0,
        },
        **_PAPER_CHUNKING,
    },
    "mirasol-3b": {
        "video_config": {**_vit(1280, 32, 16, 5120, 80), "image_size": 224},
        "audio_config": _PAPER_AUDIO,
        "combiner_config": {**_COMBINER_SIZED, **_PAPER_TTM, "num_output_tokens": 32},
        "latent_config": _COMBINER_SIZED,
        "reconstruction_config": _PAPER_RECONSTRUCTION,
        "text_config": {
            "vocab_size": 256000,
            "hidden_size": 1536,
            "intermediate_size": 12288,
            "num_hidden_layers": 18,
            "num_attention_heads": 12,
            "head_dim": 128,
            "cross_attention_layers": [2, 5, 8, 11, 14, 17],
        },
        **_PAPER_CHUNKING,
    },
}


def conv_output_size(size: int, kernel: int, stride: int, offset: int) -> int:
    """Number of positions a kernel visits along an axis of `size`, starting at `offset`."""
    span = size - offset - kernel
    return 0 if span < 0 else span // stride + 1


def num_video_tokens(video_config: MirasolVideoConfig, frames: int, height: int, width: int) -> int:
    """Tokens the video encoder emits for one chunk of `frames` x `height` x `width`."""
    total = 0
    for tube in video_config.tubes:
        axes = zip((frames, height, width), tube["kernel"], tube["stride"], tube["offset"])
        total += math.prod(conv_output_size(*axis) for axis in axes)
    return total
