"""mirasol_hf.media: exact frame sampling, audio alignment, and every kind of bad input."""

import io
import logging

import av
import numpy as np
import pytest
import torch
from media_utils import (
    AUDIO_RATE,
    MARKER_SIZE,
    count_frames,
    reference_frames,
    tone,
    write_audio_only,
    write_video,
)

from mirasol_hf.media import (
    MediaClip,
    MediaError,
    chunk_time_windows,
    load_media,
    media_from_arrays,
    read_media,
    sample_frame_indices,
)


SAMPLING_RATE = 16000
# The 25 ms STFT-free onset search below only needs the waveform; one AAC frame (1024 samples at 44.1 kHz) is 23 ms.
ONSET_TOLERANCE_SECONDS = 0.005
ONSET_THRESHOLD = 0.05
BRIGHT = 200


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory):
    """3 s, 25 fps, short GOPs (so sampling seeks), B-frames (x264 defaults), a tone on the audio track."""
    return write_video(tmp_path_factory.mktemp("media") / "clip.mp4", seconds=3.0, fps=25, gop_size=12)


def uniform_indices(total: int, num_frames: int) -> np.ndarray:
    """transformers.video_utils.default_sample_indices_fn's formula."""
    return np.arange(num_frames) * total // num_frames


@pytest.mark.parametrize("num_frames", [8, 16, 75])
def test_exact_sampling_picks_the_reference_frames_and_pixels(clip_path, num_frames):
    total = count_frames(clip_path)
    clip = read_media(clip_path, num_frames)
    expected = uniform_indices(total, num_frames)
    np.testing.assert_array_equal(clip.frame_indices, expected)
    np.testing.assert_array_equal(clip.frames, reference_frames(clip_path, expected))
    np.testing.assert_allclose(clip.frame_times, expected / 25, atol=1e-9)


def test_threads_and_file_objects_give_the_same_frames_and_audio(clip_path):
    one_thread = read_media(clip_path, 16, num_threads=1)
    for clip in (read_media(clip_path, 16, num_threads=3), read_media(io.BytesIO(clip_path.read_bytes()), 16)):
        np.testing.assert_array_equal(clip.frame_indices, one_thread.frame_indices)
        np.testing.assert_array_equal(clip.frames, one_thread.frames)
        np.testing.assert_array_equal(clip.waveform, one_thread.waveform)


def test_resizing_in_the_scaler_matches_the_reference_at_the_same_size(clip_path):
    clip = read_media(clip_path, 8, width=32, height=24, interpolation="BILINEAR")
    expected = reference_frames(clip_path, clip.frame_indices, width=32, height=24)
    assert clip.frames.shape == (8, 24, 32, 3)
    np.testing.assert_array_equal(clip.frames, expected)


def test_nearest_keyframe_mode_returns_the_closest_keyframes(clip_path):
    with av.open(str(clip_path)) as container:
        packets = [packet for packet in container.demux(video=0) if packet.size]
    pts_sorted = sorted(packet.pts for packet in packets)
    keyframe_ranks = np.array(sorted(pts_sorted.index(packet.pts) for packet in packets if packet.is_keyframe))
    exact = read_media(clip_path, 8)
    approximate = read_media(clip_path, 8, frame_sampling="nearest_keyframe")
    assert set(approximate.frame_indices) <= set(keyframe_ranks)
    for wanted, got in zip(exact.frame_indices, approximate.frame_indices):
        assert abs(got - wanted) == np.abs(keyframe_ranks - wanted).min()
    np.testing.assert_array_equal(approximate.frames, reference_frames(clip_path, approximate.frame_indices))


def test_fps_sampling_takes_the_frame_on_screen_every_interval(clip_path):
    clip = read_media(clip_path, fps=5)  # a 25 fps clip: every fifth frame
    np.testing.assert_array_equal(clip.frame_indices, np.arange(0, 75, 5))


