"""A read clip: sampled frames and audio on one clock, and the time windows of its chunks."""

from dataclasses import dataclass

import numpy as np


DEFAULT_SAMPLING_RATE = 16000


@dataclass
class MediaClip:
    """Sampled frames of a clip and its audio, on one clock whose zero is the clip's first frame.

    Attributes:
        frames: `(F, H, W, 3)` uint8 RGB, upright (display rotation applied); `F = 0` for sound alone (an
            audio-only file or waveform), whose chunks then tile the audio's duration.
        frame_indices: `(F,)` index of each frame in presentation order over the whole clip.
        frame_times: `(F,)` presentation time of each frame in seconds.
        end_time: end of the sampled range in seconds (the clip's end unless `end_time` was asked).
        waveform: `(S,)` float32 mono audio at `sampling_rate`, or None when there is no audio track.
        sampling_rate: rate of `waveform` in Hz.
        waveform_start_time: time of `waveform[0]` in seconds.
        source: a name for the input, used in messages.
    """

    frames: np.ndarray
    frame_indices: np.ndarray
    frame_times: np.ndarray
    end_time: float
    waveform: np.ndarray | None = None
    sampling_rate: int = DEFAULT_SAMPLING_RATE
    waveform_start_time: float = 0.0
    source: str = "<arrays>"

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def has_video(self) -> bool:
        return self.num_frames > 0

    def chunk_windows(self, num_chunks: int) -> np.ndarray:
        """`(num_chunks, 2)` start and end times of each chunk of consecutive frames (see `chunk_time_windows`);
        for sound alone, `num_chunks` equal windows from the waveform's start to `end_time`."""
        if not self.has_video:
            edges = np.linspace(max(0.0, self.waveform_start_time), self.end_time, num_chunks + 1)
            return np.stack([edges[:-1], edges[1:]], axis=1)  # (T, 2)
        return chunk_time_windows(self.frame_times, self.end_time, num_chunks)


def chunk_time_windows(frame_times: np.ndarray, end_time: float, num_chunks: int) -> np.ndarray:
    """Time window of each chunk of `len(frame_times) // num_chunks` consecutive frames, as `(num_chunks, 2)`.

    Chunk `t` spans from its first frame's presentation time to the next chunk's first frame, the last chunk to
    `end_time`, so the windows tile the clip and a sound at time `s` belongs to the chunk whose frames span `s`.
    """
    num_frames = len(frame_times)
    if num_chunks < 1 or num_frames % num_chunks:
        raise ValueError(f"{num_frames} frames cannot be cut into {num_chunks} chunks of equal length")
    starts = np.asarray(frame_times, dtype=np.float64)[:: num_frames // num_chunks]  # (T,)
    ends = np.append(starts[1:], max(float(end_time), float(starts[-1])))  # (T,)
    return np.stack([starts, ends], axis=1)  # (T, 2)
