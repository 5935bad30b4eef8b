"""What encoding media gives (`MirasolMediaOutput`) and what a stream carries between chunks (`MirasolStreamingState`).

Everything upstream of the latent model sees one chunk at a time, and the latent model is block-causal, so chunk t's
latents depend on chunks <= t only. A stream therefore carries, from one `encode_media_chunk` call to the next, the
combiner's state (the TTM memory; nothing for the other combiners) and the latent model's context: the keys/values of
every chunk so far, or, with `latent_config.context_chunks` = N, the combined features of the last N chunks (a fixed
size, whatever the stream's length).

    state = None
    for frames, audio in chunks:
        new, state = model.encode_media_chunk(pixel_values_videos=frames, input_features=audio, state=state)
    answer = model.generate(input_ids=prompt, media_latents=state.media_output())

This module imports nothing of the model: `modeling_mirasol` builds on it, and `mirasol_hf.streaming` (live sources,
asking while encoding) on both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers.cache_utils import DynamicCache
from transformers.utils import ModelOutput


@dataclass
class MirasolMediaOutput(ModelOutput):
    """What `encode_media` returns.

    media_latents: (B, T, m, d) latent-model outputs h, what the text decoder attends to.
    media_chunk_mask: (B, T) bool, chunks holding video or audio.
    combined_features: (B, T, m, d_c) combiner outputs x, the latent loss targets.
    latent_attentions: with `output_attentions=True`, the latent model's attention weights, one (B, heads, T*m, T*m)
        tensor per layer, tokens chunk-major (token t*m + i is slot i of chunk t): which chunks each chunk drew on.
    """

    media_latents: torch.FloatTensor | None = None
    media_chunk_mask: torch.BoolTensor | None = None
    combined_features: torch.FloatTensor | None = None
    latent_attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class MirasolStreamingState:
    """What a stream carries between `encode_media_chunk` calls; updated in place by each call.

    combiner_state: what the combiner carries to the next chunk (the TTM memory (B, k, d); None for the others).
    media_chunk_mask: (B, n) bool, which of the chunks in the latent model's context hold video or audio: all chunks
        so far, or the last N with `context_chunks` = N.
    latent_cache: without a window, the latent model's keys/values of every chunk so far (one layer per layer).
    context_combined, context_latents: with a window, the combiner outputs x (B, n, m, d_c) of the last n <= N chunks
        and the latents h (B, n, m, d) of those chunks encoded as one clip, what a question attends to.
    """

    latent_cache: DynamicCache = field(default_factory=DynamicCache)
    combiner_state: torch.Tensor | None = None
    media_chunk_mask: torch.BoolTensor | None = None
    context_combined: torch.Tensor | None = None
    context_latents: torch.Tensor | None = None
    _num_chunks: int = field(default=0, init=False, repr=False)
    _outputs: list[MirasolMediaOutput] = field(default_factory=list, init=False, repr=False)

    @property
    def num_chunks(self) -> int:
        """Chunks encoded so far."""
        return self._num_chunks

    @property
    def first_chunk(self) -> int:
        """Index (in the stream) of the first chunk that `media_output()` covers."""
        return self._num_chunks - (0 if self.media_chunk_mask is None else self.media_chunk_mask.shape[1])

    @property
    def batch_size(self) -> int | None:
        return None if self.media_chunk_mask is None else self.media_chunk_mask.shape[0]

    def append(self, output: MirasolMediaOutput, combiner_state: torch.Tensor | None) -> None:
        """Records newly encoded chunks of an unwindowed stream and the combiner state after them."""
        self._outputs.append(output)
        self.combiner_state = combiner_state
        mask = output.media_chunk_mask
        self.media_chunk_mask = mask if self.media_chunk_mask is None else torch.cat([self.media_chunk_mask, mask], 1)
        self._num_chunks += mask.shape[1]

    def slide(
        self,
        num_new_chunks: int,
        combiner_state: torch.Tensor | None,
        context_combined: torch.Tensor,
        context_mask: torch.Tensor,
        context_latents: torch.Tensor,
    ) -> None:
        """Moves a windowed stream's context on by `num_new_chunks`: only the window's tensors are kept."""
        self.combiner_state = combiner_state
        self.context_combined, self.media_chunk_mask, self.context_latents = (
            context_combined,
            context_mask,
            context_latents,
        )
        self._num_chunks += num_new_chunks

    def media_output(self) -> MirasolMediaOutput:
        """The latent model's context as one `MirasolMediaOutput` for `generate(media_latents=...)`: all chunks so far
        (what `encode_media` gives for the whole clip) or, with a window, the last N chunks encoded as one clip."""
        if self._num_chunks == 0:
            raise ValueError("the stream is empty: encode a chunk with encode_media_chunk first")
        if self.context_latents is not None:
            return MirasolMediaOutput(
                media_latents=self.context_latents,
                media_chunk_mask=self.media_chunk_mask,
                combined_features=self.context_combined,
            )
        # Concatenated on request rather than at every chunk, which would copy everything so far each time.
        latents = torch.cat([output.media_latents for output in self._outputs], dim=1)  # (B, t, m, d)
        combined = torch.cat([output.combined_features for output in self._outputs], dim=1)  # (B, t, m, d_c)
        return MirasolMediaOutput(
            media_latents=latents, media_chunk_mask=self.media_chunk_mask, combined_features=combined
        )


__all__ = ["MirasolMediaOutput", "MirasolStreamingState"]
