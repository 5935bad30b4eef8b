"""Many questions about one video: one pipeline call that encodes the video once vs independent calls.

    python benchmarks/ask_many.py [--model PATH] [--frames 128] [--questions 10] [--repeats 3]

Writes a synthetic clip (mp4, H.264 + AAC) long enough for the frame count, then times, in one process:
  * one question:           pipe(video, question)
  * N questions, one call:  pipe(video, [q1, ..., qN])  (the video is read and encoded once)
  * N independent calls:    [pipe(video, q) for q in questions]
Each answer is generated to exactly `--new-tokens` tokens so every setting does the same decoding work. Times are the
best of `--repeats`. The model defaults to a small random one; random weights do not change
the cost.
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch
from transformers import pipeline

from mirasol_hf import MirasolConfig, MirasolForConditionalGeneration, MirasolProcessor, build_tokenizer
from mirasol_hf.synthetic import generate_clip, write_mp4

FPS = 8
FRAMES_PER_CHUNK = 4


def _random_checkpoint(folder: Path, frames: int) -> Path:
    questions = [f"question number {i} about the video?" for i in range(20)]
    tokenizer = build_tokenizer(questions + ["red", "beep", "two"], vocab_size=200)
    config = MirasolConfig.from_preset(
        "tiny",
        num_chunks=frames // FRAMES_PER_CHUNK,
        frames_per_chunk=FRAMES_PER_CHUNK,
        video_config={"image_size": 64, "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128},
        text_config={"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
                     "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id},
    )
    torch.manual_seed(0)
    MirasolForConditionalGeneration(config).save_pretrained(folder)
    MirasolProcessor.from_model_config(config, tokenizer).save_pretrained(folder)
    return folder


def _best_time(function, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint folder (default: a small random model)")
    parser.add_argument("--frames", type=int, default=128)
    parser.add_argument("--questions", type=int, default=10)
    parser.add_argument("--new-tokens", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        model_path = args.model or _random_checkpoint(folder / "model", args.frames)
        clip = generate_clip(0, duration=args.frames / FPS, fps=FPS)
        video = write_mp4(clip, folder / "clip.mp4")
        pipe = pipeline("video-question-answering", model=str(model_path))
        questions = [f"question number {i} about the video?" for i in range(args.questions)]
        settings = {"num_frames": args.frames, "max_new_tokens": args.new_tokens, "min_new_tokens": args.new_tokens}

        pipe(video, questions[0], **settings)  # warm-up
        one = _best_time(lambda: pipe(video, questions[0], **settings), args.repeats)
        together = _best_time(lambda: pipe(video, questions, **settings), args.repeats)
        separate = _best_time(lambda: [pipe(video, q, **settings) for q in questions], args.repeats)

    n = args.questions
    print(f"{args.frames} frames, {n} questions, {args.new_tokens} new tokens each, torch threads {torch.get_num_threads()}")
    print(f"| setting | seconds | vs one question |")
    print(f"|---|---:|---:|")
    print(f"| 1 question | {one:.3f} | 1.00x |")
    print(f"| {n} questions, one call (video encoded once) | {together:.3f} | {together / one:.2f}x |")
    print(f"| {n} independent calls | {separate:.3f} | {separate / one:.2f}x |")
    print(f"\n{n} questions in one call cost {together / one:.2f}x one question (target < 2x); "
          f"{separate / together:.1f}x faster than {n} independent calls")


if __name__ == "__main__":
    main()
