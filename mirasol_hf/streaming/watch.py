"""Ask at any time: a stream encoded in a background thread, questions answered from the state so far.

    watcher = MirasolWatcher(model, processor, LiveReader("rtsp_or_file_or_-", ...)).start()
    answer = watcher.ask("what sound is playing?")   # answer.text, answer.start_time, answer.end_time
    watcher.stop()

Each chunk is read and encoded once (`encode_media_chunk`); a question takes the latent model's context as it is at
that moment (the last `context_chunks` chunks, or all so far) and generates on the asking thread, so encoding goes on
while it answers. `MirasolWatchAnswer` says which chunks and which span of the source's clock the answer covers.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from ..encoded_media import MirasolMediaOutput, MirasolStreamingState
from ..processing_mirasol import PIXEL_MAX
from .live import LiveChunk


def chunk_inputs(processor, chunk: LiveChunk) -> dict:
    """One live chunk as model inputs for `encode_media_chunk`, prepared as the processor prepares a clip's chunks:
    `pixel_values_videos` (1, f, 3, S, S), `input_features` (1, mels, A), `audio_chunk_mask` (1, 1)."""
    mean = np.asarray(processor.image_mean, np.float32)
    std = np.asarray(processor.image_std, np.float32)
    pixels = (chunk.frames.astype(np.float32) / PIXEL_MAX - mean) / std  # (f, S, S, 3)
    pixels = np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))[None]  # (f, S, S, 3) -> (1, f, 3, S, S)
    audio = processor.feature_extractor(
        chunk.waveform,
        chunk_windows=np.array([[chunk.start_time, chunk.end_time]]),
        waveform_start_times=chunk.waveform_start_time,
        return_tensors="pt",
    )
    return {
        "pixel_values_videos": torch.from_numpy(pixels),
        "input_features": audio["input_features"],
        "audio_chunk_mask": audio["audio_chunk_mask"],
    }


@dataclass
class MirasolWatchAnswer:
    """An answer and what it covers: chunks `first_chunk` to `last_chunk` (stream indices), spanning
    `start_time` to `end_time` seconds of the source's clock."""

    question: str
    text: str
    first_chunk: int
    last_chunk: int
    start_time: float
    end_time: float


class MirasolWatcher:
    """Encodes a stream of chunks in a background thread and answers questions from the state so far.

    Args:
        model: a `MirasolForConditionalGeneration` (in eval mode). Give it `latent_config.context_chunks` for a
            stream of unbounded length: state, time per chunk and memory then stay flat.
        processor: the model's `MirasolProcessor`.
        chunks: `LiveChunk`s (a `LiveReader`), or dicts of one chunk's model inputs (as `encode_media_chunk` takes
            them) with its `start_time` and `end_time` in seconds.
        generate_kwargs: passed to `generate` (default: greedy, 16 new tokens).
    """

    def __init__(self, model, processor, chunks: Iterable[LiveChunk], **generate_kwargs):
        self.model = model
        self.processor = processor
        self.chunks = chunks
        self.generate_kwargs = {"max_new_tokens": 16, "do_sample": False, **generate_kwargs}
        self.state = MirasolStreamingState()  # read and written by the encoding thread only
        self._windowed = model.config.latent_config.context_chunks is not None
        # What questions read, published under the lock after each chunk: the windowed context (a few references),
        # or every chunk's latents so far (appended, never copied); the chunks' (start, end) times; the chunk count.
        self._context = None
        self._outputs: list[MirasolMediaOutput] = []
        self._times = deque(maxlen=model.config.latent_config.context_chunks)
        self._count = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._encode_all, name="mirasol-watch", daemon=True)
        self._new_chunk = threading.Condition(self._lock)
        self.error: BaseException | None = None

    def start(self) -> MirasolWatcher:
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @property
    def num_chunks(self) -> int:
        """Chunks encoded so far."""
        with self._lock:
            return self._count

    @property
    def time_reached(self) -> float | None:
        """End time (source clock, seconds) of the latest chunk encoded; None before the first."""
        with self._lock:
            return self._times[-1][1] if self._times else None

    def _encode_all(self):
        try:
            for chunk in self.chunks:
                if self._stop.is_set():
                    break
                if isinstance(chunk, LiveChunk):
                    inputs, span = chunk_inputs(self.processor, chunk), (chunk.start_time, chunk.end_time)
                else:
                    inputs = dict(chunk)
                    span = (inputs.pop("start_time"), inputs.pop("end_time"))
                with torch.no_grad():
                    output, _ = self.model.encode_media_chunk(**inputs, state=self.state)
                context = self.state.media_output() if self._windowed else None
                with self._lock:
                    self._context = context
                    if not self._windowed:
                        self._outputs.append(output)
                    self._times.append(span)
                    self._count = self.state.num_chunks
                    self._new_chunk.notify_all()
        except BaseException as error:  # reported to whoever asks or waits
            self.error = error
        finally:
            with self._lock:
                self._new_chunk.notify_all()

    def wait_for_chunks(self, count: int, timeout: float | None = None) -> bool:
        """Blocks until `count` chunks are encoded or the stream ends; True if they were."""
        with self._lock:
            self._new_chunk.wait_for(lambda: self._count >= count or not self.running, timeout)
            return self._count >= count

    def ask(self, question: str) -> MirasolWatchAnswer:
        """Answers `question` from the chunks encoded so far (raises ValueError before the first chunk)."""
        with self._lock:  # a consistent snapshot: encoding waits only for a few references to be read
            if self._count == 0:
                raise ValueError("no chunk encoded yet: nothing to answer from" + self._error_note())
            media, outputs, times, last = self._context, list(self._outputs), list(self._times), self._count - 1
        if media is None:  # unwindowed: every chunk so far
            media = MirasolMediaOutput(
                media_latents=torch.cat([output.media_latents for output in outputs], dim=1),  # (1, t, m, d)
                media_chunk_mask=torch.cat([output.media_chunk_mask for output in outputs], dim=1),  # (1, t)
            )
        covered = media.media_chunk_mask.shape[1]
        first, start_time, end_time = last - covered + 1, times[-covered][0], times[-1][1]
        prompt = self.processor(text=question, return_tensors="pt")
        with torch.no_grad():
            generated = self.model.generate(
                input_ids=prompt["input_ids"],
                attention_mask=prompt["attention_mask"],
                media_latents=media,
                **self.generate_kwargs,
            )
        text = self.processor.post_process_answer(generated, prompt["input_ids"])[0]
        return MirasolWatchAnswer(question, text, first, last, start_time, end_time)

    def _error_note(self) -> str:
        return f" (the stream failed: {self.error})" if self.error is not None else ""

    def stop(self, timeout: float | None = None) -> None:
        """Stops encoding after the chunk in progress."""
        self._stop.set()
        self._thread.join(timeout)

    def join(self, timeout: float | None = None) -> None:
        """Waits for the stream to end; re-raises the error that ended it, if any."""
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error


__all__ = ["MirasolWatchAnswer", "MirasolWatcher", "chunk_inputs"]
