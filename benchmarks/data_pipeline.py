"""Where training time goes on MSRVTT-QA-shaped data (many questions per clip): decoding, the cache, the step.

    python benchmarks/data_pipeline.py [--preset tiny] [--clips 8] [--questions-per-clip 24] [--batch-clips 2]
        [--workers 2] [--rounds 3] [--threads 2] [--video-size 128] [--seconds 4] [--fps 8] [--camera-like] [--stage finetune]
        [--checkpointing] [--dtype float32] [--count-flops [--gpu-tflops 400]] [--skip-pipeline] [--media-only]

Writes `--clips` synthetic mp4 clips (`--video-size` square, `--seconds` long, with audio) and an MSRVTT-QA
annotation file with `--questions-per-clip` questions per clip, builds a cache with `mirasol_hf.preprocess`, and times
in one process, alternating the measurements round after round (median, min-max over `--rounds`):

* clips/s of decoding on the fly (MirasolDataCollator in a DataLoader with `--workers` workers), of reading the
  cache (the same DataLoader over the cache), and of the training step (forward with labels, backward, AdamW) of the
  preset on `--batch-clips` clips with all their questions;
* questions/s of the whole pipeline (DataLoader decoding in workers feeding training steps) grouped by clip
  (`media_index`: one decode and one encoding per clip) and one row per question (a decode and an encoding per
  question), over the same questions.

Wall and CPU seconds (this process and its DataLoader workers) are printed, with the load average and the peak
resident memory. DataLoader workers start from a forkserver started before the model is built (`--worker-start`): a
worker forked from the training process shares the model's pages copy-on-write, and every page the optimizer then
writes (weights, AdamW states) is copied while the worker lives. At a large preset,
`--dtype bfloat16` (weights, gradients and AdamW states in bf16) halves the training state, `--checkpointing`
recomputes activations, `--skip-pipeline` leaves out the two decode + step measurements, and `--count-flops` counts
one step's operations and prints what a GPU sustaining `--gpu-tflops` would step, and how many CPU cores of decoding
or cache reading it would take to keep up.
`--media-only` measures decoding and the cache alone (no model is built), e.g. at a large preset's media size.
"""

import argparse
import dataclasses
import json
import multiprocessing
import multiprocessing.forkserver
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from mirasol_hf import MirasolConfig, MirasolForConditionalGeneration, MirasolProcessor, build_tokenizer
from mirasol_hf.data import group_by_clip, load_msrvtt_qa
from mirasol_hf.preprocess import load_cache, preprocess
from mirasol_hf.synthetic import generate_clip, write_mp4
from mirasol_hf.training import TRAINING_STAGES, MirasolDataCollator, apply_training_stage


