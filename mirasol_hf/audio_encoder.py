"""Audio encoder: 2D patches over (mel, time) of one chunk's log-mel spectrogram, into a ViT."""

from __future__ import annotations

import functools

import torch
from torch import nn

from .configuration_mirasol import MirasolAudioConfig
from .layers import MirasolEncoder
from .video_encoder import tube_position_embedding


@functools.lru_cache(maxsize=64)
def patch_position_embedding(n_mel: int, n_time: int, patch_size: tuple[int, int], hidden_size: int, device):
    """Sin-cos embedding of the (mel, time) centres of an `n_mel x n_time` patch grid, `(n_mel * n_time,
    hidden_size)` float32: the video tubes' table over the spectrogram span the patches cover. Cached."""
    covered = (n_mel * patch_size[0], n_time * patch_size[1])
    return tube_position_embedding(covered, patch_size, patch_size, (0, 0), hidden_size, device)


class MirasolAudioEncoder(nn.Module):
    """Spectrogram of one chunk (N, n_mels, frames) -> tokens (N, num_tokens, hidden)."""

    def __init__(self, config: MirasolAudioConfig):
        super().__init__()
        self.config = config
        self.patch_embedding = nn.Conv2d(1, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size)
        self.encoder = MirasolEncoder(config)

    def embed(self, input_features: torch.Tensor) -> torch.Tensor:
        """Patch tokens with (mel, time) sin-cos position embeddings: (N, num_tokens, hidden)."""
        if input_features.ndim != 3 or input_features.shape[1] != self.config.num_mel_bins:
            raise ValueError(
                f"audio chunks must be (N, {self.config.num_mel_bins} mel bins, frames), got {tuple(input_features.shape)}"
            )
        patches = self.patch_embedding(input_features[:, None])  # (N, hidden, n_mel, n_time)
        n_mel, n_time = patches.shape[2:]
        position = patch_position_embedding(
            n_mel, n_time, tuple(self.config.patch_size), self.config.hidden_size, patches.device
        ).to(patches.dtype)
        return patches.flatten(2).transpose(1, 2) + position  # (N, n_mel * n_time, hidden)

    def forward(self, input_features: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.embed(input_features))
