"""Video encoder: sparse video tubes (TubeViT) into a ViT, applied to each chunk of frames independently.

Each tube is a Conv3d with its own kernel, stride and offset; the 1x16x16 tube is the plain 2D-patch path. A token
gets the fixed sin-cos embedding of its tube's centre in the chunk's own (frame, row, column) coordinates, so the
same weights take any frame count and resolution the tubes fit in.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from .configuration_mirasol import MirasolVideoConfig, conv_output_size
from .layers import MirasolEncoder, sincos_embedding


def tube_centres(size: tuple[int, int, int], kernel, stride, offset, device=None) -> torch.Tensor:
    """Centres (t, y, x) of the positions a tube visits in a (frames, height, width) volume: (n_t, n_h, n_w, 3).
    Any number of axes works (the audio encoder's (mel, time) patches: (n_mel, n_time, 2))."""
    axes = []
    for length, k, s, o in zip(size, kernel, stride, offset):
        count = conv_output_size(length, k, s, o)
        axes.append(o + s * torch.arange(count, dtype=torch.float32, device=device) + (k - 1) / 2)
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)


@functools.lru_cache(maxsize=64)
def tube_position_embedding(size, kernel, stride, offset, hidden_size: int, device) -> torch.Tensor:
    """Sin-cos embedding of a tube's centres (any number of axes), `(n_t * n_h * n_w, hidden_size)` float32 (no
    rows when the tube does not fit). Cached: it depends on sizes only, and its float64 tables would otherwise be
    rebuilt on every call. Built outside inference mode so that a table first made under `torch.inference_mode`
    serves training too."""
    with torch.inference_mode(False), torch.no_grad():
        centres = tube_centres(size, kernel, stride, offset, device=device)  # (n_t, n_h, n_w, 3), or (n_h, n_w, 2)
        return sincos_embedding(centres.flatten(0, -2), hidden_size)  # (n_t * n_h * n_w, hidden_size)


class MirasolVideoEncoder(nn.Module):
    """Frames of one chunk (N, f, 3, H, W) -> tokens (N, num_tokens, hidden)."""

    def __init__(self, config: MirasolVideoConfig):
        super().__init__()
        self.config = config
        self.tubes = nn.ModuleList(
            nn.Conv3d(config.num_channels, config.hidden_size, kernel_size=tube["kernel"], stride=tube["stride"])
            for tube in config.tubes
        )
        self.encoder = MirasolEncoder(config)

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Tube tokens with position embeddings, before the transformer: (N, num_tokens, hidden)."""
        if pixel_values.ndim != 5 or pixel_values.shape[2] != self.config.num_channels:
            raise ValueError(
                f"video chunks must be (N, frames, {self.config.num_channels}, H, W), got {tuple(pixel_values.shape)}"
            )
        volume = pixel_values.transpose(1, 2)  # (N, f, C, H, W) -> (N, C, f, H, W)
        size = tuple(volume.shape[2:])
        tokens = []
        for tube, conv in zip(self.config.tubes, self.tubes):
            position = tube_position_embedding(
                size, *(tuple(tube[key]) for key in ("kernel", "stride", "offset")), self.config.hidden_size, volume.device
            )
            if len(position) == 0:
                raise ValueError(
                    f"a video chunk of {size[0]} frames at {size[1]}x{size[2]} is too small for the tube {tube}; "
                    "use more frames per chunk, larger frames, or smaller tubes"
                )
            t0, y0, x0 = tube["offset"]
            features = conv(volume[:, :, t0:, y0:, x0:])  # (N, hidden, n_t, n_h, n_w)
            features = features.flatten(2).transpose(1, 2)  # (N, n_t*n_h*n_w, hidden)
            tokens.append(features + position.to(features.dtype))
        return torch.cat(tokens, dim=1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.embed(pixel_values))
