"""The log-mel made block by block while the audio is decoded (issue 13) against the feature extractor's features
of the whole waveform: the accumulator alone, and the processor's path through read_media."""

from pathlib import Path

import av
import numpy as np
import pytest
from media_corpus import Audio, Video, write

import mirasol_hf.media_audio as media_audio
from mirasol_hf.feature_extraction_mirasol import ChunkLogMelAccumulator, MirasolFeatureExtractor
from mirasol_hf.media import read_media
from mirasol_hf.processing_mirasol import MirasolProcessor
from mirasol_hf.tokenization_mirasol import build_tokenizer


RATE = 16000
# Natural-log units. Both paths run the same float32 STFT frames; the sums differ in order (float64 per block vs
# float32 sparse products): measured differences are below 1e-6 here.
TOLERANCE = 1e-5


def noisy_tone(seconds: float, seed: int = 0) -> np.ndarray:
    """A tone over noise with a silent gap: loud and silent STFT frames."""
    rng = np.random.default_rng(seed)
    time = np.arange(int(seconds * RATE)) / RATE
    wave = 0.3 * np.sin(2 * np.pi * 440 * time) + 0.05 * rng.standard_normal(len(time))
    wave[int(0.45 * len(time)) : int(0.55 * len(time))] = 0.0
    return wave.astype(np.float32)


WINDOWS = np.array([[0.0, 0.2], [0.22, 0.29], [0.5, 1.7], [1.71, 2.93], [2.93, 3.95], [3.95, 4.65], [3.0, 3.0]])


@pytest.mark.parametrize(
    "start_time, windows",
    [
        (0.25, WINDOWS),  # audio starts after the first windows, runs out inside the last real one
        (-1.0, np.array([[0.0, 1.0], [1.0, 2.0], [2.0, 2.5]])),  # audio starts before the windows
        (0.0, np.array([[0.1, 0.3], [0.3, 4.0]])),  # windows end before the audio: samples after them are unused
        (10.0, np.array([[0.0, 1.0]])),  # the audio starts after every window
    ],
)
def test_accumulator_equals_the_whole_waveform_features(start_time, windows):
    extractor = MirasolFeatureExtractor(num_mel_bins=32, audio_frames_per_chunk=16)
    waveform = noisy_tone(4.0)
    expected_features, expected_mask = extractor._chunk_features(waveform, windows, start_time)
    # Block sizes that split STFT frames (hop 160, window 400) anywhere, one sample at a time included.
    for block in (7, 157, 401, 4099, len(waveform)):
        accumulator = extractor.accumulator(windows)
        for begin in range(0, len(waveform), block):
            accumulator.feed(waveform[begin : begin + block], start_time)
        features, mask = accumulator.finish()
        np.testing.assert_array_equal(mask, expected_mask)
        np.testing.assert_allclose(features, expected_features, atol=TOLERANCE, rtol=0)
    if expected_mask.any():
        assert np.ptp(expected_features[:, np.repeat(expected_mask, 16)]) > 10  # silence and tone both compared


def drop_audio_packets(source: Path, target: Path, start: float, end: float) -> Path:
    """Copy `source` without the audio packets timed in [start, end): a lost stretch the reader fills with silence."""
    with av.open(str(source)) as reader, av.open(str(target), mode="w") as writer:
        streams = {stream.index: writer.add_stream_from_template(stream) for stream in reader.streams}
        for packet in reader.demux():
            if not packet.size:
                continue
            if packet.stream.type == "audio" and start <= packet.pts * packet.time_base < end:
                continue
            packet.stream = streams[packet.stream.index]
            writer.mux(packet)
    return target


