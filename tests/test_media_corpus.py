"""The reader on a corpus of containers as the world writes them (tests/media_corpus.py): every file reads, frames
are the decode-everything loop's (same index, same pixels), the audio is on the frames' clock, and each choice or
problem is reported once, naming the file."""

import logging

import av
import numpy as np
import pytest
from media_corpus import CORPUS

from mirasol_hf.media import read_media


NUM_FRAMES = 8
SAMPLING_RATE = 16000
ONSET_THRESHOLD = 0.05
# Audio codecs place a tone's onset within a few ms (AAC frames are 21 ms, Opus pre-skip and MP2 delay are undone).
ONSET_TOLERANCE_SECONDS = 0.012


def decode_every_frame(path, stream_index: int) -> list[np.ndarray]:
    """The reference loop: every frame of one stream in decoder output order, upright."""
    frames = []
    with av.open(str(path)) as container:
        stream = container.streams[stream_index]
        for frame in container.decode(stream):
            array = frame.to_ndarray(format="rgb24")
            rotation = frame.rotation or 0
            frames.append(np.rot90(array, (rotation // 90) % 4) if rotation % 90 == 0 else array)
    return frames


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_file_reads_the_reference_frames_and_aligned_audio(name, tmp_path, caplog):
    path, expected = CORPUS[name](tmp_path / name)
    with caplog.at_level(logging.INFO, logger="mirasol_hf.media"):
        clip = read_media(path, NUM_FRAMES)

    reference = decode_every_frame(path, expected.video_stream)
    indices = np.arange(NUM_FRAMES) * len(reference) // NUM_FRAMES
    np.testing.assert_array_equal(clip.frame_indices, indices)
    np.testing.assert_array_equal(clip.frames, np.stack([reference[i] for i in indices]))

    if expected.tone_on_frame_clock is not None:
        assert clip.waveform is not None
        onset = clip.waveform_start_time + np.flatnonzero(np.abs(clip.waveform) > ONSET_THRESHOLD)[0] / SAMPLING_RATE
        assert onset == pytest.approx(expected.tone_on_frame_clock, abs=ONSET_TOLERANCE_SECONDS)
        if not expected.whole_audio:
            # Only the audio from the first frame on is read (audio that starts later begins later).
            assert clip.waveform_start_time >= -1 / SAMPLING_RATE

    messages = [record.getMessage() for record in caplog.records]
    assert all(str(path) in message for message in messages), messages
    assert not any("corrupted" in message or "truncated" in message for message in messages), messages
    for kind, chooses in (("video", expected.chooses_video), ("audio", expected.chooses_audio)):
        assert sum(f"{kind} streams; reading stream #" in message for message in messages) == int(chooses), messages
    if expected.chooses_video:
        assert any(f"reading stream #{expected.video_stream}" in message for message in messages)
    warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    if expected.warns is None:
        assert warnings == []
    else:
        assert len(warnings) == 1 and expected.warns in warnings[0], warnings
