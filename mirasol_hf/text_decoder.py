"""Text decoder: a Llama-style causal LM with gated cross-attention to the audio-video latents.

Parameter names inside `MirasolTextModel` are those of `transformers.LlamaModel` (`embed_tokens`,
`layers.{i}.self_attn.q_proj`, `layers.{i}.mlp.gate_proj`, `norm`, ...), so a Llama-family checkpoint loads into it
directly. The cross-attention blocks (`cross_attention_blocks.{j}`) are new: Flamingo-style, tanh-gated with gates
initialised at zero, each placed before the decoder layer `config.cross_attention_layers[j]`.

Cache layout: the self-attention of layer `i` uses cache slot `i`; cross-attention block `j` stores the media
keys/values once, at prefill, in slot `num_hidden_layers + j` (a `MirasolCrossAttentionCacheLayer`, which
`cache.crop()` leaves whole), and every later step reads them from there.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer, StaticLayer
from transformers.masking_utils import create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.models.llama.modeling_llama import LlamaRMSNorm, LlamaRotaryEmbedding

from .configuration_mirasol import MirasolTextConfig
from .layers import MirasolAttention, additive_mask


class MirasolCrossAttentionCacheLayer(DynamicLayer):
    """Cache slot of a cross-attention block: the media keys/values (B, heads, T*m, D), written once at prefill.

    `crop()` leaves them whole: what assisted / prompt-lookup decoding crops are rejected draft text tokens.
    """

    def crop(self, tokens_to_remove: int) -> None:
        pass


class MirasolStaticCrossAttentionCacheLayer(StaticLayer):
    """`MirasolCrossAttentionCacheLayer` for a static cache (`cache_implementation="static"`), `T*m` long."""

    def crop(self, tokens_to_remove: int) -> None:
        pass


class MirasolTextMLP(nn.Module):
    """SwiGLU MLP with Llama's names."""

    def __init__(self, config: MirasolTextConfig, intermediate_size: int):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, intermediate_size, bias=config.mlp_bias)
        self.up_proj = nn.Linear(config.hidden_size, intermediate_size, bias=config.mlp_bias)
        self.down_proj = nn.Linear(intermediate_size, config.hidden_size, bias=config.mlp_bias)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(hidden_states)) * self.up_proj(hidden_states))


def _text_attention(config: MirasolTextConfig, cache_index: int, cross: bool) -> MirasolAttention:
    return MirasolAttention(
        config,
        hidden_size=config.hidden_size,
        num_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        head_dim=config.head_dim,
        key_value_size=config.cross_attention_hidden_size if cross else None,
        qkv_bias=config.attention_bias,
        output_bias=config.attention_output_bias,
        is_causal=not cross,
        dropout=config.attention_dropout,
        cache_index=cache_index,
    )


class MirasolTextDecoderLayer(GradientCheckpointingLayer):
    """Llama decoder layer: RMSNorm, rotary causal self-attention, RMSNorm, SwiGLU."""

    def __init__(self, config: MirasolTextConfig, layer_idx: int):
        super().__init__()
        self.self_attn = _text_attention(config, cache_index=layer_idx, cross=False)
        self.mlp = MirasolTextMLP(config, config.intermediate_size)
        self.input_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, hidden_states, attention_mask=None, position_embeddings=None, cache=None, **kwargs):
        attended, _ = self.self_attn(
            self.input_layernorm(hidden_states),
            attention_mask=attention_mask,
            position_embeddings=position_embeddings,
            cache=cache,
            **kwargs,
        )
        hidden_states = hidden_states + attended
        return hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))


class MirasolGatedCrossAttentionBlock(GradientCheckpointingLayer):
    """Text tokens attend to the media latents; the result enters the residual stream through tanh gates.

    With both gates at zero (their initial value) the block is the identity, so the text decoder starts out as
    exactly the language model it was initialised from.
    """

    def __init__(self, config: MirasolTextConfig, cache_index: int):
        super().__init__()
        self.input_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.cross_attn = _text_attention(config, cache_index=cache_index, cross=True)
        self.cross_attn_attn_gate = nn.Parameter(torch.zeros(1))
        if config.cross_attention_intermediate_size:
            self.post_attention_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
            self.mlp = MirasolTextMLP(config, config.cross_attention_intermediate_size)
            self.cross_attn_mlp_gate = nn.Parameter(torch.zeros(1))
        else:
            self.mlp = None

    def forward(
        self, hidden_states, media_latents=None, media_attention_mask=None, has_media=None, cache=None, **kwargs
    ):
        attended, _ = self.cross_attn(
            self.input_layernorm(hidden_states),
            key_value_states=media_latents,
            attention_mask=media_attention_mask,
            cache=cache,
            is_cross_attention=True,
            **kwargs,
        )
        # Samples without any media chunk get no cross-attention update at all.
        attended = attended * has_media
        hidden_states = hidden_states + self.cross_attn_attn_gate.tanh() * attended
        if self.mlp is not None:
            update = self.mlp(self.post_attention_layernorm(hidden_states)) * has_media
            hidden_states = hidden_states + self.cross_attn_mlp_gate.tanh() * update
        return hidden_states


def build_media_attention_mask(media_chunk_mask: torch.Tensor, tokens_per_chunk: int, dtype: torch.dtype):
    """(B, T) chunk mask -> additive cross-attention mask (B, 1, 1, T*m) over the chunk-major media tokens."""
    token_mask = media_chunk_mask.bool().repeat_interleave(tokens_per_chunk, dim=1)  # (B, T*m)
    return additive_mask(token_mask[:, None, None, :], dtype)


