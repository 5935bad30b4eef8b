"""Decoding the audio track to a mono waveform at the requested rate."""

import av
import numpy as np

from .media_errors import logger


# The mono track is resampled in blocks so that hours of audio never need a second full-length float copy.
RESAMPLE_BLOCK_SAMPLES = 1 << 20
# Audio frames whose timestamp is this close to the end of the previous one continue it (timestamp rounding);
# farther apart they are placed at their own time, with silence in a gap.
AUDIO_JITTER_SECONDS = 1e-3


def _decode_audio(audio_stream, packets: list, sampling_rate: int) -> tuple[np.ndarray | None, float, int]:
    """(mono waveform at `sampling_rate`, time of its first sample on the container clock, damaged packets)."""
    track, errors = _AudioTrack(), 0
    codec = audio_stream.codec_context
    for packet in packets + [None]:  # None drains the decoder's last frames
        try:
            for frame in codec.decode(packet):
                track.add(frame)
        except av.EOFError:
            pass
        except av.FFmpegError:
            errors += 1
    waveform, origin = track.assemble(sampling_rate)
    return waveform, origin, errors


class _AudioTrack:
    """Decoded audio pieces placed by their timestamps, so a lost packet leaves a gap instead of shifting time."""

    def __init__(self):
        self.pieces = []  # (start seconds or None, sample rate, (C, S) samples as decoded)

    def add(self, frame: "av.AudioFrame"):
        array = frame.to_ndarray()
        if not frame.format.is_planar:
            array = array.reshape(-1, frame.layout.nb_channels).T  # (1, S * C) interleaved -> (C, S)
        self.pieces.append((frame.time, frame.sample_rate, array))

    def assemble(self, target_rate: int) -> tuple[np.ndarray | None, float]:
        """The track as one `(S,)` float32 mono waveform at `target_rate`, and the time of its first sample."""
        if not self.pieces:
            return None, 0.0
        rates = [rate for _, rate, _ in self.pieces]
        source_rate = max(set(rates), key=rates.count)
        if len(set(rates)) > 1:
            logger.warning("audio sample rate changes mid-stream; keeping the %d Hz parts only", source_rate)
        kept = [(start, array) for start, rate, array in self.pieces if rate == source_rate]
        origin = next((start for start, _ in kept if start is not None), 0.0)
        offsets, cursor, jitter = [], 0, round(AUDIO_JITTER_SECONDS * source_rate)
        for start, array in kept:
            offset = cursor if start is None else max(0, round((start - origin) * source_rate))
            offset = cursor if abs(offset - cursor) <= jitter else offset
            offsets.append(offset)
            cursor = offset + array.shape[1]
        lengths = np.array([array.shape[1] for _, array in kept])
        contiguous = np.array_equal(offsets, np.cumsum(lengths) - lengths)
        same_layout = len({(array.shape[0], array.dtype) for _, array in kept}) == 1
        if contiguous and same_layout:
            # The usual case, converted in one go: per-frame numpy calls cost more than decoding AAC does.
            mono = _to_mono(np.concatenate([array for _, array in kept], axis=1))
        else:
            mono = np.zeros(max(offset + length for offset, length in zip(offsets, lengths)), np.float32)
            for offset, (_, array) in zip(offsets, kept):
                mono[offset : offset + array.shape[1]] = _to_mono(array)
        return _resample(mono, source_rate, target_rate), origin


def _to_mono(array: np.ndarray) -> np.ndarray:
    """`(C, S)` decoded samples of any sample format -> `(S,)` float32 in [-1, 1], channels averaged."""
    if np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32, copy=False)
    elif np.issubdtype(array.dtype, np.signedinteger):
        array = array.astype(np.float32) / float(np.iinfo(array.dtype).max + 1)
    else:  # unsigned 8-bit PCM is centred on 128
        midpoint = (np.iinfo(array.dtype).max + 1) // 2
        array = (array.astype(np.float32) - midpoint) / float(midpoint)
    return array.mean(axis=0)


def _resample(mono: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    if source_rate == target_rate or len(mono) == 0:
        return mono.astype(np.float32)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=target_rate)
    outputs = []
    for start in range(0, len(mono), RESAMPLE_BLOCK_SAMPLES):
        block = np.ascontiguousarray(mono[None, start : start + RESAMPLE_BLOCK_SAMPLES])  # (1, S_block)
        frame = av.AudioFrame.from_ndarray(block, format="flt", layout="mono")
        frame.sample_rate = source_rate
        outputs += [resampled.to_ndarray()[0] for resampled in resampler.resample(frame)]
    outputs += [resampled.to_ndarray()[0] for resampled in resampler.resample(None)]
    return np.concatenate(outputs).astype(np.float32)
