"""Audio encoder: 2D patches over (mel, time) of one chunk's log-mel spectrogram, into a ViT."""

from __future__ import annotations

import torch
from torch import nn

from .configuration_mirasol import MirasolAudioConfig
from .layers import MirasolEncoder, sincos_embedding


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
        patch_mel, patch_time = self.config.patch_size
        centres = torch.stack(
            torch.meshgrid(
                torch.arange(n_mel, device=patches.device) * patch_mel + (patch_mel - 1) / 2,
                torch.arange(n_time, device=patches.device) * patch_time + (patch_time - 1) / 2,
                indexing="ij",
            ),
            dim=-1,
        ).flatten(0, 1)  # (n_mel * n_time, 2)
        position = sincos_embedding(centres, self.config.hidden_size).to(patches.dtype)
        return patches.flatten(2).transpose(1, 2) + position  # (N, n_mel * n_time, hidden)

    def forward(self, input_features: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.embed(input_features))