def test_start_and_end_time_limit_the_sampled_range(clip_path):
    clip = read_media(clip_path, 4, start_time=1.0, end_time=2.0)
    np.testing.assert_array_equal(clip.frame_indices, 25 + uniform_indices(25, 4))
    assert clip.end_time == pytest.approx(2.0)
    with pytest.raises(ValueError, match="no frame"):
        read_media(clip_path, 4, start_time=10.0)


def test_short_video_repeats_frames_evenly_instead_of_frame_zero(tmp_path):
    path = write_video(tmp_path / "short.mp4", seconds=0.6, fps=10)  # 6 frames
    clip = read_media(path, 16)
    counts = np.bincount(clip.frame_indices, minlength=6)
    assert clip.num_frames == 16
    np.testing.assert_array_equal(clip.frame_indices, uniform_indices(6, 16))
    assert counts.min() >= 16 // 6 and counts.max() <= -(-16 // 6)  # every frame 2 or 3 times
    assert np.all(np.diff(clip.frame_indices) >= 0)
    np.testing.assert_array_equal(clip.frames, reference_frames(path, clip.frame_indices))


def test_audio_is_16khz_mono_and_a_tone_starts_when_it_was_written(tmp_path):
    path = write_video(tmp_path / "tone.mp4", seconds=3.0, fps=10, tone_start=1.0)
    clip = read_media(path, 8)
    assert clip.sampling_rate == SAMPLING_RATE and clip.waveform.dtype == np.float32 and clip.waveform.ndim == 1
    assert len(clip.waveform) / SAMPLING_RATE == pytest.approx(3.0, abs=0.05)
    onset = clip.waveform_start_time + np.flatnonzero(np.abs(clip.waveform) > ONSET_THRESHOLD)[0] / SAMPLING_RATE
    assert onset == pytest.approx(1.0, abs=ONSET_TOLERANCE_SECONDS)


def test_chunk_windows_run_from_each_chunks_first_frame_to_the_next(clip_path):
    clip = read_media(clip_path, 8)
    windows = clip.chunk_windows(4)  # chunks of 2 frames
    np.testing.assert_allclose(windows[:, 0], clip.frame_times[::2])
    np.testing.assert_allclose(windows[:-1, 1], clip.frame_times[2::2])
    assert windows[-1, 1] == pytest.approx(3.0)
    with pytest.raises(ValueError, match="chunks"):
        chunk_time_windows(clip.frame_times, clip.end_time, 3)


def test_variable_frame_rate_times_come_from_timestamps(tmp_path):
    times = [0.0, 0.1, 0.15, 0.4, 0.45, 0.5, 0.9, 1.0, 1.3, 1.35, 1.6, 1.9]
    path = write_video(tmp_path / "vfr.mp4", frame_times=times, fps=10)
    clip = read_media(path)
    np.testing.assert_allclose(clip.frame_times, times, atol=1e-3)
    np.testing.assert_array_equal(clip.frames, reference_frames(path, np.arange(len(times))))
    windows = chunk_time_windows(clip.frame_times, clip.end_time, 4)
    np.testing.assert_allclose(windows[:, 0], [0.0, 0.4, 0.9, 1.35], atol=1e-3)


def test_video_without_audio_track_has_no_waveform(tmp_path):
    clip = read_media(write_video(tmp_path / "silent.mp4", audio=None), 4)
    assert clip.waveform is None and clip.num_frames == 4


def test_stream_without_timestamps_is_decoded_in_order(tmp_path):
    path = write_video(tmp_path / "raw.h264", container_format="h264", audio=None, seconds=2.0)  # no pts, no index
    clip = read_media(path, 5)
    np.testing.assert_array_equal(clip.frame_indices, uniform_indices(20, 5))
    np.testing.assert_array_equal(clip.frames, reference_frames(path, clip.frame_indices))


def test_rotated_phone_video_comes_out_upright(tmp_path):
    # Stored 64x48 with a marker top-left and a display matrix turning it 90 degrees counter-clockwise.
    path = write_video(tmp_path / "rotated.mp4", width=64, height=48, rotation=90, seconds=1.0)
    clip = read_media(path, 2)
    assert clip.frames.shape == (2, 64, 48, 3)  # shown as portrait
    stored = reference_frames(path, clip.frame_indices)
    np.testing.assert_array_equal(clip.frames, np.rot90(stored, 1, axes=(1, 2)))
    marker = clip.frames[0, -MARKER_SIZE:, :MARKER_SIZE]  # the top-left corner turned counter-clockwise
    assert marker.min() > BRIGHT
    resized = read_media(path, 2, width=24, height=32)
    assert resized.frames.shape == (2, 32, 24, 3)


