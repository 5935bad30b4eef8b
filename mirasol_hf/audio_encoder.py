"""Audio encoder: 2D patches over (mel, time) of one chunk's log-mel spectrogram, into a ViT."""

from __future__ import annotations

import functools

import torch
from torch import nn

from .configuration_mirasol import MirasolAudioConfig
from .layers import MirasolEncoder, sincos_embedding


@functools.lru_cache(maxsize=64)
def patch_position_embedding(n_mel: int, n_time: int, patch_size: tuple[int, int], hidden_size: int, device):
    """Sin-cos embedding of the (mel, time) centres of an `n_mel x n_time` patch grid, `(n_mel * n_time,
    hidden_size)` float32. Cached: it depends on sizes only (built outside inference mode, so it serves training)."""
    patch_mel, patch_time = patch_size
    with torch.inference_mode(False), torch.no_grad():
        centres = torch.stack(
            torch.meshgrid(
                torch.arange(n_mel, device=device) * patch_mel + (patch_mel - 1) / 2,
                torch.arange(n_time, device=device) * patch_time + (patch_time - 1) / 2,
                indexing="ij",
            ),
            dim=-1,
        ).flatten(0, 1)  # (n_mel * n_time, 2)
        return sincos_embedding(centres, hidden_size)


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