def _cpu_seconds() -> float:
    """CPU seconds of this process (all its threads)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


class _WorkerTimedCollator:
    """The collator, also returning (worker id, the worker's CPU seconds so far) when it runs in a DataLoader worker.

    Workers are children of the forkserver (not of this process) unless started by fork, so `RUSAGE_CHILDREN` would
    miss them; a worker's CPU clock starts at zero when it is forked, and its last report is what it spent.
    """

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, rows):
        batch = self.collator(rows)
        info = torch.utils.data.get_worker_info()
        return batch, (None if info is None else (info.id, time.process_time()))


def _batches(loader, worker_cpu: list):
    """The loader's batches; adds its workers' CPU seconds to `worker_cpu` once it is exhausted."""
    last = {}
    for batch, report in loader:
        if report is not None:
            last[report[0]] = report[1]
        yield batch
    worker_cpu.append(sum(last.values()))


def _camera_like(frames: np.ndarray, seed: int, noise: float = 4.0) -> np.ndarray:
    """The synthetic clip's flat shapes over a textured background that pans, with sensor noise.

    Flat shapes cost the H.264 decoder almost nothing (a 16 s, 30 fps, 320 x 320 clip: 100 kbit/s, about 8,700
    frames decoded per CPU second here); this gives 1.3 Mbit/s and about 1,800 frames per CPU second, what camera
    footage of that size costs.
    """
    rng = np.random.default_rng(seed)
    count, height, width, _ = frames.shape
    cell = 4
    coarse = rng.integers(0, 256, size=((height + count) // cell + 2, (width + count) // cell + 2, 3))
    texture = np.kron(coarse.astype(np.float32), np.ones((cell, cell, 1), np.float32))
    texture = (texture + np.roll(texture, cell // 2, 0) + np.roll(texture, cell // 2, 1)
               + np.roll(texture, (cell // 2, cell // 2), (0, 1))) / 4
    out = np.empty_like(frames)
    for index, frame in enumerate(frames):
        background = texture[index // 2:index // 2 + height, index:index + width]  # a diagonal pan
        mixed = 0.6 * frame + 0.4 * background + rng.normal(0.0, noise, frame.shape)
        out[index] = np.clip(mixed, 0, 255).astype(np.uint8)
    return out


def _write_data(root: Path, clips: int, questions_per_clip: int, size: int, seconds: float,
                fps: float = 8.0, camera_like: bool = False) -> tuple[Path, Path]:
    videos = root / "videos"
    videos.mkdir(parents=True)
    records = []
    for index in range(clips):
        clip = generate_clip((0, index), duration=seconds, fps=fps, size=size)
        if camera_like:
            clip = dataclasses.replace(clip, frames=_camera_like(clip.frames, seed=index))
        write_mp4(clip, videos / f"video{index}.mp4")
        # MSRVTT-QA asks ~24 questions per video; the synthetic clip has fewer, so they repeat with numbered words.
        for number in range(questions_per_clip):
            question = clip.questions[number % len(clip.questions)]
            records.append({"question": f"{question.question} {number}", "answer": question.answer,
                            "video_id": index, "id": len(records)})
    annotation = root / "train_qa.json"
    annotation.write_text(json.dumps(records))
    return annotation, videos


def _model_and_processor(preset: str, texts: list[str], build_model: bool = True):
    tokenizer = build_tokenizer(texts, vocab_size=500)
    config = MirasolConfig.from_preset(
        preset,
        text_config={"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
                     "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id},
    )
    torch.manual_seed(0)
    model = MirasolForConditionalGeneration(config).train() if build_model else None
    return model, MirasolProcessor.from_model_config(config, tokenizer)


def _train_step(model, optimizer, batch: dict) -> None:
    output = model(**batch)
    optimizer.zero_grad(set_to_none=True)
    output.loss.backward()
    optimizer.step()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--questions-per-clip", type=int, default=24)
    parser.add_argument("--batch-clips", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--video-size", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--fps", type=float, default=8.0,
                        help="frame rate of the clips written (camera footage: 25-30)")
    parser.add_argument("--camera-like", action="store_true",
                        help="textured, panning, noisy backgrounds: clips that cost the decoder what camera footage "
                             "does (the synthetic shapes alone decode about 5x faster)")
    parser.add_argument("--stage", default="finetune", choices=TRAINING_STAGES,
                        help="which weights the training step trains (pretrain: the text decoder frozen, as the paper)")
    parser.add_argument("--checkpointing", action="store_true",
                        help="activation checkpointing in the training step (what long clips or large presets need)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                        help="the model's weights, gradients and AdamW states (bfloat16: pure bf16, for a large "
                             "preset whose fp32 training state does not fit in memory; the step's compute is that of "
                             "bf16 mixed precision, not its fp32 master weights)")
    parser.add_argument("--count-flops", action="store_true",
                        help="also count the floating-point operations of one training step (torch's "
                             "FlopCounterMode, with eager attention: matmuls and attention, recomputation under "
                             "checkpointing included) and "
                             "print the clips/s a GPU sustaining --gpu-tflops would step")
    parser.add_argument("--gpu-tflops", type=float, default=400.0,
                        help="sustained TFLOP/s for that estimate (default 400: about 40%% of an H100/H200's "
                             "989 dense bf16 TFLOP/s)")
    parser.add_argument("--skip-pipeline", action="store_true",
                        help="leave out the two decode + step measurements (grouped by clip vs one row per "
                             "question), which cost many training steps at a large preset")
    parser.add_argument("--media-only", action="store_true",
                        help="decoding and the cache only, no model (for presets too large to train here)")
    parser.add_argument("--worker-start", default="forkserver", choices=("forkserver", "fork", "spawn"),
                        help="how DataLoader workers start (forkserver: from a server started before the model "
                             "exists, so workers do not share the model's pages copy-on-write while the optimizer "
                             "writes them; a worker's CPU seconds include its start-up, about 10 ms from the "
                             "forkserver, seconds of imports with spawn)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker_start == "forkserver":
        multiprocessing.set_forkserver_preload(["torch", "mirasol_hf", "mirasol_hf.training", "datasets"])
        multiprocessing.forkserver.ensure_running()

    root = Path(tempfile.mkdtemp(prefix="mirasol_data_pipeline_"))
    annotation, videos = _write_data(root, args.clips, args.questions_per_clip, args.video_size, args.seconds,
                                     args.fps, args.camera_like)
    rows = load_msrvtt_qa(annotation, videos)
    clips = group_by_clip(rows)
    model, processor = _model_and_processor(args.preset, list(rows["question"]) + list(rows["answer"]),
                                            build_model=not args.media_only)
    preprocess(rows, processor, root / "cache", num_proc=args.workers)
    cache = load_cache(root / "cache")
    collator = _WorkerTimedCollator(MirasolDataCollator(processor))
    worker_cpu: list[float] = []
    questions = len(rows)
    batch_questions = args.batch_clips * args.questions_per_clip

    def loader(dataset, batch_size):
        return DataLoader(dataset, batch_size=batch_size, collate_fn=collator, num_workers=args.workers,
                          multiprocessing_context=args.worker_start if args.workers else None)

    def read_all(dataset):
        for _ in _batches(loader(dataset, args.batch_clips), worker_cpu):
            pass
        return len(dataset)

    def steps():
        for _ in range(2):
            _train_step(model, optimizer, grouped_batch)
        return 2 * args.batch_clips

    def pipeline(dataset, batch_size):
        for batch in _batches(loader(dataset, batch_size), worker_cpu):
            _train_step(model, optimizer, batch)
        return questions

    measurements = {
        f"decode on the fly ({args.workers} workers)": ("clips", lambda: read_all(clips)),
        f"read the cache ({args.workers} workers)": ("clips", lambda: read_all(cache)),
    }
    if not args.media_only:
        # lr 0: every measurement times the same weights
        model.to(getattr(torch, args.dtype))
        apply_training_stage(model, args.stage)
        if args.checkpointing:
            model.activation_checkpointing_enable()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.0)
        grouped_batch = next(iter(loader(cache, args.batch_clips)))[0]
        measurements.update({
            f"training step, {args.preset}, {args.stage} "
            f"({args.batch_clips} clips x {args.questions_per_clip} questions)":
                ("clips", steps),
        })
        if not args.skip_pipeline:
            measurements.update({
                "decode + step, grouped by clip": ("questions", lambda: pipeline(clips, args.batch_clips)),
                "decode + step, one row per question": ("questions", lambda: pipeline(rows, batch_questions)),
            })
        _train_step(model, optimizer, grouped_batch)  # warm-up
        if args.count_flops:
            # FlopCounterMode has no formula for the CPU SDPA kernel (it counts its attention as 0): count the step
            # with eager attention, the same products as matmuls.
            attention = model.config._attn_implementation
            model.set_attn_implementation("eager")
            with FlopCounterMode(display=False) as counter:
                _train_step(model, optimizer, grouped_batch)
            model.set_attn_implementation(attention)
            step_flops = counter.get_total_flops() / args.batch_clips
    results = {name: [] for name in measurements}
    for round_index in range(args.rounds):
        names = list(measurements) if round_index % 2 == 0 else list(reversed(measurements))
        for name in names:
            unit, run = measurements[name]
            worker_cpu.clear()
            wall, cpu = time.perf_counter(), _cpu_seconds()
            count = run()
            wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu + sum(worker_cpu)
            results[name].append((count / wall, cpu, wall, count / cpu))

    print(f"{args.clips} clips of {args.seconds:g} s at {args.video_size}x{args.video_size}, {args.fps:g} fps{', camera-like' if args.camera_like else ''}, "
          f"{args.questions_per_clip} questions each ({questions}); preset {args.preset} "
          f"({processor.num_frames} frames at {processor.image_size}); {args.threads} threads; {args.dtype}; "
          f"median (min-max) of {args.rounds} alternating rounds; load average {os.getloadavg()[0]:.1f}")
    print(f"| {'measurement':<68} | {'per wall second':>28} | {'per CPU second':>14} | {'wall s':>6} | {'CPU s':>6} |")
    print(f"|{'-' * 70}|{'-' * 29}:|{'-' * 15}:|{'-' * 7}:|{'-' * 7}:|")
    medians, cpu_medians = {}, {}
    for name, samples in results.items():
        unit = measurements[name][0]
        rates = [rate for rate, _, _, _ in samples]
        medians[name] = statistics.median(rates)
        cpu_medians[name] = statistics.median(cpu_rate for _, _, _, cpu_rate in samples)
        rate = f"{medians[name]:.3g} ({min(rates):.3g}-{max(rates):.3g}) {unit}/s"
        wall = statistics.median(w for _, _, w, _ in samples)
        cpu = statistics.median(c for _, c, _, _ in samples)
        print(f"| {name:<68} | {rate:>28} | {cpu_medians[name]:>14.3g} | {wall:>6.2f} | {cpu:>6.2f} |")
    for label, values in (("wall", medians), ("CPU", cpu_medians)):
        if args.media_only:
            decode, cached = values.values()
            print(f"per {label} second: the cache {cached / decode:.1f}x decoding")
            continue
        decode, cached, step, *pipelines = values.values()
        slowest = min((decode, "decoding on the fly"), (cached, "reading the cache"), (step, "the training step"))
        grouping = "" if not pipelines else (
            f"; grouped by clip {pipelines[0] / pipelines[1]:.2f}x the questions of one row per question")
        print(f"per {label} second: bottleneck {slowest[1]}; decoding {decode / step:.3g}x and the cache "
              f"{cached / step:.3g}x the step's clips; the cache {cached / decode:.2g}x decoding{grouping}")
    if not args.media_only and args.count_flops:
        gpu_clips = args.gpu_tflops * 1e12 / step_flops
        decode_per_core = cpu_medians[next(iter(measurements))]
        cache_per_core = cpu_medians[list(measurements)[1]]
        print(f"one training step: {step_flops / 1e12:.2f} TFLOP per clip; at {args.gpu_tflops:g} TFLOP/s a GPU steps "
              f"{gpu_clips:.1f} clips/s, which takes {gpu_clips / decode_per_core:.1f} CPU cores decoding on the fly "
              f"or {gpu_clips / cache_per_core:.1f} reading the cache (at this run's clips per CPU second)")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak resident memory of this process: {peak:.1f} GiB")
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
