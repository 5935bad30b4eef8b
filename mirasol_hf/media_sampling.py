"""Which frames to keep: uniform in index or in time, nearest keyframes, and parallel decoding parts."""

import numpy as np

from .media_timeline import _Timeline, _VideoIndex


# Timestamps are float seconds computed from integer ticks: compare them with this slack (far below a frame).
TIME_TOLERANCE = 1e-6


def sample_frame_indices(
    frame_times: np.ndarray,
    end_time: float,
    num_frames: int | None = None,
    fps: float | None = None,
    start_time: float | None = None,
    range_end_time: float | None = None,
) -> np.ndarray:
    """Indices (presentation order) of the frames to keep.

    `num_frames`: uniform over the frames in the range, `index = i * n // num_frames` as in transformers'
    `default_sample_indices_fn`; when the range has fewer frames than asked, the same formula repeats frames evenly
    (each frame about `num_frames / n` times, never only the first). `fps`: the frame on screen at every
    `1 / fps` seconds from the start of the range. Neither: every frame in the range. `start_time` and
    `range_end_time` (seconds) limit the range to frames shown in `[start_time, range_end_time)`.
    """
    if num_frames is not None and fps is not None:
        raise ValueError("num_frames and fps are mutually exclusive")
    frame_times = np.asarray(frame_times, dtype=np.float64)
    start = -np.inf if start_time is None else float(start_time)
    stop = np.inf if range_end_time is None else float(range_end_time)
    # A frame is kept if it is on screen inside the range, so the frame showing at `start` counts too.
    shown_until = np.append(frame_times[1:], end_time)
    candidates = np.flatnonzero((shown_until > start + TIME_TOLERANCE) & (frame_times < stop - TIME_TOLERANCE))
    if len(candidates) == 0:
        raise ValueError(f"no frame is shown between start_time={start_time} and end_time={range_end_time}")
    if num_frames is not None:
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        return candidates[np.arange(num_frames) * len(candidates) // num_frames]
    if fps is not None:
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        first = max(start, float(frame_times[candidates[0]]))
        last = min(stop, float(end_time))
        count = max(1, int(np.ceil((last - first - TIME_TOLERANCE) * fps)))
        sample_times = first + np.arange(count) / fps
        shown = np.searchsorted(frame_times, sample_times + TIME_TOLERANCE, side="right") - 1
        return np.clip(shown, candidates[0], candidates[-1])
    return candidates


def _nearest_keyframe_ranks(index: _VideoIndex, timeline: _Timeline, ranks: np.ndarray) -> np.ndarray:
    """Each sampled frame replaced by the keyframe closest to it in time."""
    key_ranks = np.flatnonzero(index.array("keyframe")[timeline.order]).astype(np.int64)  # increasing
    if len(key_ranks) == 0:
        return ranks
    distances = np.abs(timeline.times[key_ranks][None, :] - timeline.times[ranks][:, None])  # (F, K)
    return key_ranks[distances.argmin(axis=1)]


def _split_by_keyframes(index: _VideoIndex, timeline: _Timeline, ranks: np.ndarray, parts: int) -> list[np.ndarray]:
    """Split the sampled ranks into at most `parts` groups that decode from different keyframes, of similar cost."""
    keyframes = index.keyframes()
    unique = np.unique(ranks)
    decode = timeline.order[unique]
    by_decode = np.argsort(decode)
    unique, decode = unique[by_decode], decode[by_decode]
    starts = np.array([index.decode_start(int(d), keyframes) for d in decode])
    # A new stretch begins where decoding would seek: its keyframe lies after the previous target.
    new_stretch = np.concatenate([[True], starts[1:] > decode[:-1] + 1])
    stretch_of = np.cumsum(new_stretch) - 1
    stretch_cost = np.array(
        [decode[stretch_of == s].max() - starts[stretch_of == s].min() + 1 for s in range(stretch_of[-1] + 1)]
    )
    parts = min(parts, len(stretch_cost))
    # Cut the cumulative cost into `parts` near-equal shares, never inside a stretch.
    share = np.minimum((np.cumsum(stretch_cost) - stretch_cost) * parts // stretch_cost.sum(), parts - 1)
    return [unique[share[stretch_of] == part] for part in range(parts) if np.any(share[stretch_of] == part)]
