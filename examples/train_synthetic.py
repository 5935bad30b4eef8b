"""Train a small Mirasol model from scratch on synthetic audio-visual QA, on CPU, and evaluate it on unseen clips.

The clips come from `mirasol_hf.synthetic` (moving shapes, sounds, five question kinds; see docs/synthetic.md). The
script trains on clips from `--train-seed`, then reports exact match per question kind on clips from `--test-seed`,
next to the chance level of each kind, for:

* the chunked model (`--num-chunks` chunks of `--frames-per-chunk` frames, `--tokens-per-chunk` combiner tokens each);
* the same model with the audio removed at test time (`audio_chunk_mask` all False, as for a video without an audio
  track): audio and counting questions should fall to chance, visual and temporal ones should stay;
* a one-chunk baseline trained the same way, with the same frames and the same total number of combiner tokens
  (one chunk of all frames, `num_chunks * tokens_per_chunk` tokens), as in the paper's Table 1a: temporal and
  audio-visual questions should be worse.

Training batches whole clips with all their questions (`media_index`: each clip encoded once per step), standardizes
pixels and log-mel with the training clips' statistics (saved with the processor), and starts the cross-attention
gates open (`--gate-init`), since the decoder is trained from scratch.

    python examples/train_synthetic.py --save my_model

`--save DIR` writes the chunked model and its processor (`save_pretrained` of both), loadable with
`MirasolForConditionalGeneration.from_pretrained(DIR)` and `MirasolProcessor.from_pretrained(DIR)`.
"""

import argparse
import json
import math
import os
import time
from collections import defaultdict

import numpy as np
import torch

from mirasol_hf import MirasolConfig, MirasolForConditionalGeneration
from mirasol_hf.processing_mirasol import MirasolProcessor
from mirasol_hf.synthetic import ANSWER_VOCABULARY, QUESTION_KINDS, chance_accuracy, generate_dataset
from mirasol_hf.tokenization_mirasol import build_tokenizer


MEDIA_KEYS = ("pixel_values_videos", "video_chunk_mask", "input_features", "audio_chunk_mask")
TEXT_KEYS = ("input_ids", "attention_mask", "labels")
ALL_KINDS = "all"
NORMALIZATION_CLIPS = 200  # training clips the input statistics are measured on


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    data = parser.add_argument_group("data")
    data.add_argument("--train-clips", type=int, default=3000)
    data.add_argument("--test-clips", type=int, default=400)
    data.add_argument("--train-seed", type=int, default=0)
    data.add_argument("--test-seed", type=int, default=1)
    data.add_argument(
        "--questions-per-kind", type=int, default=2, help="questions of each kind per training clip (test: 1)"
    )
    model = parser.add_argument_group("model")
    model.add_argument("--num-chunks", type=int, default=4, help="chunks per clip (the generator's segments)")
    model.add_argument("--frames-per-chunk", type=int, default=8)
    model.add_argument("--tokens-per-chunk", type=int, default=4, help="combiner output tokens per chunk (m)")
    model.add_argument("--image-size", type=int, default=32)
    model.add_argument("--hidden-size", type=int, default=64, help="encoders, combiner and latent model")
    model.add_argument("--text-hidden-size", type=int, default=128)
    model.add_argument("--num-layers", type=int, default=2)
    model.add_argument("--num-mel-bins", type=int, default=32)
    model.add_argument("--audio-frames-per-chunk", type=int, default=16)
    model.add_argument("--video-tube", default="2,8,8", help="t,h,w of the one video tube (kernel = stride)")
    model.add_argument("--audio-patch", default="8,16", help="mel,time of the audio patches")
    model.add_argument("--gate-init", type=float, default=1.0, help="cross-attention gates at the start (0: closed)")
    train = parser.add_argument_group("training")
    train.add_argument("--steps", type=int, default=3000)
    train.add_argument("--clips-per-batch", type=int, default=16, help="clips per step, each with all its questions")
    train.add_argument("--learning-rate", type=float, default=2e-3)
    train.add_argument("--warmup-steps", type=int, default=200)
    train.add_argument("--weight-decay", type=float, default=0.01)
    train.add_argument("--text-loss-weight", type=float, default=10.0)
    train.add_argument("--latent-loss-weight", type=float, default=1.0)
    train.add_argument("--reconstruction-loss-weight", type=float, default=1.0)
    train.add_argument("--seed", type=int, default=0, help="model initialization and batch order")
    train.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    train.add_argument("--log-every", type=int, default=100)
    run = parser.add_argument_group("run")
    run.add_argument("--skip-one-chunk", action="store_true", help="skip the one-chunk baseline")
    run.add_argument("--eval-batch-size", type=int, default=50, help="test clips per generate() batch")
    run.add_argument("--output-dir", default=None, help="write results.json (tables, times, settings) here")
    run.add_argument("--save", default=None, metavar="DIR", help="save the chunked model and its processor here")
    return parser.parse_args(argv)


