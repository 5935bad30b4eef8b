"""Where training time goes on MSRVTT-QA-shaped data (many questions per clip): decoding, the cache, the step.

    python benchmarks/data_pipeline.py [--preset tiny] [--clips 8] [--questions-per-clip 24] [--batch-clips 2]
        [--workers 2] [--rounds 3] [--threads 2] [--video-size 128] [--seconds 4]

Writes `--clips` synthetic mp4 clips (`--video-size` square, `--seconds` long, with audio) and an MSRVTT-QA
annotation file with `--questions-per-clip` questions per clip, builds a cache with `mirasol_hf.preprocess`, and times
in one process, alternating the measurements round after round (median, min-max over `--rounds`):

* clips/s of decoding on the fly (MirasolDataCollator in a DataLoader with `--workers` workers), of reading the
  cache (the same DataLoader over the cache), and of the training step (forward with labels, backward, AdamW) of the
  preset on `--batch-clips` clips with all their questions;
* questions/s of the whole pipeline (DataLoader decoding in workers feeding training steps) grouped by clip
  (`media_index`: one decode and one encoding per clip) and one row per question (a decode and an encoding per
  question), over the same questions.

Wall and CPU seconds (this process and its finished DataLoader workers) are printed, with the load average.
`--media-only` measures decoding and the cache alone (no model is built), e.g. at a large preset's media size.
"""

import argparse
import json
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from mirasol_hf import MirasolConfig, MirasolForConditionalGeneration, MirasolProcessor, build_tokenizer
from mirasol_hf.data import group_by_clip, load_msrvtt_qa
from mirasol_hf.preprocess import load_cache, preprocess
from mirasol_hf.synthetic import generate_clip, write_mp4
from mirasol_hf.training import TRAINING_STAGES, MirasolDataCollator, apply_training_stage


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _write_data(root: Path, clips: int, questions_per_clip: int, size: int, seconds: float) -> tuple[Path, Path]:
    videos = root / "videos"
    videos.mkdir(parents=True)
    records = []
    for index in range(clips):
        clip = generate_clip((0, index), duration=seconds, fps=8.0, size=size)
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
    parser.add_argument("--stage", default="finetune", choices=TRAINING_STAGES,
                        help="which weights the training step trains (pretrain: the text decoder frozen, as the paper)")
    parser.add_argument("--checkpointing", action="store_true",
                        help="activation checkpointing in the training step (what long clips or large presets need)")
    parser.add_argument("--media-only", action="store_true",
                        help="decoding and the cache only, no model (for presets too large to train here)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    root = Path(tempfile.mkdtemp(prefix="mirasol_data_pipeline_"))
    annotation, videos = _write_data(root, args.clips, args.questions_per_clip, args.video_size, args.seconds)
    rows = load_msrvtt_qa(annotation, videos)
    clips = group_by_clip(rows)
    model, processor = _model_and_processor(args.preset, list(rows["question"]) + list(rows["answer"]),
                                            build_model=not args.media_only)
    preprocess(rows, processor, root / "cache", num_proc=args.workers)
    cache = load_cache(root / "cache")
    collator = MirasolDataCollator(processor)
    questions = len(rows)
    batch_questions = args.batch_clips * args.questions_per_clip

    def loader(dataset, batch_size):
        return DataLoader(dataset, batch_size=batch_size, collate_fn=collator, num_workers=args.workers)

    def read_all(dataset):
        for _ in loader(dataset, args.batch_clips):
            pass
        return len(dataset)


    def steps():
        for _ in range(2):
            _train_step(model, optimizer, grouped_batch)
        return 2 * args.batch_clips

    def pipeline(dataset, batch_size):
        for batch in loader(dataset, batch_size):
            _train_step(model, optimizer, batch)
        return questions

    measurements = {
        f"decode on the fly ({args.workers} workers)": ("clips", lambda: read_all(clips)),
        f"read the cache ({args.workers} workers)": ("clips", lambda: read_all(cache)),
    }
    if not args.media_only:
        # lr 0: every measurement times the same weights
        apply_training_stage(model, args.stage)
        if args.checkpointing:
            model.activation_checkpointing_enable()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.0)
        grouped_batch = next(iter(loader(cache, args.batch_clips)))
        measurements.update({
            f"training step, {args.preset}, {args.stage} "
            f"({args.batch_clips} clips x {args.questions_per_clip} questions)":
                ("clips", steps),
            "decode + step, grouped by clip": ("questions", lambda: pipeline(clips, args.batch_clips)),
            "decode + step, one row per question": ("questions", lambda: pipeline(rows, batch_questions)),
        })
        _train_step(model, optimizer, grouped_batch)  # warm-up
    results = {name: [] for name in measurements}
    for round_index in range(args.rounds):
        names = list(measurements) if round_index % 2 == 0 else list(reversed(measurements))
        for name in names:
            unit, run = measurements[name]
            wall, cpu = time.perf_counter(), _cpu_seconds()
            count = run()
            wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
            results[name].append((count / wall, cpu, wall, count / cpu))

    print(f"{args.clips} clips of {args.seconds:g} s at {args.video_size}x{args.video_size}, "
          f"{args.questions_per_clip} questions each ({questions}); preset {args.preset} "
          f"({processor.num_frames} frames at {processor.image_size}); {args.threads} threads; "
          f"median (min-max) of {args.rounds} alternating rounds; load average {os.getloadavg()[0]:.1f}")
    print(f"| {'measurement':<68} | {'per wall second':>28} | {'per CPU second':>14} | {'wall s':>6} | {'CPU s':>6} |")
    print(f"|{'-' * 70}|{'-' * 29}:|{'-' * 15}:|{'-' * 7}:|{'-' * 7}:|")
    medians, cpu_medians = {}, {}
    for name, samples in results.items():
        unit = measurements[name][0]
        rates = [rate for rate, _, _, _ in samples]
        medians[name] = statistics.median(rates)
        cpu_medians[name] = statistics.median(cpu_rate for _, _, _, cpu_rate in samples)
        rate = f"{medians[name]:.1f} ({min(rates):.1f}-{max(rates):.1f}) {unit}/s"
        wall = statistics.median(w for _, _, w, _ in samples)
        cpu = statistics.median(c for _, c, _, _ in samples)
        print(f"| {name:<68} | {rate:>28} | {cpu_medians[name]:>14.1f} | {wall:>6.2f} | {cpu:>6.2f} |")
    for label, values in (("wall", medians), ("CPU", cpu_medians)):
        if args.media_only:
            decode, cached = values.values()
            print(f"per {label} second: the cache {cached / decode:.1f}x decoding")
            continue
        decode, cached, step, grouped, per_question = values.values()
        slowest = min((decode, "decoding on the fly"), (cached, "reading the cache"), (step, "the training step"))
        print(f"per {label} second: bottleneck {slowest[1]}; decoding {decode / step:.1f}x and the cache "
              f"{cached / step:.1f}x the step's clips; the cache {cached / decode:.1f}x decoding; grouped by clip "
              f"{grouped / per_question:.2f}x the questions of one row per question")
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
