"""Many questions about one video: one pipeline call that encodes the video once vs independent calls.

    python benchmarks/ask_many.py [--model PATH] [--frames 128] [--questions 10] [--rounds 5]

Writes a synthetic clip (mp4, H.264 + AAC) long enough for the frame count, then times, in one process:
  * one question:           pipe(video, question)
  * N questions, one call:  pipe(video, [q1, ..., qN])  (the video is read and encoded once)
  * N independent calls:    [pipe(video, q) for q in questions]
Each answer is generated to exactly `--new-tokens` tokens so every setting does the same decoding work. The settings
run in alternating rounds; the table gives median (min-max) wall and CPU time and the medians of the per-round ratios
to one question (benchmarks/_timing.py), with the load average. The model defaults to a small random one; random
weights do not change the cost.
"""

import argparse
import tempfile
from pathlib import Path

import torch
from transformers import pipeline

from _timing import compare, format_ratio, print_table, ratios
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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint folder (default: a small random model)")
    parser.add_argument("--frames", type=int, default=128)
    parser.add_argument("--questions", type=int, default=10)
    parser.add_argument("--new-tokens", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        model_path = args.model or _random_checkpoint(folder / "model", args.frames)
        clip = generate_clip(0, duration=args.frames / FPS, fps=FPS)
        video = write_mp4(clip, folder / "clip.mp4")
        pipe = pipeline("video-question-answering", model=str(model_path))
        questions = [f"question number {i} about the video?" for i in range(args.questions)]
        settings = {"num_frames": args.frames, "max_new_tokens": args.new_tokens, "min_new_tokens": args.new_tokens}

        one_call = f"{args.questions} questions, one call (video encoded once)"
        results = compare(
            {
                "1 question": lambda: pipe(video, questions[0], **settings),
                one_call: lambda: pipe(video, questions, **settings),
                f"{args.questions} independent calls": lambda: [pipe(video, q, **settings) for q in questions],
            },
            rounds=args.rounds,
        )

    n = args.questions
    print(f"{args.frames} frames, {n} questions, {args.new_tokens} new tokens each, torch threads {torch.get_num_threads()}")
    print_table(results, baseline="1 question")
    together, separate = list(results)[1:]
    print(f"\n{n} questions in one call cost {format_ratio(ratios(results, together, '1 question'))} one question "
          f"(target < 2x; CPU {format_ratio(ratios(results, together, '1 question', 'cpu'))}); "
          f"{n} independent calls cost {format_ratio(ratios(results, separate, together))} the one call")


if __name__ == "__main__":
    main()