def build_config(args, vocab_size: int, num_chunks: int, frames_per_chunk: int, tokens_per_chunk: int,
                 audio_frames_per_chunk: int) -> MirasolConfig:
    """The "tiny" preset resized for the synthetic clips; sub-config dicts merge into the preset's."""
    hidden, layers = args.hidden_size, args.num_layers
    encoder = {"hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": 4, "intermediate_size": 2 * hidden}
    text_hidden = args.text_hidden_size
    # Few, large tokens: a shape fills much of an 8x8 patch of a 32x32 frame and a sound one mel band of a chunk, so
    # each token's content stands out from its position embedding (many small tokens trained far slower here).
    tube = [int(size) for size in args.video_tube.split(",")]
    return MirasolConfig.from_preset(
        "tiny",
        video_config={**encoder, "image_size": args.image_size,
                      "tubes": [{"kernel": tube, "stride": tube, "offset": [0, 0, 0]}]},
        audio_config={**encoder, "num_mel_bins": args.num_mel_bins,
                      "patch_size": [int(size) for size in args.audio_patch.split(",")]},
        combiner_config={**encoder, "num_output_tokens": tokens_per_chunk},
        latent_config=encoder,
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": text_hidden,
            "intermediate_size": 2 * text_hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "cross_attention_layers": list(range(layers)),
            "cross_attention_gate_init": args.gate_init,
            "max_position_embeddings": 64,
        },
        num_chunks=num_chunks,
        frames_per_chunk=frames_per_chunk,
        audio_frames_per_chunk=audio_frames_per_chunk,
        text_loss_weight=args.text_loss_weight,
        latent_loss_weight=args.latent_loss_weight,
        reconstruction_loss_weight=args.reconstruction_loss_weight,
    )


def standardize_inputs(processor, clips) -> None:
    """Set the processor's pixel and log-mel normalization to the statistics of `clips` (saved with it).

    The clips are dark frames with small bright shapes and mostly quiet audio: with the generic mean/std of 0.5 the
    frames are nearly constant and the log-mel sits around -10, and the encoders' first layers see little else.
    """
    frames = np.concatenate([clip.frames for clip in clips]).astype(np.float64) / 255.0  # (N, H, W, 3)
    processor.image_mean = frames.mean(axis=(0, 1, 2)).tolist()
    processor.image_std = frames.std(axis=(0, 1, 2)).tolist()
    feature_extractor = processor.feature_extractor
    feature_extractor.feature_mean = feature_extractor.feature_std = None
    # Only the audio: a clip's chunks split it into equal windows, as the frames (sampled over the whole clip) do.
    audio = feature_extractor([clip.waveform for clip in clips], num_chunks=processor.num_chunks)
    mean, std = feature_extractor.compute_normalization(audio["input_features"], audio["audio_chunk_mask"])
    feature_extractor.feature_mean, feature_extractor.feature_std = mean, std


def encode_clips(processor, clips, batch_size: int = 64) -> dict:
    """Processor outputs for every clip's media and every question, computed once: `media` has one row per clip,
    `text` one row per question, `clip_index` maps each question to its clip's row."""
    media = defaultdict(list)
    for start in range(0, len(clips), batch_size):
        batch = processor(videos=[clip.as_video_input() for clip in clips[start : start + batch_size]])
        for key in MEDIA_KEYS:
            media[key].append(batch[key])
    questions = [(index, question) for index, clip in enumerate(clips) for question in clip.questions]
    text = processor(text=[q.question for _, q in questions], answers=[q.answer for _, q in questions])
    return {
        "media": {key: torch.cat(values) for key, values in media.items()},
        "text": {key: text[key] for key in TEXT_KEYS},
        "clip_index": torch.tensor([index for index, _ in questions]),
        "questions": [q for _, q in questions],
    }


