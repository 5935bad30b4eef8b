"""Exact decoding of sampled frames from the keyframes before them, seeking past unneeded stretches."""

import itertools

import av

from .media_sequential import _decode_sequential
from .media_streams import _Source
from .media_timeline import _timestamp, _Timeline, _VideoIndex


class _OutputOrderMismatch(Exception):
    """The decoder output frames in another order than their timestamps say: they cannot identify frames."""


def _decode_exact(container, video_stream, index: _VideoIndex, timeline: _Timeline, ranks, convert, media: _Source):
    """Decode the frames of presentation ranks `ranks` exactly, starting from the keyframes before them."""
    codec = video_stream.codec_context
    order = timeline.order
    keyframes = index.keyframes()
    wanted_ranks = set(int(rank) for rank in ranks)
    wanted_decode = sorted(int(order[rank]) for rank in wanted_ranks)  # decode indices to reach, in decode order
    wanted_decode_set = set(wanted_decode)
    # Where decoding must start to reach every remaining target: a suffix minimum over the targets.
    starts = [index.decode_start(d, keyframes) for d in wanted_decode]
    for k in range(len(starts) - 2, -1, -1):
        starts[k] = min(starts[k], starts[k + 1])

    decoded, errors, last_output = {}, 0, [-1]  # last_output: rank of the segment's last output frame

    def feed(packet) -> int:
        try:
            for frame in codec.decode(packet):
                if frame.pts is None:
                    raise _OutputOrderMismatch("the decoder outputs frames without timestamps")
                rank = timeline.rank_of_pts(frame.pts)
                if rank is not None:
                    if rank <= last_output[0]:
                        raise _OutputOrderMismatch("the decoder outputs frames out of their timestamps' order")
                    last_output[0] = rank
                if rank in wanted_ranks and rank not in decoded:
                    decoded[rank] = convert(frame)
        except av.EOFError:
            pass
        except av.FFmpegError:
            return 1
        return 0

    position, packets, k, segment_start, skipping = -1, None, 0, -1, None
    while k < len(wanted_decode):
        # Seek only when it skips packets: the next start lies beyond both the next packet and the current segment.
        if packets is None or starts[k] > max(position + 1, segment_start):
            if packets is not None:
                # Jumping ahead: collect wanted frames still in the decoder's reorder buffer, then reset it.
                if any(order[rank] <= position and rank not in decoded for rank in wanted_ranks):
                    errors += feed(None)
                codec.flush_buffers()
            last_output[0] = -1
            packets, landed = _seek_to(container, video_stream, index, starts[k])
            if packets is None:  # the demuxer cannot land before the keyframe: decode from the start
                return _decode_sequential(video_stream, ranks, convert, media, rank_of_pts=timeline.rank_of_pts)
            position, segment_start = landed - 1, starts[k]
        try:
            packet = next(packets)
        except StopIteration:
            break
        except av.FFmpegError:
            errors += 1
            break
        if packet.size == 0:
            continue
        d = index.decode_of_pts(packet.pts, position + 1)
        # Frames nobody references and nobody wants are dropped by the decoder before any work on them: every
        # reference frame is still decoded, so the wanted frames come out exactly as in a full decode.
        skip = "DEFAULT" if d in wanted_decode_set else "NONREF"
        if skip != skipping:
            codec.skip_frame = skipping = skip
        errors += feed(packet)
        position = max(position, d)
        while k < len(wanted_decode) and wanted_decode[k] <= position:
            k += 1
    codec.skip_frame = "DEFAULT"
    errors += feed(None)
    return decoded, errors


def _seek_to(container, video_stream, index: _VideoIndex, start: int):
    """(packets, decode index of the first) from a keyframe at or before decode index `start`, or (None, None)."""
    # Demuxers index keyframes by pts or by dts (mov's index is dts, yet it seeks by pts); each landing is checked,
    # and the stream start is the last resort.
    attempts = [_timestamp(column[position]) for position in (start, 0) for column in (index.pts, index.dts)]
    for timestamp in dict.fromkeys(attempt for attempt in attempts if attempt is not None):
        container.seek(timestamp, stream=video_stream, backward=True)
        packets = container.demux(video_stream)
        first = next(packets, None)
        landed = None if first is None else index.decode_of_pts(first.pts)
        # Landing after `start` would decode frames without their reference frames.
        if landed is not None and landed <= start:
            return itertools.chain([first], packets), landed
    return None, None
