"""The video packets' index and the frames' presentation order and times."""

import bisect
from dataclasses import dataclass

import numpy as np


@dataclass
class _VideoIndex:
    """Video packets in decode order, as found by the demux pass."""

    pts: list
    dts: list
    keyframe: list
    discard: list
    duration: list

    def decode_start(self, d: int, keyframes: list) -> int:
        """Decode index of the keyframe decoding must start from to output the frame of packet `d` exactly."""
        position = max(bisect.bisect_right(keyframes, d) - 1, 0)
        frame_pts, keyframe_pts = self.pts[d], self.pts[keyframes[position]]
        # Leading pictures of an open GOP show before their keyframe and reference the GOP before it.
        if position > 0 and frame_pts is not None and keyframe_pts is not None and frame_pts < keyframe_pts:
            position -= 1
        return keyframes[position] if keyframes[position] <= d else 0


@dataclass
class _Timeline:
    """The video's frames in presentation order: `order[rank]` is the frame's decode index."""

    order: list
    times: np.ndarray  # (N,) seconds from the first frame
    end_time: float  # when the last frame stops showing
    origin_seconds: float  # the first frame's time on the container clock
    has_timestamps: bool

    @classmethod
    def from_index(cls, index: _VideoIndex, video_stream) -> "_Timeline":
        time_base = float(video_stream.time_base)
        # Packets flagged discard (before an edit list's start) are decoded as references but never shown.
        shown = [d for d in range(len(index.pts)) if not index.discard[d]]
        shown_pts = [index.pts[d] for d in shown]
        if None not in shown_pts and len(set(shown_pts)) == len(shown_pts):
            # Presentation order is pts order: the order in which a decoder outputs the frames.
            order = sorted(shown, key=lambda d: index.pts[d])
            origin = index.pts[order[0]]
            times = np.array([(index.pts[d] - origin) * time_base for d in order])
            last = index.duration[order[-1]]
            last_duration = last * time_base if last else None
            has_timestamps, origin_seconds = True, origin * time_base
        else:
            # No usable timestamps (raw H.264, some AVI): decode order, times from the nominal frame rate.
            rate = float(video_stream.guessed_rate or video_stream.average_rate or 1)
            order, times, last_duration = shown, np.arange(len(shown)) / rate, 1 / rate
            has_timestamps, origin_seconds = False, 0.0
        if last_duration is None:
            last_duration = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
        return cls(order, times, float(times[-1]) + last_duration, float(origin_seconds), has_timestamps)
