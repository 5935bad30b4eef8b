"""Reading 128 frames + the audio track: mirasol_hf.media.read_media against transformers' PyAV loader.

Writes its own clips (H.264 + AAC in mp4) to a temporary directory, checks that both readers return identical
frames, and prints the best-of-N wall time of each (rounds interleaved) and its CPU time over all threads. The
reference is transformers.video_utils.load_video(..., backend="pyav") for the frames plus the usual second PyAV pass
for the audio (transformers' load_audio needs torchcodec for mp4). Run from the repository root:

    python benchmarks/media_read.py
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

import av
import numpy as np
from transformers.video_utils import load_video

from mirasol_hf.media import DEFAULT_MAX_THREADS, read_media


NUM_FRAMES = 128
SAMPLING_RATE = 16000
WIDTH, HEIGHT, FPS = 640, 360, 30
AUDIO_RATE = 44100
AUDIO_FRAME_SAMPLES = 1024
# x264's "veryfast" keeps B-frames, CABAC and ~8 s GOPs (what phones and web video use) and writes the clip quickly.
ENCODER_PRESET = "veryfast"
TEXTURE_BLOCK = 8
PAN_PIXELS_PER_FRAME = 2
TONE_HZ = 440.0
PROCESSOR_SIZE = 224


def write_clip(path: Path, seconds: float):
    """A panning texture (real motion for the encoder) with a tone on a stereo AAC track."""
    container = av.open(str(path), mode="w")
    video = container.add_stream("libx264", rate=FPS, options={"preset": ENCODER_PRESET})
    video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    audio = container.add_stream("aac", rate=AUDIO_RATE)
    audio.layout = "stereo"
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 256, size=(HEIGHT // TEXTURE_BLOCK, 2 * WIDTH // TEXTURE_BLOCK, 3), dtype=np.uint8)
    texture = blocks.repeat(TEXTURE_BLOCK, axis=0).repeat(TEXTURE_BLOCK, axis=1)  # (H, 2W, 3)
    for i in range(int(seconds * FPS)):
        offset = (PAN_PIXELS_PER_FRAME * i) % WIDTH
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(texture[:, offset : offset + WIDTH]), format="rgb24")
        for packet in video.encode(frame):
            container.mux(packet)
    for packet in video.encode():
        container.mux(packet)
    wave = (0.3 * np.sin(2 * np.pi * TONE_HZ * np.arange(int(seconds * AUDIO_RATE)) / AUDIO_RATE)).astype(np.float32)
    stereo = np.stack([wave, wave])  # (2, S)
    for start in range(0, stereo.shape[1], AUDIO_FRAME_SAMPLES):
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(stereo[:, start : start + AUDIO_FRAME_SAMPLES]), format="fltp", layout="stereo"
        )
        frame.sample_rate, frame.pts = AUDIO_RATE, start
        for packet in audio.encode(frame):
            container.mux(packet)
    for packet in audio.encode():
        container.mux(packet)
    container.close()


def read_audio_separately(path: Path) -> np.ndarray:
    """The usual second pass for the audio: decode it with PyAV and resample each frame to 16 kHz mono."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLING_RATE)
    chunks = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            chunks += [resampled.to_ndarray()[0] for resampled in resampler.resample(frame)]
    chunks += [resampled.to_ndarray()[0] for resampled in resampler.resample(None)]
    return np.concatenate(chunks)


def reference(path: Path):
    frames, metadata = load_video(str(path), num_frames=NUM_FRAMES, backend="pyav")
    return frames, read_audio_separately(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per reader; the best is reported")
    parser.add_argument("--seconds", type=float, nargs="+", default=[120.0, 15.0], help="clip lengths to test")
    args = parser.parse_args()

    readers = {
        "transformers load_video(pyav) + audio pass": lambda path: reference(path),
        "read_media exact": lambda path: read_media(path, NUM_FRAMES),
        "read_media exact, num_threads=1": lambda path: read_media(path, NUM_FRAMES, num_threads=1),
        f"read_media exact, {PROCESSOR_SIZE}x{PROCESSOR_SIZE}": lambda path: read_media(
            path, NUM_FRAMES, width=PROCESSOR_SIZE, height=PROCESSOR_SIZE
        ),
        "read_media nearest_keyframe": lambda path: read_media(path, NUM_FRAMES, frame_sampling="nearest_keyframe"),
    }
    rows, load_averages = [], [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as directory:
        for seconds in args.seconds:
            path = Path(directory) / f"clip_{seconds:g}s.mp4"
            start = time.perf_counter()
            write_clip(path, seconds)
            print(f"wrote {path.name} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - start:.1f} s")
            results, timings, cpu_times = {}, {name: [] for name in readers}, {name: [] for name in readers}
            # Interleaved rounds, so that a busy machine slows every reader alike.
            for _ in range(args.repeats):
                for name, reader in readers.items():
                    start, cpu_start = time.perf_counter(), time.process_time()
                    results[name] = reader(path)
                    timings[name].append(time.perf_counter() - start)
                    cpu_times[name].append(time.process_time() - cpu_start)  # all threads of the process
            reference_frames, reference_audio = results["transformers load_video(pyav) + audio pass"]
            exact = results["read_media exact"]
            identical = np.array_equal(exact.frames, reference_frames)
            length = min(len(exact.waveform), len(reference_audio))
            # Not sample-equal: FFmpeg's stereo-to-mono downmix sums at -3 dB, read_media averages the channels.
            correlation = float(np.corrcoef(exact.waveform[:length], reference_audio[:length])[0, 1])
            baseline = min(timings["transformers load_video(pyav) + audio pass"])
            for name in readers:
                best = min(timings[name])
                rows.append((f"{seconds:g} s", name, best, baseline / best, min(cpu_times[name])))
            print(f"  frames identical to load_video: {identical}; audio correlation: {correlation:.6f}")
            if not identical:
                raise SystemExit("frames differ from the reference")

    load_averages.append(os.getloadavg()[0])
    threads = min(os.cpu_count() or 1, DEFAULT_MAX_THREADS)
    print(f"\n{os.cpu_count()} CPUs, read_media's default num_threads={threads}, load average (1 min) at start and end: "
          f"{load_averages[0]:.1f}, {load_averages[1]:.1f}")
    print(f"\n| clip | reader ({NUM_FRAMES} frames + audio) | wall, best of {args.repeats} (s) | speed-up | CPU (s) |")
    print("|---|---|---|---|---|")
    for clip, name, best, speedup, cpu in rows:
        print(f"| {clip} | {name} | {best:.3f} | {speedup:.2f}x | {cpu:.3f} |")


if __name__ == "__main__":
    main()
