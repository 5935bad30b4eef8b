"""Train a small Mirasol model from scratch on synthetic audio-visual QA, on CPU, and evaluate it on unseen clips.

The clips come from `mirasol_hf.synthetic` (moving shapes, sounds, five question kinds; see docs/synthetic.md). The
script trains on clips from `--train-seed`, then reports exact match per question kind on clips from `--test-seed`,
next to the chance level of each kind, for:

* the chunked model (`--num-chunks` chunks of `--frames-per-chunk` frames, `--tokens-per-chunk` combiner tokens each);
* the same model with the audio removed at test time (`audio_chunk_mask` all False, as for a video without an audio
  track): audio and counting questions should fall to chance, visual and temporal ones should stay;
* the same model with the video removed (`video_chunk_mask` all False, as for an audio-only file): with
  `--video-dropout` training, audio and counting questions should stay, the others fall to chance;
* a one-chunk baseline trained the same way, with the same frames and the same total number of combiner tokens
  (one chunk of all frames, `num_chunks * tokens_per_chunk` tokens), as in the paper's Table 1a: temporal and
  audio-visual questions should be worse.

Training has two stages, for every model alike:

1. `--pretrain-steps`: the media path (encoders, combiner, latent model) learns to tell which shapes and sounds are
   in each chunk (multi-label, from the generator's event labels; for one chunk, what is in the whole clip). This
   stands in for the pretrained video and audio encoders the paper starts from. No question is seen.
2. `--steps`: question answering (the text loss). The parts in `--frozen-in-stage-2` (by default the encoders and
   the combiner, as pretrained backbones are often kept frozen) stay as stage 1 left them; the rest learns, with
   the stage-1 event loss kept on (`--event-loss-weight`) so the latents keep what they know.

Each step batches whole clips with all their questions (`media_index`: each clip encoded once per step). Pixels and
log-mel are standardized with the training clips' statistics (saved with the processor), the cross-attention gates
start open (`--gate-init`), and the weights start at `--initializer-range` 0.1: with transformers' usual 0.02 the
attention logits of these 64-128 wide layers start near zero, and the text decoder's cross-attention stayed
unselective for thousands of steps (it answered what an average over the chunks tells, and nothing else).

    python examples/train_synthetic.py --save my_model

`--save DIR` writes the chunked model and its processor (`save_pretrained` of both), loadable with
`MirasolForConditionalGeneration.from_pretrained(DIR)` and `MirasolProcessor.from_pretrained(DIR)`, with the test
table in its model card. `--package` leaves out the code files and the `auto_map` / `custom_pipelines` entries that
`save_pretrained` adds for `trust_remote_code` loading: that is how `mirasol_hf/default_model` (the package's `DEFAULT_MODEL`) was written.
"""

import argparse
import json
import math
import os
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mirasol_hf import MirasolConfig, MirasolForConditionalGeneration
from mirasol_hf.hub import write_model_card
from mirasol_hf.processing_mirasol import DEFAULT_PROMPT_TEMPLATE, MirasolProcessor
from mirasol_hf.synthetic import (
    ANSWER_VOCABULARY,
    EVENT_LABELS,
    QUESTION_KINDS,
    SHAPE_LABELS,
    SOUND_QUESTION_KINDS,
    chance_accuracy,
    generate_dataset,
)
from mirasol_hf.tokenization_mirasol import build_tokenizer


MEDIA_KEYS = ("pixel_values_videos", "video_chunk_mask", "input_features", "audio_chunk_mask")
TEXT_KEYS = ("input_ids", "attention_mask", "labels")
ALL_KINDS = "all"
NORMALIZATION_CLIPS = 200  # training clips the input statistics are measured on
MEDIA_MODULES = ("video_encoder", "audio_encoder", "combiner", "latent_model")
RUN_ONLY_OPTIONS = ("output_dir", "skip_one_chunk")  # change what else runs, not the saved model: not in its card


