"""Streaming: encode a long video chunk by chunk, with the same results as encoding the whole clip at once.

Everything upstream of the latent model sees one chunk at a time, and the latent model is block-causal, so chunk t's
latents depend on chunks <= t only. A stream therefore needs to carry just two things from one call to the next: the
latent model's keys/values of the chunks so far, and the combiner's state (the TTM memory; nothing for the other
combiners). `MirasolStreamingState` holds them, plus the outputs so far, which `media_output()` hands to
`generate(media_latents=...)`.

    state = None
    for frames, audio in chunks:
        new, state = model.encode_media_chunk(pixel_values_videos=frames, input_features=audio, state=state)
    answer = model.generate(input_ids=prompt, media_latents=state.media_output())
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers.cache_utils import DynamicCache

from .modeling_mirasol import MirasolMediaOutput


@dataclass
class MirasolStreamingState:
    """What a stream carries between `encode_media_chunk` calls; updated in place by each call.

    latent_cache: the latent model's keys/values of every chunk so far (one cache layer per latent-model layer).
    combiner_state: what the combiner carries to the next chunk (the TTM memory (B, k, d); None for the others).
    media_chunk_mask: (B, t) bool, which of the t chunks so far hold video or audio.
    """

    latent_cache: DynamicCache = field(default_factory=DynamicCache)
    combiner_state: torch.Tensor | None = None
    media_chunk_mask: torch.BoolTensor | None = None
    _outputs: list[MirasolMediaOutput] = field(default_factory=list, init=False, repr=False)

    @property
    def num_chunks(self) -> int:
        """Chunks encoded so far."""
        return 0 if self.media_chunk_mask is None else self.media_chunk_mask.shape[1]

    @property
    def batch_size(self) -> int | None:
        return None if self.media_chunk_mask is None else self.media_chunk_mask.shape[0]

    def append(self, output: MirasolMediaOutput, combiner_state: torch.Tensor | None) -> None:
        """Records the outputs of newly encoded chunks and the combiner state after them."""
        self._outputs.append(output)
        self.combiner_state = combiner_state
        mask = output.media_chunk_mask
        self.media_chunk_mask = mask if self.media_chunk_mask is None else torch.cat([self.media_chunk_mask, mask], 1)

    def media_output(self) -> MirasolMediaOutput:
        """All chunks so far as one `MirasolMediaOutput`, what `encode_media` gives for the whole clip."""
        if not self._outputs:
            raise ValueError("the stream is empty: encode a chunk with encode_media_chunk first")
        # Concatenated on request rather than at every chunk, which would copy everything so far each time.
        latents = torch.cat([output.media_latents for output in self._outputs], dim=1)  # (B, t, m, d)
        combined = torch.cat([output.combined_features for output in self._outputs], dim=1)  # (B, t, m, d_c)
        return MirasolMediaOutput(
            media_latents=latents, media_chunk_mask=self.media_chunk_mask, combined_features=combined
        )


__all__ = ["MirasolStreamingState"]
