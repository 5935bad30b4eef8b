"""Reading a clip's sampled video frames and its audio track with PyAV.

A first pass demuxes every packet of the file without decoding video: it indexes the video packets (presentation
timestamps, keyframes) and collects the audio packets. The sampled frames are then decoded exactly (the frames a
decode-everything loop picks: same index, same pixels) from the keyframe before them, skipping frames that nothing
references, seeking only when that skips packets, with independent stretches decoded in parallel next to the
audio. FFmpeg's scaler resizes while converting to RGB. See docs/media.md.
"""

import bisect
import io
import itertools
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import av
import numpy as np
import torch


logger = logging.getLogger(__name__)

DEFAULT_SAMPLING_RATE = 16000
# 8K UHD. Frames above this are refused before decoding: one decoded 16K frame alone is ~800 MB of RGB.
DEFAULT_MAX_FRAME_PIXELS = 7680 * 4320
# FFmpeg's own threads inside one decoder or scaler: off by default, see read_media's `thread_type`.
DEFAULT_THREAD_TYPE = None
DEFAULT_MAX_THREADS = 4
# Averages source pixels under each output pixel: the right filter for the large downscales done here.
DEFAULT_INTERPOLATION = "AREA"
FRAME_SAMPLING_MODES = ("exact", "nearest_keyframe")
# The mono track is resampled in blocks so that hours of audio never need a second full-length float copy.
RESAMPLE_BLOCK_SAMPLES = 1 << 20
# Arrays given as (channels, samples) are recognised only up to this many channels (7.1 surround).
MAX_AUDIO_CHANNELS = 8
RIGHT_ANGLE = 90
# Timestamps are float seconds computed from integer ticks: compare them with this slack (far below a frame).
TIME_TOLERANCE = 1e-6
# Audio frames whose timestamp is this close to the end of the previous one continue it (timestamp rounding);
# farther apart they are placed at their own time, with silence in a gap.
AUDIO_JITTER_SECONDS = 1e-3


class MediaError(ValueError):
    """A media input that cannot be used; the message names the input and what is wrong with it."""