def test_grayscale_video_becomes_three_equal_channels(tmp_path):
    path = write_video(tmp_path / "gray.mov", codec="png", pix_fmt="gray", audio=None, seconds=1.0)
    clip = read_media(path, 4)
    assert clip.frames.shape == (4, 48, 64, 3)
    np.testing.assert_array_equal(clip.frames[..., 0], clip.frames[..., 2])
    np.testing.assert_array_equal(clip.frames, reference_frames(path, clip.frame_indices))


def test_odd_dimensions_decode_and_resize(tmp_path):
    path = write_video(tmp_path / "odd.mp4", width=33, height=17, pix_fmt="yuv444p", seconds=1.0)
    clip = read_media(path, 4)
    assert clip.frames.shape == (4, 17, 33, 3)
    np.testing.assert_array_equal(clip.frames, reference_frames(path, clip.frame_indices))
    assert read_media(path, 4, width=32, height=32).frames.shape == (4, 32, 32, 3)


def test_large_frames_are_refused_above_the_pixel_limit_or_scaled_while_decoding(tmp_path):
    path = write_video(tmp_path / "large.mp4", width=640, height=480, seconds=0.5)
    with pytest.raises(MediaError, match="large.mp4.*640x480.*max_frame_pixels"):
        read_media(path, 2, max_frame_pixels=640 * 480 - 1)
    assert read_media(path, 2, width=32, height=32).frames.shape == (2, 32, 32, 3)


def test_missing_file_is_a_value_error_naming_it(tmp_path):
    with pytest.raises(ValueError, match="nothing.mp4: file not found"):
        read_media(tmp_path / "nothing.mp4", 4)


def test_empty_file_is_a_value_error(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(MediaError, match="empty.mp4: file is empty"):
        read_media(tmp_path / "empty.mp4", 4)


def test_text_file_named_mp4_is_a_value_error(tmp_path):
    (tmp_path / "notes.mp4").write_text("these are not video frames\n" * 20)
    with pytest.raises(MediaError, match="notes.mp4: not a readable media container"):
        read_media(tmp_path / "notes.mp4", 4)


def test_audio_only_container_reads_as_sound_alone_and_without_audio_is_a_value_error(tmp_path):
    path = write_audio_only(tmp_path / "song.m4a")
    clip = read_media(path, 4)  # sound alone: no frames, the audio of the whole file (tests/test_audio_only.py)
    assert not clip.has_video and clip.waveform is not None
    with pytest.raises(MediaError, match="song.m4a: no video stream"):
        read_media(path, 4, read_audio=False)


def test_truncated_file_without_its_index_is_a_value_error(clip_path, tmp_path):
    data = clip_path.read_bytes()  # the mp4 index (moov) is written last: cutting the file loses it
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match="cut.mp4: not a readable media container"):
        read_media(tmp_path / "cut.mp4", 4)


