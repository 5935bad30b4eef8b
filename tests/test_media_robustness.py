"""The reader on damaged or unusual files: unknown codecs, a sampled range's audio, and one message per problem."""

import logging

import numpy as np
import pytest
from media_corpus import Audio, Video, write, write_packed_bframes_avi
from media_utils import count_frames, reference_frames

from mirasol_hf.media import MediaError, read_media


SAMPLING_RATE = 16000
ONSET_THRESHOLD = 0.05
MJPEG_FOURCC = b"MJPG"
PCM_FORMAT_TAG = b"\x01\x00"
UNKNOWN_FORMAT_TAG = b"\x34\x12"


@pytest.fixture(scope="module")
def mjpeg_avi(tmp_path_factory):
    return write(
        tmp_path_factory.mktemp("robust") / "clip.avi",
        [Video(codec="mjpeg", pix_fmt="yuvj420p"), Audio(codec="pcm_s16le")],
    )


def test_unknown_video_codec_is_a_media_error_naming_the_file(mjpeg_avi, tmp_path):
    path = tmp_path / "unknown_codec.avi"
    path.write_bytes(mjpeg_avi.read_bytes().replace(MJPEG_FOURCC, b"QQQQ"))  # the AVI header's fourcc
    with pytest.raises(MediaError, match="unknown_codec.avi: unknown video codec"):
        read_media(path, 4)


def test_unknown_audio_codec_reads_the_video_and_says_why_there_is_no_audio(mjpeg_avi, tmp_path, caplog):
    data = bytearray(mjpeg_avi.read_bytes())
    tag = data.index(b"strf", data.index(b"auds")) + 8  # WAVEFORMATEX.wFormatTag of the audio stream
    assert data[tag : tag + 2] == PCM_FORMAT_TAG
    data[tag : tag + 2] = UNKNOWN_FORMAT_TAG
    path = tmp_path / "unknown_audio.avi"
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="mirasol_hf.media"):
        clip = read_media(path, 4)
    assert clip.waveform is None and clip.num_frames == 4
    assert [record.getMessage() for record in caplog.records] == [
        f"{path}: the audio track is not read: unknown audio codec: FFmpeg cannot decode it"
    ]


def test_a_sampled_range_reads_only_its_audio(tmp_path):
    path = write(tmp_path / "long.mp4", [Video(frames=250), Audio(seconds=10.0, tone_start=6.5)])
    clip = read_media(path, 8, start_time=6.0, end_time=8.0)
    # The waveform spans the range (from its first sampled frame), not the 10 s track.
    assert clip.waveform_start_time == pytest.approx(clip.frame_times[0], abs=1 / SAMPLING_RATE)
    assert len(clip.waveform) / SAMPLING_RATE == pytest.approx(8.0 - clip.frame_times[0], abs=0.01)
    onset = clip.waveform_start_time + np.flatnonzero(np.abs(clip.waveform) > ONSET_THRESHOLD)[0] / SAMPLING_RATE
    assert onset == pytest.approx(6.5, abs=0.012)
    assert count_frames(path) == 250 and clip.frame_indices[0] == 150


def test_every_sampled_frame_of_a_1_frame_file_is_that_frame(tmp_path):
    path = write(tmp_path / "one.mp4", [Video(frames=1)])
    clip = read_media(path, 5)
    assert clip.frame_indices.tolist() == [0] * 5 and clip.end_time > 0


def test_frames_out_of_timestamp_order_are_found_while_decoding_and_read_again_in_order(tmp_path, caplog, monkeypatch):
    # Packed B-frames are normally recognised from the DivX user data before decoding; without that check the
    # decoder's output order, checked frame by frame, must reveal them.
    from mirasol_hf import media_timeline

    path = write_packed_bframes_avi(tmp_path / "packed.avi")
    monkeypatch.setattr(media_timeline, "_untrusted_timestamps", lambda *args: None)
    with caplog.at_level(logging.WARNING, logger="mirasol_hf.media"):
        clip = read_media(path, 16)
    total = count_frames(path)
    expected = np.arange(16) * total // 16
    np.testing.assert_array_equal(clip.frame_indices, expected)
    np.testing.assert_array_equal(clip.frames, reference_frames(path, expected))
    assert [record.getMessage() for record in caplog.records] == [
        f"{path}: the decoder outputs frames out of their timestamps' order; decoding every frame in order (exact, "
        "slower)"
    ]
