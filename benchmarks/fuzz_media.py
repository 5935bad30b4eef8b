"""Fuzzing the media reader: seeded mutants of the project's own clips, each read in a worker process with a timeout.

A few small clips are written with PyAV (H.264 + AAC in mp4 with the index last and first, VP8 + Opus in WebM,
MJPEG + PCM in AVI, H.264 + MP2 in MPEG-TS); mutant `i` of seed `s` is one of them damaged by one of the
`MUTATIONS` (bit flips, random bytes, zeroed runs, cuts, spliced chunks, damaged index fields), all drawn from
`numpy.random.default_rng([s, i])`, so any mutant can be rebuilt alone (`--only i --save DIR`). Mutants are read
by a worker process; when a read outlives `--timeout` seconds the worker is killed (a hang), when the worker dies
(a crash: a signal or an exit) it is restarted on the next mutant. Outcomes:

    read            frames (and audio) came back without a warning
    read+warning    frames came back with warnings, each naming the file
    error           a ValueError naming the file (the reader's MediaError)
    error-unnamed   a ValueError that does not name the file          (a bug)
    exception       any other exception                               (a bug)
    crash           the worker process died                           (a bug)
    hang            the read took longer than --timeout               (a bug)

Run from the repository root (`--json` prints the counts as JSON on the last line):

    python benchmarks/fuzz_media.py --mutants 1000 --seed 0
"""

import argparse
import json
import logging
import multiprocessing
import os
import queue
import sys
import tempfile
import time
from collections import Counter
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


SIZE, FPS, SECONDS = (96, 64), 25, 2.0
AUDIO_RATE = 44100
NUM_FRAMES = 16
BAD_OUTCOMES = ("error-unnamed", "exception", "crash", "hang")
OUTCOMES = ("read", "read+warning", "error") + BAD_OUTCOMES
# The containers keep their index (mp4 moov, mkv cues, avi idx1) in the first or last few KB.
INDEX_REGION_BYTES = 4096


def _frame(i: int) -> np.ndarray:
    width, height = SIZE
    image = np.empty((height, width, 3), np.uint8)
    image[..., 0] = (i * 37) % 256
    image[..., 1] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    image[..., 2] = np.linspace(0, 255, height, dtype=np.uint8)[:, None]
    return image


