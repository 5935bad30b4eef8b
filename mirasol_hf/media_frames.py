"""Decoded frames to upright RGB arrays, and gathering the sampled ones."""

import bisect
from collections.abc import Callable

import av
import numpy as np

from .media_errors import MediaError, logger


# 8K UHD. Frames above this are refused before decoding: one decoded 16K frame alone is ~800 MB of RGB.
DEFAULT_MAX_FRAME_PIXELS = 7680 * 4320
# Averages source pixels under each output pixel: the right filter for the large downscales done here.
DEFAULT_INTERPOLATION = "AREA"
RIGHT_ANGLE = 90


def _frame_converter(video_stream, size, interpolation, max_frame_pixels: int, name: str, thread_type) -> Callable:
    """Frame -> upright `(H, W, 3)` uint8 RGB, `size` = (width, height) after turning upright, or the stream's."""
    scaler_threads = 1 if thread_type is None else 0  # 0: FFmpeg picks the count
    warned_rotations = set()

    def convert(frame: "av.VideoFrame") -> np.ndarray:
        # The header's size was checked before decoding; this catches streams that grow or did not declare one.
        if frame.width * frame.height > max_frame_pixels:
            raise MediaError(
                f"{name}: a frame is {frame.width}x{frame.height} pixels, above max_frame_pixels={max_frame_pixels}"
            )
        rotation = frame.rotation or 0
        if rotation % RIGHT_ANGLE:
            if rotation not in warned_rotations:  # once per file, not once per frame
                warned_rotations.add(rotation)
                logger.warning("%s: display rotation of %s degrees is not a multiple of 90: ignored", name, rotation)
            rotation = 0
        quarter_turns = (rotation // RIGHT_ANGLE) % 4
        if size is None:
            # The stream's size is the stored (not yet turned) size; a resolution change mid-stream is scaled to it.
            out_width = video_stream.codec_context.width or frame.width
            out_height = video_stream.codec_context.height or frame.height
        else:
            # Scale to the stored orientation of the requested upright size.
            out_width, out_height = size[::-1] if quarter_turns % 2 else size
        array = frame.to_ndarray(
            format="rgb24", width=out_width, height=out_height, interpolation=interpolation, threads=scaler_threads
        )
        if quarter_turns:
            # frame.rotation is counter-clockwise, as np.rot90 turns an image shown with row 0 on top.
            array = np.ascontiguousarray(np.rot90(array, quarter_turns))
        return array

    return convert


def _reporting(convert: Callable, progress: Callable[[], None]) -> Callable:
    """`convert`, calling `progress()` after each frame."""

    def convert_and_report(frame):
        result = convert(frame)
        progress()
        return result

    return convert_and_report


def _gather(decoded: dict, ranks: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """`(F, H, W, 3)` frames for `ranks`; a frame that could not be decoded is replaced by the closest decoded one."""
    if not decoded:
        raise MediaError(f"{name}: no video frame could be decoded")
    available = sorted(decoded)
    used = []
    for wanted in map(int, ranks):
        if wanted in decoded:
            used.append(wanted)
            continue
        position = bisect.bisect_left(available, wanted)
        neighbours = available[max(position - 1, 0) : position + 1]
        used.append(min(neighbours, key=lambda candidate: abs(candidate - wanted)))
    missing = sum(int(rank) not in decoded for rank in ranks)
    if missing:
        logger.warning("%s: %d sampled frames could not be decoded; the closest decoded ones stand in", name, missing)
    return np.stack([decoded[rank] for rank in used]), np.array(used, dtype=np.int64)