def _cross_attention_cached(cache: Cache | None, index: int) -> bool:
    if cache is None or index >= len(cache.layers):
        return False
    layer = cache.layers[index]
    return layer.is_initialized and layer.keys.numel() > 0


class MirasolTextModel(nn.Module):
    """The decoder stack (no LM head). See the module docstring for names and cache layout."""

    def __init__(self, config: MirasolTextConfig):
        super().__init__()
        self.config = config
        # No padding_idx: models whose pad token is eos (Llama, Mistral) would otherwise never train eos's embedding.
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(MirasolTextDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.cross_attention_blocks = nn.ModuleList(
            MirasolGatedCrossAttentionBlock(config, cache_index=config.num_hidden_layers + j)
            for j in range(len(config.cross_attention_layers))
        )
        # decoder layer index -> cross-attention block that runs before it
        self._block_before_layer = {layer: j for j, layer in enumerate(config.cross_attention_layers)}
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config=config)

    def _ensure_cache_slots(self, cache: Cache) -> None:
        # A cache built from the config has one slot per decoder layer; the cross-attention blocks need theirs too.
        needed = self.config.num_hidden_layers + len(self.cross_attention_blocks)
        while len(cache.layers) < needed:
            cache.layers.append(MirasolCrossAttentionCacheLayer())

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        media_latents: torch.Tensor | None = None,
        media_chunk_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        media_attention_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, Cache | None]:
        """Runs the decoder.

        `media_latents` (B, T, m, d) and `media_chunk_mask` (B, T) are the latent model's outputs. On decoding steps
        leave `media_latents` None (the cache holds their keys/values) but keep passing `media_chunk_mask`; with
        neither latents nor cached media (text-only input) the cross-attention blocks are skipped.
        `media_attention_mask` is `build_media_attention_mask(media_chunk_mask, m, dtype)` made once by the caller
        (generate() passes it at every step); without it, or in another dtype than the text's, it is built here.
        `use_cache` defaults to `config.use_cache`, except in a training forward (training mode, gradients on), which
        builds no cache unless asked. `kwargs` (e.g. `output_attentions`) reach the attention functions. Returns the
        final hidden states (B, L, hidden) and the cache.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        if use_cache is None:
            # A training forward's cache would be thrown away (Llama's default builds one anyway).
            use_cache = self.config.use_cache and not (self.training and torch.is_grad_enabled())
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        if cache is not None:
            self._ensure_cache_slots(cache)

        batch, length = inputs_embeds.shape[:2]
        past_length = cache.get_seq_length() if cache is not None else 0
        if position_ids is None:
            if attention_mask is not None and attention_mask.shape[-1] == past_length + length:
                # Left padding: positions count real tokens only, as generate() does.
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past_length:]
            else:
                position_ids = torch.arange(past_length, past_length + length, device=inputs_embeds.device)[None]
        causal_mask = create_causal_mask(
            config=self.config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            cache=cache,
            position_ids=position_ids,
        )
        position_embeddings = self.rotary_emb(inputs_embeds, position_ids=position_ids)

        cross_cached = bool(self.cross_attention_blocks) and _cross_attention_cached(
            cache, self.cross_attention_blocks[0].cross_attn.layer_idx
        )
        media_tokens = has_media = None
        if media_latents is not None:
            media_tokens = media_latents.flatten(1, 2)  # (B, T, m, d) -> (B, T*m, d)
            num_chunks, tokens_per_chunk = media_latents.shape[1:3]
        elif cross_cached:
            # Decoding step: the media keys/values (B, heads, T*m, D) are in the cache.
            num_media_tokens = cache.layers[self.cross_attention_blocks[0].cross_attn.layer_idx].keys.shape[2]
            num_chunks = media_chunk_mask.shape[1] if media_chunk_mask is not None else 1
            tokens_per_chunk = num_media_tokens // num_chunks
        use_media = media_tokens is not None or cross_cached
        if use_media:
            if media_chunk_mask is None:
                media_chunk_mask = torch.ones(batch, num_chunks, dtype=torch.bool, device=inputs_embeds.device)
            expected = (batch, 1, 1, num_chunks * tokens_per_chunk)
            if media_attention_mask is not None and tuple(media_attention_mask.shape) != expected:
                raise ValueError(
                    f"media_attention_mask must be (batch, 1, 1, num_chunks * tokens_per_chunk) = {expected} for "
                    f"these inputs, got {tuple(media_attention_mask.shape)}"
                )
            dtype = inputs_embeds.dtype
            if media_attention_mask is None or media_attention_mask.dtype != dtype:
                media_attention_mask = build_media_attention_mask(media_chunk_mask, tokens_per_chunk, dtype)
            has_media = media_chunk_mask.bool().any(dim=1).to(dtype)[:, None, None]  # (B, 1, 1)

        hidden_states = inputs_embeds
        for index, layer in enumerate(self.layers):
            block_index = self._block_before_layer.get(index)
            if block_index is not None and use_media:
                hidden_states = self.cross_attention_blocks[block_index](
                    hidden_states,
                    media_tokens,
                    media_attention_mask=media_attention_mask,
                    has_media=has_media,
                    cache=cache,
                    **kwargs,
                )
            hidden_states = layer(
                hidden_states,
                attention_mask=causal_mask,
                position_embeddings=position_embeddings,
                cache=cache,
                **kwargs,
            )
        return self.norm(hidden_states), cache
