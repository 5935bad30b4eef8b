"""Live sources: a video read with PyAV as it arrives, cut into chunks by presentation time.

`LiveReader(source, chunk_seconds=..., frames_per_chunk=..., size=...)` yields `LiveChunk`s: chunk k covers
`[k * chunk_seconds, (k + 1) * chunk_seconds)` seconds from the source's first frame (the file reader's clock), its
frames are those on screen at `frames_per_chunk` evenly spaced times from the window's start (the file reader's
uniform sampling within a chunk), and its audio is the source's audio over the same window, resampled to mono `sampling_rate`. A chunk
is handed out as soon as both streams have passed its end; nothing is read twice and only the current chunk is held.

Sources: a file that may still be growing (a recording in progress: MPEG-TS, Matroska, fragmented MP4), a pipe
(`"-"` for stdin, or a binary file object), or a URL FFmpeg opens (`http://`, `udp://`, `tcp://`, ...).

How a stream ends, each a defined outcome:

* the source ends (end of a pipe or of a network stream, a file that stops growing for `stall_timeout` seconds):
  the chunk in progress is handed out with `complete=False` (its missing frames repeat its last frame; its audio
  stops where the video does, and covering too little of it is masked by the feature extractor, as in files), then
  iteration stops;
* a pipe or network source that sends nothing for `stall_timeout` seconds, or a connection that fails: the chunk in
  progress is handed out the same way, then `LiveSourceError` is raised, naming the source and the time reached;
* a source that cannot be opened: `LiveSourceError` at once; one without a video stream: `MediaError`.

Over UDP (`udp://HOST:PORT`: MPEG-TS in datagrams, as FFmpeg or OBS send a camera) nothing marks the end: a stream
ends as a stall, `stall_timeout` after its last datagram (FFmpeg's `timeout` option; one given in the URL wins). The
reader waits `stall_timeout` for the first datagram; those sent before it listens are lost. Lost datagrams: frames
damaged or missing until the next keyframe, silence where audio was lost (the audio after it keeps its time),
counted in `damaged_packets` and logged. A reader that falls behind overflows FFmpeg's receive buffer (`fifo_size`
in the URL, in 188-byte packets, 7 * 4096 by default; `overrun_nonfatal=1` drops what does not fit instead):
`LiveSourceError`, saying so.
"""

from __future__ import annotations

import os
import select
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import av
import numpy as np

from ..media import DEFAULT_SAMPLING_RATE, TIME_TOLERANCE, MediaError
from ..media_audio import AUDIO_JITTER_SECONDS, MAX_AUDIO_GAP_SECONDS
from ..media_errors import logger
from ..media_frames import DEFAULT_INTERPOLATION, DEFAULT_MAX_FRAME_PIXELS, _frame_converter
from ..media_streams import _pick_video_stream

# How often a growing file is checked for new data.
GROWING_FILE_POLL_SECONDS = 0.02
DEFAULT_STALL_TIMEOUT = 10.0
DEFAULT_AUDIO_CONTEXT = 0.05
MICROSECONDS = 1_000_000
MAX_FPS_DENOMINATOR = 1001
TEST_STREAM_BIT_RATE = 8_000_000  # near-lossless at small sizes
# FFmpeg's udp input fails this way, without saying why, when its receive buffer (fifo_size) fills up.
UDP_OVERRUN_HINT = (
    " (over UDP, also the reader falling behind the sender: FFmpeg's receive buffer overflowed; a larger buffer"
    " takes ?fifo_size=PACKETS_OF_188_BYTES in the URL, &overrun_nonfatal=1 drops what does not fit instead)"
)


class LiveSourceError(MediaError):
    """A live source failed: could not be opened, stalled, or dropped its connection."""


@dataclass
class LiveChunk:
    """One chunk of a live source.

    frames: (frames_per_chunk, S, S, 3) uint8 RGB. waveform: (samples,) float32 mono at the reader's sampling rate,
    its first sample at `waveform_start_time`, covering the window and `audio_context` seconds on each side (None:
    the source has no audio). Times are seconds from the source's first video frame, as `read_media` times a file
    (so the feature extractor puts a chunk's STFT frames where it puts them in the file).
    complete: False for the last chunk of a source that ended (or failed) inside it.
    """

    index: int
    start_time: float
    end_time: float
    frames: np.ndarray
    waveform: np.ndarray | None
    waveform_start_time: float
    complete: bool = True


