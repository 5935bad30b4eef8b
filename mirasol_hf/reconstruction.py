"""Reconstruction: a small transformer decoder from the latent state h_t to the next chunk's downsampled frames.

The target is chunk t+1 average-pooled to `num_frames` x `image_size` x `image_size` and cut into patches of
`patch_size` (t, h, w). The decoder is MAE-style: h_t's m tokens and one learned query per target patch (with the
patch centre's sin-cos position) go through a transformer; each query's output is projected to its patch's pixels.
The pixel head maps to one small patch, never to full-resolution frames, so this path stays a small part of the model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_mirasol import MirasolReconstructionConfig
from .layers import MirasolEncoder
from .video_encoder import tube_position_embedding


class MirasolReconstructionDecoder(nn.Module):
    """h_t (N, m, d_latent) -> predicted patches (N, num_patches, patch_pixels)."""

    def __init__(self, config: MirasolReconstructionConfig, latent_size: int, num_channels: int):
        super().__init__()
        self.config = config
        self.num_channels = num_channels
        self.size = (config.num_frames, config.image_size, config.image_size)
        self.grid = tuple(s // p for s, p in zip(self.size, config.patch_size))  # patches along (t, h, w)
        self.input_projection = nn.Linear(latent_size, config.hidden_size)
        self.query_embedding = nn.Parameter(torch.zeros(config.hidden_size))
        self.encoder = MirasolEncoder(config)
        self.pixel_head = nn.Linear(config.hidden_size, num_channels * math.prod(config.patch_size))

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        context = self.input_projection(latents)  # (N, m, d)
        patch = tuple(self.config.patch_size)
        position = tube_position_embedding(self.size, patch, patch, (0, 0, 0), self.config.hidden_size, latents.device)
        queries = (self.query_embedding + position).to(context.dtype)  # (num_patches, d)
        queries = queries.expand(context.shape[0], -1, -1)  # (N, num_patches, d)
        hidden = self.encoder(torch.cat([context, queries], dim=1))
        return self.pixel_head(hidden[:, context.shape[1] :])  # (N, num_patches, C * pt * ph * pw)

    def target(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Frames of a chunk (N, f, C, H, W) -> downsampled patches (N, num_patches, C * pt * ph * pw)."""
        volume = F.adaptive_avg_pool3d(pixel_values.transpose(1, 2), self.size)  # (N, C, t, s, s)
        (gt, gh, gw), (pt, ph, pw) = self.grid, self.config.patch_size
        n, c = volume.shape[:2]
        patches = volume.reshape(n, c, gt, pt, gh, ph, gw, pw)
        # (N, C, gt, pt, gh, ph, gw, pw) -> (N, gt, gh, gw, C, pt, ph, pw): one row of pixels per patch
        patches = patches.permute(0, 2, 4, 6, 1, 3, 5, 7)
        return patches.reshape(n, gt * gh * gw, c * pt * ph * pw)


def reconstruction_loss(
    decoder: MirasolReconstructionDecoder,
    latents: torch.Tensor,
    pixel_values: torch.Tensor,
    media_chunk_mask: torch.Tensor,
    video_chunk_mask: torch.Tensor,
) -> torch.Tensor:
    """Mean squared error of predicting chunk t+1's patches from h_t, over pairs where h_t and frames t+1 exist.

    `latents` (B, T, m, d), `pixel_values` (B, T, f, C, H, W), masks (B, T).
    """
    pair_mask = media_chunk_mask[:, :-1] & video_chunk_mask[:, 1:]  # (B, T-1)
    if not pair_mask.any():
        # Keep the graph connected so every parameter gets a (zero) gradient, as DDP expects.
        return 0.0 * decoder(latents[:, 0]).sum()
    sources = latents[:, :-1][pair_mask]  # (P, m, d)
    targets = decoder.target(pixel_values[:, 1:][pair_mask])  # (P, num_patches, patch_pixels)
    return F.mse_loss(decoder(sources), targets)
