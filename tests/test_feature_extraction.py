"""MirasolFeatureExtractor's log-mel front end against librosa and against transformers' numpy spectrogram."""

import librosa
import numpy as np
import pytest
from transformers.audio_utils import spectrogram

from mirasol_hf.feature_extraction_mirasol import MirasolFeatureExtractor


RATE, HOP = 16000, 160
# Natural-log units. The extractor's FFT runs in float32, the references' in float64: measured differences are
# 2.3e-5 against librosa and 4e-6 against the numpy reference on these signals.
LOG_MEL_TOLERANCE = 1e-4
# The same frames from the same samples, in STFT batches of other sizes: measured up to 9.5e-7 (float32 rounding;
# 0.29 before the frames were put on the clock's hop grid).
CHUNK_ALONE_TOLERANCE = 1e-5


def chirp_with_gaps(seconds: float, seed: int = 0) -> np.ndarray:
    """A chirp over white noise with a silent gap and a loud burst: quiet and loud frames, every band used."""
    rng = np.random.default_rng(seed)
    time = np.arange(int(seconds * RATE)) / RATE
    signal = 0.3 * np.sin(2 * np.pi * (100 + 1500 * time) * time) + 0.02 * rng.standard_normal(len(time))
    signal[int(0.4 * len(time)) : int(0.5 * len(time))] = 0.0
    signal[int(0.7 * len(time)) : int(0.72 * len(time))] *= 3.0
    return signal.astype(np.float32)


def test_log_mel_frames_match_librosa():
    extractor = MirasolFeatureExtractor(num_mel_bins=64, audio_frames_per_chunk=100)
    waveform = chirp_with_gaps(3.0)
    # Bins of one hop each, on the frame grid: bin k is frame k + 1 (frame j spans (j -+ 0.5) hops).
    start = 0.5 * HOP / RATE
    windows = start + np.array([[0.0, 1.0], [1.0, 2.0]])  # two chunks of 100 frames
    features = extractor(waveform, chunk_windows=windows)["input_features"][0]  # (64, 200)
    mel = librosa.feature.melspectrogram(
        y=waveform, sr=RATE, n_fft=400, hop_length=HOP, win_length=400, window="hann", center=True,
        pad_mode="constant", power=2.0, n_mels=64, fmin=0.0, fmax=RATE / 2, htk=False, norm="slaney",
    )  # (64, frames)
    expected = np.log(np.maximum(mel[:, 1:201], extractor.mel_floor))
    np.testing.assert_allclose(features, expected, atol=LOG_MEL_TOLERANCE, rtol=0)
    assert np.ptp(expected) > 10  # the comparison spans silence and loud frames


def reference_features(extractor, waveform, windows, start_time):
    """The extractor's definition, spelled out: transformers' numpy spectrogram (the extractor's earlier
    implementation) over the same samples (zeros outside them), its frames centred on the clock's multiples of the
    hop, each standing for the samples nearest its centre; then each bin the overlap-weighted mean of the frames'
    mel power."""
    features = np.full((extractor.num_mel_bins, len(windows) * extractor.audio_frames_per_chunk), 0.0)
    mask = np.zeros(len(windows), bool)
    offset = round(start_time * RATE)  # the waveform's first sample on the clock
    length, half = extractor.window_length, extractor.window_length // 2
    first = offset + max(0, int(np.floor(windows.min() * RATE)) - length - offset)  # clock samples
    last = offset + min(len(waveform), int(np.ceil(windows.max() * RATE)) + length - offset)
    centres = HOP * np.arange(np.floor(first / HOP + 0.5), np.floor((last - 1) / HOP + 0.5) + 1)  # clock samples
    clock = np.arange(centres[0] - half, centres[-1] - half + length).astype(int)  # the samples under the frames
    present = (clock >= first) & (clock < last)
    samples = np.where(present, waveform[np.clip(clock - offset, 0, len(waveform) - 1)], 0.0)
    mel = spectrogram(
        samples, extractor.window, frame_length=length, hop_length=HOP, power=2.0,
        center=False, mel_filters=extractor.mel_filters, mel_floor=extractor.mel_floor,
    ).astype(np.float64)  # (mels, frames)
    assert mel.shape[1] == len(centres)
    edges = np.concatenate([centres - HOP / 2, [centres[-1] + HOP / 2]])
    edges[0], edges[-1] = first, last
    edges /= RATE
    column = 0
    for chunk, (window_start, window_end) in enumerate(windows):
        covered = 0.0
        for bin_start in np.linspace(window_start, window_end, extractor.audio_frames_per_chunk + 1)[:-1]:
            bin_end = bin_start + (window_end - window_start) / extractor.audio_frames_per_chunk
            low, high = np.clip([bin_start, bin_end], edges[0], edges[-1])
            if high > low:
                overlap = np.clip(np.minimum(high, edges[1:]) - np.maximum(low, edges[:-1]), 0, None)
                features[:, column] = np.log(np.maximum(mel @ overlap / (high - low), extractor.mel_floor))
                covered += high - low
            column += 1
        mask[chunk] = window_end > window_start and covered / (window_end - window_start) >= 0.5
    chunks = features.reshape(extractor.num_mel_bins, len(windows), -1)  # (mels, T, A)
    chunks[:, ~mask] = 0.0
    return features, mask


