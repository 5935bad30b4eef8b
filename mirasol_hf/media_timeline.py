"""The video packets' index and the frames' presentation order and times."""

import array
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np


# Stands for a missing timestamp in the index's int64 columns (FFmpeg's AV_NOPTS_VALUE).
NO_TIMESTAMP = -(1 << 63)


def _column(typecode: str = "q"):
    return field(default_factory=lambda: array.array(typecode))


def _timestamp(value: int) -> int | None:
    return None if value == NO_TIMESTAMP else int(value)


@dataclass
class _VideoIndex:
    """Video packets in decode order, as found by the demux pass: int64 columns, 8 bytes a packet each (an hour
    of video is ~100k packets), `NO_TIMESTAMP` where a timestamp is unknown."""

    pts: array.array = _column()
    dts: array.array = _column()
    duration: array.array = _column()
    keyframe: array.array = _column("B")
    discard: array.array = _column("B")
    # Packets without data: end-of-stream markers, and AVI's null frames (repeats counted in the header).
    empty_packets: int = 0
    # MPEG-4 with "packed B-frames" (DivX/Xvid in AVI): a B-frame rides in the packet of the frame after it.
    packed_bframes: bool = False

    def append(self, packet):
        for column, value in ((self.pts, packet.pts), (self.dts, packet.dts), (self.duration, packet.duration)):
            column.append(NO_TIMESTAMP if value is None else value)
        self.keyframe.append(bool(packet.is_keyframe))
        self.discard.append(bool(packet.is_discard))

    def __len__(self) -> int:
        return len(self.pts)

    def array(self, name: str) -> np.ndarray:
        """A column as a numpy array (a view, no copy)."""
        column = getattr(self, name)
        dtype = np.int64 if column.typecode == "q" else np.uint8
        return np.frombuffer(column, dtype) if len(column) else np.zeros(0, dtype)

    def keyframes(self) -> np.ndarray:
        """Decode indices of the keyframes ([0] when none is flagged)."""
        keyframes = np.flatnonzero(self.array("keyframe"))
        return keyframes if len(keyframes) else np.zeros(1, np.int64)

    def decode_start(self, d: int, keyframes: np.ndarray) -> int:
        """Decode index of the keyframe decoding must start from to output the frame of packet `d` exactly."""
        position = max(int(np.searchsorted(keyframes, d, side="right")) - 1, 0)
        frame_pts, keyframe_pts = _timestamp(self.pts[d]), _timestamp(self.pts[keyframes[position]])
        # Leading pictures of an open GOP show before their keyframe and reference the GOP before it.
        if position > 0 and frame_pts is not None and keyframe_pts is not None and frame_pts < keyframe_pts:
            position -= 1
        return int(keyframes[position]) if keyframes[position] <= d else 0

    @cached_property
    def _by_pts(self) -> tuple[np.ndarray, np.ndarray]:
        """(known pts sorted, their decode indices); among equal pts, the last packet's comes last."""
        decode = np.flatnonzero(self.array("pts") != NO_TIMESTAMP)
        pts = self.array("pts")[decode]
        by_pts = np.argsort(pts, kind="stable")
        return pts[by_pts], decode[by_pts]

    def decode_of_pts(self, pts: int | None, default=None):
        """Decode index of the packet with timestamp `pts` (the last one, if several), or `default`."""
        sorted_pts, decode = self._by_pts
        if pts is None:
            return default
        position = int(np.searchsorted(sorted_pts, pts, side="right")) - 1
        return int(decode[position]) if position >= 0 and sorted_pts[position] == pts else default


# Demuxers of raw elementary streams: their timestamps are the parser's guesses, not stored ones (after a seek, an
# MPEG-1 stream's first frame does not come back with pts 0), so frames are counted in decode output order instead.
RAW_VIDEO_FORMATS = frozenset(
    {"h261", "h263", "h264", "hevc", "vvc", "m4v", "mpegvideo", "cavsvideo", "avs2", "avs3", "vc1", "dirac", "evc"}
)


@dataclass
class _Timeline:
    """The video's frames in presentation order: `order[rank]` is the frame's decode index."""

    order: np.ndarray  # (N,) int64
    times: np.ndarray  # (N,) seconds from the first frame
    end_time: float  # when the last frame stops showing
    origin_seconds: float  # the first frame's time on the container clock
    # Why the packets' timestamps cannot give the decoder's output order (None: they can, frames are found by pts).
    untrusted: str | None
    # (N,) int64 pts of the frames in presentation order, increasing (None without trusted timestamps).
    pts: np.ndarray | None = None

    @property
    def has_timestamps(self) -> bool:
        return self.untrusted is None

    def rank_of_pts(self, pts: int | None) -> int | None:
        """Presentation rank of the frame with timestamp `pts`, or None (trusted timestamps only)."""
        if pts is None:
            return None
        rank = int(np.searchsorted(self.pts, pts))
        return rank if rank < len(self.pts) and self.pts[rank] == pts else None

    @classmethod
    def from_index(cls, index: _VideoIndex, video_stream, format_name: str, untrusted: str | None = None):
        """The timeline of `index`; `untrusted`: a reason found elsewhere not to order frames by timestamps."""
        time_base = float(video_stream.time_base)
        all_pts = index.array("pts")
        # Packets flagged discard (before an edit list's start) are decoded as references but never shown.
        shown = np.flatnonzero(index.array("discard") == 0)
        shown_pts = all_pts[shown]
        untrusted = untrusted or _untrusted_timestamps(index, video_stream, format_name, shown_pts)
        pts_by_rank = None
        if untrusted is None:
            # Presentation order is pts order: the order in which a decoder outputs the frames.
            order = shown[np.argsort(shown_pts, kind="stable")]
            pts_by_rank = all_pts[order]
            origin = int(pts_by_rank[0])
            times = (pts_by_rank - origin) * time_base
            last = _timestamp(index.duration[order[-1]])
            last_duration = last * time_base if last else None
            origin_seconds = origin * time_base
        else:
            # Decode order, times from the nominal frame rate; frames are counted as a decoder outputs them.
            rate = float(video_stream.guessed_rate or video_stream.average_rate or 1)
            order, times, last_duration = shown, np.arange(len(shown)) / rate, 1 / rate
            # The first frame's time, where there are timestamps at all, keeps the audio aligned.
            present = shown_pts[shown_pts != NO_TIMESTAMP]
            origin_seconds = int(present.min()) * time_base if len(present) else 0.0
        if last_duration is None:
            last_duration = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
        return cls(order, times, float(times[-1]) + last_duration, float(origin_seconds), untrusted, pts_by_rank)


def _untrusted_timestamps(index: _VideoIndex, video_stream, format_name: str, shown_pts: np.ndarray) -> str | None:
    if set(format_name.split(",")) & RAW_VIDEO_FORMATS:
        return "a raw elementary stream has no stored timestamps"
    if (shown_pts == NO_TIMESTAMP).any() or len(np.unique(shown_pts)) != len(shown_pts):
        return "the video packets lack distinct timestamps"
    if index.packed_bframes:
        return "B-frames are packed into other frames' packets (DivX/Xvid)"
    # B-frames stored with pts == dts (no composition offsets): sorting the packets' pts gives decode order, not
    # the order the decoder outputs the frames in.
    reorders = bool(video_stream.codec_context.has_b_frames)
    if reorders and len(index) > 1 and np.array_equal(index.array("pts"), index.array("dts")):
        return "the codec reorders frames (B-frames) but the file stores no reordering (pts == dts)"
    return None