@dataclass
class MediaClip:
    """Sampled frames of a clip and its audio, on one clock whose zero is the clip's first frame.

    Attributes:
        frames: `(F, H, W, 3)` uint8 RGB, upright (display rotation applied).
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

    def chunk_windows(self, num_chunks: int) -> np.ndarray:
        """`(num_chunks, 2)` start and end times of each chunk of consecutive frames (see `chunk_time_windows`)."""
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


def load_media(
    video,
    num_frames: int | None = None,
    width: int | None = None,
    height: int | None = None,
    sampling_rate: int = DEFAULT_SAMPLING_RATE,
    interpolation: str = DEFAULT_INTERPOLATION,
    **read_options,
) -> MediaClip:
    """Read one video given as a path, a file object, an array of frames, a `MediaClip`, or a dict.

    A dict holds either `"path"` (or `"video"`) plus optional `"start_time"` / `"end_time"`, or `"frames"` plus
    optional `"waveform"`, `"sampling_rate"` (the waveform's), `"fps"`, `"frame_times"`. `sampling_rate` is the
    rate of the returned audio; `read_options` go to `read_media` (files only).
    """
    shared = {"num_frames": num_frames, "width": width, "height": height, "interpolation": interpolation}
    if isinstance(video, MediaClip):
        return video
    if isinstance(video, (str, os.PathLike)) or hasattr(video, "read"):
        return read_media(video, sampling_rate=sampling_rate, **shared, **read_options)
    if isinstance(video, (np.ndarray, torch.Tensor)):
        return media_from_arrays(video, target_sampling_rate=sampling_rate, **shared)
    if not isinstance(video, dict):
        raise MediaError(
            f"unsupported video input of type {type(video).__name__}: expected a path, a file object, "
            "a (F, H, W, 3) uint8 array, or a dict with 'path' or 'frames'"
        )
    if "frames" in video:
        extra = set(video) - {"frames", "waveform", "sampling_rate", "fps", "frame_times"}
        if extra:
            raise MediaError(f"unknown keys {sorted(extra)} in a video dict with frames")
        return media_from_arrays(
            video["frames"],
            waveform=video.get("waveform"),
            sampling_rate=video.get("sampling_rate"),
            fps=video.get("fps"),
            frame_times=video.get("frame_times"),
            target_sampling_rate=sampling_rate,
            **shared,
        )
    path_keys = [key for key in ("path", "video") if key in video]
    if len(path_keys) != 1:
        raise MediaError(f"a video dict needs one 'path' (or 'video') or 'frames' key, got keys {sorted(video)}")
    extra = set(video) - {path_keys[0], "start_time", "end_time"}
    if extra:
        raise MediaError(f"unknown keys {sorted(extra)} in the video dict for {video[path_keys[0]]!r}")
    return read_media(
        video[path_keys[0]],
        start_time=video.get("start_time"),
        end_time=video.get("end_time"),
        sampling_rate=sampling_rate,
        **shared,
        **read_options,
    )


def media_from_arrays(
    frames,
    waveform=None,
    sampling_rate: int | None = None,
    fps: float | None = None,
    frame_times=None,
    num_frames: int | None = None,
    width: int | None = None,
    height: int | None = None,
    target_sampling_rate: int = DEFAULT_SAMPLING_RATE,
    interpolation: str = DEFAULT_INTERPOLATION,
    source: str = "<arrays>",
) -> MediaClip:
    """A `MediaClip` from frames already decoded, `(F, H, W, 3)` uint8, and an optional waveform.

    `waveform` is `(S,)` or `(channels, S)` float at `sampling_rate`, starting with the first frame. Frame times
    come from `frame_times` (seconds), else `fps`, else the frames are taken to cover the waveform evenly (no
    waveform: one frame per second, which only orders them). Frames are sampled and resized like `read_media`
    (resizing here uses torch's antialiased interpolation, not FFmpeg's scaler).
    """
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    if not isinstance(frames, np.ndarray):
        raise MediaError(f"{source}: frames must be a numpy array or torch tensor, got {type(frames).__name__}")
    if frames.ndim != 4 or frames.shape[-1] != 3 or min(frames.shape[:3]) < 1:
        raise MediaError(f"{source}: frames must have shape (F, H, W, 3) with F, H, W >= 1, got {frames.shape}")
    if frames.dtype != np.uint8:
        raise MediaError(f"{source}: frames must be uint8 RGB in [0, 255], got dtype {frames.dtype}")
    if (width is None) != (height is None):
        raise ValueError("give both width and height, or neither")
    total = len(frames)

    mono = None
    if waveform is not None:
        mono = _validate_waveform(waveform, sampling_rate, source)
        mono = _resample(mono, int(sampling_rate), target_sampling_rate)

    if frame_times is not None:
        frame_times = np.asarray(frame_times, dtype=np.float64)
        if frame_times.shape != (total,) or np.any(np.diff(frame_times) <= 0):
            raise MediaError(f"{source}: frame_times must be ({total},) strictly increasing seconds")
        step = float(np.median(np.diff(frame_times))) if total > 1 else 1.0 / (fps or 1.0)
        end_time = float(frame_times[-1]) + step
    else:
        if fps is None:
            fps = total / (len(mono) / target_sampling_rate) if mono is not None and len(mono) else 1.0
        if fps <= 0:
            raise MediaError(f"{source}: fps must be > 0, got {fps}")
        frame_times = np.arange(total) / fps
        end_time = total / fps

    indices = sample_frame_indices(frame_times, end_time, num_frames=num_frames)
    sampled = frames[indices]  # (F, H, W, 3)
    if width is not None and sampled.shape[1:3] != (height, width):
        sampled = _resize_frames(sampled, width, height, interpolation)
    return MediaClip(
        frames=np.ascontiguousarray(sampled),
        frame_indices=indices,
        frame_times=frame_times[indices],
        end_time=end_time,
        waveform=mono,
        sampling_rate=target_sampling_rate,
        waveform_start_time=0.0,
        source=source,
    )


def _validate_waveform(waveform, sampling_rate, source: str) -> np.ndarray:
    if isinstance(waveform, torch.Tensor):
        waveform = waveform.detach().cpu().numpy()
    waveform = np.asarray(waveform)
    if not np.issubdtype(waveform.dtype, np.floating):
        raise MediaError(f"{source}: waveform must be float samples in [-1, 1], got dtype {waveform.dtype}")
    if sampling_rate is None or int(sampling_rate) <= 0:
        raise MediaError(f"{source}: a waveform needs a positive sampling_rate, got {sampling_rate}")
    if waveform.ndim == 2 and waveform.shape[0] <= MAX_AUDIO_CHANNELS and waveform.shape[0] < waveform.shape[1]:
        waveform = waveform.mean(axis=0)  # (channels, S) -> (S,)
    if waveform.ndim != 1:
        raise MediaError(f"{source}: waveform must be (samples,) or (channels, samples), got {waveform.shape}")
    if not np.all(np.isfinite(waveform)):
        raise MediaError(f"{source}: waveform contains NaN or infinite samples")
    return waveform.astype(np.float32)


def _resize_frames(frames: np.ndarray, width: int, height: int, interpolation: str) -> np.ndarray:
    # torch has no "area" with antialiasing for upsampling; antialiased bilinear averages like AREA when shrinking.
    mode = "bicubic" if interpolation.upper() == "BICUBIC" else "bilinear"
    images = torch.from_numpy(frames).permute(0, 3, 1, 2).float()  # (F, H, W, 3) -> (F, 3, H, W)
    resized = torch.nn.functional.interpolate(images, size=(height, width), mode=mode, antialias=True)
    # (F, 3, h, w) -> (F, h, w, 3)
    return resized.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


# ---------------------------------------------------------------------------------------------------------------
# Reading a container
# ---------------------------------------------------------------------------------------------------------------


def read_media(
    source,
    num_frames: int | None = None,
    *,
    fps: float | None = None,
    start_time: float | None = None,
    end_time: float | None = None,
    width: int | None = None,
    height: int | None = None,
    frame_sampling: str = "exact",
    read_audio: bool = True,
    sampling_rate: int = DEFAULT_SAMPLING_RATE,
    max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS,
    num_threads: int | None = None,
    thread_type: str | None = DEFAULT_THREAD_TYPE,
    interpolation: str = DEFAULT_INTERPOLATION,
    progress: Callable[[], None] | None = None,
) -> MediaClip:
    """Sampled frames and the mono audio of a media file (a path or a seekable file object).

    Args:
        num_frames: frames sampled uniformly over the clip (or the `start_time`/`end_time` range); all frames when
            neither this nor `fps` is given. A clip with fewer frames repeats frames evenly (see
            `sample_frame_indices`).
        fps: sample the frame on screen every `1 / fps` seconds instead.
        start_time, end_time: range in seconds from the first frame.
        width, height: output size, resized by FFmpeg's scaler while converting to RGB; native size when None.
        frame_sampling: "exact" (the frames a decode-everything loop picks) or "nearest_keyframe" (the keyframe
            closest in time to each of those: much faster, approximate, repeats frames when keyframes are sparse).
        read_audio: decode the best audio track to `sampling_rate` Hz mono float32.
        max_frame_pixels: refuse videos whose frames have more pixels than this.
        num_threads: threads decoding independent stretches of the video (paths only) and the audio side by side;
            default: the CPU count, at most `DEFAULT_MAX_THREADS`. Use 1 inside DataLoader workers.
        thread_type: FFmpeg's own threading inside each decoder ("SLICE", "FRAME", "AUTO" = both, with FFmpeg's
            thread count). None: one thread per decoder and scaler, the parallelism being the stretches above;
            FFmpeg's frame threads were slower here (see docs/media.md).
        interpolation: FFmpeg scaler interpolation ("AREA", "BILINEAR", "BICUBIC", ...).
        progress: called once per sampled frame as it is decoded (from decoding threads), e.g. a progress bar's
            `update`.

    Raises:
        MediaError (a ValueError) naming the source: missing, empty or unreadable files, no video stream, frames
        above `max_frame_pixels`, no decodable frame.
    """
    if frame_sampling not in FRAME_SAMPLING_MODES:
        raise ValueError(f"frame_sampling must be one of {FRAME_SAMPLING_MODES}, got {frame_sampling!r}")
    if (width is None) != (height is None):
        raise ValueError("give both width and height, or neither")
    if num_threads is None:
        num_threads = min(os.cpu_count() or 1, DEFAULT_MAX_THREADS)
    media = _Source(source)
    try:
        return _read(
            media,
            num_frames=num_frames,
            fps=fps,
            start_time=start_time,
            end_time=end_time,
            size=None if width is None else (int(width), int(height)),
            frame_sampling=frame_sampling,
            read_audio=read_audio,
            sampling_rate=sampling_rate,
            max_frame_pixels=max_frame_pixels,
            num_threads=max(1, int(num_threads)),
            thread_type=thread_type,
            interpolation=interpolation,
            progress=progress,
        )
    except av.FFmpegError as error:
        raise MediaError(f"{media.name}: FFmpeg could not read the file: {error}") from error
    finally:
        media.close()


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


def _pick_video_stream(container, name: str):
    # Cover art in audio files (.m4a, .mp3) is a one-picture "video" stream flagged attached_pic: not a video.
    candidates = [
        stream for stream in container.streams.video if not stream.disposition & av.stream.Disposition.attached_pic
    ]
    if not candidates:
        raise MediaError(f"{name}: no video stream (audio-only or not a video file)")
    best = container.streams.best("video")
    return best if best in candidates else candidates[0]


def _reporting(convert: Callable, progress: Callable[[], None]) -> Callable:
    """`convert`, calling `progress()` after each frame."""

    def convert_and_report(frame):
        result = convert(frame)
        progress()
        return result

    return convert_and_report


def _read(
    media: _Source,
    *,
    num_frames,
    fps,
    start_time,
    end_time,
    size,
    frame_sampling,
    read_audio,
    sampling_rate,
    max_frame_pixels,
    num_threads,
    thread_type,
    interpolation,
    progress=None,
) -> MediaClip:
    container = media.open()
    video_stream = _pick_video_stream(container, media.name)
    coded_width, coded_height = video_stream.codec_context.width or 0, video_stream.codec_context.height or 0
    if coded_width * coded_height > max_frame_pixels:
        raise MediaError(
            f"{media.name}: frames are {coded_width}x{coded_height} = {coded_width * coded_height} pixels, "
            f"above max_frame_pixels={max_frame_pixels}"
        )
    audio_stream = container.streams.best("audio") if read_audio else None

    index, audio_packets, demux_errors = _demux_pass(container, video_stream, audio_stream, media.name)
    if all(index.discard):  # also true of no packets at all
        raise MediaError(f"{media.name}: the video stream holds no frames")
    if video_stream.frames and video_stream.frames > len(index.pts):
        logger.warning(
            "%s: the header lists %d video frames, only %d are present: the file is truncated",
            media.name,
            video_stream.frames,
            len(index.pts),
        )
    timeline = _Timeline.from_index(index, video_stream)
    ranks = sample_frame_indices(
        timeline.times,
        timeline.end_time,
        num_frames=num_frames,
        fps=fps,
        start_time=start_time,
        range_end_time=end_time,
    )
    if frame_sampling == "nearest_keyframe" and timeline.has_timestamps:
        ranks = _nearest_keyframe_ranks(index, timeline, ranks)
    convert = _frame_converter(video_stream, size, interpolation, max_frame_pixels, media.name, thread_type)
    if progress is not None:
        convert = _reporting(convert, progress)

    # Independent stretches of video (each from its own keyframe) decode on containers of their own, side by side
    # with the audio, which keeps the first container: PyAV's seek flushes every decoder of a container.
    # FFmpeg releases the GIL while decoding. A file object cannot be opened twice at once: one thread then.
    parallel = media.is_path and num_threads > 1
    parts = [ranks]
    if parallel and timeline.has_timestamps:
        parts = _split_by_keyframes(index, timeline, ranks, num_threads)

    def decode_part(part_index: int):
        part_container = media.open() if parallel else container
        stream = part_container.streams.video[video_stream.index]
        _set_threading(stream, thread_type)
        for other in part_container.streams:
            if other.index != video_stream.index:
                other.discard = av.stream.Discard.all  # the demuxer then skips their packets entirely
        if timeline.has_timestamps:
            return _decode_exact(part_container, stream, index, timeline, parts[part_index], convert, media)
        return _decode_sequential(part_container, stream, parts[part_index], convert, media)

    tasks = [lambda part_index=part_index: decode_part(part_index) for part_index in range(len(parts))]
    if audio_packets is not None:
        tasks.append(lambda: _decode_audio(audio_stream, audio_packets, sampling_rate))
    results = _run_tasks(tasks, parallel)

    decoded, errors = {}, demux_errors
    for part_decoded, part_errors in results[: len(parts)]:
        decoded.update(part_decoded)
        errors += part_errors
    frames, ranks = _gather(decoded, ranks, media.name)

    waveform, waveform_start = None, 0.0
    if audio_packets is not None:
        waveform, audio_origin, audio_errors = results[-1]
        errors += audio_errors
        waveform_start = audio_origin - timeline.origin_seconds
        if waveform is None:
            logger.warning("%s: the audio track decoded to nothing; treating the clip as having no audio", media.name)
    if errors:
        logger.warning("%s: skipped %d damaged packets; the file is corrupted", media.name, errors)
    stop = timeline.end_time if end_time is None else min(timeline.end_time, float(end_time))
    return MediaClip(
        frames=frames,
        frame_indices=ranks,
        frame_times=timeline.times[ranks],
        end_time=stop,
        waveform=waveform,
        sampling_rate=sampling_rate,
        waveform_start_time=float(waveform_start),
        source=media.name,
    )


def _set_threading(video_stream, thread_type: str | None):
    if thread_type is None:
        video_stream.thread_count = 1
    else:
        video_stream.thread_type, video_stream.thread_count = thread_type, 0  # 0: FFmpeg picks the count


def _run_tasks(tasks: list[Callable], parallel: bool) -> list:
    if not parallel or len(tasks) == 1:
        return [task() for task in tasks]
    with ThreadPoolExecutor(max_workers=len(tasks)) as pool:
        return [future.result() for future in [pool.submit(task) for task in tasks]]


def _demux_pass(container, video_stream, audio_stream, name: str):
    """Index every video packet and collect the audio packets: the one full read of the file."""
    index = _VideoIndex(pts=[], dts=[], keyframe=[], discard=[], duration=[])
    audio_packets = [] if audio_stream is not None else None
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
            continue  # the demuxer's end-of-stream markers
        if packet.stream is video_stream:
            index.pts.append(packet.pts)
            index.dts.append(packet.dts)
            index.keyframe.append(packet.is_keyframe)
            index.discard.append(packet.is_discard)
            index.duration.append(packet.duration)
        else:
            audio_packets.append(packet)  # compressed audio is small: ~1 MB per minute at 128 kbit/s
    return index, audio_packets, errors


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


def _nearest_keyframe_ranks(index: _VideoIndex, timeline: _Timeline, ranks: np.ndarray) -> np.ndarray:
    """Each sampled frame replaced by the keyframe closest to it in time."""
    rank_of_decode = {d: rank for rank, d in enumerate(timeline.order)}
    key_ranks = np.array(
        sorted(rank_of_decode[d] for d, is_key in enumerate(index.keyframe) if is_key and d in rank_of_decode),
        dtype=np.int64,
    )
    if len(key_ranks) == 0:
        return ranks
    distances = np.abs(timeline.times[key_ranks][None, :] - timeline.times[ranks][:, None])  # (F, K)
    return key_ranks[distances.argmin(axis=1)]


def _split_by_keyframes(index: _VideoIndex, timeline: _Timeline, ranks: np.ndarray, parts: int) -> list[np.ndarray]:
    """Split the sampled ranks into at most `parts` groups that decode from different keyframes, of similar cost."""
    keyframes = [d for d, is_key in enumerate(index.keyframe) if is_key] or [0]
    unique = np.unique(ranks)
    decode = np.array([timeline.order[rank] for rank in unique])
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


def _frame_converter(video_stream, size, interpolation, max_frame_pixels: int, name: str, thread_type) -> Callable:
    """Frame -> upright `(H, W, 3)` uint8 RGB, `size` = (width, height) after turning upright, or the stream's."""
    scaler_threads = 1 if thread_type is None else 0  # 0: FFmpeg picks the count

    def convert(frame: "av.VideoFrame") -> np.ndarray:
        # The header's size was checked before decoding; this catches streams that grow or did not declare one.
        if frame.width * frame.height > max_frame_pixels:
            raise MediaError(
                f"{name}: a frame is {frame.width}x{frame.height} pixels, above max_frame_pixels={max_frame_pixels}"
            )
        rotation = frame.rotation or 0
        if rotation % RIGHT_ANGLE:
            logger.warning("display rotation of %s degrees is not a multiple of 90: ignored", rotation)
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


