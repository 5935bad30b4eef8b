"""Opening the input, choosing its video stream, and the demux pass that indexes the packets."""

import io
import os
import re

import av

from .media_audio import _AudioPackets, audio_stream_problem
from .media_errors import MediaError, logger
from .media_timeline import _VideoIndex


class _Source:
    """The input file, opened once per decoding thread (a demuxer is not thread-safe)."""

    def __init__(self, source):
        if isinstance(source, (str, os.PathLike)):
            self.name = os.fspath(source)
            if not os.path.exists(self.name):
                raise MediaError(f"{self.name}: file not found")
            if not os.path.isfile(self.name):
                raise MediaError(f"{self.name}: not a regular file")
            if os.path.getsize(self.name) == 0:
                raise MediaError(f"{self.name}: file is empty")
            self.source, self.is_path = self.name, True
        elif hasattr(source, "read"):
            self.name = str(getattr(source, "name", f"<{type(source).__name__}>"))
            # Streams that cannot seek are buffered: the video is decoded after a first pass over the file.
            seekable = hasattr(source, "seekable") and source.seekable()
            self.source, self.is_path = (source if seekable else io.BytesIO(source.read())), False
        else:
            raise MediaError(f"cannot read media from a {type(source).__name__}: expected a path or a file object")
        self.containers = []

    def open(self):
        """A new container on the input; a file object is rewound, so only one may be in use at a time."""
        if not self.is_path:
            self.source.seek(0)
        try:
            container = av.open(self.source, mode="r", metadata_errors="ignore")
        except (av.FFmpegError, OSError, EOFError) as error:
            raise MediaError(
                f"{self.name}: not a readable media container (truncated, corrupted, or not audio/video): {error}"
            ) from error
        self.containers.append(container)
        return container

    def close(self):
        for container in self.containers:
            container.close()


def _video_candidates(container) -> list:
    """The video streams that are videos: cover art in audio files (.m4a, .mp3) is a one-picture "video" stream
    flagged attached_pic."""
    return [stream for stream in container.streams.video if not stream.disposition & av.stream.Disposition.attached_pic]


def _pick_video_stream(container, name: str):
    """The video stream to read: FFmpeg's best among those that are not cover art and have a known codec."""
    candidates = _video_candidates(container)
    if not candidates:
        raise MediaError(f"{name}: no video stream (audio-only or not a video file)")
    usable = [stream for stream in candidates if stream.codec_context is not None]
    if not usable:
        raise MediaError(f"{name}: unknown video codec: FFmpeg cannot decode it")
    # As FFmpeg's command line picks: the largest picture, then the stream flagged default, then FFmpeg's best.
    best = container.streams.best("video")
    chosen = max(usable, key=lambda stream: (_area(stream), _is_default(stream), stream is best))
    if len(candidates) > 1:
        logger.info(
            "%s: %d video streams; reading stream #%d (%s)", name, len(candidates), chosen.index, _describe(chosen)
        )
    return chosen


def _pick_audio_stream(container, name: str):
    """FFmpeg's best audio stream among those that can be decoded, or None (with a warning if some could not)."""
    streams = list(container.streams.audio)
    if not streams:
        return None
    problems = {stream.index: audio_stream_problem(stream) for stream in streams}
    usable = [stream for stream in streams if problems[stream.index] is None]
    if not usable:
        logger.warning("%s: the audio track is not read: %s", name, problems[streams[0].index])
        return None
    # As FFmpeg's command line picks: the most channels, then the stream flagged default, then FFmpeg's best.
    best = container.streams.best("audio")
    chosen = max(usable, key=lambda stream: (stream.codec_context.channels, _is_default(stream), stream is best))
    if len(streams) > 1:
        logger.info(
            "%s: %d audio streams; reading stream #%d (%s)", name, len(streams), chosen.index, _describe(chosen)
        )
    return chosen


# DivX / Xvid user data whose build string ends in "p": the encoder packed B-frames (what FFmpeg's decoder and its
# mpeg4_unpack_bframes filter look for).
PACKED_BFRAMES_USER_DATA = re.compile(rb"DivX\d+(?:b|Build)\d+p")


def _has_packed_bframes(video_stream, first_packet: bytes) -> bool:
    if video_stream.codec_context.name != "mpeg4":
        return False
    extradata = video_stream.codec_context.extradata or b""
    return bool(PACKED_BFRAMES_USER_DATA.search(extradata) or PACKED_BFRAMES_USER_DATA.search(first_packet))


def _area(stream) -> int:
    return (stream.codec_context.width or 0) * (stream.codec_context.height or 0)


def _is_default(stream) -> bool:
    return bool(stream.disposition & av.stream.Disposition.default)


def _describe(stream) -> str:
    """Codec, size or channels, and language of a stream, for messages."""
    codec = stream.codec_context
    if stream.type == "video":
        details = f"{codec.name} {codec.width}x{codec.height}"
    else:
        details = f"{codec.name} {codec.channels} channels {codec.sample_rate} Hz"
    language = stream.metadata.get("language")
    return f"{details}, language {language}" if language else details


def _demux_pass(container, video_stream, audio_stream, name: str, reopen=None):
    """Index every video packet and the audio packets: the one full read of the file. With `reopen` (a callable
    giving a new container on the file), the audio packets' data is not kept but demuxed again when decoded."""
    index = _VideoIndex()
    audio_packets = _AudioPackets(reopen, audio_stream.index) if audio_stream is not None else None
    streams = [video_stream] + ([audio_stream] if audio_stream is not None else [])
    errors = 0
    packets = container.demux(streams)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            break
        except av.FFmpegError as error:
            # A damaged tail: keep what was read before it.
            logger.warning("%s: demuxing stopped early: %s", name, error)
            errors += 1
            break
        if packet.size == 0:
            index.empty_packets += packet.stream is video_stream
            continue
        if packet.stream is video_stream:
            if not len(index):
                index.packed_bframes = _has_packed_bframes(video_stream, bytes(packet))
            index.append(packet)
        else:
            audio_packets.append(packet)
    return index, audio_packets, errors


def _set_threading(video_stream, thread_type: str | None):
    if thread_type is None:
        video_stream.thread_count = 1
    else:
        video_stream.thread_type, video_stream.thread_count = thread_type, 0  # 0: FFmpeg picks the count