@pytest.fixture(scope="module")
def processor():
    extractor = MirasolFeatureExtractor(16, audio_frames_per_chunk=16)
    tokenizer = build_tokenizer(["question: what is playing? answer: a tone"], vocab_size=100)
    return MirasolProcessor(extractor, tokenizer, num_chunks=4, frames_per_chunk=4, image_size=32)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    directory = tmp_path_factory.mktemp("incremental")
    video = Video(frames=60, fps=25)  # 2.4 s
    gapped = write(directory / "gap_source.mp4", [video, Audio(seconds=2.4, tone_start=0.3)])
    return {
        "audio_before_video": write(directory / "before.mp4", [Video(frames=60, start=0.5), Audio(seconds=3.0)]),
        "audio_after_video": write(directory / "after.mp4", [video, Audio(seconds=1.9, start=0.45, tone_start=0.8)]),
        "gap": drop_audio_packets(gapped, directory / "gap.mp4", 1.0, 1.4),
    }


def reference(processor, path, **read) -> tuple[np.ndarray, np.ndarray]:
    """Today's features: read_media's whole waveform through the feature extractor, on the frames' windows."""
    clip = processor.read_video(str(path), **read)
    assert clip.waveform is not None
    output = processor.feature_extractor(
        clip.waveform, chunk_windows=clip.chunk_windows(clip.num_frames // 4),
        waveform_start_times=clip.waveform_start_time,
    )
    return output["input_features"][0], output["audio_chunk_mask"][0]


@pytest.mark.parametrize("name", ["audio_before_video", "audio_after_video", "gap"])
@pytest.mark.parametrize("read", [{}, {"start_time": 0.5, "end_time": 1.7}, {"fps": 5.0}])
def test_processor_features_equal_the_waveform_path(processor, clips, monkeypatch, name, read):
    # Small odd resampler blocks (48 kHz -> 16 kHz): many block edges, each in the middle of an STFT frame.
    monkeypatch.setattr(media_audio, "RESAMPLE_BLOCK_SAMPLES", 3001)
    expected_features, expected_mask = reference(processor, clips[name], **read)
    finished, finish = [], ChunkLogMelAccumulator.finish
    monkeypatch.setattr(ChunkLogMelAccumulator, "finish", lambda self: finished.append(self) or finish(self))
    output = processor.decode_videos([str(clips[name])], **read)
    assert len(finished) == 1  # the features came from the accumulator, not from a waveform
    chunks = len(expected_mask)
    np.testing.assert_array_equal(output["audio_chunk_mask"][0, :chunks], expected_mask)
    assert not output["audio_chunk_mask"][0, chunks:].any()
    np.testing.assert_allclose(output["input_features"][0, :, : chunks * 16], expected_features, atol=TOLERANCE, rtol=0)
    assert (output["input_features"][0, :, chunks * 16 :] == 0).all()
    assert expected_mask.any() and np.ptp(expected_features[:, np.repeat(expected_mask, 16)]) > 10


def test_read_media_feeds_the_sink_and_keeps_no_waveform(clips):
    extractor = MirasolFeatureExtractor(16, audio_frames_per_chunk=16)
    made = []

    def sink(frame_times, end_time):
        windows = np.stack([frame_times, np.append(frame_times[1:], end_time)], axis=1)  # (F, 2): a chunk per frame
        made.append((windows, extractor.accumulator(windows)))
        return made[-1][1]

    path = str(clips["audio_after_video"])
    clip = read_media(path, 8, audio_sink=sink)
    whole = read_media(path, 8)
    assert clip.waveform is None and len(made) == 1
    np.testing.assert_array_equal(made[0][0][:, 0], whole.frame_times)
    assert clip.waveform_start_time == pytest.approx(whole.waveform_start_time)
    features, mask = made[0][1].finish()
    expected_features, expected_mask = extractor._chunk_features(whole.waveform, made[0][0], whole.waveform_start_time)
    np.testing.assert_array_equal(mask, expected_mask)
    np.testing.assert_allclose(features, expected_features, atol=TOLERANCE, rtol=0)
    # A sink that declines: the waveform is read as before.
    clip = read_media(path, 8, audio_sink=lambda frame_times, end_time: None)
    np.testing.assert_array_equal(clip.waveform, whole.waveform)