def _decode_exact(container, video_stream, index: _VideoIndex, timeline: _Timeline, ranks, convert, media: _Source):
    """Decode the frames of presentation ranks `ranks` exactly, starting from the keyframes before them."""
    codec = video_stream.codec_context
    order = timeline.order
    rank_of_pts = {index.pts[d]: rank for rank, d in enumerate(order)}
    decode_of_pts = {pts: d for d, pts in enumerate(index.pts) if pts is not None}
    keyframes = [d for d, is_key in enumerate(index.keyframe) if is_key] or [0]
    wanted_ranks = set(int(rank) for rank in ranks)
    wanted_decode = sorted(order[rank] for rank in wanted_ranks)  # decode indices to reach, in decode order
    wanted_decode_set = set(wanted_decode)
    # Where decoding must start to reach every remaining target: a suffix minimum over the targets.
    starts = [index.decode_start(d, keyframes) for d in wanted_decode]
    for k in range(len(starts) - 2, -1, -1):
        starts[k] = min(starts[k], starts[k + 1])

    decoded, errors = {}, 0

    def feed(packet) -> int:
        try:
            for frame in codec.decode(packet):
                rank = rank_of_pts.get(frame.pts)
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
            packets, landed = _seek_to(container, video_stream, index, starts[k], decode_of_pts)
            if packets is None:  # the demuxer cannot land before the keyframe: decode from the start
                return _decode_sequential(container, video_stream, ranks, convert, media, rank_of_pts=rank_of_pts)
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
        d = decode_of_pts.get(packet.pts, position + 1)
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