def test_truncated_file_with_its_index_first_reads_the_frames_present(tmp_path, caplog):
    path = write_video(tmp_path / "fast.mp4", seconds=3.0, fps=25, container_options={"movflags": "faststart"})
    data = path.read_bytes()
    (tmp_path / "fast_cut.mp4").write_bytes(data[: len(data) * 2 // 3])
    with caplog.at_level(logging.WARNING, logger="mirasol_hf.media"):
        clip = read_media(tmp_path / "fast_cut.mp4", 8)
    assert "truncated" in caplog.text
    assert clip.num_frames == 8 and clip.frame_indices.max() < 75 and clip.end_time < 3.0
    np.testing.assert_array_equal(clip.frames, reference_frames(path, clip.frame_indices))


def test_corrupted_packets_mid_file_are_skipped_and_audio_stays_in_place(tmp_path, caplog):
    path = write_video(tmp_path / "good.mp4", seconds=3.0, fps=25, tone_start=2.0)
    data = bytearray(path.read_bytes())
    media_start, index_start = data.find(b"mdat"), data.find(b"moov")
    middle = (media_start + index_start) // 2
    data[middle : middle + 2000] = np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    (tmp_path / "bad.mp4").write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="mirasol_hf.media"):
        clip = read_media(tmp_path / "bad.mp4", 16)
    assert "damaged" in caplog.text
    assert clip.frames.shape == (16, 48, 64, 3)
    # Lost audio packets leave a gap at their own time, so the tone still starts at 2 s.
    onset = clip.waveform_start_time + np.flatnonzero(np.abs(clip.waveform) > ONSET_THRESHOLD)[0] / SAMPLING_RATE
    assert onset == pytest.approx(2.0, abs=ONSET_TOLERANCE_SECONDS)


def test_arrays_are_sampled_resized_and_their_audio_resampled():
    frames = np.random.default_rng(0).integers(0, 256, (20, 30, 40, 3), dtype=np.uint8)
    waveform = tone(2.0, 1.0)  # 2 s at 44.1 kHz: the 20 frames cover it at 10 fps
    clip = media_from_arrays(frames, waveform=np.stack([waveform, waveform]), sampling_rate=AUDIO_RATE, num_frames=8)
    np.testing.assert_array_equal(clip.frame_indices, uniform_indices(20, 8))
    np.testing.assert_allclose(clip.frame_times, clip.frame_indices / 10)
    assert len(clip.waveform) == pytest.approx(2 * SAMPLING_RATE, abs=2)
    onset = np.flatnonzero(np.abs(clip.waveform) > ONSET_THRESHOLD)[0] / SAMPLING_RATE
    assert onset == pytest.approx(1.0, abs=ONSET_TOLERANCE_SECONDS)
    resized = load_media({"frames": torch.from_numpy(frames), "fps": 5}, num_frames=4, width=16, height=12)
    assert resized.frames.shape == (4, 12, 16, 3) and resized.frames.dtype == np.uint8
    assert resized.end_time == pytest.approx(4.0)


FRAMES = np.zeros((4, 8, 8, 3), np.uint8)


@pytest.mark.parametrize(
    "video, message",
    [
        (np.zeros((4, 8, 8), np.uint8), "shape"),
        (np.zeros((4, 8, 8, 4), np.uint8), "shape"),
        (np.zeros((4, 8, 8, 3), np.float32), "uint8"),
        (np.zeros((0, 8, 8, 3), np.uint8), "shape"),
        ({"frames": FRAMES, "waveform": np.zeros(100, np.int16), "sampling_rate": 8000}, "float"),
        ({"frames": FRAMES, "waveform": np.zeros(100, np.float32)}, "sampling_rate"),
        ({"frames": FRAMES, "waveform": np.zeros((2, 3, 4), np.float32), "sampling_rate": 8000}, "waveform"),
        ({"frames": FRAMES, "colour": "red"}, "unknown keys"),
        ({"clip": "a.mp4"}, "needs one 'path'"),
        (42, "unsupported video input"),
    ],
)
def test_wrong_arrays_are_value_errors(video, message):
    with pytest.raises(ValueError, match=message):
        load_media(video, num_frames=4)


def test_sample_frame_indices_rejects_conflicting_options():
    with pytest.raises(ValueError, match="mutually exclusive"):
        sample_frame_indices(np.arange(10) / 10, 1.0, num_frames=4, fps=2)


def test_media_clip_passes_through_load_media(clip_path):
    clip = read_media(clip_path, 4)
    assert load_media(clip) is clip and isinstance(clip, MediaClip)


def test_progress_is_called_once_per_sampled_frame(tmp_path):
    path = write_video(tmp_path / "clip.mp4", seconds=2.0, fps=10)
    calls = []
    clip = read_media(path, num_frames=7, progress=lambda: calls.append(1))
    assert clip.num_frames == 7 and len(calls) == 7
