"""Building blocks shared by every part of Mirasol: attention, the ViT-style encoder stack, masks, sin-cos tables.

One attention class serves all of them (self or cross, with or without rotary and cache) and dispatches through
transformers' `ALL_ATTENTION_FUNCTIONS`, so `attn_implementation="eager"` and `"sdpa"` both work everywhere.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, eager_attention_forward


class MirasolAttention(nn.Module):
    """Multi-head (grouped-query) attention with Llama's projection names `q_proj`, `k_proj`, `v_proj`, `o_proj`.

    Self-attention when `key_value_states` is None, cross-attention otherwise. With a cache, self-attention appends
    its keys/values at `cache_index`; cross-attention stores them there once (at prefill) and reads them afterwards.
    Returns `(output, attention_weights)` as transformers' attention modules do (what `output_attentions` records);
    the weights need the eager path, so a call asking for them (`output_attentions=True`) runs eager even when the
    config says "sdpa" (which computes none).
    """

    def __init__(
        self,
        config,
        hidden_size: int,
        num_heads: int,
        head_dim: int,
        num_key_value_heads: int | None = None,
        key_value_size: int | None = None,
        qkv_bias: bool = True,
        output_bias: bool = True,
        is_causal: bool = False,
        dropout: float = 0.0,
        cache_index: int | None = None,
    ):
        super().__init__()
        self.config = config  # read for `_attn_implementation` at call time, so switching it works
        self.num_heads = num_heads
        self.num_key_value_heads = num_key_value_heads or num_heads
        self.num_key_value_groups = num_heads // self.num_key_value_heads
        self.head_dim = head_dim
        self.scaling = head_dim**-0.5
        self.is_causal = is_causal
        self.dropout = dropout
        self.layer_idx = cache_index  # transformers' attention functions look for `layer_idx`
        key_value_size = key_value_size or hidden_size
        self.q_proj = nn.Linear(hidden_size, num_heads * head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(key_value_size, self.num_key_value_heads * head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(key_value_size, self.num_key_value_heads * head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(num_heads * head_dim, hidden_size, bias=output_bias)

    def _heads(self, states: torch.Tensor) -> torch.Tensor:
        # (B, L, heads * D) -> (B, heads, L, D); heads inferred, so a tensor-parallel shard holding a few works
        return states.view(*states.shape[:2], -1, self.head_dim).transpose(1, 2)

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache=None,
        is_cross_attention: bool = False,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, length, _ = hidden_states.shape
        query = self._heads(self.q_proj(hidden_states))

        if is_cross_attention and key_value_states is None:
            # Decoding step: the media keys/values were stored at prefill.
            layer = cache.layers[self.layer_idx]
            key, value = layer.keys, layer.values
        else:
            source = hidden_states if key_value_states is None else key_value_states
            key = self._heads(self.k_proj(source))
            value = self._heads(self.v_proj(source))
            if position_embeddings is not None:
                cos, sin = position_embeddings
                query, key = apply_rotary_pos_emb(query, key, cos, sin)
            if cache is not None:
                key, value = cache.update(key, value, self.layer_idx)

        implementation = self.config._attn_implementation
        if kwargs.get("output_attentions") and implementation == "sdpa":
            implementation = "eager"
            if attention_mask is None and self.is_causal and length > 1:
                # The mask was built for SDPA, which leaves a plain causal mask to `is_causal`; eager needs it.
                key_length = key.shape[2]
                allowed = torch.ones(length, key_length, dtype=torch.bool, device=query.device)
                attention_mask = additive_mask(allowed.tril(key_length - length), query.dtype)  # (L, S)
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        output, attention_weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.dropout if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        return self.o_proj(output.reshape(batch, length, -1)), attention_weights  # (B, L, hidden), (B, heads, L, S)


class MirasolMLP(nn.Module):
    """Two-layer MLP of the ViT blocks (`up_proj`, `down_proj` so PEFT target names cover it)."""

    def __init__(self, hidden_size: int, intermediate_size: int, hidden_act: str, dropout: float = 0.0):
        super().__init__()
        self.up_proj = nn.Linear(hidden_size, intermediate_size)
        self.down_proj = nn.Linear(intermediate_size, hidden_size)
        self.act_fn = ACT2FN[hidden_act]
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down_proj(self.act_fn(self.up_proj(hidden_states))))


class MirasolEncoderLayer(GradientCheckpointingLayer):
    """Pre-LayerNorm transformer block (ViT) used by the encoders, combiner, latent model and reconstruction."""

    def __init__(self, config, layer_idx: int | None = None):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = MirasolAttention(
            config,
            hidden_size=config.hidden_size,
            num_heads=config.num_attention_heads,
            head_dim=config.head_dim,
            dropout=config.attention_dropout,
            cache_index=layer_idx,
        )
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = MirasolMLP(config.hidden_size, config.intermediate_size, config.hidden_act, config.hidden_dropout)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask=None, cache=None, query_length: int | None = None, **kwargs
    ) -> torch.Tensor:
        """`cache` (a transformers `Cache`): earlier tokens' keys/values are read and these appended.

        `query_length`: only the last `query_length` tokens are computed (every token still gives keys and values),
        `(B, L, d) -> (B, query_length, d)`: `layer(x)[:, -q:]` for less work, through the module's own call so that
        wrappers hooked on it (FSDP's unsharding, gradient checkpointing) still apply.
        """
        normed = self.layer_norm1(hidden_states)
        if query_length is None:
            attended, _ = self.self_attn(normed, attention_mask=attention_mask, cache=cache, **kwargs)
        else:
            hidden_states = hidden_states[:, -query_length:]
            attended, _ = self.self_attn(
                normed[:, -query_length:], key_value_states=normed, attention_mask=attention_mask, **kwargs
            )
        hidden_states = hidden_states + attended
        return hidden_states + self.mlp(self.layer_norm2(hidden_states))


class MirasolEncoder(nn.Module):
    """A stack of `MirasolEncoderLayer` with a final LayerNorm."""

    def __init__(self, config):
        super().__init__()
        self.layers = nn.ModuleList(MirasolEncoderLayer(config, index) for index in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor, attention_mask=None, cache=None, **kwargs) -> torch.Tensor:
        """`kwargs` (e.g. `output_attentions`) reach the attention functions."""
        for layer in self.layers:
            hidden_states = layer(hidden_states, attention_mask=attention_mask, cache=cache, **kwargs)
        return self.norm(hidden_states)


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Boolean "may attend" mask -> additive float mask (0 where allowed, dtype's min elsewhere).

    Float masks work with both the eager and the SDPA attention functions.
    """
    zero = torch.zeros((), dtype=dtype, device=allowed.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)


def sincos_embedding(positions: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sin-cos embedding of real-valued positions `(..., A)` along A axes into `dim` channels.

    Each axis gets `2 * (dim // (2 * A))` channels (sin and cos of as many frequencies); the few channels left over
    when `dim` does not split evenly are zeros, so any `dim >= 2 * A` works.
    """
    num_axes = positions.shape[-1]
    num_freqs = dim // (2 * num_axes)
    if num_freqs < 1:
        raise ValueError(f"sin-cos embedding of {num_axes} axes needs dim >= {2 * num_axes}, got {dim}")
    exponent = torch.arange(num_freqs, dtype=torch.float64, device=positions.device) / num_freqs
    freqs = max_period**-exponent  # (num_freqs,)
    angles = positions.to(torch.float64)[..., None] * freqs  # (..., A, num_freqs)
    table = torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)  # (..., A * 2 * num_freqs)
    padding = dim - table.shape[-1]
    if padding:
        table = nn.functional.pad(table, (0, padding))
    return table.float()