class _GrowingFile:
    """A file read as it is written: at its current end, waits for more until nothing comes for `stall_timeout`."""

    def __init__(self, path: Path, stall_timeout: float):
        self.file = open(path, "rb")
        self.stall_timeout = stall_timeout
        self.ended = False

    def read(self, size: int = -1) -> bytes:
        waited_since = time.monotonic()
        while True:
            data = self.file.read(size)
            if data or self.ended:
                return data
            if time.monotonic() - waited_since > self.stall_timeout:
                self.ended = True  # the file has stopped growing: its end, for this and every later read
                return data
            time.sleep(GROWING_FILE_POLL_SECONDS)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        # Lets FFmpeg find an index at the end of a finished file (an MP4 without faststart) as in a plain file.
        return self.file.seek(offset, whence)

    def tell(self) -> int:
        return self.file.tell()

    def close(self):
        self.file.close()


class _Pipe:
    """A pipe read as data arrives; nothing for `stall_timeout` seconds raises `LiveSourceError`."""

    def __init__(self, file, name: str, stall_timeout: float):
        self.fd = file.fileno()
        self.name = name
        self.stall_timeout = stall_timeout

    def read(self, size: int = -1) -> bytes:
        ready, _, _ = select.select([self.fd], [], [], self.stall_timeout)
        if not ready:
            raise LiveSourceError(f"{self.name}: stalled, no data for {self.stall_timeout:g} s")
        return os.read(self.fd, size if size > 0 else 1 << 16)

    def close(self):
        pass


