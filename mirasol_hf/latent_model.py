"""Latent model: autoregressive in time over chunks, and the latent loss that trains it.

The combined features of all chunks, x (B, T, m, d), form one sequence of T*m tokens. A block-causal mask lets every
token of chunk t see the tokens of chunks <= t only, so h_t depends on x_{<=t} alone: changing chunk t+1 leaves
h_{<=t} unchanged. Positions are the chunk index (sin-cos, any number of chunks) plus a learned slot embedding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_mirasol import MirasolLatentConfig
from .layers import MirasolEncoder, additive_mask, sincos_embedding


def block_causal_mask(media_chunk_mask: torch.Tensor, tokens_per_chunk: int) -> torch.Tensor:
    """Boolean (B, 1, T*m, T*m): a token may see chunks up to its own, skipping chunks without media.

    A token always sees its own chunk, so no row is empty even for a chunk without media.
    """
    num_chunks = media_chunk_mask.shape[1]
    chunk = torch.arange(num_chunks, device=media_chunk_mask.device).repeat_interleave(tokens_per_chunk)  # (T*m,)
    earlier_or_same = chunk[None, :] <= chunk[:, None]  # (T*m, T*m)
    same = chunk[None, :] == chunk[:, None]
    key_has_media = media_chunk_mask.bool().repeat_interleave(tokens_per_chunk, dim=1)  # (B, T*m)
    return (earlier_or_same & (key_has_media[:, None, :] | same))[:, None]


class MirasolLatentModel(nn.Module):
    """x (B, T, m, d_combiner) -> h (B, T, m, d)."""

    def __init__(self, config: MirasolLatentConfig, input_size: int, tokens_per_chunk: int):
        super().__init__()
        self.config = config
        self.input_projection = (
            nn.Identity() if input_size == config.hidden_size else nn.Linear(input_size, config.hidden_size)
        )
        self.slot_embedding = nn.Parameter(torch.zeros(tokens_per_chunk, config.hidden_size))
        self.encoder = MirasolEncoder(config)

    def forward(self, combined: torch.Tensor, media_chunk_mask: torch.Tensor) -> torch.Tensor:
        batch, num_chunks, m, _ = combined.shape
        hidden = self.input_projection(combined)  # (B, T, m, d)
        chunk_index = torch.arange(num_chunks, device=combined.device, dtype=torch.float32)[:, None]  # (T, 1)
        chunk_position = sincos_embedding(chunk_index, self.config.hidden_size).to(hidden.dtype)  # (T, d)
        hidden = hidden + chunk_position[:, None, :] + self.slot_embedding
        mask = additive_mask(block_causal_mask(media_chunk_mask, m), hidden.dtype)
        hidden = self.encoder(hidden.reshape(batch, num_chunks * m, -1), attention_mask=mask)
        return hidden.reshape(batch, num_chunks, m, -1)  # (B, T, m, d)


class MirasolLatentPredictor(nn.Module):
    """Predicts the next chunk's combined features x_{t+1} from h_t, token by token."""

    def __init__(self, config: MirasolLatentConfig, output_size: int):
        super().__init__()
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.hidden = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act_fn = nn.GELU()
        self.output = nn.Linear(config.intermediate_size, output_size)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.output(self.act_fn(self.hidden(self.norm(latents))))


def latent_loss(
    predicted: torch.Tensor, combined: torch.Tensor, media_chunk_mask: torch.Tensor, loss_type: str
) -> torch.Tensor:
    """Distance between predictions from h_t (B, T, m, d) and the stop-gradient x_{t+1}, over valid (t, t+1) pairs.

    The target is detached: without it the combiner could collapse x to a constant that is trivially predicted.
    """
    prediction, target = predicted[:, :-1], combined[:, 1:].detach()  # (B, T-1, m, d)
    pair_mask = (media_chunk_mask[:, :-1] & media_chunk_mask[:, 1:]).to(prediction.dtype)  # (B, T-1)
    if loss_type == "cosine":
        per_token = 1 - F.cosine_similarity(prediction, target, dim=-1)  # (B, T-1, m)
    else:
        per_token = (prediction - target).pow(2).mean(dim=-1)
    per_pair = per_token.mean(dim=-1)  # (B, T-1)
    return (per_pair * pair_mask).sum() / pair_mask.sum().clamp(min=1)
