"""Decoding the audio track to a mono waveform at the requested rate, only over the time window that is needed.

Decoded frames are checked against the stream (channel count, sample rate, sample format) before they are read;
their channels are averaged straight from the frame's buffers into a mono block, resampled block by block, so memory
holds the output waveform and one block, never the decoded track.
"""

import array

import av
import numpy as np

from .media_errors import logger
from .media_timeline import NO_TIMESTAMP


# Decoded samples are mixed to mono and resampled in blocks of this many samples (per channel).
RESAMPLE_BLOCK_SAMPLES = 1 << 20
# Audio frames whose timestamp is this close to the end of the previous one continue it (timestamp rounding);
# farther apart they are placed at their own time, with silence in a gap.
AUDIO_JITTER_SECONDS = 1e-3
# Decoding starts this long before the needed window: codecs with overlapping transforms (AAC, MP3, AC-3) need the
# packets before a window to rebuild its first samples.
AUDIO_PREROLL_SECONDS = 0.5
# More channels than this are not converted: PyAV reads at most 8 planes, and garbage packets decode into frames
# with dozens of channels (converting those crashes the process).
MAX_DECODED_CHANNELS = 8
# A jump in audio timestamps longer than this is a damaged timestamp, not a gap to fill with silence.
MAX_AUDIO_GAP_SECONDS = 60.0


class _AudioPackets:
    """The audio stream's packets found by the demux pass: their timestamps, and either their compressed data as one
    byte buffer (a PyAV packet object costs about 1.6 KB, four times an AAC packet, which for an hour of audio is
    240 MB; packets carrying side data, such as encoder delay, are kept whole) or, with `reopen` (a callable giving a
    new container on the same file), nothing more: the packets needed are then demuxed again from the file."""

    def __init__(self, reopen=None, stream_index: int | None = None):
        self.data = bytearray()
        self.ends = array.array("q")  # end offset of each packet in `data`
        self.timestamps = array.array("q")  # pts, dts, duration of each packet, NO_TIMESTAMP where unknown
        self.whole = {}  # packet number -> av.Packet with side data
        self.time_base = None
        self.reopen, self.stream_index = reopen, stream_index
        self.demuxed = None  # _Redemux: the packets read again, with reopen

    def append(self, packet: "av.Packet"):
        if self.time_base is None:
            self.time_base = packet.time_base
        for value in (packet.pts, packet.dts, packet.duration):
            self.timestamps.append(NO_TIMESTAMP if value is None else value)
        if self.reopen is not None:
            return
        if next(iter(packet.iter_sidedata()), None) is not None:
            self.whole[len(self.ends)] = packet
        self.data += bytes(packet)
        self.ends.append(len(self.data))

    def __len__(self) -> int:
        return len(self.timestamps) // 3

    def times(self, k: int) -> tuple:
        """(pts, dts, duration) of packet `k`, None where unknown."""
        return tuple(None if value == NO_TIMESTAMP else value for value in self.timestamps[3 * k : 3 * k + 3])

    def packet(self, k: int) -> "av.Packet":
        """Packet `k`; with `reopen`, calls must ask for increasing `k` (a smaller one starts a new read)."""
        if self.reopen is not None:
            if self.demuxed is None or not self.demuxed.can_reach(k):
                self.close()
                self.demuxed = _Redemux(self, k)
            return self.demuxed.packet(k)
        if k in self.whole:
            return self.whole[k]
        start = self.ends[k - 1] if k else 0
        packet = av.Packet(bytes(self.data[start : self.ends[k]]))
        packet.pts, packet.dts, packet.duration = self.times(k)
        packet.time_base = self.time_base
        return packet

    def close(self):
        if self.demuxed is not None:
            self.demuxed.close()
            self.demuxed = None


