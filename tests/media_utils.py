"""Test media written with PyAV (H.264 + AAC in mp4 unless asked otherwise), with content the tests can check."""

from pathlib import Path

import av
import numpy as np


AUDIO_RATE = 44100
AUDIO_FRAME_SAMPLES = 1024
TONE_HZ = 440.0
TONE_AMPLITUDE = 0.5
MARKER_SIZE = 8


def frame_image(index: int, width: int, height: int) -> np.ndarray:
    """`(height, width, 3)` uint8 frame whose brightness ramps with `index` and a white marker in the top-left."""
    image = np.empty((height, width, 3), np.uint8)
    image[..., 0] = (index * 37) % 256
    image[..., 1] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    image[..., 2] = np.linspace(0, 255, height, dtype=np.uint8)[:, None]
    image[:MARKER_SIZE, :MARKER_SIZE] = 255
    return image


def tone(seconds: float, tone_start: float | None, tone_end: float | None = None, rate: int = AUDIO_RATE):
    """`(seconds * rate,)` float32: silence, then a sine tone from `tone_start` to `tone_end` (or the end)."""
    times = np.arange(int(round(seconds * rate))) / rate
    wave = TONE_AMPLITUDE * np.sin(2 * np.pi * TONE_HZ * times)
    if tone_start is None:
        return np.zeros_like(times, dtype=np.float32)
    on = (times >= tone_start) & (times < (np.inf if tone_end is None else tone_end))
    return (wave * on).astype(np.float32)


def write_video(
    path,
    seconds: float = 2.0,
    fps: int = 10,
    width: int = 64,
    height: int = 48,
    audio: np.ndarray | None | str = "tone",
    tone_start: float | None = 0.0,
    frame_times: list[float] | None = None,
    rotation: int | None = None,
    pix_fmt: str = "yuv420p",
    codec: str = "libx264",
    container_format: str | None = None,
    container_options: dict | None = None,
    gop_size: int | None = None,
) -> Path:
    """Write a clip and return its path.

    `audio`: "tone" (a tone from `tone_start`), a `(samples,)` float32 waveform at `AUDIO_RATE`, or None for no
    audio track. `frame_times` (seconds) gives a variable frame rate; `rotation` sets the display matrix
    (counter-clockwise degrees, what PyAV reads back as `frame.rotation`).
    """
    path = Path(path)
    container = av.open(str(path), mode="w", format=container_format, options=container_options or {})
    time_base_denominator = 1000
    stream = container.add_stream(codec, rate=fps)
    stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
    if gop_size is not None:
        stream.codec_context.gop_size = gop_size
    if frame_times is not None:
        from fractions import Fraction

        stream.codec_context.time_base = Fraction(1, time_base_denominator)
    if rotation is not None:
        stream.set_display_rotation(rotation)
    audio_stream = None
    if audio is not None:
        audio_stream = container.add_stream("aac", rate=AUDIO_RATE)
        audio_stream.layout = "stereo"

    num_frames = len(frame_times) if frame_times is not None else int(round(seconds * fps))
    for i in range(num_frames):
        image = frame_image(i, width, height)
        if pix_fmt.startswith("gray"):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[..., 0]), format="gray")
        else:
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        if frame_times is not None:
            from fractions import Fraction

            frame.pts = int(round(frame_times[i] * time_base_denominator))
            frame.time_base = Fraction(1, time_base_denominator)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)

    if audio_stream is not None:
        duration = (frame_times[-1] + 1 / fps) if frame_times is not None else seconds
        wave = tone(duration, tone_start) if isinstance(audio, str) else np.asarray(audio, np.float32)
        _write_audio(container, audio_stream, wave)
    container.close()
    return path


def _write_audio(container, audio_stream, wave: np.ndarray):
    stereo = np.stack([wave, wave])  # (2, S)
    for start in range(0, stereo.shape[1], AUDIO_FRAME_SAMPLES):
        block = np.ascontiguousarray(stereo[:, start : start + AUDIO_FRAME_SAMPLES])
        frame = av.AudioFrame.from_ndarray(block, format="fltp", layout="stereo")
        frame.sample_rate = AUDIO_RATE
        frame.pts = start
        for packet in audio_stream.encode(frame):
            container.mux(packet)
    for packet in audio_stream.encode():
        container.mux(packet)


def write_audio_only(path, seconds: float = 1.0) -> Path:
    """An AAC-only .m4a file: a container with no video stream."""
    path = Path(path)
    container = av.open(str(path), mode="w")
    audio_stream = container.add_stream("aac", rate=AUDIO_RATE)
    audio_stream.layout = "stereo"
    _write_audio(container, audio_stream, tone(seconds, 0.0))
    container.close()
    return path


def reference_frames(path, indices, width: int | None = None, height: int | None = None) -> np.ndarray:
    """The decode-everything oracle: decode every frame in order and keep the `indices`-th ones, `(F, H, W, 3)`."""
    wanted = set(int(i) for i in indices)
    kept = {}
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                kept[i] = frame.to_ndarray(format="rgb24", width=width, height=height)
            if i >= max(wanted):
                break
    return np.stack([kept[int(i)] for i in indices])


def count_frames(path) -> int:
    """Frames the decoder outputs for the whole file."""
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))
