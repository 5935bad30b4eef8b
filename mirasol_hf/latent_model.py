"""Latent model: autoregressive in time over chunks, and the latent loss that trains it.

The combined features of all chunks, x (B, T, m, d), form one sequence of T*m tokens. A block-causal mask lets every
token of chunk t see the tokens of chunks <= t only, so h_t depends on x_{<=t} alone: changing chunk t+1 leaves
h_{<=t} unchanged. Positions are the chunk index (sin-cos, any number of chunks) plus a learned slot embedding.
With `context_chunks` = N the context is a sliding window of N chunks, positions counted within the window.

Because of that mask, the chunks can also be encoded a few at a time: given the keys/values of the earlier chunks in
a cache, the new chunks' h equals what the whole sequence gives (`forward(..., cache=cache)`, used by
`MirasolModel.encode_media_chunk`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.cache_utils import Cache

from .configuration_mirasol import MirasolLatentConfig
from .layers import MirasolEncoder, additive_mask, sincos_embedding


def block_causal_mask(
    media_chunk_mask: torch.Tensor, tokens_per_chunk: int, first_query_chunk: int = 0
) -> torch.Tensor:
    """Boolean (B, 1, Tq*m, T*m): a token may see chunks up to its own, skipping chunks without media.

    Keys are the tokens of all T chunks of `media_chunk_mask` (B, T); queries those of chunks `first_query_chunk`
    onwards (Tq of them; all by default, a stream's new chunks when encoding with a cache). A token always sees its
    own chunk, so no row is empty even for a chunk without media.
    """
    num_chunks = media_chunk_mask.shape[1]
    key_chunk = torch.arange(num_chunks, device=media_chunk_mask.device).repeat_interleave(tokens_per_chunk)  # (T*m,)
    query_chunk = key_chunk[first_query_chunk * tokens_per_chunk :]  # (Tq*m,)
    earlier_or_same = key_chunk[None, :] <= query_chunk[:, None]  # (Tq*m, T*m)
    same = key_chunk[None, :] == query_chunk[:, None]
    key_has_media = media_chunk_mask.bool().repeat_interleave(tokens_per_chunk, dim=1)  # (B, T*m)
    return (earlier_or_same & (key_has_media[:, None, :] | same))[:, None]


class MirasolLatentModel(nn.Module):
    """x (B, T, m, d_combiner) -> h (B, T, m, d).

    With `config.context_chunks` = N, h_t comes from the window of chunks t-N+1..t encoded as a clip of its own
    (positions 0..N-1): the first N chunks form one window, and each later chunk is the last of its window.
    """

    def __init__(self, config: MirasolLatentConfig, input_size: int, tokens_per_chunk: int):
        super().__init__()
        self.config = config
        self.input_projection = (
            nn.Identity() if input_size == config.hidden_size else nn.Linear(input_size, config.hidden_size)
        )
        self.slot_embedding = nn.Parameter(torch.zeros(tokens_per_chunk, config.hidden_size))
        self.encoder = MirasolEncoder(config)

    def forward(
        self,
        combined: torch.Tensor,
        media_chunk_mask: torch.Tensor,
        cache: Cache | None = None,
        windows_per_pass: int | None = None,
        **kwargs,
    ) -> torch.Tensor:
        """h for the chunks in `combined` (B, T, m, d_c).

        With `cache` holding the keys/values of the P chunks before (an unwindowed stream), `combined` holds only the
        new chunks, `media_chunk_mask` covers all P + T chunks, and the new keys/values are appended to the cache.
        `windows_per_pass` bounds how many windows (of a windowed model) run through the encoder at once. `kwargs`
        (e.g. `output_attentions`) reach the attention functions; with windows, each window's pass is recorded.
        """
        window = self.config.context_chunks
        if window is None or combined.shape[1] <= window:
            if cache is not None and window is not None:
                raise ValueError("a latent model with context_chunks streams from its window, not from a cache")
            return self._encode(combined, media_chunk_mask, cache, **kwargs)
        first = self._encode(combined[:, :window], media_chunk_mask[:, :window], **kwargs)  # (B, N, m, d)
        batch, num_chunks, m, width = combined.shape
        # Chunk t >= N: the window of chunks t-N+1..t, of which only the last chunk's h is new.
        windows = combined.unfold(1, window, 1)[:, 1:]  # (B, T-N, m, d_c, N)
        windows = windows.permute(0, 1, 4, 2, 3).reshape(-1, window, m, width)  # (B*(T-N), N, m, d_c)
        window_masks = media_chunk_mask.unfold(1, window, 1)[:, 1:].reshape(-1, window)  # (B*(T-N), N)
        step = windows_per_pass or windows.shape[0]
        last = [
            self._encode(windows[start : start + step], window_masks[start : start + step], **kwargs)[:, -1]
            for start in range(0, windows.shape[0], step)
        ]  # each (w, m, d)
        rest = torch.cat(last).reshape(batch, num_chunks - window, m, -1)  # (B, T-N, m, d)
        return torch.cat([first, rest], dim=1)

    def _encode(self, combined: torch.Tensor, media_chunk_mask: torch.Tensor, cache: Cache | None = None, **kwargs):
        """The block-causal pass over chunks numbered from the first chunk in `media_chunk_mask` (or the cache's)."""
        batch, num_chunks, m, _ = combined.shape
        past_chunks = media_chunk_mask.shape[1] - num_chunks
        cached_tokens = cache.get_seq_length() if cache is not None else 0
        if past_chunks < 0 or cached_tokens != past_chunks * m:
            raise ValueError(
                f"media_chunk_mask covers {media_chunk_mask.shape[1]} chunks, {num_chunks} of them new, but the cache "
                f"holds {cached_tokens // m} earlier chunks"
            )
        hidden = self.input_projection(combined)  # (B, T, m, d)
        # Chunk indices from the first chunk, so a stream's chunk t gets the position it has in the whole clip.
        chunk_index = torch.arange(
            past_chunks, past_chunks + num_chunks, device=combined.device, dtype=torch.float32
        )[:, None]  # (T, 1)
        chunk_position = sincos_embedding(chunk_index, self.config.hidden_size).to(hidden.dtype)  # (T, d)
        hidden = hidden + chunk_position[:, None, :] + self.slot_embedding
        mask = additive_mask(block_causal_mask(media_chunk_mask, m, past_chunks), hidden.dtype)  # (B, 1, T*m, (P+T)*m)
        hidden = hidden.reshape(batch, num_chunks * m, -1)  # (B, T*m, d)
        hidden = self.encoder(hidden, attention_mask=mask, cache=cache, **kwargs)
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
