"""Combiners: fuse one chunk's video and audio tokens into `m` tokens, `combine(...) -> (B, T, m, d)`.

Every combiner starts from the same fused token set (`MirasolCombiner.chunk_tokens`): both modalities projected to
the combiner width, tagged with a learned modality embedding, and a chunk without frames or without audio replaced
by a learned "no video" / "no audio" embedding rather than by zeros that would look like black frames or silence.
"""

from __future__ import annotations

import torch
from torch import nn

from .configuration_mirasol import MirasolCombinerConfig
from .layers import MirasolEncoder, additive_mask


class MirasolCombiner(nn.Module):
    """Interface and shared input stage of all combiners."""

    def __init__(self, config: MirasolCombinerConfig, video_hidden_size: int, audio_hidden_size: int):
        super().__init__()
        self.config = config
        self.video_projection = nn.Linear(video_hidden_size, config.hidden_size)
        self.audio_projection = nn.Linear(audio_hidden_size, config.hidden_size)
        self.video_type_embedding = nn.Parameter(torch.zeros(config.hidden_size))
        self.audio_type_embedding = nn.Parameter(torch.zeros(config.hidden_size))
        self.no_video_embedding = nn.Parameter(torch.zeros(config.hidden_size))
        self.no_audio_embedding = nn.Parameter(torch.zeros(config.hidden_size))

    def chunk_tokens(self, video_tokens, audio_tokens, video_chunk_mask, audio_chunk_mask) -> torch.Tensor:
        """(B, T, Nv, dv) and (B, T, Na, da) with (B, T) masks -> fused tokens (B, T, Nv + Na, d)."""
        video = self.video_projection(video_tokens)
        audio = self.audio_projection(audio_tokens)
        video = torch.where(video_chunk_mask[:, :, None, None], video, self.no_video_embedding) + self.video_type_embedding
        audio = torch.where(audio_chunk_mask[:, :, None, None], audio, self.no_audio_embedding) + self.audio_type_embedding
        return torch.cat([video, audio], dim=2)

    def combine(self, video_tokens, audio_tokens, video_chunk_mask, audio_chunk_mask) -> torch.Tensor:
        """Returns the combined features x: (B, T, m, d)."""
        raise NotImplementedError

    def forward(self, video_tokens, audio_tokens, video_chunk_mask, audio_chunk_mask) -> torch.Tensor:
        return self.combine(video_tokens, audio_tokens, video_chunk_mask, audio_chunk_mask)


class MirasolTransformerCombiner(MirasolCombiner):
    """The paper's combiner: a transformer over [video; audio] of a chunk, keeping the last m outputs.

    With `attention_type="causal"` each token sees only those before it, so the last m have seen the whole chunk;
    with "full" every token sees every other.
    """

    def __init__(self, config: MirasolCombinerConfig, video_hidden_size: int, audio_hidden_size: int):
        super().__init__(config, video_hidden_size, audio_hidden_size)
        self.encoder = MirasolEncoder(config)

    def combine(self, video_tokens, audio_tokens, video_chunk_mask, audio_chunk_mask) -> torch.Tensor:
        tokens = self.chunk_tokens(video_tokens, audio_tokens, video_chunk_mask, audio_chunk_mask)
        batch, num_chunks, length, width = tokens.shape
        m = self.config.num_output_tokens
        if length < m:
            raise ValueError(f"a chunk has {length} video + audio tokens, fewer than num_output_tokens={m}")
        mask = None
        if self.config.attention_type == "causal":
            causal = torch.ones(length, length, dtype=torch.bool, device=tokens.device).tril()
            mask = additive_mask(causal[None, None], tokens.dtype)  # (1, 1, L, L)
        outputs = self.encoder(tokens.reshape(batch * num_chunks, length, width), attention_mask=mask)
        return outputs[:, -m:].reshape(batch, num_chunks, m, width)  # (B, T, m, d)


COMBINERS = {"transformer": MirasolTransformerCombiner}


def build_combiner(config: MirasolCombinerConfig, video_hidden_size: int, audio_hidden_size: int) -> MirasolCombiner:
    """The combiner named by `config.combiner_type`."""
    if config.combiner_type not in COMBINERS:
        raise ValueError(f"unknown combiner_type {config.combiner_type!r}; available: {sorted(COMBINERS)}")
    return COMBINERS[config.combiner_type](config, video_hidden_size, audio_hidden_size)
