"""Ask at any time: a stream encoded in a background thread, questions answered from the state so far.

    reader = LiveReader("http://127.0.0.1:8080/live.ts", chunk_seconds=1.0, frames_per_chunk=8, size=32)
    watcher = MirasolWatcher(model, processor, reader).start()
    answer = watcher.ask("what sound is playing?")   # answer.text, answer.start_time, answer.end_time
    watcher.stop()

Each chunk is read and encoded once (`encode_media_chunk`); a question takes the latent model's context as it is at
that moment (the last `context_chunks` chunks, or all so far) and generates on the asking thread, so encoding goes on
while it answers. `MirasolWatchAnswer` says which chunks and which span of the source's
clock (seconds from its first frame) the answer covers.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from ..encoded_media import MirasolMediaOutput, MirasolStreamingState
from .live import LiveChunk


def chunk_inputs(processor, chunk: LiveChunk) -> dict:
    """One live chunk as model inputs for `encode_media_chunk`, prepared as the processor prepares a clip's chunks:
    `pixel_values_videos` (1, f, 3, S, S), `input_features` (1, mels, A), `audio_chunk_mask` (1, 1)."""
    pixels = processor.normalize_frames(chunk.frames[None])  # (1, f, S, S, 3) uint8 -> (1, f, 3, S, S) float32
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


SNAPSHOTS_KEPT = 16  # states after the last chunks that questions can still be asked about


@dataclass
class _Snapshot:
    """The state after chunk `last_chunk`: a windowed context (None: every chunk so far) covering `covered` chunks."""

    last_chunk: int
    covered: int
    context: MirasolMediaOutput | None
    start_time: float
    end_time: float


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
        # Published under the lock after each chunk, for questions: a snapshot of the state after each of the last
        # SNAPSHOTS_KEPT chunks (the windowed context: a few references), every chunk's latents so far when not
        # windowed (appended, never copied), and the (start, end) times of the chunks a context covers.
        self._snapshots: deque[_Snapshot] = deque(maxlen=SNAPSHOTS_KEPT)
        self._outputs: list[MirasolMediaOutput] = []
        self._spans = deque(maxlen=model.config.latent_config.context_chunks)
        self._count = 0
        self._first_start = None  # start time of the stream's first chunk
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._encode_all, name="mirasol-watch", daemon=True)
        self._new_chunk = threading.Condition(self._lock)
        self.error: BaseException | None = None
        self._finished = False  # the encoding thread is done (the source ended, failed or was stopped)

    def start(self) -> MirasolWatcher:
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        """Still encoding: the source has not ended, failed or been stopped."""
        with self._lock:
            return self._thread.is_alive() and not self._finished

    @property
    def num_chunks(self) -> int:
        """Chunks encoded so far."""
        with self._lock:
            return self._count

    @property
    def first_start_time(self) -> float | None:
        """Start time (source clock, seconds) of the stream's first chunk; None before it."""
        with self._lock:
            return self._first_start

    def held_chunks(self) -> list[tuple[int, float]]:
        """(chunk index, end time) of the recent chunks `ask(..., at_chunk=index)` can still answer as of."""
        with self._lock:
            return [(snapshot.last_chunk, snapshot.end_time) for snapshot in self._snapshots]

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
                    if not self._windowed:
                        self._outputs.append(output)
                    self._spans.append(span)
                    if self._first_start is None:
                        self._first_start = span[0]
                    self._count = self.state.num_chunks
                    covered = context.media_chunk_mask.shape[1] if context is not None else self._count
                    start_time = self._spans[-covered][0] if context is not None else self._first_start
                    self._snapshots.append(_Snapshot(self._count - 1, covered, context, start_time, span[1]))
                    self._new_chunk.notify_all()
        except BaseException as error:  # reported to whoever asks or waits
            self.error = error
        finally:
            with self._lock:
                self._finished = True
                self._new_chunk.notify_all()

    def wait_for_chunks(self, count: int, timeout: float | None = None) -> bool:
        """Blocks until `count` chunks are encoded or the stream ends; True if they were."""
        with self._lock:
            self._new_chunk.wait_for(lambda: self._count >= count or self._finished, timeout)
            return self._count >= count

    def ask(self, question: str | list[str], at_chunk: int | None = None, return_generated: bool = False):
        """Answers a question (or a list of them, in one batch) from the chunks encoded so far, or as of chunk
        `at_chunk` while the watcher still holds it (see `held_chunks`). Raises ValueError before the first chunk.

        `return_generated=True` returns `(answers, generated, prompt_length)`: `generate`'s dict output with
        `output_attentions=True` (its `cross_attentions` run over the covered chunks' media tokens)."""
        with self._lock:  # a consistent snapshot: encoding waits only for a few references to be read
            if not self._snapshots:
                raise ValueError("no chunk encoded yet: nothing to answer from" + self._error_note())
            snapshot = self._snapshots[-1]
            if at_chunk is not None:
                held = [held for held in self._snapshots if held.last_chunk == at_chunk]
                if not held:
                    raise ValueError(f"chunk {at_chunk} is not held; held: {[s.last_chunk for s in self._snapshots]}")
                snapshot = held[0]
            outputs = self._outputs[: snapshot.last_chunk + 1] if snapshot.context is None else None
        media = snapshot.context
        if media is None:  # unwindowed: every chunk up to the snapshot's
            media = MirasolMediaOutput(
                media_latents=torch.cat([output.media_latents for output in outputs], dim=1),  # (1, t, m, d)
                media_chunk_mask=torch.cat([output.media_chunk_mask for output in outputs], dim=1),  # (1, t)
            )
        questions = [question] if isinstance(question, str) else list(question)
        prompts = self.processor(text=questions, return_tensors="pt")
        batch = len(questions)
        with torch.no_grad():
            generated = self.model.generate(
                input_ids=prompts["input_ids"],
                attention_mask=prompts["attention_mask"],
                media_latents=media,
                media_index=torch.zeros(batch, dtype=torch.long),  # every question reads the one stream
                **self.generate_kwargs,
                **({"return_dict_in_generate": True, "output_attentions": True} if return_generated else {}),
            )
        sequences = generated["sequences"] if return_generated else generated
        texts = self.processor.post_process_answer(sequences, prompts["input_ids"])
        first = snapshot.last_chunk - snapshot.covered + 1
        answers = [
            MirasolWatchAnswer(asked, text, first, snapshot.last_chunk, snapshot.start_time, snapshot.end_time)
            for asked, text in zip(questions, texts)
        ]
        answers = answers[0] if isinstance(question, str) else answers
        return (answers, generated, prompts["input_ids"].shape[-1]) if return_generated else answers

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


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """"5s", "500ms", "2m", "1h" or a plain number of seconds -> seconds (> 0)."""
    value = text.strip().lower()
    unit = next((unit for unit in sorted(_DURATION_UNITS, key=len, reverse=True) if value.endswith(unit)), "")
    try:
        seconds = float(value[: len(value) - len(unit)]) * _DURATION_UNITS.get(unit, 1.0)
    except ValueError:
        raise ValueError(f"--every: cannot read {text!r} as a duration (e.g. 5s, 500ms, 2m)") from None
    if not seconds > 0:
        raise ValueError(f"--every must be a positive duration, got {text!r}")
    return seconds


