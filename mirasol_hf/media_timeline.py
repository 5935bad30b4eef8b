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
    # Packets without data: end-of-stream markers, and AVI's null frames (repeats counted in the header).
    empty_packets: int = 0
    # MPEG-4 with "packed B-frames" (DivX/Xvid in AVI): a B-frame rides in the packet of the frame after it.
    packed_bframes: bool = False

    def decode_start(self, d: int, keyframes: list) -> int:
        """Decode index of the keyframe decoding must start from to output the frame of packet `d` exactly."""
        position = max(bisect.bisect_right(keyframes, d) - 1, 0)
        frame_pts, keyframe_pts = self.pts[d], self.pts[keyframes[position]]
        # Leading pictures of an open GOP show before their keyframe and reference the GOP before it.
        if position > 0 and frame_pts is not None and keyframe_pts is not None and frame_pts < keyframe_pts:
            position -= 1
        return keyframes[position] if keyframes[position] <= d else 0


# Demuxers of raw elementary streams: their timestamps are the parser's guesses, not stored ones (after a seek, an
# MPEG-1 stream's first frame does not come back with pts 0), so frames are counted in decode output order instead.
RAW_VIDEO_FORMATS = frozenset(
    {"h261", "h263", "h264", "hevc", "vvc", "m4v", "mpegvideo", "cavsvideo", "avs2", "avs3", "vc1", "dirac", "evc"}
)


@dataclass
class _Timeline:
    """The video's frames in presentation order: `order[rank]` is the frame's decode index."""

    order: list
    times: np.ndarray  # (N,) seconds from the first frame
    end_time: float  # when the last frame stops showing
    origin_seconds: float  # the first frame's time on the container clock
    # Why the packets' timestamps cannot give the decoder's output order (None: they can, frames are found by pts).
    untrusted: str | None

    @property
    def has_timestamps(self) -> bool:
        return self.untrusted is None

    @classmethod
    def from_index(cls, index: _VideoIndex, video_stream, format_name: str, untrusted: str | None = None):
        """The timeline of `index`; `untrusted`: a reason found elsewhere not to order frames by timestamps."""
        time_base = float(video_stream.time_base)
        # Packets flagged discard (before an edit list's start) are decoded as references but never shown.
        shown = [d for d in range(len(index.pts)) if not index.discard[d]]
        shown_pts = [index.pts[d] for d in shown]
        untrusted = untrusted or _untrusted_timestamps(index, video_stream, format_name, shown_pts)
        if untrusted is None:
            # Presentation order is pts order: the order in which a decoder outputs the frames.
            order = sorted(shown, key=lambda d: index.pts[d])
            origin = index.pts[order[0]]
            times = np.array([(index.pts[d] - origin) * time_base for d in order])
            last = index.duration[order[-1]]
            last_duration = last * time_base if last else None
            origin_seconds = origin * time_base
        else:
            # Decode order, times from the nominal frame rate; frames are counted as a decoder outputs them.
            rate = float(video_stream.guessed_rate or video_stream.average_rate or 1)
            order, times, last_duration = shown, np.arange(len(shown)) / rate, 1 / rate
            # The first frame's time, where there are timestamps at all, keeps the audio aligned.
            present = [pts for pts in shown_pts if pts is not None]
            origin_seconds = min(present) * time_base if present else 0.0
        if last_duration is None:
            last_duration = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
        return cls(order, times, float(times[-1]) + last_duration, float(origin_seconds), untrusted)


def _untrusted_timestamps(index: _VideoIndex, video_stream, format_name: str, shown_pts: list) -> str | None:
    if set(format_name.split(",")) & RAW_VIDEO_FORMATS:
        return "a raw elementary stream has no stored timestamps"
    if None in shown_pts or len(set(shown_pts)) != len(shown_pts):
        return "the video packets lack distinct timestamps"
    if index.packed_bframes:
        return "B-frames are packed into other frames' packets (DivX/Xvid)"
    # B-frames stored with pts == dts (no composition offsets): sorting the packets' pts gives decode order, not
    # the order the decoder outputs the frames in.
    reorders = bool(video_stream.codec_context.has_b_frames)
    if reorders and len(index.pts) > 1 and all(pts == dts for pts, dts in zip(index.pts, index.dts)):
        return "the codec reorders frames (B-frames) but the file stores no reordering (pts == dts)"
    return None