class LiveReader:
    """Chunks of a live source as they arrive (see the module docstring for sources and outcomes).

    Args:
        source: a path, `"-"` (stdin), a binary file object of a pipe, or a URL.
        chunk_seconds: length of a chunk, seconds.
        frames_per_chunk: frames sampled per chunk (the model's `frames_per_chunk`).
        size: frames are scaled to `size` x `size` (the processor's `image_size`).
        sampling_rate: audio rate, Hz (the feature extractor's).
        stall_timeout: seconds without data after which a source counts as stalled (or a growing file as ended).
        audio_context: seconds of audio kept on each side of a chunk's window (its waveform starts that much before
            the window), so that a log-mel computed per chunk sees the same samples at its edges as one computed over
            the whole track: at least `(window_length + hop_length) / 2` of the feature extractor (17.5 ms by default).
        format: container format to assume (e.g. "mpegts"), for sources FFmpeg cannot probe.

    `damaged_packets`: packets that arrived damaged or did not decode, and gaps left by lost audio packets, in the
    current iteration up to its latest chunk (each chunk that adds some logs a warning on the media logger).
    """

    def __init__(
        self,
        source,
        chunk_seconds: float,
        frames_per_chunk: int,
        size: int,
        sampling_rate: int = DEFAULT_SAMPLING_RATE,
        stall_timeout: float = DEFAULT_STALL_TIMEOUT,
        audio_context: float = DEFAULT_AUDIO_CONTEXT,
        format: str | None = None,
    ):
        if not chunk_seconds > 0:
            raise ValueError(f"chunk_seconds must be > 0, got {chunk_seconds}")
        if frames_per_chunk < 1 or size < 1:
            raise ValueError(f"frames_per_chunk and size must be >= 1, got {frames_per_chunk} and {size}")
        if not stall_timeout > 0:
            raise ValueError(f"stall_timeout must be > 0, got {stall_timeout}")
        self.source = source
        self.name = getattr(source, "name", None) or str(source)
        self.chunk_seconds = float(chunk_seconds)
        self.frames_per_chunk = frames_per_chunk
        self.size = size
        self.sampling_rate = sampling_rate
        self.stall_timeout = float(stall_timeout)
        if audio_context < 0:
            raise ValueError(f"audio_context must be >= 0, got {audio_context}")
        self.audio_context = float(audio_context)
        self.format = format
        self.damaged_packets = 0

    def _open(self):
        """The PyAV container and the file object it reads from (None for URLs)."""
        source, reader = self.source, None
        # Probe no more than a chunk's worth of the stream before the first frame comes out (FFmpeg's default
        # analyzes 5 s, which a live source makes the viewer wait for).
        options = {"analyzeduration": str(int(min(self.chunk_seconds, 1.0) * MICROSECONDS)), "probesize": "65536"}
        if isinstance(source, (str, Path)) and "://" in str(source):
            # FFmpeg's own timeouts: rw_timeout for http/tcp reads, timeout for udp (both in microseconds).
            stall = str(int(self.stall_timeout * MICROSECONDS))
            options.update(rw_timeout=stall, timeout=stall)
        elif source == "-":
            reader = _Pipe(sys.stdin.buffer, "stdin", self.stall_timeout)
        elif isinstance(source, (str, Path)):
            if not Path(source).is_file():
                raise LiveSourceError(f"{source}: no such file")
            reader = _GrowingFile(Path(source), self.stall_timeout)
        else:
            reader = _Pipe(source, self.name, self.stall_timeout)
        started = time.monotonic()
        try:
            container = av.open(reader if reader is not None else str(source), format=self.format, options=options)
        except LiveSourceError:
            raise
        except (av.FFmpegError, OSError) as error:
            if reader is not None:
                reader.close()
            reason = error
            timeout = self._network_timeout()
            if timeout is not None and time.monotonic() - started >= timeout:  # FFmpeg's timeout: nothing came
                reason = f"no data for {timeout:g} s ({error})"
            raise LiveSourceError(f"{self.name}: cannot open as a video stream: {reason}") from None
        return container, reader

    def _network_timeout(self) -> float | None:
        """Seconds FFmpeg waits for data from a URL source before failing: `stall_timeout`, or a udp/rtp URL's own
        `?timeout=` (microseconds), which wins; None for files and pipes (their stalls are detected here)."""
        if not (isinstance(self.source, (str, Path)) and "://" in str(self.source)):
            return None
        url = urlsplit(str(self.source))
        if url.scheme in ("udp", "rtp"):
            given = parse_qs(url.query).get("timeout")
            if given:
                try:
                    return int(given[-1]) / MICROSECONDS
                except ValueError:
                    pass
        return self.stall_timeout

    def __iter__(self) -> Iterator[LiveChunk]:
        container, reader = self._open()
        try:
            yield from self._chunks(container)
        finally:
            container.close()
            if reader is not None:
                reader.close()

    def _chunks(self, container) -> Iterator[LiveChunk]:
        self.damaged_packets = 0
        video_stream = _pick_video_stream(container, self.name)
        audio_stream = container.streams.audio[0] if container.streams.audio else None
        convert = _frame_converter(
            video_stream, (self.size, self.size), DEFAULT_INTERPOLATION, DEFAULT_MAX_FRAME_PIXELS, self.name, None
        )
        resampler = av.AudioResampler(format="flt", layout="mono", rate=self.sampling_rate)
        chunk = _ChunkBuilder(self, convert, has_audio=audio_stream is not None)
        streams = [video_stream] + ([audio_stream] if audio_stream is not None else [])
        failure = None
        # Seconds the demuxer kept us waiting for each of the latest packets (time spent handing out chunks not
        # counted): at a stall FFmpeg gives out the packets in progress (one per stream) after its timeout, then the
        # error (seen over udp: the wait, two packets, the error).
        waits, timeout = deque(maxlen=len(streams) + 2), self._network_timeout()

        def add(stream, frames) -> Iterator[LiveChunk]:
            for frame in frames:
                if frame.time is None:
                    continue
                if stream.type == "video":
                    chunk.add_video(frame)
                else:
                    chunk.add_audio(frame, resampler)
                yield from chunk.ready()

        packets = container.demux(streams)
        asked = time.monotonic()
        try:
            for packet in packets:
                waits.append(time.monotonic() - asked)
                frames = _decode(packet)
                chunk.damaged += packet.is_corrupt or frames is None
                if packet.stream.type == "audio" and frames is None:
                    chunk.audio_packet_lost = True
                yield from add(packet.stream, frames or [])
                asked = time.monotonic()
        except LiveSourceError as error:
            failure = error
        except (av.FFmpegError, OSError) as error:
            reached = chunk.time_reached()
            if timeout is not None and max([*waits, time.monotonic() - asked]) >= timeout:  # FFmpeg's timeout
                failure = LiveSourceError(f"{self.name}: stalled, no data for {timeout:g} s at {reached}")
            else:
                hint = UDP_OVERRUN_HINT if str(self.source).startswith("udp:") else ""
                failure = LiveSourceError(f"{self.name}: connection lost or stream broken at {reached}: {error}{hint}")
        if failure is not None:
            # What the decoders still hold (a video decoder keeps a frame back to reorder B-frames): the source sent
            # it before failing, as the flush packets at the end of a stream that ends give it out.
            for stream in streams:
                yield from add(stream, _drain(stream))
        yield from chunk.finish()
        if failure is not None:
            raise failure