def train(model, data: dict, args) -> float:
    """AdamW with linear warmup and cosine decay; returns seconds taken.

    Each step takes `--clips-per-batch` random clips with all their questions: a clip is encoded once and each of its
    questions attends to it through `media_index`, so a step costs about one encoding per clip, not per question.
    """
    generator = torch.Generator().manual_seed(args.seed)
    decay = [p for name, p in model.named_parameters() if p.ndim >= 2 and "embed" not in name]
    no_decay = [p for name, p in model.named_parameters() if p.ndim < 2 or "embed" in name]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.learning_rate,
    )

    def learning_rate_factor(step):
        if step < args.warmup_steps:
            return (step + 1) / args.warmup_steps
        progress = (step - args.warmup_steps) / max(1, args.steps - args.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate_factor)
    num_clips = len(data["media"]["pixel_values_videos"])
    rows_of_clip = [torch.nonzero(data["clip_index"] == clip)[:, 0] for clip in range(num_clips)]
    model.train()
    start = time.perf_counter()
    running = defaultdict(float)
    order, position = torch.randperm(num_clips, generator=generator), 0
    for step in range(args.steps):
        if position + args.clips_per_batch > num_clips:
            order, position = torch.randperm(num_clips, generator=generator), 0
        clips = order[position : position + args.clips_per_batch]
        position += args.clips_per_batch
        rows = torch.cat([rows_of_clip[clip] for clip in clips.tolist()])
        media_index = torch.repeat_interleave(  # each question -> its clip's row in this batch
            torch.arange(len(clips)), torch.tensor([len(rows_of_clip[clip]) for clip in clips.tolist()])
        )
        batch = {key: value[clips] for key, value in data["media"].items()}
        batch.update({key: value[rows] for key, value in data["text"].items()})
        output = model(**batch, media_index=media_index)
        optimizer.zero_grad(set_to_none=True)
        output.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        for name in ("loss", "text_loss", "latent_loss", "reconstruction_loss"):
            running[name] += getattr(output, name).item()
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            count = (step % args.log_every) + 1
            losses = "  ".join(f"{name} {total / count:.4f}" for name, total in running.items())
            print(f"  step {step + 1:5d}/{args.steps}  {losses}  ({time.perf_counter() - start:.0f} s)", flush=True)
            running.clear()
    model.eval()
    return time.perf_counter() - start


def normalize(answer: str) -> str:
    return " ".join(answer.lower().split())


@torch.no_grad()
def evaluate(model, processor, data: dict, args, remove_audio: bool = False) -> dict:
    """Exact match per question kind (and "all"), answering with greedy `generate()`.

    Each clip's media is encoded once (`encode_media`) and its latents reused for all its questions.
    """
    model.eval()
    max_answer_tokens = max(len(processor.tokenizer(answer, add_special_tokens=False)["input_ids"])
                            for answers in ANSWER_VOCABULARY.values() for answer in answers)
    correct, total, in_vocabulary = defaultdict(int), defaultdict(int), 0
    num_clips = len(data["media"]["pixel_values_videos"])
    predictions = []
    for start in range(0, num_clips, args.eval_batch_size):
        clips = slice(start, start + args.eval_batch_size)
        media = {key: value[clips] for key, value in data["media"].items()}
        if remove_audio:
            media["audio_chunk_mask"] = torch.zeros_like(media["audio_chunk_mask"])
        encoded = model.encode_media(**media)
        rows = torch.nonzero((data["clip_index"] >= start) & (data["clip_index"] < start + args.eval_batch_size))[:, 0]
        questions = [data["questions"][row] for row in rows.tolist()]
        prompts = processor(text=[question.question for question in questions])
        clip_rows = data["clip_index"][rows] - start
        generated = model.generate(
            input_ids=prompts["input_ids"],
            attention_mask=prompts["attention_mask"],
            media_latents=encoded.media_latents[clip_rows],
            media_chunk_mask=encoded.media_chunk_mask[clip_rows],
            max_new_tokens=max_answer_tokens + 1,
            do_sample=False,
        )
        answers = processor.post_process_answer(generated, prompts["input_ids"])
        for question, answer in zip(questions, answers):
            hit = normalize(answer) == normalize(question.answer)
            in_vocabulary += normalize(answer) in ANSWER_VOCABULARY[question.kind]
            for kind in (question.kind, ALL_KINDS):
                correct[kind] += hit
                total[kind] += 1
            predictions.append(answer)
    accuracy = {kind: correct[kind] / total[kind] for kind in total}
    accuracy["in_vocabulary"] = in_vocabulary / total[ALL_KINDS]
    return accuracy