def frozen_modules(value: str) -> tuple:
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    unknown = [name for name in names if name not in MEDIA_MODULES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown media modules {unknown}; choose from {', '.join(MEDIA_MODULES)}")
    return names


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    data = parser.add_argument_group("data")
    data.add_argument("--train-clips", type=int, default=4000)
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
    model.add_argument(
        "--initializer-range", type=float, default=0.1,
        help="std of the initial weights (transformers' 0.02 suits widths near 1000; see docs/synthetic.md)",
    )
    train = parser.add_argument_group("training")
    train.add_argument(
        "--pretrain-steps", type=int, default=400,
        help="stage 1: steps training the media path alone to tell what is in each chunk (0: skip)",
    )
    train.add_argument("--pretrain-clips-per-batch", type=int, default=32)
    train.add_argument(
        "--event-loss-weight", type=float, default=1.0,
        help="stage 2: weight of the same per-chunk event loss, next to the question answering loss (0: off)",
    )
    train.add_argument("--steps", type=int, default=2000, help="stage 2: question answering steps")
    train.add_argument(
        "--pixel-noise", type=float, default=0.1,
        help="std of a random per-clip colour offset and of per-pixel noise added to the standardized frames "
        "in training (both stages): video codecs shift colours a little, and without it mp4 input broke the model",
    )
    train.add_argument(
        "--audio-dropout", type=float, default=0.0,
        help="share of training clips whose audio is removed (both stages), as in videos without an audio track",
    )
    train.add_argument(
        "--video-dropout", type=float, default=0.2,
        help="share of training clips whose frames are removed (both stages), as in audio-only files; they keep only "
        f"their sound questions ({', '.join(SOUND_QUESTION_KINDS)}). 0: every clip keeps its frames",
    )
    train.add_argument("--clips-per-batch", type=int, default=16, help="clips per step, each with all its questions")
    train.add_argument("--learning-rate", type=float, default=2e-3)
    train.add_argument("--warmup-steps", type=int, default=200)
    train.add_argument("--weight-decay", type=float, default=0.01)
    train.add_argument("--text-loss-weight", type=float, default=10.0)
    train.add_argument(
        "--frozen-in-stage-2", default="video_encoder,audio_encoder,combiner", type=frozen_modules,
        help=f"comma-separated parts of the media path left as stage 1 made them (of {', '.join(MEDIA_MODULES)}; "
        "'' trains everything)",
    )
    train.add_argument("--latent-loss-weight", type=float, default=1.0, help="stage 2")
    train.add_argument("--reconstruction-loss-weight", type=float, default=1.0, help="stage 2")
    train.add_argument("--seed", type=int, default=0, help="model initialization and batch order")
    train.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    train.add_argument("--log-every", type=int, default=100)
    run = parser.add_argument_group("run")
    run.add_argument("--skip-one-chunk", action="store_true", help="skip the one-chunk baseline")
    run.add_argument("--skip-chunked", action="store_true", help="train and report the one-chunk baseline only")
    run.add_argument("--eval-batch-size", type=int, default=50, help="test clips per generate() batch")
    run.add_argument("--output-dir", default=None, help="write results.json (tables, times, settings) here")
    run.add_argument("--save", default=None, metavar="DIR", help="save the chunked model and its processor here")
    run.add_argument(
        "--package", action="store_true", help="with --save: no code files, auto_map or custom_pipelines (as the shipped default model)"
    )
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
            "initializer_range": args.initializer_range,  # every module's initial std, not only the decoder's
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
    `text` one row per question, `clip_index` maps each question to its clip's row; `event_labels` (clips, chunks,
    len(EVENT_LABELS)) say what is in each chunk; `sound_question` marks the questions the sound alone answers;
    `no_video_pixels` (3, S, S) is a frame of an audio-only file as the processor gives it (black, normalized)."""
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
        "event_labels": torch.from_numpy(np.stack([clip.event_labels(processor.num_chunks) for clip in clips])),
        "sound_question": torch.tensor([q.kind in SOUND_QUESTION_KINDS for _, q in questions]),
        "no_video_pixels": torch.from_numpy(media_pixels_of_black_frames(processor)),
    }


def media_pixels_of_black_frames(processor) -> np.ndarray:
    """(3, S, S): the `pixel_values_videos` frame the processor gives where a file has no video (black frames)."""
    size = processor.image_size
    return processor.normalize_frames(np.zeros((1, 1, size, size, 3), np.uint8))[0, 0]


class ChunkEventHead(torch.nn.Module):
    """Logits of every `EVENT_LABELS` entry for each chunk, from the mean of its latents: (B, T, m, d) -> (B, T, E).

    A training aid (stage 1 and the event loss of stage 2), not part of the saved model.
    """

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = torch.nn.Linear(hidden_size, len(EVENT_LABELS))

    def forward(self, media_latents: torch.Tensor) -> torch.Tensor:
        return self.linear(media_latents.mean(dim=2))


def event_loss(head: ChunkEventHead, media_latents: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of each chunk's events, summed over `EVENT_LABELS` and averaged over chunks."""
    logits = head(media_latents)
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="none").sum(-1).mean()