def _decode(packet):
    """The packet's frames; None for a damaged packet (its frames are lost, the stream goes on)."""
    try:
        return packet.decode()
    except av.InvalidDataError:
        return None


def _drain(stream) -> list:
    """The frames `stream`'s decoder holds back, after a source failed."""
    try:
        frames = stream.codec_context.decode(None)
    except av.FFmpegError:
        return []
    for frame in frames:
        frame.time_base = stream.time_base  # as a packet's decode sets it
    return frames


class _ChunkBuilder:
    """Collects decoded frames and audio into chunks; hands a chunk out once both streams have passed its end.

    Sample time j of chunk k is `t0 + k * chunk_seconds + j * chunk_seconds / frames_per_chunk`; it shows the latest
    frame whose time is not after it, known once a later frame arrives. Only frames at sample times are converted.
    """

    def __init__(self, reader: LiveReader, convert, has_audio: bool):
        self.reader = reader
        self.convert = convert
        self.has_audio = has_audio
        self.origin = None  # time of the first video frame: chunk 0 starts there
        self.index = 0  # the chunk in progress
        self.sampled: list[np.ndarray] = []  # frames at the sample times from chunk `index` on
        self.on_screen = None  # [time, frame, converted or None]: the latest video frame
        self.video_end = None  # when the latest frame stops being shown: its time + its duration (or the last interval)
        self.audio_origin = None  # time of the first resampled audio sample
        self.audio_pieces: list[np.ndarray] = []
        self.audio_start = 0  # index (from audio_origin) of the first sample held
        self.audio_samples = 0  # samples received so far, silence for lost packets included
        self.audio_next = None  # when the latest audio frame ends: where the next one should start
        self.damaged = 0  # packets that arrived damaged or did not decode, and gaps where audio packets were lost
        self.audio_packet_lost = False  # the latest audio packet did not decode (its gap is counted with it)
        self.damaged_reported = 0

    @property
    def video_time(self) -> float:
        return -np.inf if self.on_screen is None else self.on_screen[0]

    def _window(self) -> tuple[float, float]:
        seconds = self.reader.chunk_seconds
        return self.origin + self.index * seconds, self.origin + (self.index + 1) * seconds

    def _sample_time(self, position: int) -> float:
        """Time of the `position`-th sample from the start of the chunk in progress."""
        return self._window()[0] + position * self.reader.chunk_seconds / self.reader.frames_per_chunk

    def _show_on_screen(self) -> np.ndarray:
        if self.on_screen[2] is None:
            self.on_screen[2] = self.convert(self.on_screen[1])
        return self.on_screen[2]

    def add_video(self, frame) -> None:
        if self.origin is None:
            self.origin = frame.time
        if frame.time < self.video_time:
            return  # out of order: the sample times it could show are already filled
        while self.on_screen is not None and frame.time > self._sample_time(len(self.sampled)) + TIME_TOLERANCE:
            self.sampled.append(self._show_on_screen())
        interval = None if self.on_screen is None else frame.time - self.on_screen[0]
        duration = float(frame.duration * frame.time_base) if frame.duration else interval
        self.video_end = frame.time + (duration or 0.0)
        self.on_screen = [frame.time, frame, None]

    def add_audio(self, frame, resampler) -> None:
        if self.audio_origin is None:
            self.audio_origin = frame.time
        # Lost packets (a network source) leave silence in their place, so the audio after them keeps its time.
        gap = 0.0 if self.audio_next is None else frame.time - self.audio_next
        if AUDIO_JITTER_SECONDS < gap <= MAX_AUDIO_GAP_SECONDS:
            silence = round(gap * self.reader.sampling_rate)
            self.audio_pieces.append(np.zeros(silence, np.float32))
            self.audio_samples += silence
            self.damaged += not self.audio_packet_lost  # a packet that did not decode is counted already
        self.audio_packet_lost = False
        self.audio_next = frame.time + frame.samples / frame.sample_rate
        for resampled in resampler.resample(frame):
            samples = resampled.to_ndarray()[0]  # (1, S) -> (S,)
            self.audio_pieces.append(samples)
            self.audio_samples += len(samples)

    def time_reached(self) -> str:
        return f"{max(self.video_time - (self.origin or 0.0), 0.0):.2f} s"

    def ready(self) -> Iterator[LiveChunk]:
        """Chunks that both streams have passed."""
        while self.origin is not None and self.video_time >= self._window()[1]:
            if self.has_audio:
                audio_until = -np.inf
                if self.audio_origin is not None:
                    audio_until = self.audio_origin + self.audio_samples / self.reader.sampling_rate
                if audio_until < self._window()[1] + self.reader.audio_context - TIME_TOLERANCE:
                    return
            yield self._take(complete=True)

    def finish(self) -> Iterator[LiveChunk]:
        """At the end of the source: the chunks its video passed (their audio as far as it goes), then the chunk in
        progress if a frame was shown in it, its remaining sample times showing the last frame."""
        while self.origin is not None and self.video_time >= self._window()[1]:
            yield self._take(complete=True)
        if self.on_screen is not None and self.video_time >= self._window()[0]:
            while len(self.sampled) < self.reader.frames_per_chunk:
                self.sampled.append(self._show_on_screen())
            yield self._take(complete=False)

    def _take(self, complete: bool) -> LiveChunk:
        start, end = self._window()
        count = self.reader.frames_per_chunk
        frames = np.stack(self.sampled[:count])  # (f, S, S, 3)
        self.sampled = self.sampled[count:]
        waveform, waveform_start = None, start
        if self.audio_origin is not None:
            rate = self.reader.sampling_rate
            held = np.concatenate(self.audio_pieces) if self.audio_pieces else np.zeros(0, np.float32)
            context = self.reader.audio_context
            # Nothing before the first frame, as the file reader cuts a file's audio (so chunk 0 has its features).
            since = max(start - context, self.origin)
            first = min(max(0, int(round((since - self.audio_origin) * rate)) - self.audio_start), len(held))
            # A source's last chunk: nothing after its video ends, as the file reader cuts a file's audio.
            until = end + context if complete else min(end + context, self.video_end)
            last = min(max(first, int(round((until - self.audio_origin) * rate)) - self.audio_start), len(held))
            waveform = held[first:last]
            waveform_start = self.audio_origin + (self.audio_start + first) / rate
            # Keep only what later chunks need: from the next window's start, less its context.
            keep = min(max(0, int(round((end - context - self.audio_origin) * rate)) - self.audio_start), len(held))
            self.audio_pieces = [held[keep:]]
            self.audio_start += keep
        self.index += 1
        if self.damaged > self.damaged_reported:
            reached = end - self.origin
            logger.warning("%s: %d packets lost or damaged up to %.2f s", self.reader.name, self.damaged, reached)
            self.reader.damaged_packets = self.damaged_reported = self.damaged
        seconds = self.reader.chunk_seconds  # times from the first frame: index * seconds, not (origin + ...) - origin
        return LiveChunk(
            self.index - 1,
            (self.index - 1) * seconds,
            self.index * seconds,
            frames,
            waveform,
            waveform_start - self.origin,
            complete,
        )


