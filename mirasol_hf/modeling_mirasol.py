"""Mirasol3B as a transformers model, read top to bottom in the order data flows.

    pixel_values_videos ─► video encoder ─┐ per chunk
    input_features      ─► audio encoder ─┤
                                          ▼
                                      combiner ─► x (B, T, m, d_c)
                                          ▼
                                    latent model ─► h (B, T, m, d)  ─► latent loss, reconstruction loss
                                          ▼
    input_ids ─────────────────► text decoder (cross-attends to h) ─► logits ─► text loss / generate()

`MirasolModel.encode_media` runs everything above the text decoder; its output can be passed back as
`media_latents=` to `forward` and `generate` (asking many questions about one video encodes it once).
`MirasolModel.encode_media_chunk` does the same for a stream, a few chunks per call (see `encoded_media.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache
from transformers.generation.utils import GenerateBeamDecoderOnlyOutput, GenerateDecoderOnlyOutput
from transformers.modeling_utils import slice_logits_to_keep
from transformers.utils import ModelOutput, can_return_tuple
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .audio_encoder import MirasolAudioEncoder
from .combiners import (
    MirasolCLSCombiner,
    MirasolCombiner,
    MirasolPerceiverCombiner,
    MirasolTTMCombiner,
    build_combiner,
)
from .configuration_mirasol import MirasolConfig, num_video_tokens
from .encoded_media import MirasolMediaOutput, MirasolStreamingState
from .hub import AUTO_MAP, CUSTOM_PIPELINES, GENERIC_CARD_MARKER, MODEL_CARD, write_model_card, write_remote_code
from .latent_model import MirasolLatentModel, MirasolLatentPredictor, latent_loss
from .layers import MirasolAttention
from .reconstruction import MirasolReconstructionDecoder, reconstruction_loss
from .text_decoder import (
    MirasolGatedCrossAttentionBlock,
    MirasolStaticCrossAttentionCacheLayer,
    MirasolTextDecoderLayer,
    MirasolTextModel,
    build_media_attention_mask,
)
from .video_encoder import MirasolVideoEncoder

@dataclass
class MirasolModelOutputWithPast(ModelOutput):
    """`media_latents` / `media_chunk_mask` are what each text row attended to; `encoded_media` is the encoding of the
    raw media given (one row per clip, before `media_index`), None when `media_latents` were passed in.

    With `output_hidden_states` / `output_attentions`, as in Llama: `hidden_states` (the embeddings, then each
    decoder layer's output, the last one normed), `attentions` (one (B, heads, L, S) per decoder layer), and
    `cross_attentions`, one (B, heads, L, T*m) per cross-attention block, media tokens chunk-major: chunk t owns
    tokens t*m .. t*m + m - 1, so `.unflatten(-1, (T, m)).sum(-1)` is the attention per chunk.
    """

    last_hidden_state: torch.FloatTensor | None = None
    cache: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    cross_attentions: tuple[torch.FloatTensor, ...] | None = None
    media_latents: torch.FloatTensor | None = None
    media_chunk_mask: torch.BoolTensor | None = None
    encoded_media: MirasolMediaOutput | None = None


@dataclass
class MirasolCausalLMOutputWithPast(ModelOutput):
    """`loss` is the weighted total; each component is reported next to it (None when not computed).
    `hidden_states`, `attentions`, `cross_attentions`: see `MirasolModelOutputWithPast`; `latent_attentions`: see
    `MirasolMediaOutput` (when raw media were encoded in this call)."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    cache: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    cross_attentions: tuple[torch.FloatTensor, ...] | None = None
    latent_attentions: tuple[torch.FloatTensor, ...] | None = None
    text_loss: torch.FloatTensor | None = None
    latent_loss: torch.FloatTensor | None = None
    reconstruction_loss: torch.FloatTensor | None = None
    media_latents: torch.FloatTensor | None = None
    media_chunk_mask: torch.BoolTensor | None = None


@dataclass
class MirasolGenerateOutput(GenerateDecoderOnlyOutput):
    """`GenerateDecoderOnlyOutput` plus `cross_attentions` (with `output_attentions=True`): a tuple over generation
    steps, each a tuple over the cross-attention blocks of (B, heads, q_len, T*m), media tokens chunk-major."""

    cross_attentions: tuple[tuple[torch.FloatTensor, ...], ...] | None = None


@dataclass
class MirasolGenerateBeamOutput(GenerateBeamDecoderOnlyOutput):
    """`GenerateBeamDecoderOnlyOutput` plus `cross_attentions`, as in `MirasolGenerateOutput` (one row per beam)."""

    cross_attentions: tuple[tuple[torch.FloatTensor, ...], ...] | None = None


def text_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor | None,
    num_items_in_batch=None,
    label_smoothing: float = 0.0,
    shift_labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Next-token cross-entropy; labels -100 are ignored.

    `shift_labels` (B, L), the targets already shifted (position i holds token i + 1, as Trainer passes under context
    parallelism), replace `labels` as in transformers' `ForCausalLMLoss`: every position of `logits` is scored.
    Summed and divided by `num_items_in_batch` when Trainer gives it (the supervised tokens of the whole accumulated
    batch), so gradient accumulation matches one large batch; otherwise the mean over this batch's tokens.
    """
    if shift_labels is None:
        logits, targets = logits[:, :-1], labels[:, 1:]
    else:
        targets = shift_labels
    logits = logits.float()
    targets = targets.to(logits.device)
    total = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]),
        targets.reshape(-1),
        ignore_index=-100,
        reduction="sum",
        label_smoothing=label_smoothing,
    )
    if num_items_in_batch is None:
        num_items_in_batch = (targets != -100).sum().clamp(min=1)
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


class MirasolPreTrainedModel(PreTrainedModel):
    config_class = MirasolConfig
    config: MirasolConfig
    base_model_prefix = "model"
    input_modalities = ("video", "audio", "text")
    supports_gradient_checkpointing = True
    # The blocks FSDP wraps and device_map keeps whole (see also the config's parallelism plans).
    _no_split_modules = ["MirasolEncoderLayer", "MirasolTextDecoderLayer", "MirasolGatedCrossAttentionBlock"]
    _skip_keys_device_placement = ["cache"]
    _supports_sdpa = True
    _supports_flash_attn = False  # the block-causal and cross-attention masks are 4D
    _supports_attention_backend = True
    # What `output_hidden_states` / `output_attentions` record (transformers' `capture_outputs` hooks). Every part
    # uses `MirasolAttention`, so the module path tells the text decoder's self- and cross-attention and the latent
    # model's apart.
    _can_record_outputs = {
        # The embeddings first (a cross-attention block may run before layer 0), then each decoder layer's output;
        # given `inputs_embeds`, the first layer's input stands in for them.
        "hidden_states": [
            OutputRecorder(nn.Embedding, layer_name="text_model.embed_tokens", capture_initial_hidden_state=False),
            OutputRecorder(MirasolTextDecoderLayer),
        ],
        "attentions": OutputRecorder(MirasolAttention, index=1, layer_name="text_model.layers"),
        "cross_attentions": OutputRecorder(MirasolAttention, index=1, layer_name="text_model.cross_attention_blocks"),
        "latent_attentions": OutputRecorder(MirasolAttention, index=1, layer_name="latent_model.encoder"),
    }

    def post_init(self):
        super().post_init()
        # transformers resolves the attention implementation on the top-level config only; the parts of Mirasol are
        # plain modules reading their own sub-config, so hand it down to the sub-configs that have none of their own
        # (one chosen per part, e.g. `attn_implementation={"": "sdpa", "text_config": "eager"}`, is kept).
        implementation = self.config._attn_implementation
        for key in self.config.sub_configs:
            sub_config = getattr(self.config, key)
            if sub_config._attn_implementation is None:
                sub_config._attn_implementation = implementation

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, plus what sharing needs: the code files, an `auto_map` entry for
        every Auto class and a `custom_pipelines` entry (so `trust_remote_code=True` works without this package), and
        a model card.

        A `state_dict` gathered from shards (DeepSpeed, FSDP, `accelerator.get_state_dict`) holds a copy of each tied
        weight, which `PreTrainedModel.save_pretrained` (it recognises ties by shared storage only) would write as a
        tensor of its own (the 256k x 1024 embedding of the small preset: 1 GB more in fp32): the copies of the
        model's active ties are left out."""
        state_dict = kwargs.get("state_dict")
        if state_dict is not None:
            tied = {target for target, source in self.all_tied_weights_keys.items()
                    if target in state_dict and source in state_dict}
            kwargs["state_dict"] = {name: value for name, value in state_dict.items() if name not in tied}
        self.config.auto_map = {**AUTO_MAP, **(getattr(self.config, "auto_map", None) or {})}
        self.config.custom_pipelines = {**CUSTOM_PIPELINES, **(getattr(self.config, "custom_pipelines", None) or {})}
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            write_remote_code(save_directory)
            write_model_card(self, save_directory)

    def _upload_modified_files(self, working_dir, *args, **kwargs):
        # push_to_hub writes transformers' generic card over ours just before uploading: put ours back, unless the
        # repository already had a card of its own.
        card = Path(working_dir) / MODEL_CARD
        if not card.exists() or GENERIC_CARD_MARKER in card.read_text(encoding="utf-8"):
            write_model_card(self, working_dir, overwrite=True)
        return super()._upload_modified_files(working_dir, *args, **kwargs)

    def set_attn_implementation(self, attn_implementation, *args, **kwargs):
        # Sub-configs belong to plain modules, which transformers can only set "in the dark" (with a warning each);
        # set them here first, and put them back if transformers refuses the implementation.
        sub_configs = [getattr(self.config, key) for key in self.config.sub_configs]
        previous = [sub_config._attn_implementation for sub_config in sub_configs]
        if isinstance(attn_implementation, str):
            for sub_config in sub_configs:
                sub_config._attn_implementation_internal = attn_implementation
        try:
            return super().set_attn_implementation(attn_implementation, *args, **kwargs)
        except Exception:
            for sub_config, implementation in zip(sub_configs, previous):
                sub_config._attn_implementation_internal = implementation
            raise

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        std = self.config.get_text_config().initializer_range
        if isinstance(module, MirasolCombiner):
            for embedding in (
                module.video_type_embedding,
                module.audio_type_embedding,
                module.no_video_embedding,
                module.no_audio_embedding,
            ):
                init.normal_(embedding, std=std)
            if isinstance(module, MirasolTTMCombiner):
                for embedding in (module.initial_memory, module.memory_type_embedding, module.processed_type_embedding):
                    init.normal_(embedding, std=std)
            elif isinstance(module, MirasolPerceiverCombiner):
                init.normal_(module.query_embedding, std=std)
            elif isinstance(module, MirasolCLSCombiner):
                init.normal_(module.cls_embedding, std=std)
        elif isinstance(module, MirasolLatentModel):
            init.normal_(module.slot_embedding, std=std)
        elif isinstance(module, MirasolReconstructionDecoder):
            init.normal_(module.query_embedding, std=std)
        elif isinstance(module, MirasolGatedCrossAttentionBlock):
            gate = self.config.get_text_config().cross_attention_gate_init
            init.constant_(module.cross_attn_attn_gate, gate)
            if module.mlp is not None:
                init.constant_(module.cross_attn_mlp_gate, gate)


def _check_chunk_mask(name: str, mask, batch: int, num_chunks: int, device) -> torch.Tensor:
    if mask is None:
        return torch.ones(batch, num_chunks, dtype=torch.bool, device=device)
    if mask.shape != (batch, num_chunks):
        raise ValueError(f"{name} must have shape (batch, num_chunks) = {(batch, num_chunks)}, got {tuple(mask.shape)}")
    return mask.to(device=device, dtype=torch.bool)


def media_loss_pairs(media_chunk_mask: torch.Tensor, video_chunk_mask: torch.Tensor | None) -> torch.Tensor:
    """(2,): how many chunk pairs (t, t+1) the latent and the reconstruction loss average over in a batch.

    Masks (B, T), one row per clip; `video_chunk_mask` None (no video given): no reconstruction pairs.
    """
    media_chunk_mask = media_chunk_mask.bool()
    latent_pairs = (media_chunk_mask[:, :-1] & media_chunk_mask[:, 1:]).sum()
    if video_chunk_mask is None:
        return torch.stack([latent_pairs, torch.zeros_like(latent_pairs)])
    return torch.stack([latent_pairs, (media_chunk_mask[:, :-1] & video_chunk_mask.bool()[:, 1:]).sum()])


def _select_media(media_latents, media_chunk_mask, media_index, text_rows: int):
    """Media rows for each text row: `media_latents[media_index]`, checked."""
    if media_latents is None:
        raise ValueError("media_index was given without media (pixel_values_videos, input_features or media_latents)")
    if media_index.ndim != 1 or media_index.shape[0] != text_rows or media_index.dtype.is_floating_point:
        raise ValueError(
            f"media_index must be an integer tensor (batch,) with one entry per text row ({text_rows}), got "
            f"{media_index.dtype} {tuple(media_index.shape)}"
        )
    media_rows = media_latents.shape[0]
    if media_index.numel() and (media_index.min() < 0 or media_index.max() >= media_rows):
        raise ValueError(f"media_index must lie in [0, {media_rows}) (the media batch), got {media_index.tolist()}")
    media_index = media_index.to(media_latents.device)
    if media_chunk_mask is not None:
        media_chunk_mask = media_chunk_mask[media_index]
    return media_latents[media_index], media_chunk_mask


class MirasolModel(MirasolPreTrainedModel):
    """Encoders, combiner, latent model and text decoder; no LM head."""

    def __init__(self, config: MirasolConfig):
        super().__init__(config)
        self.video_encoder = MirasolVideoEncoder(config.video_config)
        self.audio_encoder = MirasolAudioEncoder(config.audio_config)
        self.combiner = build_combiner(
            config.combiner_config, config.video_config.hidden_size, config.audio_config.hidden_size
        )
        self.latent_model = MirasolLatentModel(
            config.latent_config, config.combiner_config.hidden_size, config.combiner_config.num_output_tokens
        )
        self.text_model = MirasolTextModel(config.text_config)
        self.post_init()

    def get_input_embeddings(self):
        return self.text_model.embed_tokens

    def set_input_embeddings(self, value):
        self.text_model.embed_tokens = value

    def _video_tokens(self, pixel_values_videos, batch, num_chunks):
        """(B, F, C, H, W) frames -> (B, T, Nv, dv) tokens, each chunk of `frames_per_chunk` encoded alone."""
        video_config = self.config.video_config
        if pixel_values_videos is None:
            # Placeholder tokens of the right shape; the combiner swaps in its "no video" embedding.
            size = video_config.image_size
            count = num_video_tokens(video_config, self.config.frames_per_chunk, size, size)
            return torch.zeros(batch, num_chunks, count, video_config.hidden_size, device=self.device, dtype=self.dtype)
        frames = pixel_values_videos.to(self.dtype)
        chunks = frames.reshape(batch * num_chunks, self.config.frames_per_chunk, *frames.shape[2:])  # (B*T, f, C, H, W)
        tokens = self.video_encoder(chunks)
        return tokens.reshape(batch, num_chunks, *tokens.shape[1:])  # (B, T, Nv, dv)

    def _audio_tokens(self, input_features, batch, num_chunks):
        """(B, n_mels, T*A) log-mel -> (B, T, Na, da) tokens, chunk t from frames [t*A, (t+1)*A)."""
        audio_config = self.config.audio_config
        frames_per_chunk = self.config.audio_frames_per_chunk
        if input_features is None:
            patch_mel, patch_time = audio_config.patch_size
            count = (audio_config.num_mel_bins // patch_mel) * (frames_per_chunk // patch_time)
            return torch.zeros(batch, num_chunks, count, audio_config.hidden_size, device=self.device, dtype=self.dtype)
        features = input_features.to(self.dtype)
        # (B, n_mels, T*A) -> (B, n_mels, T, A) -> (B, T, n_mels, A) -> (B*T, n_mels, A)
        features = features.reshape(batch, features.shape[1], num_chunks, frames_per_chunk).transpose(1, 2)
        tokens = self.audio_encoder(features.reshape(batch * num_chunks, -1, frames_per_chunk))
        return tokens.reshape(batch, num_chunks, *tokens.shape[1:])  # (B, T, Na, da)

    def _chunking(self, pixel_values_videos, input_features) -> tuple[int, int]:
        """Batch size and number of chunks implied by the media, checked against each other and the config."""
        found = {}
        if pixel_values_videos is not None:
            if not torch.is_floating_point(pixel_values_videos) or pixel_values_videos.ndim != 5:
                raise ValueError(
                    "pixel_values_videos must be a float tensor (batch, frames, channels, height, width), got "
                    f"{pixel_values_videos.dtype} {tuple(pixel_values_videos.shape)}"
                )
            frames = pixel_values_videos.shape[1]
            if frames % self.config.frames_per_chunk:
                raise ValueError(
                    f"pixel_values_videos has {frames} frames, not a multiple of frames_per_chunk="
                    f"{self.config.frames_per_chunk}"
                )
            found["pixel_values_videos"] = (pixel_values_videos.shape[0], frames // self.config.frames_per_chunk)
        if input_features is not None:
            if not torch.is_floating_point(input_features) or input_features.ndim != 3:
                raise ValueError(
                    "input_features must be a float tensor (batch, mel bins, time), got "
                    f"{input_features.dtype} {tuple(input_features.shape)}"
                )
            frames = input_features.shape[2]
            if frames % self.config.audio_frames_per_chunk:
                raise ValueError(
                    f"input_features has {frames} time frames, not a multiple of audio_frames_per_chunk="
                    f"{self.config.audio_frames_per_chunk}"
                )
            found["input_features"] = (input_features.shape[0], frames // self.config.audio_frames_per_chunk)
        if not found:
            raise ValueError("encode_media needs pixel_values_videos, input_features, or both")
        if len(set(found.values())) > 1:
            raise ValueError(f"video and audio disagree on (batch, num_chunks): {found}")
        return next(iter(found.values()))

    def _encode_modalities(
        self, pixel_values_videos, input_features, video_chunk_mask, audio_chunk_mask, batch, num_chunks
    ):
        """Each chunk's video and audio tokens, (B, T, Nv, dv) and (B, T, Na, da), and the checked chunk masks.

        A missing modality counts as absent in every chunk (its mask all False).
        """
        video_chunk_mask = _check_chunk_mask("video_chunk_mask", video_chunk_mask, batch, num_chunks, self.device)
        audio_chunk_mask = _check_chunk_mask("audio_chunk_mask", audio_chunk_mask, batch, num_chunks, self.device)
        if pixel_values_videos is None:
            video_chunk_mask = torch.zeros_like(video_chunk_mask)
        if input_features is None:
            audio_chunk_mask = torch.zeros_like(audio_chunk_mask)
        video_tokens = self._video_tokens(pixel_values_videos, batch, num_chunks)
        audio_tokens = self._audio_tokens(input_features, batch, num_chunks)
        return video_tokens, audio_tokens, video_chunk_mask, audio_chunk_mask

    def _combine_in_groups(
        self, pixel_values_videos, input_features, video_chunk_mask, audio_chunk_mask, batch, num_chunks, state=None
    ):
        """Encoders and combiner over `config.media_group_chunks` chunks at a time, the combiner's state carried from
        group to group (exactly as one pass, since each chunk is encoded alone): peak memory stays that of a group.

        Returns x (B, T, m, d_c), the combiner state after the last chunk and the media chunk mask (B, T).
        """
        video_chunk_mask = _check_chunk_mask("video_chunk_mask", video_chunk_mask, batch, num_chunks, self.device)
        audio_chunk_mask = _check_chunk_mask("audio_chunk_mask", audio_chunk_mask, batch, num_chunks, self.device)
        group = self.config.media_group_chunks or num_chunks
        combined, masks = None, []
        for start in range(0, num_chunks, group):
            stop = min(start + group, num_chunks)
            frames = features = None
            if pixel_values_videos is not None:
                per_chunk = self.config.frames_per_chunk
                frames = pixel_values_videos[:, start * per_chunk : stop * per_chunk]  # (B, g*f, C, H, W)
            if input_features is not None:
                per_chunk = self.config.audio_frames_per_chunk
                features = input_features[:, :, start * per_chunk : stop * per_chunk]  # (B, mels, g*A)
            video_tokens, audio_tokens, group_video_mask, group_audio_mask = self._encode_modalities(
                frames, features, video_chunk_mask[:, start:stop], audio_chunk_mask[:, start:stop], batch, stop - start
            )
            group_combined, state = self.combiner.combine_streaming(
                video_tokens, audio_tokens, group_video_mask, group_audio_mask, state
            )  # (B, g, m, d_c)
            # Each group is copied into one output allocated once: a view would keep the combiner's whole token
            # sequence alive, and a small copy per group, allocated between groups' temporaries, fragments the heap.
            if combined is None:
                combined = group_combined.new_empty(batch, num_chunks, *group_combined.shape[2:])  # (B, T, m, d_c)
            combined[:, start:stop] = group_combined
            masks.append(group_video_mask | group_audio_mask)
        return combined, state, torch.cat(masks, dim=1)

    def encode_media(
        self,
        pixel_values_videos: torch.FloatTensor | None = None,
        input_features: torch.FloatTensor | None = None,
        video_chunk_mask: torch.BoolTensor | None = None,
        audio_chunk_mask: torch.BoolTensor | None = None,
        output_attentions: bool = False,
    ) -> MirasolMediaOutput:
        """Video and/or audio -> latents the text decoder attends to (see `MirasolMediaOutput`).

        A missing modality counts as absent in every chunk (its mask all False), as does a chunk masked out. Chunks
        go through the encoders `config.media_group_chunks` at a time, so memory stays flat in the clip length.
        With `output_attentions`, the latent model's attention weights come back as `latent_attentions`.
        """
        batch, num_chunks = self._chunking(pixel_values_videos, input_features)
        combined, _, media_chunk_mask = self._combine_in_groups(
            pixel_values_videos, input_features, video_chunk_mask, audio_chunk_mask, batch, num_chunks
        )  # (B, T, m, d_c)
        latent = self._latent_model_outputs(combined, media_chunk_mask, output_latent_attentions=output_attentions)
        return MirasolMediaOutput(
            media_latents=latent.media_latents,  # (B, T, m, d)
            media_chunk_mask=media_chunk_mask,
            combined_features=combined,
            latent_attentions=latent.latent_attentions,
        )

    @capture_outputs
    def _latent_model_outputs(self, combined, media_chunk_mask, output_latent_attentions=False, **kwargs):
        """The latent model's h; `capture_outputs` records its attention weights when `output_latent_attentions`."""
        latents = self.latent_model(
            combined, media_chunk_mask, windows_per_pass=self.config.media_group_chunks,
            output_attentions=output_latent_attentions,
        )
        return MirasolMediaOutput(media_latents=latents)

    def encode_media_chunk(
        self,
        pixel_values_videos: torch.FloatTensor | None = None,
        input_features: torch.FloatTensor | None = None,
        video_chunk_mask: torch.BoolTensor | None = None,
        audio_chunk_mask: torch.BoolTensor | None = None,
        state: MirasolStreamingState | None = None,
    ) -> tuple[MirasolMediaOutput, MirasolStreamingState]:
        """Encodes the next chunk(s) of a stream, given as `encode_media` takes a clip (any whole number of chunks).

        Returns the new chunks' `MirasolMediaOutput` and the stream's state (None starts a stream; the state is
        updated in place). Chunk by chunk, the outputs equal those of `encode_media` on the whole clip; no chunk is
        encoded twice. With `latent_config.context_chunks` = N the state and the cost of a call stay the same for any
        stream length; without, the latent model attends to the keys/values of every chunk so far.
        `state.media_output()` gives the latent model's context, for `generate(media_latents=...)`.
        """
        batch, num_chunks = self._chunking(pixel_values_videos, input_features)
        if state is None:
            state = MirasolStreamingState()
        elif state.batch_size not in (None, batch):
            raise ValueError(f"this chunk has batch size {batch}, the stream {state.batch_size}")
        combined, combiner_state, media_chunk_mask = self._combine_in_groups(
            pixel_values_videos, input_features, video_chunk_mask, audio_chunk_mask, batch, num_chunks,
            state.combiner_state,
        )  # (B, T, m, d_c)
        window = self.config.latent_config.context_chunks
        if window is None:
            # The latent model's mask needs every chunk so far: later chunks skip earlier ones without media.
            seen_chunk_mask = media_chunk_mask
            if state.media_chunk_mask is not None:
                seen_chunk_mask = torch.cat([state.media_chunk_mask, media_chunk_mask], dim=1)  # (B, P + T)
            latents = self.latent_model(combined, seen_chunk_mask, cache=state.latent_cache)  # (B, T, m, d)
            output = MirasolMediaOutput(
                media_latents=latents, media_chunk_mask=media_chunk_mask, combined_features=combined
            )
            state.append(output, combiner_state)
            return output, state

        # Windowed: the last N-1 chunks' x and the new ones, each new chunk the last of its window.
        context_combined, context_mask = combined, media_chunk_mask
        if state.context_combined is not None and window > 1:
            context_combined = torch.cat([state.context_combined[:, 1 - window :], combined], dim=1)  # (B, n, m, d_c)
            context_mask = torch.cat([state.media_chunk_mask[:, 1 - window :], media_chunk_mask], dim=1)  # (B, n)
        context_latents = self.latent_model(context_combined, context_mask)  # (B, n, m, d)
        latents = context_latents[:, -num_chunks:]  # (B, T, m, d)
        if context_combined.shape[1] > window:  # several new chunks: the last window, encoded as one clip
            context_combined, context_mask = context_combined[:, -window:], context_mask[:, -window:]
            context_latents = self.latent_model(context_combined, context_mask)
        state.slide(num_chunks, combiner_state, context_combined, context_mask, context_latents)
        return MirasolMediaOutput(
            media_latents=latents, media_chunk_mask=media_chunk_mask, combined_features=combined
        ), state

    # `capture_outputs` fills hidden_states / attentions / cross_attentions (`_can_record_outputs`) and honours
    # `return_dict`. transformers 5.24 renamed `past_key_values` to `cache`; the old name still works, as in Llama.
    @capture_outputs
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        input_features: torch.FloatTensor | None = None,
        video_chunk_mask: torch.BoolTensor | None = None,
        audio_chunk_mask: torch.BoolTensor | None = None,
        media_latents: torch.FloatTensor | MirasolMediaOutput | None = None,
        media_chunk_mask: torch.BoolTensor | None = None,
        media_index: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        media_attention_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> MirasolModelOutputWithPast:
        """Encodes raw media (or takes `media_latents` from `encode_media`) and runs the text decoder on it.

        `media_index` (B_text,) lets several text rows share one clip: text row i attends to media row
        `media_index[i]`, so a clip asked about many times is encoded once per batch (training included).
        `media_attention_mask` (B_text, 1, 1, T*m): the text rows' cross-attention mask from
        `build_media_attention_mask`, made once per generate() call; built from `media_chunk_mask` when not given.
        `output_attentions`, `output_hidden_states` and `return_dict` work as in transformers' models.
        """
        has_raw_media = pixel_values_videos is not None or input_features is not None
        if isinstance(media_latents, MirasolMediaOutput):
            media_latents, media_chunk_mask = media_latents.media_latents, media_latents.media_chunk_mask
        if has_raw_media and media_latents is not None:
            raise ValueError("pass either raw media (pixel_values_videos / input_features) or media_latents, not both")
        output_attentions = bool(kwargs.get("output_attentions", self.config.output_attentions))
        media = None
        if has_raw_media:
            media = self.encode_media(
                pixel_values_videos,
                input_features,
                video_chunk_mask,
                audio_chunk_mask,
                output_attentions=output_attentions,
            )
            media_latents, media_chunk_mask = media.media_latents, media.media_chunk_mask
        elif media_latents is not None and media_latents.ndim != 4:
            raise ValueError(
                f"media_latents must be (batch, num_chunks, tokens_per_chunk, hidden), got {tuple(media_latents.shape)}"
            )
        if media_index is not None:
            text_rows = (input_ids if input_ids is not None else inputs_embeds).shape[0]
            media_latents, media_chunk_mask = _select_media(media_latents, media_chunk_mask, media_index, text_rows)

        hidden_states, cache = self.text_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            media_latents=media_latents,
            media_chunk_mask=media_chunk_mask,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            media_attention_mask=media_attention_mask,
            output_attentions=output_attentions,
        )
        return MirasolModelOutputWithPast(
            last_hidden_state=hidden_states,
            cache=cache,
            media_latents=media_latents,
            media_chunk_mask=media_chunk_mask,
            encoded_media=media,
        )


class MirasolForConditionalGeneration(MirasolPreTrainedModel, GenerationMixin):
    """Mirasol with the LM head and the two auxiliary heads (latent predictor, reconstruction decoder).

    `forward(..., labels=...)` returns the weighted loss and its components; `generate()` answers questions.
    """

    _tied_weights_keys = {"lm_head.weight": "model.text_model.embed_tokens.weight"}
    # Parallelism plans of the head, as Llama's; the base model's are `MirasolConfig.base_model_*_plan`.
    _tp_plan = {"lm_head": "colwise_gather_output"}
    _pp_plan = {"lm_head": (["hidden_states"], ["logits"])}
    _fsdp_plan = {"lm_head": "keep_full_weight"}
    # Trainer passes `num_items_in_batch` so the text loss is normalised over the whole accumulated batch.
    accepts_loss_kwargs = True
    # With `cache_implementation="static"` every cache slot is a fixed-size `StaticLayer` (the cross-attention ones
    # sized for the media, see `_prepare_static_cache`), so the decoding step compiles as one graph.
    _can_compile_fullgraph = True

    def __init__(self, config: MirasolConfig):
        super().__init__(config)
        self.model = MirasolModel(config)
        self.latent_predictor = MirasolLatentPredictor(config.latent_config, config.combiner_config.hidden_size)
        self.reconstruction_decoder = MirasolReconstructionDecoder(
            config.reconstruction_config, config.latent_config.hidden_size, config.video_config.num_channels
        )
        text_config = config.text_config
        self.lm_head = nn.Linear(text_config.hidden_size, text_config.vocab_size, bias=False)
        self.post_init()

    @classmethod
    def from_pretrained_backbones(cls, text_model, vision_model=None, audio_model=None, **kwargs):
        """A model started from a pretrained LM and vision tower, and its processor: see `mirasol_hf.backbones`."""
        from .backbones import from_pretrained_backbones  # backbones.py builds on this module

        return from_pretrained_backbones(text_model, vision_model, audio_model, **kwargs)

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def encode_media(self, *args, **kwargs) -> MirasolMediaOutput:
        """See `MirasolModel.encode_media`."""
        return self.model.encode_media(*args, **kwargs)

    def encode_media_chunk(self, *args, **kwargs) -> tuple[MirasolMediaOutput, MirasolStreamingState]:
        """See `MirasolModel.encode_media_chunk`."""
        return self.model.encode_media_chunk(*args, **kwargs)

    # transformers 5.24 renamed `past_key_values` to `cache`; the old name still works, as in Llama.
    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        input_features: torch.FloatTensor | None = None,
        video_chunk_mask: torch.BoolTensor | None = None,
        audio_chunk_mask: torch.BoolTensor | None = None,
        media_latents: torch.FloatTensor | MirasolMediaOutput | None = None,
        media_chunk_mask: torch.BoolTensor | None = None,
        media_index: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        media_attention_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> MirasolCausalLMOutputWithPast:
        """Logits for the text; with `labels`, the losses.

        The latent and reconstruction losses need the raw media: with `media_latents` given instead, only the text
        loss is computed (the other two are None) and `loss` is the weighted text loss. With `media_index` (see
        `MirasolModel.forward`, as for `media_attention_mask`) the media losses are computed once per clip, not once
        per question. Keyword arguments `num_items_in_batch` (Trainer) and `media_pairs_in_batch` (`MirasolTrainer`,
        see `media_loss_pairs`) normalise the losses over a whole accumulated batch; `shift_labels` is taken as
        transformers' `ForCausalLMLoss` takes it.
        """
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        shift_labels = kwargs.pop("shift_labels", None)
        media_pairs_in_batch = kwargs.pop("media_pairs_in_batch", None)
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            pixel_values_videos=pixel_values_videos,
            input_features=input_features,
            video_chunk_mask=video_chunk_mask,
            audio_chunk_mask=audio_chunk_mask,
            media_latents=media_latents,
            media_chunk_mask=media_chunk_mask,
            media_index=media_index,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            media_attention_mask=media_attention_mask,
            return_dict=True,
            **kwargs,
        )
        logits = self.lm_head(slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep))

        loss = text_loss = media_latent_loss = media_reconstruction_loss = None
        if labels is not None or shift_labels is not None:
            config = self.config
            text_loss = text_cross_entropy(logits, labels, num_items_in_batch, config.label_smoothing, shift_labels)
            loss = config.text_loss_weight * text_loss
            if outputs.encoded_media is not None:
                media_loss, media_latent_loss, media_reconstruction_loss = self._media_losses(
                    outputs.encoded_media, pixel_values_videos, video_chunk_mask, media_pairs_in_batch
                )
                if num_items_in_batch is not None and media_pairs_in_batch is None:
                    # Under gradient accumulation each micro-batch's media losses count by its share of the
                    # supervised tokens, as the text loss does; without accumulation the share is 1.
                    targets = labels[:, 1:] if shift_labels is None else shift_labels
                    share = (targets != -100).sum() / num_items_in_batch
                    media_loss = media_loss * share.to(media_loss.device)
                loss = loss + media_loss

        return MirasolCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            cross_attentions=outputs.cross_attentions,
            latent_attentions=outputs.encoded_media.latent_attentions if outputs.encoded_media is not None else None,
            text_loss=text_loss,
            latent_loss=media_latent_loss,
            reconstruction_loss=media_reconstruction_loss,
            media_latents=outputs.media_latents,
            media_chunk_mask=outputs.media_chunk_mask,
        )

    def _media_losses(self, media: MirasolMediaOutput, pixel_values_videos, video_chunk_mask, pairs_in_batch=None):
        """Weighted latent + reconstruction loss, and each of them, from the encoding of each clip.

        `pairs_in_batch` (2,): the chunk pairs each loss averages over in the whole accumulated batch (all processes),
        from `media_loss_pairs`; each loss then counts in the total by this batch's share of its pairs, so that
        micro-batches add up to one large batch exactly. The returned components stay this batch's means.
        """
        config = self.config
        latents, chunk_mask = media.media_latents, media.media_chunk_mask
        if pixel_values_videos is not None:
            batch, num_chunks = chunk_mask.shape
            video_chunk_mask = _check_chunk_mask("video_chunk_mask", video_chunk_mask, batch, num_chunks, latents.device)
        shares = torch.ones(2, device=latents.device)
        if pairs_in_batch is not None:
            pairs_here = media_loss_pairs(chunk_mask, video_chunk_mask if pixel_values_videos is not None else None)
            shares = pairs_here.to(latents.device) / torch.as_tensor(pairs_in_batch, device=latents.device).clamp(min=1)
        latent_source = latents
        if config.latent_config.latent_loss_detach_input:
            latent_source = self.model.latent_model(media.combined_features.detach(), chunk_mask)
        predicted = self.latent_predictor(latent_source)
        media_latent_loss = latent_loss(
            predicted, media.combined_features, chunk_mask, config.latent_config.latent_loss_type
        )
        total = config.latent_loss_weight * media_latent_loss * shares[0]
        media_reconstruction_loss = None
        if pixel_values_videos is not None:
            frames = pixel_values_videos.to(latents.dtype)
            frames = frames.reshape(batch, num_chunks, config.frames_per_chunk, *frames.shape[2:])  # (B, T, f, C, H, W)
            media_reconstruction_loss = reconstruction_loss(
                self.reconstruction_decoder, latents, frames, chunk_mask, video_chunk_mask
            )
            total = total + config.reconstruction_loss_weight * media_reconstruction_loss * shares[1]
        return total, media_latent_loss, media_reconstruction_loss

    @torch.no_grad()
    def generate(
        self,
        inputs: torch.Tensor | None = None,
        generation_config=None,
        pixel_values_videos: torch.FloatTensor | None = None,
        input_features: torch.FloatTensor | None = None,
        video_chunk_mask: torch.BoolTensor | None = None,
        audio_chunk_mask: torch.BoolTensor | None = None,
        media_latents: torch.FloatTensor | MirasolMediaOutput | None = None,
        media_chunk_mask: torch.BoolTensor | None = None,
        media_index: torch.LongTensor | None = None,
        **kwargs,
    ):
        """`GenerationMixin.generate`, with the media encoded once up front (not at every step, nor per beam).

        Takes the processor's outputs, or `media_latents` from `encode_media` to reuse an encoding; `media_index`
        maps each prompt to its clip as in `forward` (several questions about one clip in one batch).
        With `return_dict_in_generate=True, output_attentions=True` the output also has `cross_attentions`: a tuple
        over steps, each a tuple over cross-attention blocks of (B, heads, q_len, T*m), media tokens chunk-major
        (see `MirasolGenerateOutput`).
        """
        if isinstance(media_latents, MirasolMediaOutput):
            media_latents, media_chunk_mask = media_latents.media_latents, media_latents.media_chunk_mask
        if pixel_values_videos is not None or input_features is not None:
            if media_latents is not None:
                raise ValueError("pass either raw media (pixel_values_videos / input_features) or media_latents")
            media = self.model.encode_media(pixel_values_videos, input_features, video_chunk_mask, audio_chunk_mask)
            media_latents, media_chunk_mask = media.media_latents, media.media_chunk_mask
        if media_index is not None:
            prompts = inputs if inputs is not None else kwargs.get("input_ids", kwargs.get("inputs_embeds"))
            if prompts is None:
                raise ValueError("media_index needs the prompts (input_ids) it maps to clips")
            media_latents, media_chunk_mask = _select_media(media_latents, media_chunk_mask, media_index, len(prompts))
        if media_latents is not None:
            if media_chunk_mask is None:
                media_chunk_mask = torch.ones(media_latents.shape[:2], dtype=torch.bool, device=media_latents.device)
            kwargs["media_latents"] = media_latents
            kwargs["media_chunk_mask"] = media_chunk_mask
            if "media_attention_mask" not in kwargs:
                # Built once here, not at every step (generate() repeats it per beam / returned sequence).
                embeds = kwargs.get("inputs_embeds")
                dtype = embeds.dtype if embeds is not None else self.get_input_embeddings().weight.dtype
                tokens_per_chunk = media_latents.shape[2]
                kwargs["media_attention_mask"] = build_media_attention_mask(media_chunk_mask, tokens_per_chunk, dtype)
            # An assistant (assisted decoding) is handed these latents, not the raw media.
            assistant = kwargs.get("assistant_model")
            width = media_latents.shape[-1]
            if isinstance(assistant, MirasolForConditionalGeneration):
                width = assistant.config.text_config.cross_attention_hidden_size
            if width != media_latents.shape[-1]:
                raise ValueError(
                    f"assistant_model cross-attends to media latents of width {width}, but this model's are "
                    f"{media_latents.shape[-1]} wide: the assistant reads this model's media latents, so its "
                    "latent_config.hidden_size must be the same"
                )
        defaults = generation_config if generation_config is not None else self.generation_config
        record_cross_attentions = kwargs.get(
            "return_dict_in_generate", defaults.return_dict_in_generate
        ) and kwargs.get("output_attentions", defaults.output_attentions)
        if not record_cross_attentions:
            return super().generate(inputs, generation_config, **kwargs)
        # GenerationMixin keeps cross-attentions for encoder-decoder models only: take them from each forward.
        steps = []
        hook = self.register_forward_hook(lambda module, args, output: steps.append(output.cross_attentions))
        try:
            output = super().generate(inputs, generation_config, **kwargs)
        finally:
            hook.remove()
        if not isinstance(output, ModelOutput):
            return output
        # Steps generate() dropped (a deferred stop) drop here too; the assistant's forwards are not hooked.
        if output.attentions is not None:
            steps = steps[: len(output.attentions)]
        steps = tuple(steps)
        output_class = (
            MirasolGenerateBeamOutput if isinstance(output, GenerateBeamDecoderOnlyOutput) else MirasolGenerateOutput
        )
        return output_class(**dict(output.items()), cross_attentions=steps)

    def _prepare_static_cache(self, *args, model_kwargs, **kwargs) -> Cache:
        cache = super()._prepare_static_cache(*args, model_kwargs=model_kwargs, **kwargs)
        # The static cache is sized for the text; each cross-attention block's slot holds the T*m media tokens.
        text_model = self.model.text_model
        media_latents = model_kwargs.get("media_latents")
        num_media_tokens = media_latents.shape[1] * media_latents.shape[2] if media_latents is not None else 1
        del cache.layers[text_model.config.num_hidden_layers :]
        cache.layers.extend(
            MirasolStaticCrossAttentionCacheLayer(max_cache_len=num_media_tokens)
            for _ in text_model.cross_attention_blocks
        )
        return cache

    def prepare_inputs_for_generation(
        self, input_ids, cache=None, media_latents=None, use_cache=True, is_first_iteration=False, **kwargs
    ):
        model_inputs = super().prepare_inputs_for_generation(
            input_ids,
            cache=cache,
            media_latents=media_latents,
            use_cache=use_cache,
            is_first_iteration=is_first_iteration,
            **kwargs,
        )
        if use_cache and not is_first_iteration:
            # The cross-attention keys/values of the media are in the cache from the first step on.
            model_inputs["media_latents"] = None
        return model_inputs


__all__ = [
    "MirasolForConditionalGeneration",
    "MirasolMediaOutput",
    "MirasolModel",
    "MirasolPreTrainedModel",
]