def load_watch_model(model_path: str, context_chunks: int | None = None):
    """`(model, processor)` for watching a stream: the model in eval mode with a latent-model window of
    `context_chunks` (default: the `num_chunks` it was trained on), so state and time per chunk stay flat."""
    from transformers import AutoConfig

    from ..modeling_mirasol import MirasolForConditionalGeneration
    from ..processing_mirasol import MirasolProcessor

    config = AutoConfig.from_pretrained(model_path)
    config.latent_config.context_chunks = context_chunks or config.num_chunks
    model = MirasolForConditionalGeneration.from_pretrained(model_path, config=config).eval()
    return model, MirasolProcessor.from_pretrained(model_path)


class AskSchedule:
    """When to ask while a watcher runs: as of the first chunk that reaches each `every` seconds of the source, from
    its first chunk's start (None: only at the end). If encoding ran so far ahead that such a chunk is no longer
    held, as of the next held one (its answer says which chunks it covers)."""

    def __init__(self, every: float | None):
        self.every = every
        self.last_asked = -1  # the last chunk asked as of
        self._next_time = None

    def due(self, watcher: MirasolWatcher) -> list[int]:
        """The held chunks to ask as of now, in order; each counts as asked."""
        if self.every is None or watcher.first_start_time is None:
            return []
        if self._next_time is None:
            self._next_time = watcher.first_start_time + self.every
        due = []
        for index, end_time in watcher.held_chunks():
            if index > self.last_asked and end_time >= self._next_time - 1e-6:
                due.append(index)
                self.last_asked = index
                while self._next_time <= end_time + 1e-6:
                    self._next_time += self.every
        return due

    def due_at_end(self, watcher: MirasolWatcher) -> bool:
        """Whether the state at the end of the source still needs asking (once the watcher is done); counts as asked."""
        last = watcher.num_chunks - 1
        if last < 0 or last == self.last_asked:
            return False
        self.last_asked = last
        return True


def watch_command(args, default_model: str | None) -> int:
    """`mirasol-hf watch SOURCE --ask QUESTION [--every 5s]`: prints `[start-end s] question answer` lines."""
    import json
    import sys

    from .live import LiveReader, LiveSourceError

    def fail(message: str) -> int:
        print(f"mirasol-hf: error: {message}", file=sys.stderr)
        return 2

    model_path = args.model or default_model
    if model_path is None:
        return fail("no default model is shipped with this installation; pass --model PATH")
    try:
        every = parse_duration(args.every) if args.every else None
        model, processor = load_watch_model(model_path, args.context_chunks)
        reader = LiveReader(
            args.source,
            chunk_seconds=args.chunk_seconds,
            frames_per_chunk=processor.frames_per_chunk,
            size=processor.image_size,
            sampling_rate=processor.feature_extractor.sampling_rate,
            stall_timeout=args.stall_timeout,
            format=args.format,
        )
    except (OSError, ValueError) as error:
        return fail(str(error))
    watcher = MirasolWatcher(model, processor, reader, max_new_tokens=args.max_new_tokens).start()

    def ask_all(at_chunk: int | None = None) -> None:
        for answer in watcher.ask(args.ask, at_chunk=at_chunk):
            if args.json:
                print(json.dumps(answer.__dict__), flush=True)
            else:
                print(f"[{answer.start_time:.1f}-{answer.end_time:.1f} s] {answer.question} {answer.text}", flush=True)

    schedule = AskSchedule(every)
    try:
        while watcher.wait_for_chunks(watcher.num_chunks + 1):
            for index in schedule.due(watcher):
                ask_all(at_chunk=index)
    except KeyboardInterrupt:
        watcher.stop()
    if schedule.due_at_end(watcher):
        ask_all()  # the state at the end of the source
    if watcher.error is not None:
        if isinstance(watcher.error, (LiveSourceError, ValueError)):
            return fail(str(watcher.error))
        raise watcher.error
    if not watcher.num_chunks:
        return fail(f"{args.source}: no chunk could be read")
    return 0


__all__ = [
    "AskSchedule",
    "MirasolWatchAnswer",
    "MirasolWatcher",
    "chunk_inputs",
    "load_watch_model",
    "parse_duration",
    "watch_command",
]