def write_clip(path: Path, video_codec: str, audio_codec: str, container_format=None, options=None) -> Path:
    """A 2 s clip: frames whose brightness ramps, and a 440 Hz tone."""
    container = av.open(str(path), mode="w", format=container_format, options=options or {})
    video = container.add_stream(video_codec, rate=FPS)
    video.width, video.height = SIZE
    video.pix_fmt = "yuvj420p" if video_codec == "mjpeg" else "yuv420p"
    video.codec_context.gop_size = 12
    audio = container.add_stream(audio_codec, rate=AUDIO_RATE if audio_codec != "libopus" else 48000)
    audio.layout = "stereo"
    packets = []
    for i in range(int(SECONDS * FPS)):
        packets += video.encode(av.VideoFrame.from_ndarray(_frame(i), format="rgb24"))
    packets += video.encode(None)
    rate = audio.codec_context.sample_rate
    wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(SECONDS * rate)) / rate)).astype(np.float32)
    step = audio.codec_context.frame_size or 1024
    for start in range(0, len(wave), step):
        block = np.ascontiguousarray(np.stack([wave[start : start + step]] * 2))  # (2, S)
        frame = av.AudioFrame.from_ndarray(block, format="fltp", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
        packets += audio.encode(frame)
    packets += audio.encode(None)
    for packet in packets:
        container.mux(packet)
    container.close()
    return path


BASE_CLIPS = {
    "h264_aac.mp4": dict(video_codec="libx264", audio_codec="aac"),
    "h264_aac_faststart.mp4": dict(video_codec="libx264", audio_codec="aac", options={"movflags": "faststart"}),
    "vp8_opus.webm": dict(video_codec="libvpx", audio_codec="libopus"),
    "mjpeg_pcm.avi": dict(video_codec="mjpeg", audio_codec="pcm_s16le"),
    "h264_mp2.ts": dict(video_codec="libx264", audio_codec="mp2", container_format="mpegts"),
}


def _flip_bits(data: bytearray, rng):
    for position in rng.integers(0, len(data), rng.integers(1, 21)):
        data[position] ^= 1 << int(rng.integers(0, 8))


def _random_bytes(data: bytearray, rng):
    for _ in range(rng.integers(1, 9)):
        length = int(rng.integers(1, 65))
        start = int(rng.integers(0, max(1, len(data) - length)))
        data[start : start + length] = rng.integers(0, 256, length, dtype=np.uint8).tobytes()


def _zero_run(data: bytearray, rng):
    length = int(rng.integers(16, 4097))
    start = int(rng.integers(0, max(1, len(data) - length)))
    data[start : start + length] = bytes(min(length, len(data) - start))


def _cut(data: bytearray, rng):
    del data[int(rng.integers(1, len(data))) :]


def _splice(data: bytearray, rng):
    length = int(rng.integers(64, 8193))
    source = int(rng.integers(0, max(1, len(data) - length)))
    chunk = bytes(data[source : source + length])
    target = int(rng.integers(0, len(data)))
    data[target:target] = chunk


def _index_fields(data: bytearray, rng):
    """Overwrite 32-bit fields of the index (sizes, counts, offsets, timestamps) with edge values."""
    regions = [(0, INDEX_REGION_BYTES), (max(0, len(data) - INDEX_REGION_BYTES), len(data))]
    values = [0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 0x80000000, int(rng.integers(0, 1 << 32))]
    for _ in range(rng.integers(1, 5)):
        low, high = regions[int(rng.integers(0, 2))]
        start = int(rng.integers(low, max(low + 1, high - 4)))
        data[start : start + 4] = int(values[int(rng.integers(0, len(values)))]).to_bytes(4, "big")


MUTATIONS = {
    "flip": _flip_bits,
    "bytes": _random_bytes,
    "zero": _zero_run,
    "cut": _cut,
    "splice": _splice,
    "index": _index_fields,
}


def make_mutant(clips: dict, seed: int, i: int) -> tuple[str, str, bytes]:
    """(base clip name, mutation name, mutant bytes) of mutant `i` of `seed`."""
    rng = np.random.default_rng([seed, i])
    base = sorted(clips)[int(rng.integers(0, len(clips)))]
    mutation = sorted(MUTATIONS)[int(rng.integers(0, len(MUTATIONS)))]
    data = bytearray(clips[base])
    MUTATIONS[mutation](data, rng)
    return base, mutation, bytes(data)


class _CountWarnings(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _worker(clips: dict, seed: int, indices: list, directory: str, tasks, results):
    from mirasol_hf.media import read_media

    handler = _CountWarnings()
    logging.getLogger("mirasol_hf.media").addHandler(handler)
    logging.getLogger("mirasol_hf.media").propagate = False
    for i in indices:
        base, mutation, data = make_mutant(clips, seed, i)
        path = Path(directory) / f"mutant_{i}_{Path(base).name}"
        path.write_bytes(data)
        tasks.put(i)
        handler.messages.clear()
        try:
            read_media(path, NUM_FRAMES, num_threads=1)
            unnamed = [message for message in handler.messages if str(path) not in message]
            if unnamed:
                outcome, detail = "error-unnamed", f"warning without the file name: {unnamed[0]}"
            else:
                outcome, detail = ("read+warning", handler.messages[0]) if handler.messages else ("read", "")
        except ValueError as error:
            outcome = "error" if str(path) in str(error) else "error-unnamed"
            detail = str(error).replace(str(path), "<file>")
        except Exception as error:  # noqa: BLE001 - every other exception is what the fuzzer looks for
            outcome, detail = "exception", f"{type(error).__name__}: {error}"
        results.put((i, base, mutation, outcome, detail[:200]))
        path.unlink()


def run(mutants: int, seed: int, timeout: float, only: list | None = None, directory: str | None = None) -> list:
    """Read every mutant; one (index, base, mutation, outcome, detail) row each."""
    with tempfile.TemporaryDirectory() as scratch:
        clips = {name: write_clip(Path(scratch) / name, **spec).read_bytes() for name, spec in BASE_CLIPS.items()}
        pending = list(only) if only else list(range(mutants))
        rows = {}
        context = multiprocessing.get_context("spawn")  # a clean interpreter: no inherited FFmpeg state
        while pending:
            tasks, results = context.Queue(), context.Queue()
            worker = context.Process(
                target=_worker, args=(clips, seed, pending, directory or scratch, tasks, results), daemon=True
            )
            worker.start()
            current, started, hung = None, None, False
            while worker.is_alive() or not results.empty():
                try:
                    row = results.get(timeout=0.05)
                    rows[row[0]] = row
                    continue
                except queue.Empty:
                    pass
                while True:  # the mutant being read is the last one announced
                    try:
                        current, started = tasks.get_nowait(), time.monotonic()
                    except queue.Empty:
                        break
                if current is not None and current not in rows and time.monotonic() - started > timeout:
                    worker.kill()
                    hung = True
                    break
            worker.join()
            unread = [i for i in pending if i not in rows]
            if unread and (hung or worker.exitcode != 0):
                # Mutants are read in order: the first without a result is the one that hung or killed the worker.
                base, mutation, _ = make_mutant(clips, seed, unread[0])
                outcome = "hang" if hung else "crash"
                rows[unread[0]] = (unread[0], base, mutation, outcome, f"worker exit code {worker.exitcode}")
            pending = [i for i in pending if i not in rows]
        if directory:
            for i, base, _, outcome, _ in rows.values():
                if outcome in BAD_OUTCOMES:
                    Path(directory, f"mutant_{i}_{Path(base).name}").write_bytes(make_mutant(clips, seed, i)[2])
    return [rows[i] for i in sorted(rows)]


def table(rows: list) -> str:
    """Markdown table: outcome counts per mutation, then the rows of bad outcomes."""
    counts = Counter((mutation, outcome) for _, _, mutation, outcome, _ in rows)
    lines = ["| mutation | " + " | ".join(OUTCOMES) + " |", "|---" * (len(OUTCOMES) + 1) + "|"]
    for mutation in sorted(MUTATIONS):
        lines.append(f"| {mutation} | " + " | ".join(str(counts[mutation, outcome]) for outcome in OUTCOMES) + " |")
    totals = Counter(outcome for *_, outcome, _ in rows)
    lines.append("| **all** | " + " | ".join(f"**{totals[outcome]}**" for outcome in OUTCOMES) + " |")
    bad = [row for row in rows if row[3] in BAD_OUTCOMES]
    lines += [
        f"BAD mutant {i} ({base}, {mutation}): {outcome}: {detail}" for i, base, mutation, outcome, detail in bad
    ]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mutants", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds one read may take before it is a hang")
    parser.add_argument("--only", type=int, nargs="*", help="read only these mutant indices")
    parser.add_argument("--save", help="directory to keep the mutants with bad outcomes in")
    parser.add_argument("--json", action="store_true", help="print the outcome counts as JSON on the last line")
    args = parser.parse_args()
    if args.save:
        os.makedirs(args.save, exist_ok=True)
    started = time.monotonic()
    rows = run(args.mutants, args.seed, args.timeout, args.only, args.save)
    print(table(rows))
    print(f"{len(rows)} mutants, seed {args.seed}, {time.monotonic() - started:.1f} s, load {os.getloadavg()}")
    if args.json:
        print(json.dumps(Counter(outcome for *_, outcome, _ in rows)))
    sys.exit(1 if any(row[3] in BAD_OUTCOMES for row in rows) else 0)


if __name__ == "__main__":
    main()