class _Redemux:
    """The audio stream's packets demuxed again from the file, numbered as the demux pass found them: after a seek to
    the first packet wanted, recognised by its timestamp (unique in the stream); counted from the file's start where
    that fails (no such timestamp, a seek landing past it, a packet after it whose timestamps differ)."""

    def __init__(self, packets: _AudioPackets, first: int):
        self.packets = packets
        self.container = self.iterator = None
        self.next = 0  # number of the packet `iterator` yields next
        self.pending = None  # a packet read ahead (the one found after a seek)
        self.counted = False  # whether `iterator` started at the file's start (else after a seek)
        if not self._seek(first):
            self._from_start()

    def _open(self):
        if self.container is not None:
            self.container.close()
        self.container = self.packets.reopen()
        stream = self.container.streams[self.packets.stream_index]  # index among all streams
        for other in self.container.streams:
            if other.index != stream.index:
                other.discard = av.stream.Discard.all  # the demuxer then skips their packets entirely
        self.pending = None
        return stream

    def _packets(self, stream):
        return (packet for packet in self.container.demux(stream) if packet.size)

    def _from_start(self):
        stream = self._open()
        self.iterator, self.next, self.counted = self._packets(stream), 0, True

    def _seek(self, first: int) -> bool:
        target = self.packets.times(first)
        pts = target[0]
        if first == 0 or pts is None or self.packets.timestamps[0::3].count(pts) != 1:
            return False
        stream = self._open()
        try:
            self.container.seek(pts, stream=stream, backward=True)
            self.iterator = self._packets(stream)
            for packet in self.iterator:
                if packet.pts is None or packet.pts > pts:
                    return False
                if packet.pts == pts:
                    if _times(packet) != target:
                        return False
                    self.pending, self.next = packet, first
                    return True
        except av.FFmpegError:
            return False
        return False

    def can_reach(self, k: int) -> bool:
        return k >= self.next

    def packet(self, k: int) -> "av.Packet":
        while True:
            packet, self.pending = self.pending, None
            if packet is None:
                packet = self._read()
            if packet is None:
                raise av.EOFError(0, "the audio stream ends before the packets the demux pass found")
            number, self.next = self.next, self.next + 1
            if number == k:
                return packet

    def _read(self) -> "av.Packet | None":
        """The next packet (None at the end); after a seek, one that is not the packet expected makes the packets be
        counted from the file's start instead."""
        try:
            packet = next(self.iterator, None)
        except av.FFmpegError:
            if self.counted:
                raise
            packet = None
        if self.counted or (packet is not None and _times(packet) == self.packets.times(self.next)):
            return packet
        wanted = self.next
        self._from_start()
        for _ in range(wanted):
            if next(self.iterator, None) is None:
                return None
        self.next = wanted
        return next(self.iterator, None)

    def close(self):
        if self.container is not None:
            self.container.close()
            self.container = None


def _times(packet: "av.Packet") -> tuple:
    return packet.pts, packet.dts, packet.duration


def audio_stream_problem(audio_stream) -> str | None:
    """Why `audio_stream` cannot be decoded, or None."""
    codec = audio_stream.codec_context
    if codec is None:
        return "unknown audio codec: FFmpeg cannot decode it"
    channels = codec.channels
    if channels > MAX_DECODED_CHANNELS:
        return f"{channels} audio channels, more than the {MAX_DECODED_CHANNELS} supported"
    if not codec.sample_rate or codec.sample_rate <= 0:
        return "no audio sample rate"
    return None


def _decode_audio(
    audio_stream, packets: _AudioPackets, sampling_rate: int, window: tuple[float, float], name: str, sink=None
) -> tuple[np.ndarray | None, float, int]:
    """(mono waveform at `sampling_rate`, time of its first sample, damaged packets) over `window` (seconds on the
    container clock, both ends may be infinite). With `sink`, a callable `(samples, first sample's time)`, the
    waveform goes to it block by block as it is resampled and is not kept (None is returned for it)."""
    codec = audio_stream.codec_context
    codec.flush_buffers()  # a second decode (stand-in frames moved the windows) starts from a reset decoder
    expected_channels = codec.channels
    track = _MonoTrack(sampling_rate, window, name, sink)
    needed = _packets_in_window(packets, window)
    errors = 0
    for k in needed + [None]:  # None drains the decoder's last frames
        try:
            for frame in codec.decode(None if k is None else packets.packet(k)):
                channels = frame.layout.nb_channels
                if (
                    frame.samples <= 0
                    or not 0 < channels <= MAX_DECODED_CHANNELS
                    or frame.sample_rate <= 0
                    or frame.format.name not in SAMPLE_FORMATS
                ):
                    errors += 1
                    continue
                if expected_channels and channels != expected_channels:
                    errors += 1
                    continue
                if not track.add(frame):
                    break
        except av.EOFError:
            pass
        except av.FFmpegError:
            # A last packet cut short (a file ending mid-packet) is dropped by FFmpeg's own tools without a word.
            if k != len(packets) - 1:
                errors += 1
        if track.done:
            break
    packets.close()
    waveform, origin = track.finish()
    return waveform, origin, errors


