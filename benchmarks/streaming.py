"""Streaming: per-chunk cost and memory over a long stream, against re-encoding the prefix; answers on a live stream.

Four parts, on the default model (`mirasol_hf.DEFAULT_MODEL`: 8 frames of 32x32 and 16 log-mel frames per chunk of
1 s) with a latent-model window of 4 chunks (`latent_config.context_chunks = 4`, the clip length it was trained on):

1. stream: one chunk per `encode_media_chunk` call. A stream is advanced to chunk 10, another to 100, 1000 (and
   10,000 with `--chunks 10000`); then in `--rounds` alternating rounds `--window` timed calls go to each in turn:
   median wall and CPU time per call. RSS (from /proc/self/statm) once each stream has reached its mark, the shorter
   streams' states still held. Beside it the naive alternative that other models have, re-encoding
   the whole prefix with `encode_media` to answer at chunk t (median of alternating rounds, each its own process
   for its peak RSS); and the unwindowed stream (keys/values of every chunk kept) for reference.
2. answer latency: `MirasolWatcher.ask` (4 new tokens) at chunk 100 while the stream keeps encoding.
3. live: a stream of `--clips` synthetic clips back to back written as MPEG-TS, read by `LiveReader` and encoded by
   `MirasolWatcher`: seconds of video per second of wall time (real-time factor, decoding and features included),
   and the answers to each clip's questions asked as of its last chunk, against the same clip given alone
   (`processor(videos=clip)`, the default model's accuracy table).
4. groups (issue 17): a forward (`model(input_ids=..., pixel_values_videos=..., input_features=...)`) at 64, 512 and
   1024 frames of a width-256 configuration, `media_group_chunks=None` (every chunk through the encoders at once,
   before) against 8 (after): peak RSS growth over the RSS before the forward, and time per frame; each cell its own
   forked process, rounds alternating, medians with min-max.

Run from the repository root (`--quick` for a short check):

    python benchmarks/streaming.py --threads 2
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import statistics
import tempfile
import time

import numpy as np
import torch
from transformers import AutoConfig

import mirasol_hf
from mirasol_hf import MirasolConfig, MirasolForConditionalGeneration, MirasolProcessor
from mirasol_hf.streaming import LiveReader, MirasolWatcher
from mirasol_hf.streaming.live import write_transport_stream
from mirasol_hf.synthetic import generate_dataset

WINDOW_CHUNKS = 4
MARKS = (10, 100, 1000, 10000)
PAGE_MIB = os.sysconf("SC_PAGE_SIZE") / 2**20


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_MIB


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def spread(values) -> str:
    return f"{statistics.median(values):.3g} ({min(values):.3g}-{max(values):.3g})"


def default_model(window: int | None):
    config = AutoConfig.from_pretrained(mirasol_hf.DEFAULT_MODEL)
    config.latent_config.context_chunks = window
    model = MirasolForConditionalGeneration.from_pretrained(mirasol_hf.DEFAULT_MODEL, config=config).eval()
    return model, MirasolProcessor.from_pretrained(mirasol_hf.DEFAULT_MODEL)


def random_chunk(config, chunks: int = 1, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    size = config.video_config.image_size
    return {
        "pixel_values_videos": torch.randn(1, chunks * config.frames_per_chunk, 3, size, size, generator=generator),
        "input_features": torch.randn(
            1, config.audio_config.num_mel_bins, chunks * config.audio_frames_per_chunk, generator=generator
        ),
    }


def timed(function) -> tuple[float, float]:
    """(wall, CPU) seconds of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