def chance_levels(questions) -> dict:
    levels = {kind: chance_accuracy([q for q in questions if q.kind == kind]) for kind in QUESTION_KINDS}
    levels[ALL_KINDS] = chance_accuracy(questions)
    return levels


def print_table(columns: dict, counts: dict) -> None:
    """Rows: question kinds; columns: exact match (%) of each setting."""
    names = list(columns)
    header = f"| {'kind':<13}| {'questions':>9} | " + " | ".join(f"{name:>14}" for name in names) + " |"
    print(header)
    print("|" + "-" * 14 + "|" + "-" * 10 + ":|" + "|".join("-" * 15 + ":" for _ in names) + "|")
    for kind in (*QUESTION_KINDS, ALL_KINDS):
        cells = " | ".join(f"{100 * columns[name][kind]:>14.1f}" for name in names)
        print(f"| {kind:<13}| {counts[kind]:>9} | {cells} |")


def run_model(name, args, tokenizer, train_clips, test_clips, num_chunks, frames_per_chunk, tokens_per_chunk,
              audio_frames_per_chunk):
    """Build, train and evaluate one model; returns (model, processor, test accuracy, training seconds)."""
    config = build_config(args, len(tokenizer), num_chunks, frames_per_chunk, tokens_per_chunk, audio_frames_per_chunk)
    processor = MirasolProcessor.from_model_config(config, tokenizer)
    standardize_inputs(processor, train_clips[:NORMALIZATION_CLIPS])
    start = time.perf_counter()
    train_data = encode_clips(processor, train_clips)
    test_data = encode_clips(processor, test_clips)
    print(f"[{name}] processed {len(train_clips)} + {len(test_clips)} clips in {time.perf_counter() - start:.0f} s")
    torch.manual_seed(args.seed)
    model = MirasolForConditionalGeneration(config)
    print(f"[{name}] {sum(p.numel() for p in model.parameters()):,} parameters; training on "
          f"{len(train_data['clip_index'])} questions")
    seconds = train(model, train_data, args)
    print(f"[{name}] trained in {seconds / 60:.1f} min")
    results = {name: evaluate(model, processor, test_data, args)}
    return model, processor, test_data, results, seconds


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    train_clips = generate_dataset(args.train_clips, args.train_seed, questions_per_kind=args.questions_per_kind)
    test_clips = generate_dataset(args.test_clips, args.test_seed)
    texts = [q.question for clip in train_clips for q in clip.questions]
    texts += [answer for answers in ANSWER_VOCABULARY.values() for answer in answers]
    tokenizer = build_tokenizer(texts, vocab_size=256)

    chunked = "chunked"
    model, processor, test_data, results, train_seconds = run_model(
        chunked, args, tokenizer, train_clips, test_clips, args.num_chunks, args.frames_per_chunk,
        args.tokens_per_chunk, args.audio_frames_per_chunk,
    )
    results["audio removed"] = evaluate(model, processor, test_data, args, remove_audio=True)
    times = {chunked: train_seconds}
    if args.save:
        model.save_pretrained(args.save)
        processor.save_pretrained(args.save)
        print(f"saved the chunked model and its processor to {args.save}")
    if not args.skip_one_chunk:
        name = "one chunk"
        _, _, _, one_chunk_results, times[name] = run_model(
            name, args, tokenizer, train_clips, test_clips, 1, args.num_chunks * args.frames_per_chunk,
            args.num_chunks * args.tokens_per_chunk, args.num_chunks * args.audio_frames_per_chunk,
        )
        results.update(one_chunk_results)

    questions = [q for clip in test_clips for q in clip.questions]
    results["chance"] = chance_levels(questions)
    counts = {kind: sum(q.kind == kind for q in questions) for kind in QUESTION_KINDS}
    counts[ALL_KINDS] = len(questions)
    print(f"\nexact match (%) on {len(test_clips)} unseen clips (seed {args.test_seed}):")
    print_table(results, counts)
    for name, seconds in times.items():
        print(f"training time, {name}: {seconds / 60:.1f} min")
    for name, accuracy in results.items():
        if "in_vocabulary" in accuracy:
            print(f"answers in the answer vocabulary, {name}: {100 * accuracy['in_vocabulary']:.1f}%")
    if args.output_dir:
        os.makedirs(args.output_dir, exist_ok=True)
        with open(os.path.join(args.output_dir, "results.json"), "w") as file:
            json.dump({"args": vars(args), "exact_match": results, "training_seconds": times}, file, indent=2)


if __name__ == "__main__":
    main()