def _packets_in_window(packets: _AudioPackets, window: tuple[float, float]) -> list[int]:
    """Numbers of the packets that decode into `window`, with `AUDIO_PREROLL_SECONDS` before it."""
    start, end = window
    everything = list(range(len(packets)))
    if packets.time_base is None or (start == -np.inf and end == np.inf):
        return everything
    time_base = float(packets.time_base)
    needed = []
    for k in everything:
        pts, _, duration = packets.times(k)
        if pts is None:
            return everything
        if (pts + (duration or 0)) * time_base >= start - AUDIO_PREROLL_SECONDS and pts * time_base <= end:
            needed.append(k)
    return needed


class _MonoTrack:
    """Decoded audio placed by its timestamps (a lost packet leaves a gap instead of shifting time), cut to a window,
    mixed to mono and resampled to the target rate block by block."""

    def __init__(self, target_rate: int, window: tuple[float, float], name: str, sink=None):
        self.target_rate, self.name, self.sink = target_rate, name, sink
        self.window_start, self.window_end = window
        self.source_rate = None
        self.origin = None  # time of the first kept sample, seconds
        self.cursor = 0  # source samples placed since `origin`
        # Mono samples at the source rate waiting to be resampled: each frame's channels are averaged straight from
        # its planes into this block, without a per-frame array.
        self.block = np.empty(RESAMPLE_BLOCK_SAMPLES, np.float32)
        self.block_filled = 0
        self.resampler = None
        # The output waveform, written block by block (its size known from the window when that is finite); with a
        # sink, the blocks go there instead.
        span = self.window_end - self.window_start
        self.output = np.empty(
            round(span * target_rate) + target_rate if np.isfinite(span) and sink is None else 0, np.float32
        )
        self.filled = 0
        self.done = False
        self.warned_rate = False

    def add(self, frame: "av.AudioFrame") -> bool:
        """Place one decoded frame; False once the window's end is reached."""
        rate, start = frame.sample_rate, frame.time
        if self.source_rate is None:
            self.source_rate = rate
            self.resampler = _Resampler(rate, self.target_rate)
        elif rate != self.source_rate:
            if not self.warned_rate:
                logger.warning(
                    "%s: the audio sample rate changes mid-stream; keeping the %d Hz parts only",
                    self.name,
                    self.source_rate,
                )
                self.warned_rate = True
            return True
        samples = frame.samples
        skip = 0  # leading samples of the frame to drop
        if self.origin is None:
            if start is None:
                start = max(self.window_start, 0.0)
            skip = max(0, round((self.window_start - start) * rate)) if self.window_start > -np.inf else 0
            if skip >= samples:
                return True
            self.origin = start + skip / rate
        elif start is not None:
            offset = round((start - self.origin) * rate)
            jitter = round(AUDIO_JITTER_SECONDS * rate)
            if abs(offset - self.cursor) > jitter and abs(offset - self.cursor) <= MAX_AUDIO_GAP_SECONDS * rate:
                if offset > self.cursor:
                    self._place(None, 0, offset - self.cursor)  # silence in the gap
                else:
                    skip = self.cursor - offset  # overlaps what is placed already
                    if skip >= samples:
                        return True
        keep = samples - skip
        if self.window_end < np.inf:
            keep = min(keep, round((self.window_end - self.origin) * rate) - self.cursor)
        if keep > 0:
            self._place(frame, skip, keep)
        if self.window_end < np.inf and self.origin + self.cursor / rate >= self.window_end:
            self.done = True
        return not self.done

    def _place(self, frame: "av.AudioFrame | None", skip: int, count: int):
        """Append the channel mean of `frame`'s samples `[skip, skip + count)` (None: `count` zeros)."""
        channels = [] if frame is None else _channel_views(frame, skip, count)
        dtype, full_scale, midpoint = (None, 1.0, 0) if frame is None else SAMPLE_FORMATS[frame.format.name]
        done = 0
        while done < count:
            n = min(count - done, len(self.block) - self.block_filled)
            segment = self.block[self.block_filled : self.block_filled + n]
            if not channels:
                segment[:] = 0.0
            else:
                np.copyto(segment, channels[0][done : done + n], casting="unsafe")
                for channel in channels[1:]:
                    segment += channel[done : done + n]
                if midpoint:
                    segment -= midpoint * len(channels)
                segment *= 1.0 / (full_scale * len(channels))
            self.block_filled += n
            done += n
            if self.block_filled == len(self.block):
                self._flush()
        self.cursor += count

    def _flush(self):
        if self.block_filled:
            self._write(self.resampler.feed(self.block[: self.block_filled]))
        self.block_filled = 0

    def _write(self, blocks: list[np.ndarray]):
        if self.sink is not None:
            for block in blocks:
                self.sink(block, self.origin)
            self.filled += sum(map(len, blocks))
            return
        for block in blocks:
            if self.filled + len(block) > len(self.output):
                grown = np.empty(max(2 * len(self.output), self.filled + len(block)), np.float32)
                grown[: self.filled] = self.output[: self.filled]
                self.output = grown
            self.output[self.filled : self.filled + len(block)] = block
            self.filled += len(block)

    def finish(self) -> tuple[np.ndarray | None, float]:
        """The placed track as `(S,)` float32 at the target rate, and the time of its first sample."""
        if self.source_rate is None or self.cursor == 0:
            return None, 0.0
        self._flush()
        self._write(self.resampler.feed(None))
        if self.sink is not None:
            return None, float(self.origin)
        waveform = self.output[: self.filled]
        if self.filled < 0.9 * len(self.output):
            waveform = waveform.copy()  # not to keep the unused end alive
        return waveform, float(self.origin)