def write_transport_stream(
    output, frames: np.ndarray, fps: float, waveform: np.ndarray | None = None, sampling_rate: int = 16000
) -> None:
    """Writes `frames` (F, H, W, 3) uint8 shown at `i / fps` and a mono `waveform` from time 0 as an MPEG-TS (MPEG-2
    video at a high bit rate, MP2 audio) into `output` (a path or a binary file object): what a live encoder sends,
    packets of both streams interleaved in time. For trying and testing live sources."""
    frame_rate = Fraction(fps).limit_denominator(MAX_FPS_DENOMINATOR)
    with av.open(output, mode="w", format="mpegts") as container:
        video = container.add_stream("mpeg2video", rate=frame_rate)
        video.height, video.width = frames.shape[1:3]
        video.pix_fmt, video.bit_rate = "yuv420p", TEST_STREAM_BIT_RATE
        audio = None if waveform is None else container.add_stream("mp2", rate=sampling_rate, layout="mono")
        written = 0
        for index, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
            frame.pts, frame.time_base = index, 1 / frame_rate
            container.mux(video.encode(frame))
            if audio is not None:  # the audio up to this frame's end, so both streams interleave
                last = len(waveform) if index == len(frames) - 1 else round((index + 1) / fps * sampling_rate)
                if last > written:
                    block = np.ascontiguousarray(waveform[None, written:last], dtype=np.float32)  # (1, samples)
                    sound = av.AudioFrame.from_ndarray(block, format="flt", layout="mono")
                    sound.sample_rate, sound.pts, sound.time_base = sampling_rate, written, Fraction(1, sampling_rate)
                    container.mux(audio.encode(sound))
                    written = last
        container.mux(video.encode(None))
        if audio is not None:
            container.mux(audio.encode(None))


__all__ = ["LiveChunk", "LiveReader", "LiveSourceError", "write_transport_stream"]
