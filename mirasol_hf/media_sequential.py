"""Decoding from the start in order: for streams without usable timestamps or seeking."""

from collections.abc import Callable

import av

from .media_streams import _set_threading, _Source


def _decode_sequential(
    video_stream, ranks, convert, media: _Source, thread_type: str | None = None, rank_of_pts: Callable | None = None
):
    """Decode every frame from the start, as the reference loop does: for streams without trusted timestamps.

    Frames are counted in the order the decoder outputs them, or found by `rank_of_pts(pts)` when given. The file is
    opened again rather than sought to its start: raw streams come back from a seek with other timestamps.
    """
    container = media.open()
    video_stream = container.streams[video_stream.index]  # index among all streams
    _set_threading(video_stream, thread_type)
    for other in container.streams:
        if other.index != video_stream.index:
            other.discard = av.stream.Discard.all
    codec = video_stream.codec_context
    codec.skip_frame = "DEFAULT"
    wanted = set(int(rank) for rank in ranks)
    last_wanted = max(wanted)
    decoded, errors, output_count = {}, 0, 0

    def take(frames) -> bool:
        nonlocal output_count
        for frame in frames:
            rank = output_count if rank_of_pts is None else rank_of_pts(frame.pts)
            output_count += 1
            if rank in wanted and rank not in decoded:
                decoded[rank] = convert(frame)
        return len(decoded) == len(wanted) or (rank_of_pts is None and output_count > last_wanted)

    packets = container.demux(video_stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            break
        except av.FFmpegError:
            errors += 1
            break
        if packet.size == 0:
            continue
        try:
            if take(codec.decode(packet)):
                return decoded, errors
        except av.FFmpegError:
            errors += 1
    try:
        take(codec.decode(None))
    except av.EOFError:
        pass
    except av.FFmpegError:
        errors += 1
    return decoded, errors
