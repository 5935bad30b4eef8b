"""read_media and load_media: reading a clip's sampled frames and audio from a file or arrays."""

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import av
import numpy as np
import torch

from .media_arrays import media_from_arrays
from .media_audio import _AudioPackets, _decode_audio
from .media_clip import DEFAULT_SAMPLING_RATE, MediaClip
from .media_errors import MediaError, _OncePerFile, logger
from .media_exact import _decode_exact, _OutputOrderMismatch
from .media_frames import DEFAULT_INTERPOLATION, DEFAULT_MAX_FRAME_PIXELS, _frame_converter, _gather, _reporting
from .media_sampling import _nearest_keyframe_ranks, _split_by_keyframes, sample_frame_indices
from .media_sequential import _decode_sequential
from .media_streams import (
    _demux_pass,
    _pick_audio_stream,
    _pick_video_stream,
    _set_threading,
    _Source,
    _video_candidates,
)
from .media_timeline import NO_TIMESTAMP, _Timeline, _timestamp, _VideoIndex


# FFmpeg's own threads inside one decoder or scaler: off by default, see read_media's `thread_type`.
DEFAULT_THREAD_TYPE = None
DEFAULT_MAX_THREADS = 4
FRAME_SAMPLING_MODES = ("exact", "nearest_keyframe")


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
    audio_sink: Callable | None = None,
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
        audio_sink: called as `audio_sink(frame_times, end_time)` with the times of the frames to be returned and
            the range end, before the audio is decoded; it returns None (the waveform is read as usual) or an object
            whose `feed(samples, start_time)` then takes the waveform block by block as it is decoded
            (`start_time`: its first sample's time, as `waveform_start_time`), e.g.
            `MirasolFeatureExtractor.accumulator` of those frames' chunk windows. The waveform is then never held
            whole and the clip's `waveform` is None. If a sampled frame cannot be decoded and another stands in,
            the times change: `audio_sink` is called again with the new ones and the audio decoded again into
            the new object (the last object made is the clip's).

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
    once = _OncePerFile(media.name)
    logger.addFilter(once)
    try:
        options = dict(
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
            audio_sink=audio_sink,
        )
        try:
            return _read(media, **options)
        except _OutputOrderMismatch as mismatch:
            # Found only while decoding: read again, counting frames in the order the decoder outputs them.
            return _read(media, **options, untrusted=str(mismatch))
    except MediaError:
        raise
    except av.FFmpegError as error:
        raise MediaError(f"{media.name}: FFmpeg could not read the file: {error}") from error
    except ValueError as error:  # an argument that does not fit this file (e.g. a range without frames)
        raise MediaError(f"{media.name}: {error}") from error
    except Exception as error:
        # Damaged files reach PyAV states it does not guard against (None codec contexts, odd frame layouts):
        # one bad file is one clear error, never a traceback from deep inside the decoder.
        raise MediaError(f"{media.name}: could not be read ({type(error).__name__}: {error})") from error
    finally:
        logger.removeFilter(once)
        media.close()


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
    audio_sink=None,
    untrusted: str | None = None,
) -> MediaClip:
    container = media.open()
    if not _video_candidates(container):
        return _read_audio_only(container, media.name, start_time, end_time, read_audio, sampling_rate)
    video_stream = _pick_video_stream(container, media.name)
    coded_width, coded_height = video_stream.codec_context.width or 0, video_stream.codec_context.height or 0
    if coded_width * coded_height > max_frame_pixels:
        raise MediaError(
            f"{media.name}: frames are {coded_width}x{coded_height} = {coded_width * coded_height} pixels, "
            f"above max_frame_pixels={max_frame_pixels}"
        )
    audio_stream = _pick_audio_stream(container, media.name) if read_audio else None

    # A path is opened again to demux the audio needed (from a seek to it) when it is decoded; a file object's audio
    # packets are kept from this pass (it cannot be read at two places at once).
    reopen = media.open if media.is_path else None
    index, audio_packets, demux_errors = _demux_pass(container, video_stream, audio_stream, media.name, reopen)
    if all(index.discard):  # also true of no packets at all
        raise MediaError(f"{media.name}: the video stream holds no frames")
    if _is_truncated(index, video_stream):
        logger.warning(
            "%s: the header lists %d video frames, only %d are present: the file is truncated",
            media.name,
            video_stream.frames,
            len(index.pts),
        )
    timeline = _Timeline.from_index(index, video_stream, container.format.name, untrusted)
    if not timeline.has_timestamps:
        logger.warning("%s: %s; decoding every frame in order (exact, slower)", media.name, timeline.untrusted)
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
        if not timeline.has_timestamps:
            return _decode_sequential(video_stream, parts[part_index], convert, media, thread_type)
        part_container = media.open() if parallel else container
        stream = part_container.streams[video_stream.index]  # index among all streams
        _set_threading(stream, thread_type)
        for other in part_container.streams:
            if other.index != video_stream.index:
                other.discard = av.stream.Discard.all  # the demuxer then skips their packets entirely
        return _decode_exact(part_container, stream, index, timeline, parts[part_index], convert, media)

    tasks = [lambda part_index=part_index: decode_part(part_index) for part_index in range(len(parts))]
    stop = timeline.end_time if end_time is None else min(timeline.end_time, float(end_time))
    if audio_packets is not None:
        # Only the audio under the sampled frames' chunks is decoded: from the first sampled frame to the range end.
        # Without trusted video timestamps the frames' times are estimates: the whole track is decoded then.
        window = (timeline.origin_seconds + float(timeline.times[ranks].min()), timeline.origin_seconds + stop)
        if not timeline.has_timestamps:
            window = (-np.inf, np.inf)

        def decode_audio(frame_times: np.ndarray):
            """(waveform or None, its start on the frames' clock, errors, whether any sample was decoded)."""
            sink = None if audio_sink is None else audio_sink(frame_times, stop)
            decoded_samples = []

            def feed(samples: np.ndarray, origin: float):
                decoded_samples.append(len(samples))
                sink.feed(samples, origin - timeline.origin_seconds)

            waveform, origin, audio_errors = _decode_audio(
                audio_stream, audio_packets, sampling_rate, window, media.name, None if sink is None else feed
            )
            has_audio = waveform is not None or sum(decoded_samples) > 0
            return waveform, origin - timeline.origin_seconds, audio_errors, has_audio

        planned_times = timeline.times[ranks]
        tasks.append(lambda: decode_audio(planned_times))
    results = _run_tasks(tasks, parallel)

    decoded, errors = {}, demux_errors
    for part_decoded, part_errors in results[: len(parts)]:
        decoded.update(part_decoded)
        errors += part_errors
    frames, ranks = _gather(decoded, ranks, media.name)

    waveform, waveform_start = None, 0.0
    if audio_packets is not None:
        audio = results[-1]
        if audio_sink is not None and not np.array_equal(timeline.times[ranks], planned_times):
            audio = decode_audio(timeline.times[ranks])  # stand-in frames moved the chunk windows
        waveform, waveform_start, audio_errors, has_audio = audio
        errors += audio_errors
        if not has_audio:
            logger.warning("%s: the audio track decoded to nothing; treating the clip as having no audio", media.name)
    if errors:
        logger.warning("%s: skipped %d damaged packets; the file is corrupted", media.name, errors)
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


def _read_audio_only(container, name: str, start_time, end_time, read_audio: bool, sampling_rate: int) -> MediaClip:
    """A file without a video stream (wav, m4a, ogg, mkv with only audio): its sound over the range, no frames."""
    audio_stream = _pick_audio_stream(container, name) if read_audio else None
    if audio_stream is None:
        raise MediaError(f"{name}: no video stream and no readable audio stream (not an audio or video file)")
    packets = _AudioPackets()
    for packet in container.demux(audio_stream):
        if packet.size:
            packets.append(packet)
    time_base = float(audio_stream.time_base) if audio_stream.time_base else 0.0
    origin = (audio_stream.start_time or 0) * time_base  # the clock's zero: the sound's start
    start = 0.0 if start_time is None else float(start_time)
    window = (origin + start, origin + (np.inf if end_time is None else float(end_time)))
    waveform, audio_origin, errors = _decode_audio(audio_stream, packets, sampling_rate, window, name)
    if errors:
        logger.warning("%s: skipped %d damaged audio packets; the file is corrupted", name, errors)
    if waveform is None or len(waveform) == 0:
        raise MediaError(f"{name}: no video stream, and no audio between start_time={start_time} and end_time={end_time}")
    waveform_start = audio_origin - origin
    stop = waveform_start + len(waveform) / sampling_rate
    return MediaClip(
        frames=np.zeros((0, 0, 0, 3), np.uint8),
        frame_indices=np.zeros(0, np.int64),
        frame_times=np.zeros(0),
        end_time=stop if end_time is None else min(stop, float(end_time)),
        waveform=waveform,
        sampling_rate=sampling_rate,
        waveform_start_time=float(waveform_start),
        source=name,
    )


def _is_truncated(index: _VideoIndex, video_stream) -> bool:
    """Whether fewer video frames are present than the header lists, and they also end before its duration."""
    if not video_stream.frames or video_stream.frames <= len(index.pts) + index.empty_packets:
        return False
    if not video_stream.duration or not video_stream.time_base:
        return True
    # AVI headers count null frames (and packets there last one tick): the frames present still reach the end.
    pts = np.sort(index.array("pts")[index.array("pts") != NO_TIMESTAMP])
    if not len(pts):
        return True
    step = max(float(np.median(np.diff(pts))) if len(pts) > 1 else 0.0, _timestamp(index.duration[-1]) or 0)
    return int(pts[-1]) + step < (video_stream.start_time or 0) + video_stream.duration - 2 * step


def _run_tasks(tasks: list[Callable], parallel: bool) -> list:
    if not parallel or len(tasks) == 1:
        return [task() for task in tasks]
    with ThreadPoolExecutor(max_workers=len(tasks)) as pool:
        return [future.result() for future in [pool.submit(task) for task in tasks]]