@torch.inference_mode()
def stream_costs(window: int | None, marks: list[int], calls_per_mark: int, rounds: int) -> dict[int, tuple]:
    """{mark: (wall times, CPU times, RSS MiB)}: one stream per mark, advanced to it untimed; then, in alternating
    rounds, `calls_per_mark` timed calls on each stream in turn (so load changes hit every mark alike)."""
    model, _ = default_model(window)
    chunk = random_chunk(model.config)
    states, rss = {}, {}
    for mark in marks:
        state = None
        for _ in range(mark - 1):
            _, state = model.encode_media_chunk(**chunk, state=state)
        states[mark] = state
        rss[mark] = rss_mib()  # with every shorter stream's state still held
    times = {mark: ([], []) for mark in marks}
    for _ in range(rounds):
        for mark in marks:
            for _ in range(calls_per_mark):
                wall, cpu = timed(lambda: model.encode_media_chunk(**chunk, state=states[mark]))
                times[mark][0].append(wall)
                times[mark][1].append(cpu)
    return {mark: (*times[mark], rss[mark]) for mark in marks}


def _naive_cell(chunks: int, queue) -> None:
    with torch.inference_mode():
        model, _ = default_model(WINDOW_CHUNKS)
        media = random_chunk(model.config, chunks)
        model.encode_media(**random_chunk(model.config, 2))  # warm-up: allocations and thread start-up
        before = rss_mib()
        wall, cpu = timed(lambda: model.encode_media(**media))
        queue.put((wall, cpu, peak_rss_mib() - before))


