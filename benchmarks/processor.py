"""The processor's front end: log-mel against librosa, pixel normalisation, and clips/s against transformers' path.

    python benchmarks/processor.py [--rounds 7] [--threads 1] [--seconds 120] [--skip-clips]

Three tables, each from alternating rounds in one process (medians of per-round time ratios, min-max, CPU time
beside wall time, the load average; see benchmarks/_timing.py):
  * log-mel of 120 s of 16 kHz audio: MirasolFeatureExtractor (128 mel bins, 32 chunks of 128 frames: its STFT,
    mel filters and the averaging into the chunk bins) against librosa's `melspectrogram` + log, and against
    transformers' numpy `spectrogram` (what MirasolFeatureExtractor used before);
  * pixel normalisation of 128 frames at 224x224: the earlier numpy expression against the processor's fused one;
  * whole clips at 128 frames: MirasolProcessor(videos=[path]) (frames at 224x224 normalised, audio log-mel) against
    transformers' `load_video(path, num_frames=128, backend="pyav")` + a PyAV audio pass + librosa's log-mel + the
    same normalisation (no resize: load_video has none without torchvision, so the baseline does less work).
The clip (H.264 + AAC, 640x360 at 30 fps, `--seconds` long) is written by media_read.py's `write_clip`.
"""

import argparse
import sys
import tempfile
from pathlib import Path

import librosa
import numpy as np
import torch
from transformers.audio_utils import spectrogram
from transformers.video_utils import load_video

from _timing import compare, print_table
from mirasol_hf import MirasolProcessor, build_tokenizer
from mirasol_hf.feature_extraction_mirasol import MirasolFeatureExtractor
from mirasol_hf.processing_mirasol import DEFAULT_IMAGE_MEAN, DEFAULT_IMAGE_STD

NUM_FRAMES, IMAGE_SIZE, NUM_CHUNKS = 128, 224, 32
SAMPLING_RATE = 16000
MEAN, STD = np.asarray(DEFAULT_IMAGE_MEAN, np.float32), np.asarray(DEFAULT_IMAGE_STD, np.float32)  # (3,) each


def librosa_log_mel(waveform: np.ndarray) -> np.ndarray:
    mel = librosa.feature.melspectrogram(
        y=waveform, sr=SAMPLING_RATE, n_fft=400, hop_length=160, win_length=400, window="hann", center=True,
        pad_mode="constant", power=2.0, n_mels=128, fmin=0.0, fmax=SAMPLING_RATE / 2, htk=False, norm="slaney",
    )
    return np.log(np.maximum(mel, 1e-10))


def log_mel_table(rounds: int, seconds: float):
    rng = np.random.default_rng(0)
    time = np.arange(int(seconds * SAMPLING_RATE)) / SAMPLING_RATE
    waveform = (0.3 * np.sin(2 * np.pi * 440 * time) + 0.05 * rng.standard_normal(len(time))).astype(np.float32)
    extractor = MirasolFeatureExtractor(num_mel_bins=128, audio_frames_per_chunk=128)
    ours = {"MirasolFeatureExtractor (torch.stft)": lambda: extractor(waveform, num_chunks=NUM_CHUNKS)}
    # Two tables: the numpy path's large float64 temporaries and per-frame loop disturb whatever runs after it, so
    # it is kept out of the comparison with librosa.
    print(f"\nlog-mel of {seconds:.0f} s of audio (128 mel bins; the extractor also bins into {NUM_CHUNKS} x 128):")
    librosa_name = "librosa melspectrogram + log"
    print_table(compare({librosa_name: lambda: librosa_log_mel(waveform), **ours}, rounds=2 * rounds), librosa_name)
    numpy_name = "transformers spectrogram (numpy, before)"
    numpy_spectrogram = lambda: spectrogram(  # noqa: E731
        waveform, extractor.window, frame_length=400, hop_length=160, power=2.0, center=True, pad_mode="constant",
        mel_filters=extractor.mel_filters, mel_floor=extractor.mel_floor,
    )
    print_table(compare({numpy_name: numpy_spectrogram, **ours}, rounds=rounds), numpy_name)


def normalisation_table(rounds: int):
    frames = np.random.default_rng(0).integers(0, 256, (1, NUM_FRAMES, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)

    def numpy_expression():  # MirasolProcessor.normalize_frames before
        pixels = (frames.astype(np.float32) / 255.0 - MEAN) / STD
        return np.ascontiguousarray(pixels.transpose(0, 1, 4, 2, 3))

    tokenizer = build_tokenizer(["a"], vocab_size=50)
    processor = MirasolProcessor(MirasolFeatureExtractor(), tokenizer, image_size=IMAGE_SIZE)
    fused = lambda: processor.normalize_frames(frames)  # noqa: E731

    np.testing.assert_allclose(fused(), numpy_expression(), atol=1e-6)
    print(f"\npixel normalisation of {NUM_FRAMES} frames at {IMAGE_SIZE}x{IMAGE_SIZE}:")
    before = "numpy expression (before)"
    print_table(compare({before: numpy_expression, "normalize_frames (fused)": fused}, rounds=rounds), before)


def clips_table(rounds: int, seconds: float):
    from media_read import read_audio_separately, write_clip

    tokenizer = build_tokenizer(["what is playing? a guitar"], vocab_size=100)
    processor = MirasolProcessor(
        MirasolFeatureExtractor(num_mel_bins=128, audio_frames_per_chunk=128), tokenizer,
        num_chunks=NUM_CHUNKS, frames_per_chunk=NUM_FRAMES // NUM_CHUNKS, image_size=IMAGE_SIZE,
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "clip.mp4"
        write_clip(path, seconds)

        def transformers_path():
            frames, _ = load_video(str(path), num_frames=NUM_FRAMES, backend="pyav")
            pixels = (frames.astype(np.float32) / 255.0 - MEAN) / STD
            return np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)), librosa_log_mel(read_audio_separately(path))

        results = compare(
            {"load_video + audio pass + librosa": transformers_path, "MirasolProcessor": lambda: processor(videos=[path])},
            rounds=rounds,
        )
    print(f"\none {seconds:.0f} s clip (640x360, 30 fps, H.264 + AAC) -> {NUM_FRAMES} frames + log-mel, s per clip:")
    print_table(results, baseline="load_video + audio pass + librosa")
    for name, timings in results.items():
        print(f"  {name}: {1 / np.median(timings.wall):.2f} clips/s (wall), {1 / np.median(timings.cpu):.2f} (CPU)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--seconds", type=float, default=120.0, help="length of the audio and of the clip")
    parser.add_argument("--skip-clips", action="store_true", help="only the log-mel and normalisation tables")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch threads {torch.get_num_threads()}, python {sys.version.split()[0]}, torch {torch.__version__}")
    log_mel_table(args.rounds, args.seconds)
    normalisation_table(args.rounds)
    if not args.skip_clips:
        clips_table(args.rounds, args.seconds)


if __name__ == "__main__":
    main()