# The waveform starts 0.25 s into the windows' clock: on the hop grid, then off it by 37.3 samples.
@pytest.mark.parametrize("start_time", [0.25, 0.25 + 37.3 / RATE])
@pytest.mark.parametrize("frames_per_chunk", [8, 64])  # bins wider and narrower than a 10 ms frame
def test_features_match_the_numpy_spectrogram_reference(frames_per_chunk, start_time):
    extractor = MirasolFeatureExtractor(num_mel_bins=32, audio_frames_per_chunk=frames_per_chunk)
    buffer = np.repeat(chirp_with_gaps(4.0, seed=1), 2)
    buffer.flags.writeable = False
    waveform = buffer[::2]  # read-only and strided, as a decoder's buffer may be
    windows = np.array([
        [0.0, 0.2],  # mostly before the audio: masked
        [0.22, 0.29],  # starts before the audio; bins shorter than a frame
        [0.5, 1.7],  # across the silent gap
        [1.71, 2.93],
        [2.93, 3.95],
        [3.95, 4.65],  # runs past the end: 0.3 s of 0.7 s covered, so masked
        [3.0, 3.0],  # empty window
    ])
    output = extractor(waveform, chunk_windows=windows, waveform_start_times=start_time)
    expected_features, expected_mask = reference_features(extractor, buffer[::2].copy(), windows, start_time)
    np.testing.assert_array_equal(output["audio_chunk_mask"][0], expected_mask)
    assert expected_mask.tolist() == [False, True, True, True, True, False, False]
    np.testing.assert_allclose(output["input_features"][0], expected_features, atol=LOG_MEL_TOLERANCE, rtol=0)


def test_a_chunk_alone_equals_the_same_chunk_in_the_whole_clip():
    """A chunk computed alone (as a live stream gives it: its window's audio and some context) has the features it
    has inside the whole clip, whatever the waveforms' start times: the STFT frames sit on the clock's hop grid."""
    extractor = MirasolFeatureExtractor(num_mel_bins=32, audio_frames_per_chunk=16)
    waveform = chirp_with_gaps(4.0, seed=2)
    clip_start = 0.0137  # the clip's first sample on the clock, off the hop grid
    edges = clip_start + np.array([0.0, 0.517, 1.3331, 2.0, 2.7093, 3.4, 4.0])  # uneven chunks, the last to the end
    windows = np.stack([edges[:-1], edges[1:]], axis=1)  # (6, 2)
    whole = extractor(waveform, chunk_windows=windows, waveform_start_times=clip_start)
    per_chunk = extractor.audio_frames_per_chunk
    # Context the frames at a window's edges reach: half a hop to their centre, then half an STFT window.
    for context in (0.05, (HOP + extractor.window_length) / 2 / RATE):
        for index, (start, end) in enumerate(windows):
            first = max(0, round((start - context - clip_start) * RATE))
            last = round((end + context - clip_start) * RATE)
            alone_start = clip_start + first / RATE  # a float sum: not exactly a multiple of 1 / RATE
            alone = extractor(
                waveform[first:last], chunk_windows=windows[index : index + 1], waveform_start_times=alone_start
            )
            accumulator = extractor.accumulator(windows[index : index + 1], alone_start)
            for block in range(first, last, 157):
                accumulator.feed(waveform[block : min(block + 157, last)])
            streamed_features, streamed_mask = accumulator.finish()
            expected = whole["input_features"][0, :, index * per_chunk : (index + 1) * per_chunk]
            assert alone["audio_chunk_mask"][0, 0] == streamed_mask[0] == whole["audio_chunk_mask"][0, index]
            np.testing.assert_allclose(alone["input_features"][0], expected, atol=CHUNK_ALONE_TOLERANCE, rtol=0)
            np.testing.assert_allclose(streamed_features, expected, atol=CHUNK_ALONE_TOLERANCE, rtol=0)
    assert whole["audio_chunk_mask"].all()