def media_parameters(model) -> list:
    """The media path: video and audio encoders, combiner and latent model (not the text decoder)."""
    return [parameter for name in MEDIA_MODULES for parameter in getattr(model.model, name).parameters()]


def pretrain_media(model, head: ChunkEventHead, data: dict, args) -> float:
    """Stage 1: train the media path and `head` to tell which shapes and sounds are in each chunk; returns seconds.

    The paper starts from pretrained video and audio encoders; here nothing is pretrained, so the media path first
    learns what its encoders would know (multi-label classification of each chunk's events, with the generator's
    labels), at the clip level when there is one chunk. Questions are not used in this stage.
    """
    generator = torch.Generator().manual_seed(args.seed + 1)
    optimizer = torch.optim.AdamW(
        media_parameters(model) + list(head.parameters()), lr=args.learning_rate, weight_decay=args.weight_decay
    )
    num_clips = len(data["event_labels"])
    model.train()
    start, running = time.perf_counter(), 0.0
    for step in range(args.pretrain_steps):
        clips = torch.randint(num_clips, (args.pretrain_clips_per_batch,), generator=generator)
        batch, labels, _ = media_batch(data, clips, args, generator)
        encoded = model.model.encode_media(**batch)
        loss = event_loss(head, encoded.media_latents, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(media_parameters(model), 1.0)
        optimizer.step()
        running += loss.item()
        if (step + 1) % args.log_every == 0 or step + 1 == args.pretrain_steps:
            count = (step % args.log_every) + 1
            print(f"  pretrain {step + 1:5d}/{args.pretrain_steps}  event_loss {running / count:.4f}  "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
            running = 0.0
    return time.perf_counter() - start


def media_batch(data: dict, clips: torch.Tensor, args=None, generator=None) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """The media inputs and event labels of `clips` (row indices), and which clips lost their video (B,) bool; with
    `args`, augmented for training.

    `args.pixel_noise` adds a random colour offset per clip and channel and noise per pixel (standardized units).

    With `args.audio_dropout`, that share of the clips loses its audio (`audio_chunk_mask` all False), and their
    event labels no sound. Off by default: the shipped recipe answers audio questions at chance without audio anyway
    (docs/benchmarks.md), while one run with a frozen latent model had answered them below chance (22%, chance 40%).

    With `args.video_dropout`, another share of the clips (never the same ones) loses its video as an audio-only file
    does (`video_chunk_mask` all False, the processor's black frames), and their event labels no shape. `train` asks
    them only their sound questions: the model learns to answer from the sound alone (docs/synthetic.md).
    """
    batch = {key: value[clips] for key, value in data["media"].items()}
    labels = data["event_labels"][clips]
    video_dropped = torch.zeros(len(clips), dtype=torch.bool)
    if args is not None and args.pixel_noise > 0:
        pixels = batch["pixel_values_videos"]  # (B, F, C, H, W)
        offset = torch.randn(len(clips), 1, pixels.shape[2], 1, 1, generator=generator)
        noise = torch.randn(pixels.shape, generator=generator)
        batch["pixel_values_videos"] = pixels + args.pixel_noise * (offset + noise)
    if args is not None and (args.audio_dropout > 0 or args.video_dropout > 0):
        draw = torch.rand(len(clips), generator=generator)  # one draw per clip: audio or video dropped, not both
        audio_dropped = draw < args.audio_dropout
        video_dropped = (draw >= args.audio_dropout) & (draw < args.audio_dropout + args.video_dropout)
        batch["audio_chunk_mask"] = batch["audio_chunk_mask"] & ~audio_dropped[:, None]
        batch["video_chunk_mask"] = batch["video_chunk_mask"] & ~video_dropped[:, None]
        batch["pixel_values_videos"] = torch.where(
            video_dropped[:, None, None, None, None], data["no_video_pixels"], batch["pixel_values_videos"]
        )
        labels = labels.clone()
        labels[audio_dropped, :, len(SHAPE_LABELS):] = 0.0  # EVENT_LABELS: the shapes, then the sounds
        labels[video_dropped, :, : len(SHAPE_LABELS)] = 0.0
    return batch, labels, video_dropped


def train(model, head: ChunkEventHead, data: dict, args) -> float:
    """AdamW with linear warmup and cosine decay; returns seconds taken.

    Each step takes `--clips-per-batch` random clips with all their questions: a clip is encoded once and each of its
    questions attends to it through `media_index`, so a step costs about one encoding per clip, not per question.
    """
    generator = torch.Generator().manual_seed(args.seed)
    for name in args.frozen_in_stage_2:
        getattr(model.model, name).requires_grad_(False)
    # the event loss keeps what stage 1 taught the trained part of the media path; with all of it frozen it is moot
    use_event_loss = args.event_loss_weight > 0 and any(p.requires_grad for p in media_parameters(model))
    named = [(name, parameter) for name, parameter in model.named_parameters() if parameter.requires_grad]
    if use_event_loss:
        named += [(f"event_head.{name}", parameter) for name, parameter in head.named_parameters()]
    decay = [p for name, p in named if p.ndim >= 2 and "embed" not in name]
    no_decay = [p for name, p in named if p.ndim < 2 or "embed" in name]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.learning_rate,
    )
    trained = decay + no_decay

    def learning_rate_factor(step):
        if step < args.warmup_steps:
            return (step + 1) / args.warmup_steps
        progress = (step - args.warmup_steps) / max(1, args.steps - args.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate_factor)
    num_clips = len(data["media"]["pixel_values_videos"])
    rows_of_clip = [torch.nonzero(data["clip_index"] == clip)[:, 0] for clip in range(num_clips)]
    # a clip without its video is asked only what its sound tells (every synthetic clip has such questions)
    sound_rows_of_clip = [rows[data["sound_question"][rows]] for rows in rows_of_clip]
    model.train()
    start = time.perf_counter()
    running = defaultdict(float)
    order, position = torch.randperm(num_clips, generator=generator), 0
    for step in range(args.steps):
        if position + args.clips_per_batch > num_clips:
            order, position = torch.randperm(num_clips, generator=generator), 0
        clips = order[position : position + args.clips_per_batch]
        position += args.clips_per_batch
        batch, labels, video_dropped = media_batch(data, clips, args, generator)
        clip_rows = [(sound_rows_of_clip if dropped else rows_of_clip)[clip]
                     for clip, dropped in zip(clips.tolist(), video_dropped.tolist())]
        rows = torch.cat(clip_rows)
        media_index = torch.repeat_interleave(  # each question -> its clip's row in this batch
            torch.arange(len(clips)), torch.tensor([len(kept) for kept in clip_rows])
        )
        batch.update({key: value[rows] for key, value in data["text"].items()})
        output = model(**batch, media_index=media_index)
        loss = output.loss
        if use_event_loss:
            # output.media_latents has a row per question; a clip's first question's row is the clip's latents
            questions_per_clip = torch.bincount(media_index, minlength=len(clips))
            first_rows = torch.cumsum(questions_per_clip, 0) - questions_per_clip
            clip_events = event_loss(head, output.media_latents[first_rows], labels)
            loss = loss + args.event_loss_weight * clip_events
            running["event_loss"] += clip_events.item()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        scheduler.step()
        for name in ("loss", "text_loss", "latent_loss", "reconstruction_loss"):
            running[name] += getattr(output, name).item()
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            count = (step % args.log_every) + 1
            losses = "  ".join(f"{name} {total / count:.4f}" for name, total in running.items())
            print(f"  step {step + 1:5d}/{args.steps}  {losses}  ({time.perf_counter() - start:.0f} s)", flush=True)
            running.clear()
    model.requires_grad_(True)  # frozen for stage 2 only: the saved model is a normal, trainable one
    model.eval()
    return time.perf_counter() - start


def normalize(answer: str) -> str:
    return " ".join(answer.lower().split())


@torch.no_grad()
def evaluate(model, processor, data: dict, args, remove_audio: bool = False, remove_video: bool = False) -> dict:
    """Exact match per question kind (and "all"), answering with greedy `generate()`; `remove_audio` /
    `remove_video` drop that modality from every clip as `media_batch` does in training.

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
        if remove_video:
            media["video_chunk_mask"] = torch.zeros_like(media["video_chunk_mask"])
            media["pixel_values_videos"] = data["no_video_pixels"].expand_as(media["pixel_values_videos"])
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
    head = ChunkEventHead(config.latent_config.hidden_size)
    seconds = 0.0
    if args.pretrain_steps:
        seconds += pretrain_media(model, head, train_data, args)
    seconds += train(model, head, train_data, args)
    print(f"[{name}] trained in {seconds / 60:.1f} min (both stages)")
    results = {name: evaluate(model, processor, test_data, args)}
    return model, processor, test_data, results, seconds


def save(model, processor, results: dict, train_seconds: float, args) -> None:
    """`save_pretrained` of the model (with the test table in its model card) and the processor into `args.save`."""
    defaults = vars(parse_args([]))
    command = " ".join(
        ["python examples/train_synthetic.py"]
        + [_as_option(key, value) for key, value in vars(args).items() if value != defaults[key] and key not in RUN_ONLY_OPTIONS]
    )
    model.config.model_card = {
        "training_data": (
            f"{args.train_clips} synthetic clips of `mirasol_hf.synthetic` (seed {args.train_seed}, "
            f"{args.questions_per_kind} questions of each kind per clip), trained from scratch in "
            f"{train_seconds / 60:.1f} min on CPU: `{command}`."
        ),
        "metrics": {
            f"exact match, {setting}, {kind} (%)": f"{100 * accuracy[kind]:.1f}"
            for setting in ("chunked", "audio removed", "video removed")
            for accuracy in [results[setting]]
            for kind in (*QUESTION_KINDS, ALL_KINDS)
        },
        "notes": f"Evaluated on {args.test_clips} unseen clips (seed {args.test_seed}), one question of each kind.",
    }
    model.save_pretrained(args.save)
    processor.save_pretrained(args.save)
    if args.package:
        for path in Path(args.save).glob("*.py"):
            path.unlink()
        for path in Path(args.save).glob("*.json"):
            content = json.loads(path.read_text())
            if isinstance(content, dict) and _drop_code_references(content):
                path.write_text(json.dumps(content, indent=2) + "\n")
        write_model_card(model, args.save, overwrite=True, remote_code=False)  # no trust_remote_code usage
    print(f"saved the chunked model and its processor to {args.save}")


def _as_option(key: str, value) -> str:
    option = "--" + key.replace("_", "-")
    if value is True:
        return option
    return f"{option} {','.join(value) if isinstance(value, tuple) else value}"


def _drop_code_references(content: dict) -> bool:
    """Removes every entry naming the code files left out ("auto_map", "custom_pipelines") of a JSON dict, nested
    ones too; returns whether there was one."""
    found = any([content.pop(key, None) is not None for key in ("auto_map", "custom_pipelines")])
    for value in content.values():
        if isinstance(value, dict):
            found = _drop_code_references(value) or found
    return found


def main(argv=None):
    args = parse_args(argv)
    if args.skip_chunked and (args.skip_one_chunk or args.save):
        raise SystemExit("--skip-chunked leaves nothing to run with --skip-one-chunk, and no chunked model to --save")
    if not (args.audio_dropout >= 0 and args.video_dropout >= 0 and args.audio_dropout + args.video_dropout <= 1):
        raise SystemExit("--audio-dropout and --video-dropout must be >= 0 and add up to at most 1")
    torch.set_num_threads(args.threads)
    train_clips = generate_dataset(args.train_clips, args.train_seed, questions_per_kind=args.questions_per_kind)
    test_clips = generate_dataset(args.test_clips, args.test_seed)
    # the prompts as the processor writes them, so "question:" and "answer:" are words of the vocabulary too
    texts = [DEFAULT_PROMPT_TEMPLATE.format(question=q.question) for clip in train_clips for q in clip.questions]
    texts += [answer for answers in ANSWER_VOCABULARY.values() for answer in answers]
    tokenizer = build_tokenizer(texts, vocab_size=256)

    results, times = {}, {}
    if not args.skip_chunked:
        chunked = "chunked"
        model, processor, test_data, results, times[chunked] = run_model(
            chunked, args, tokenizer, train_clips, test_clips, args.num_chunks, args.frames_per_chunk,
            args.tokens_per_chunk, args.audio_frames_per_chunk,
        )
        results["audio removed"] = evaluate(model, processor, test_data, args, remove_audio=True)
        results["video removed"] = evaluate(model, processor, test_data, args, remove_video=True)
        if args.save:
            save(model, processor, results, times[chunked], args)
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