def _seek_to(container, video_stream, index: _VideoIndex, start: int, decode_of_pts: dict):
    """(packets, decode index of the first) from a keyframe at or before decode index `start`, or (None, None)."""
    # Demuxers index keyframes by pts or by dts (mov's index is dts, yet it seeks by pts); each landing is checked,
    # and the stream start is the last resort.
    attempts = [index.pts[start], index.dts[start], index.pts[0], index.dts[0]]
    for timestamp in dict.fromkeys(attempt for attempt in attempts if attempt is not None):
        container.seek(timestamp, stream=video_stream, backward=True)
        packets = container.demux(video_stream)
        first = next(packets, None)
        landed = None if first is None else decode_of_pts.get(first.pts)
        # Landing after `start` would decode frames without their reference frames.
        if landed is not None and landed <= start:
            return itertools.chain([first], packets), landed
    return None, None


def _decode_sequential(container, video_stream, ranks, convert, media: _Source, rank_of_pts: dict | None = None):
    """Decode every frame from the start, as the reference loop does: for streams without timestamps or index."""
    try:
        container.seek(0, backward=True)
        video_stream.codec_context.flush_buffers()
    except av.FFmpegError:
        thread_type, thread_count = video_stream.thread_type, video_stream.thread_count
        container = media.open()
        video_stream = container.streams.video[video_stream.index]
        video_stream.thread_type, video_stream.thread_count = thread_type, thread_count
    codec = video_stream.codec_context
    codec.skip_frame = "DEFAULT"
    wanted = set(int(rank) for rank in ranks)
    last_wanted = max(wanted)
    decoded, errors, output_count = {}, 0, 0

    def take(frames) -> bool:
        nonlocal output_count
        for frame in frames:
            rank = output_count if rank_of_pts is None else rank_of_pts.get(frame.pts)
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
