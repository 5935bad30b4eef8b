"""Reading 128 frames + the audio track: mirasol_hf.media.read_media against transformers' PyAV loader.

Writes its own clips (H.264 + AAC in mp4) to a temporary directory, checks that both readers return identical
frames (and the audio's correlation), then times every reader in alternating rounds (benchmarks/_timing.py): medians
of per-round time ratios against the reference with min-max, wall and CPU time over all threads, the load average.
The reference is transformers.video_utils.load_video(..., backend="pyav") for the frames plus the usual second PyAV
pass for the audio (transformers' load_audio needs torchcodec for mp4). Run from the repository root:

    python benchmarks/media_read.py [--rounds 7] [--seconds 120 15]

`--memory` measures instead what reading 128 frames + audio costs as the clip grows: peak RSS above the process's
RSS after its imports, wall and CPU time, each read in a fresh process, for clips of `--memory-seconds` with and
without an audio track (long clips are one 10 s segment of 160x90 H.264 + AAC repeated with shifted timestamps,
written in seconds). `--memory-path processor` (the default) measures what the model's inputs cost:
`MirasolProcessor.decode_videos` (frames at 224x224 in 16 chunks of 8, and the log-mel of each chunk);
`--memory-path read_media` measures `read_media` alone (frames at native size and the waveform). Run it with another
checkout first on PYTHONPATH to measure that version instead.

    python benchmarks/media_read.py --memory
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
from transformers.video_utils import load_video

from _timing import compare, load_average, print_table
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
    mux_tone(container, audio, int(seconds * AUDIO_RATE))
    container.close()


def mux_tone(container, audio, samples: int):
    """`samples` of a TONE_HZ sine on both channels, encoded into `audio` (a stereo AAC stream) and muxed."""
    wave = (0.3 * np.sin(2 * np.pi * TONE_HZ * np.arange(samples) / AUDIO_RATE)).astype(np.float32)
    stereo = np.stack([wave, wave])  # (2, S)
    for start in range(0, samples, AUDIO_FRAME_SAMPLES):
        block = np.ascontiguousarray(stereo[:, start : start + AUDIO_FRAME_SAMPLES])
        frame = av.AudioFrame.from_ndarray(block, format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = AUDIO_RATE, start
        for packet in audio.encode(frame):
            container.mux(packet)
    for packet in audio.encode():
        container.mux(packet)


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


SEGMENT_SECONDS, SEGMENT_SIZE, SEGMENT_FPS = 10, (160, 90), 25


def write_long_clip(path: Path, seconds: float, with_audio: bool):
    """`seconds` of 160x90 H.264 (+ stereo AAC): a 10 s segment encoded once, its packets repeated with shifted
    timestamps (each repeat starts on a keyframe)."""
    with tempfile.TemporaryDirectory() as directory:
        segment = Path(directory) / "segment.mp4"
        container = av.open(str(segment), mode="w")
        video = container.add_stream("libx264", rate=SEGMENT_FPS, options={"preset": "ultrafast"})
        video.width, video.height = SEGMENT_SIZE
        video.pix_fmt = "yuv420p"
        audio = container.add_stream("aac", rate=AUDIO_RATE) if with_audio else None
        if audio is not None:
            audio.layout = "stereo"
        rng = np.random.default_rng(0)
        for i in range(SEGMENT_SECONDS * SEGMENT_FPS):
            image = rng.integers(0, 256, (SEGMENT_SIZE[1], SEGMENT_SIZE[0], 3), dtype=np.uint8)
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if audio is not None:
            mux_tone(container, audio, SEGMENT_SECONDS * AUDIO_RATE)
        container.close()
        with av.open(str(segment)) as source, av.open(str(path), mode="w") as output:
            streams = {stream.index: output.add_stream_from_template(stream) for stream in source.streams}
            # Packets timed inside [0, 10 s), so that the repeats' timestamps keep increasing.
            packets = [
                packet
                for packet in source.demux()
                if packet.size and packet.dts >= 0 and packet.pts * packet.time_base < SEGMENT_SECONDS
            ]
            for repeat in range(int(np.ceil(seconds / SEGMENT_SECONDS))):
                for packet in packets:
                    shift = round(repeat * SEGMENT_SECONDS / packet.time_base)
                    copy = av.Packet(bytes(packet))
                    copy.stream, copy.time_base = streams[packet.stream.index], packet.time_base
                    copy.pts, copy.dts = packet.pts + shift, packet.dts + shift
                    copy.duration, copy.is_keyframe = packet.duration, packet.is_keyframe
                    output.mux(copy)


FRAMES_PER_CHUNK = 8
MEMORY_PATHS = ("processor", "read_media")


def measure_one(path: str, memory_path: str):
    """Read 128 frames + audio of `path` in this fresh process (`memory_path`: "read_media" or "processor"); print
    peak RSS growth and times as JSON."""
    if memory_path == "processor":
        from mirasol_hf.feature_extraction_mirasol import MirasolFeatureExtractor
        from mirasol_hf.processing_mirasol import MirasolProcessor
        from mirasol_hf.tokenization_mirasol import build_tokenizer

        tokenizer = build_tokenizer(["question: what is playing? answer: a tone"], vocab_size=100)
        chunks = {"num_chunks": NUM_FRAMES // FRAMES_PER_CHUNK, "frames_per_chunk": FRAMES_PER_CHUNK}
        processor = MirasolProcessor(MirasolFeatureExtractor(), tokenizer, **chunks)
        read = lambda: processor.decode_videos([path])  # noqa: E731
    else:
        read = lambda: read_media(path, NUM_FRAMES)  # noqa: E731
    with open("/proc/self/statm") as statm:
        baseline_kib = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    start, cpu_start = time.perf_counter(), time.process_time()
    output = read()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if memory_path == "processor":
        audio = f"{int(output['audio_chunk_mask'].sum())} chunks"
    else:
        audio = "none" if output.waveform is None else f"{len(output.waveform) / output.sampling_rate:.0f} s"
    print(json.dumps({"peak_mib": (peak_kib - baseline_kib) / 1024, "wall": wall, "cpu": cpu, "audio": audio}))


def memory_table(lengths: list[float], rounds: int, memory_path: str):
    """Peak RSS growth and time of reading 128 frames + audio vs clip length, with and without audio."""
    print(f"{memory_path}; load average (1 min) at start: {os.getloadavg()[0]:.1f}")
    print("\n| clip | audio | peak RSS growth (MiB), median [min-max] | wall (s) | CPU (s) | audio read |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as directory:
        for seconds in lengths:
            for with_audio in (True, False):
                path = Path(directory) / f"long_{seconds:g}_{with_audio}.mp4"
                write_long_clip(path, seconds, with_audio)
                runs = []
                for _ in range(rounds):
                    command = [sys.executable, __file__, "--measure-one", str(path), "--memory-path", memory_path]
                    result = subprocess.run(command, capture_output=True, text=True)
                    if result.returncode:
                        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr}")
                    output = result.stdout
                    runs.append(json.loads(output.strip().splitlines()[-1]))
                peaks, walls, cpus = (np.array([run[key] for run in runs]) for key in ("peak_mib", "wall", "cpu"))
                print(
                    f"| {seconds / 60:g} min | {'yes' if with_audio else 'no'} | {np.median(peaks):.0f} "
                    f"[{peaks.min():.0f}-{peaks.max():.0f}] | {np.median(walls):.2f} | {np.median(cpus):.2f} | "
                    f"{runs[0]['audio']} |",
                    flush=True,
                )
                path.unlink()
    print(f"load average (1 min) at end: {os.getloadavg()[0]:.1f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds of all readers (after a warm-up)")
    parser.add_argument("--seconds", type=float, nargs="+", default=[120.0, 15.0], help="clip lengths to test")
    parser.add_argument("--memory", action="store_true", help="peak RSS and time vs clip length instead")
    parser.add_argument("--memory-seconds", type=float, nargs="+", default=[120.0, 1800.0, 3600.0])
    parser.add_argument("--memory-rounds", type=int, default=3, help="fresh processes per clip in --memory")
    parser.add_argument("--memory-path", choices=MEMORY_PATHS, default="processor", help="what --memory measures")
    parser.add_argument("--measure-one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_one:
        return measure_one(args.measure_one, args.memory_path)
    if args.memory:
        return memory_table(args.memory_seconds, args.memory_rounds, args.memory_path)

    reference_name = "transformers load_video(pyav) + audio pass"
    readers = {
        reference_name: reference,
        "read_media exact": lambda path: read_media(path, NUM_FRAMES),
        "read_media exact, num_threads=1": lambda path: read_media(path, NUM_FRAMES, num_threads=1),
        f"read_media exact, {PROCESSOR_SIZE}x{PROCESSOR_SIZE}": lambda path: read_media(
            path, NUM_FRAMES, width=PROCESSOR_SIZE, height=PROCESSOR_SIZE
        ),
        "read_media nearest_keyframe": lambda path: read_media(path, NUM_FRAMES, frame_sampling="nearest_keyframe"),
    }
    threads = min(os.cpu_count() or 1, DEFAULT_MAX_THREADS)
    print(f"read_media's default num_threads={threads}, {NUM_FRAMES} frames + audio a read; at start: {load_average()}")
    with tempfile.TemporaryDirectory() as directory:
        for seconds in args.seconds:
            path = Path(directory) / f"clip_{seconds:g}s.mp4"
            start = time.perf_counter()
            write_clip(path, seconds)
            print(f"\nwrote {path.name} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - start:.1f} s")
            reference_frames, reference_audio = reference(path)
            exact = read_media(path, NUM_FRAMES)
            identical = np.array_equal(exact.frames, reference_frames)
            length = min(len(exact.waveform), len(reference_audio))
            # Not sample-equal: FFmpeg's stereo-to-mono downmix sums at -3 dB, read_media averages the channels.
            correlation = float(np.corrcoef(exact.waveform[:length], reference_audio[:length])[0, 1])
            print(f"frames identical to load_video: {identical}; audio correlation: {correlation:.6f}")
            if not identical:
                raise SystemExit("frames differ from the reference")
            calls = {name: (lambda reader=reader, path=path: reader(path)) for name, reader in readers.items()}
            results = compare(calls, rounds=args.rounds)
            print(f"{seconds:g} s clip, s per read:")
            print_table(results, baseline=reference_name)


if __name__ == "__main__":
    main()
