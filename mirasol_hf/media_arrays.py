"""Clips from frames and waveforms already decoded."""

import numpy as np
import torch

from .media_audio import _resample
from .media_clip import DEFAULT_SAMPLING_RATE, MediaClip
from .media_errors import MediaError
from .media_frames import DEFAULT_INTERPOLATION
from .media_sampling import sample_frame_indices


# Arrays given as (channels, samples) are recognised only up to this many channels (7.1 surround).
MAX_AUDIO_CHANNELS = 8


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


def media_from_waveform(
    waveform, sampling_rate: int | None, target_sampling_rate: int = DEFAULT_SAMPLING_RATE, source: str = "<audio>"
) -> MediaClip:
    """A `MediaClip` of sound alone (no frames) from a `(S,)` or `(channels, S)` float waveform at `sampling_rate`."""
    mono = _resample(_validate_waveform(waveform, sampling_rate, source), int(sampling_rate), target_sampling_rate)
    if len(mono) == 0:
        raise MediaError(f"{source}: the waveform is empty")
    return MediaClip(
        frames=np.zeros((0, 0, 0, 3), np.uint8),
        frame_indices=np.zeros(0, np.int64),
        frame_times=np.zeros(0),
        end_time=len(mono) / target_sampling_rate,
        waveform=mono,
        sampling_rate=target_sampling_rate,
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