# Sample format -> (numpy dtype, full scale, midpoint): samples / full scale are in [-1, 1] after the midpoint
# (unsigned 8-bit PCM is centred on 128) is taken off.
SAMPLE_FORMATS = {
    **dict.fromkeys(("flt", "fltp"), (np.float32, 1.0, 0)),
    **dict.fromkeys(("dbl", "dblp"), (np.float64, 1.0, 0)),
    **dict.fromkeys(("s16", "s16p"), (np.int16, 32768.0, 0)),
    **dict.fromkeys(("s32", "s32p"), (np.int32, 2.0**31, 0)),
    **dict.fromkeys(("s64", "s64p"), (np.int64, 2.0**63, 0)),
    **dict.fromkeys(("u8", "u8p"), (np.uint8, 128.0, 128)),
}


def _channel_views(frame: "av.AudioFrame", skip: int, count: int) -> list[np.ndarray]:
    """`(count,)` views of each channel's samples `[skip, skip + count)` on the frame's own buffers."""
    dtype = SAMPLE_FORMATS[frame.format.name][0]
    channels, samples = frame.layout.nb_channels, frame.samples
    if frame.format.is_planar:
        return [np.frombuffer(plane, dtype, count=samples)[skip : skip + count] for plane in frame.planes[:channels]]
    interleaved = np.frombuffer(frame.planes[0], dtype, count=samples * channels).reshape(samples, channels)
    return [interleaved[skip : skip + count, c] for c in range(channels)]


class _Resampler:
    """Mono float32 blocks at `source_rate` -> blocks at `target_rate`, one FFmpeg resampler across blocks."""

    def __init__(self, source_rate: int, target_rate: int):
        self.source_rate = source_rate
        self.resampler = None
        if source_rate != target_rate:
            self.resampler = av.AudioResampler(format="flt", layout="mono", rate=target_rate)

    def feed(self, mono: np.ndarray | None) -> list[np.ndarray]:
        """Resampled output for `mono` (None: the resampler's last samples)."""
        if self.resampler is None:
            return [] if mono is None else [mono.astype(np.float32, copy=False)]
        if mono is None:
            return [resampled.to_ndarray()[0] for resampled in self.resampler.resample(None)]
        outputs = []
        for start in range(0, len(mono), RESAMPLE_BLOCK_SAMPLES):
            block = np.ascontiguousarray(mono[None, start : start + RESAMPLE_BLOCK_SAMPLES], np.float32)  # (1, S)
            frame = av.AudioFrame.from_ndarray(block, format="flt", layout="mono")
            frame.sample_rate = self.source_rate
            outputs += [resampled.to_ndarray()[0] for resampled in self.resampler.resample(frame)]
        return outputs


def _resample(mono: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """`(S,)` mono at `source_rate` -> `(S',)` float32 at `target_rate`."""
    if len(mono) == 0:
        return mono.astype(np.float32)
    resampler = _Resampler(source_rate, target_rate)
    return np.concatenate(resampler.feed(mono) + resampler.feed(None)).astype(np.float32, copy=False)