def in_process(target, *args):
    queue = multiprocessing.get_context("fork").Queue()
    process = multiprocessing.get_context("fork").Process(target=target, args=(*args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def part_stream(args) -> None:
    marks = [mark for mark in MARKS if mark <= args.chunks]
    print(f"\n## 1. Per-chunk cost over a stream (window {WINDOW_CHUNKS} chunks), up to chunk {max(marks)}")
    # The forked measurements first: a process forked after torch has run its thread pool can hang.
    naive_marks = [mark for mark in marks if mark <= args.naive_chunks]
    naive = {mark: [] for mark in naive_marks}
    for _ in range(args.rounds):
        for mark in naive_marks:
            naive[mark].append(in_process(_naive_cell, mark))
    windowed = stream_costs(WINDOW_CHUNKS, marks, args.window, args.rounds)
    unwindowed_marks = [mark for mark in marks if mark <= args.unwindowed_chunks]
    unwindowed = stream_costs(None, unwindowed_marks, args.window, args.rounds)
    print(
        "| chunk | stream ms/chunk (wall) | stream ms (CPU) | RSS MiB | unwindowed stream ms | "
        "re-encode prefix ms (wall) | (CPU) | its peak RSS growth MiB | re-encode / stream |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    base = statistics.median(windowed[marks[0]][0])
    for mark in marks:
        walls, cpus, rss = windowed[mark]
        row = [str(mark), spread([w * 1e3 for w in walls]), spread([c * 1e3 for c in cpus]), f"{rss:.0f}"]
        row.append(spread([w * 1e3 for w in unwindowed[mark][0]]) if mark in unwindowed else "-")
        if mark in naive:
            naive_walls = [cell[0] for cell in naive[mark]]
            row += [
                spread([w * 1e3 for w in naive_walls]),
                spread([cell[1] * 1e3 for cell in naive[mark]]),
                spread([cell[2] for cell in naive[mark]]),
                f"{statistics.median(naive_walls) / statistics.median(walls):.0f}x",
            ]
        else:
            row += ["-"] * 4
        print("| " + " | ".join(row) + " |")
    last = marks[-1]
    print(
        f"\nstream time per chunk at chunk {last} / at chunk {marks[0]}: "
        f"{statistics.median(windowed[last][0]) / base:.2f}x; RSS {windowed[last][2] - windowed[marks[0]][2]:+.0f} MiB"
    )
    if 100 in windowed:
        print(
            f"from chunk 100 to {last}: time "
            f"{statistics.median(windowed[last][0]) / statistics.median(windowed[100][0]):.2f}x, "
            f"RSS {windowed[last][2] / windowed[100][2]:.3f}x"
        )


def clip_stream(clips, path) -> None:
    frames = np.concatenate([clip.frames for clip in clips])
    waveform = np.concatenate([clip.waveform for clip in clips])
    write_transport_stream(path, frames, clips[0].fps, waveform, clips[0].sampling_rate)


@torch.inference_mode()
def alone_answers(model, processor, clips) -> list[list[str]]:
    answers = []
    for start in range(0, len(clips), 20):
        batch = clips[start : start + 20]
        media = processor(videos=[clip.as_video_input() for clip in batch])
        questions = [(index, question.question) for index, clip in enumerate(batch) for question in clip.questions]
        prompts = processor(text=[question for _, question in questions])
        generated = model.generate(
            **prompts,
            media_latents=model.encode_media(**media),
            media_index=torch.tensor([index for index, _ in questions]),
            max_new_tokens=4,
            do_sample=False,
        )
        texts = iter(processor.post_process_answer(generated, prompts["input_ids"]))
        answers += [[next(texts) for _ in clip.questions] for clip in batch]
    return answers


def part_answer_latency(args) -> None:
    print("\n## 2. Answer latency while the stream keeps encoding (chunk >= 100)")
    model, processor = default_model(WINDOW_CHUNKS)
    chunk = random_chunk(model.config)

    def endless():
        index = 0
        while True:
            yield {**chunk, "start_time": float(index), "end_time": float(index + 1)}
            index += 1

    watcher = MirasolWatcher(model, processor, endless(), max_new_tokens=4).start()
    watcher.wait_for_chunks(100)
    walls = []
    for _ in range(args.questions):
        before = watcher.num_chunks
        wall, _ = timed(lambda: watcher.ask("which sound was heard more than once?"))
        walls.append(wall)
    encoded_during = watcher.num_chunks - before
    watcher.stop()
    print(f"question to answer (4 tokens): {spread([w * 1e3 for w in walls])} ms over {args.questions} questions;")
    print(f"chunks encoded meanwhile during the last question: {encoded_during}")


def part_live(args) -> None:
    print(f"\n## 3. Live: {args.clips} synthetic clips back to back ({args.clips * 4} s of video), MPEG-TS -> LiveReader")
    model, processor = default_model(WINDOW_CHUNKS)
    clips = generate_dataset(args.clips, seed=2026)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "stream.ts")
        clip_stream(clips, path)
        reader = LiveReader(path, chunk_seconds=clips[0].duration / 4, frames_per_chunk=8, size=32, stall_timeout=0.2)
        watcher = MirasolWatcher(model, processor, reader, max_new_tokens=4)
        wall, cpu = time.perf_counter(), time.process_time()
        watcher.start()
        streamed = []
        for index, clip in enumerate(clips):
            last_chunk = 4 * index + 3
            watcher.wait_for_chunks(last_chunk + 1)
            held = dict(watcher.held_chunks())
            at = last_chunk if last_chunk in held else None
            answers = watcher.ask([question.question for question in clip.questions], at_chunk=at)
            streamed.append([answer.text for answer in answers])
        watcher.join()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    alone = alone_answers(model, processor, clips)
    truth = [[question.answer for question in clip.questions] for clip in clips]
    total = sum(len(answers) for answers in truth)

    def accuracy(answers):
        return 100 * sum(a == t for clip_a, clip_t in zip(answers, truth) for a, t in zip(clip_a, clip_t)) / total

    agree = 100 * sum(a == b for s, l in zip(streamed, alone) for a, b in zip(s, l)) / total
    seconds = args.clips * clips[0].duration
    print(f"encoding with questions asked: {seconds:.0f} s of video in {wall:.1f} s wall ({cpu:.1f} s CPU): "
          f"{seconds / wall:.1f}x real time")
    print(f"accuracy on the latest clip, streamed: {accuracy(streamed):.1f}%; each clip alone: {accuracy(alone):.1f}%; "
          f"same answer: {agree:.1f}% of {total} questions")


GROUP_WIDTH = 256


def group_config(frames: int, group: int | None) -> MirasolConfig:
    def encoder(layers):
        return {
            "hidden_size": GROUP_WIDTH,
            "num_hidden_layers": layers,
            "num_attention_heads": 4,
            "intermediate_size": 4 * GROUP_WIDTH,
        }

    return MirasolConfig.from_preset(
        "tiny",
        num_chunks=frames // 8,
        frames_per_chunk=8,
        audio_frames_per_chunk=16,
        media_group_chunks=group,
        video_config={**encoder(2), "image_size": 64},
        audio_config=encoder(2),
        combiner_config={**encoder(2), "num_output_tokens": 8},
    )


def _group_cell(frames: int, group: int | None, queue) -> None:
    torch.manual_seed(0)
    with torch.inference_mode():
        config = group_config(frames, group)
        model = MirasolForConditionalGeneration(config).eval()
        media = random_chunk(config, frames // 8)
        input_ids = torch.randint(3, config.text_config.vocab_size, (1, 16))
        model(input_ids=input_ids, **random_chunk(config, 1))  # warm-up: allocations and thread start-up
        before = rss_mib()
        wall, cpu = timed(lambda: model(input_ids=input_ids, **media))
        growth = peak_rss_mib() - before
        wall2, cpu2 = timed(lambda: model(input_ids=input_ids, **media))
        queue.put((growth, min(wall, wall2) / frames, min(cpu, cpu2) / frames))


def part_groups(args) -> None:
    frame_counts = [64, 512, 1024] if not args.quick else [64, 256]
    print(f"\n## 4. Forward in groups of chunks (issue 17), width {GROUP_WIDTH}, 64x64 frames")
    cells = {(frames, group): [] for frames in frame_counts for group in (None, 8)}
    for _ in range(args.rounds):
        for frames in frame_counts:
            for group in (None, 8):
                cells[frames, group].append(in_process(_group_cell, frames, group))
    print("| frames | media_group_chunks | peak RSS growth MiB | ms/frame (wall) | ms/frame (CPU) |")
    print("|---|---|---|---|---|")
    for (frames, group), values in cells.items():
        print(
            f"| {frames} | {group} | {spread([v[0] for v in values])} | {spread([v[1] * 1e3 for v in values])} | "
            f"{spread([v[2] * 1e3 for v in values])} |"
        )
    for group in (None, 8):
        low, high = frame_counts[0], frame_counts[-1]
        def median(frames, field):
            return statistics.median(values[field] for values in cells[frames, group])

        middle = 512 if 512 in frame_counts else high
        print(
            f"media_group_chunks={group}: RSS growth {high}/{low} frames {median(high, 0) / median(low, 0):.2f}x; "
            f"time/frame {middle}/{low} {median(middle, 1) / median(low, 1):.2f}x wall, "
            f"{median(middle, 2) / median(low, 2):.2f}x CPU"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chunks", type=int, default=1000, help="stream length (10000 for the longest mark)")
    parser.add_argument("--unwindowed-chunks", type=int, default=1000)
    parser.add_argument("--naive-chunks", type=int, default=1000)
    parser.add_argument("--window", type=int, default=9, help="calls per mark")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--questions", type=int, default=9)
    parser.add_argument("--clips", type=int, default=100)
    # "groups" and "stream" fork processes: they run before the parts that run the model in this process.
    parser.add_argument("--parts", default="groups,stream,answer,live")
    parser.add_argument("--quick", action="store_true", help="a short run to check the script")
    args = parser.parse_args()
    if args.quick:
        args.chunks, args.unwindowed_chunks, args.naive_chunks, args.clips, args.rounds = 100, 100, 100, 5, 1
    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}; load average at start {os.getloadavg()}")
    parts = {"stream": part_stream, "answer": part_answer_latency, "live": part_live, "groups": part_groups}
    for name in args.parts.split(","):
        parts[name](args)
    print(f"\nload average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
