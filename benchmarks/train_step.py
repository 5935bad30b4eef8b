"""Training on many questions per clip: each question with its own copy of the clip vs `media_index` (one encoding per
clip, shared by its questions).

    python benchmarks/train_step.py [--clips 16] [--questions-per-clip 10] [--rounds 5] [--threads 2]

Times one full training step (forward with labels, backward, AdamW step) on the same batch both ways, in one process,
in alternating rounds, and prints median (min-max) wall and CPU time per step and the medians of the per-round ratios
(benchmarks/_timing.py), with the load average. The model is the tiny preset resized to the synthetic
clips (4 chunks of 8 frames at 32x32, one 2x8x8 video tube, 16 mel frames per chunk); its weights are random, which
does not change the cost. Both ways give the same text loss (checked before timing).
"""

import argparse

import torch

from _timing import compare, format_ratio, median_range, print_table, ratios
from mirasol_hf import MirasolConfig, MirasolForConditionalGeneration

QUESTION_LENGTH = 14  # tokens of a prompt plus its answer, as in the synthetic data


def _config() -> MirasolConfig:
    encoder = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}
    return MirasolConfig.from_preset(
        "tiny",
        video_config={**encoder, "image_size": 32, "tubes": [{"kernel": [2, 8, 8], "stride": [2, 8, 8], "offset": [0, 0, 0]}]},
        audio_config={**encoder, "num_mel_bins": 32, "patch_size": [8, 16]},
        combiner_config={**encoder, "num_output_tokens": 4},
        latent_config=encoder,
        text_config={"hidden_size": 128, "intermediate_size": 256, "cross_attention_layers": [0, 1]},
        num_chunks=4,
        frames_per_chunk=8,
        audio_frames_per_chunk=16,
        text_loss_weight=10.0,
    )


def _batch(config: MirasolConfig, clips: int, questions_per_clip: int) -> tuple[dict, dict]:
    generator = torch.Generator().manual_seed(0)
    frames, size = config.num_chunks * config.frames_per_chunk, config.video_config.image_size
    media = {
        "pixel_values_videos": torch.randn(clips, frames, 3, size, size, generator=generator),
        "input_features": torch.randn(
            clips, config.audio_config.num_mel_bins, config.num_chunks * config.audio_frames_per_chunk,
            generator=generator,
        ),
    }
    rows = clips * questions_per_clip
    input_ids = torch.randint(3, config.vocab_size, (rows, QUESTION_LENGTH), generator=generator)
    labels = input_ids.clone()
    labels[:, : QUESTION_LENGTH - 2] = -100  # the answer word and eos are supervised
    text = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}
    return media, text


def _step(model, optimizer, inputs: dict) -> torch.Tensor:
    output = model(**inputs)
    optimizer.zero_grad(set_to_none=True)
    output.loss.backward()
    optimizer.step()
    return output.text_loss.detach()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--questions-per-clip", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = _config()
    torch.manual_seed(0)
    model = MirasolForConditionalGeneration(config).train()
    media, text = _batch(config, args.clips, args.questions_per_clip)
    media_index = torch.arange(args.clips).repeat_interleave(args.questions_per_clip)
    copied = {**{key: value[media_index] for key, value in media.items()}, **text}
    shared = {**media, **text, "media_index": media_index}
    with torch.no_grad():
        model.eval()
        torch.testing.assert_close(model(**shared).text_loss, model(**copied).text_loss)
        model.train()

    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0)  # lr 0: every round times the same weights
    copied_name, shared_name = "one copy of the clip per question", "media_index (one encoding per clip)"
    results = compare(
        {copied_name: lambda: _step(model, optimizer, copied), shared_name: lambda: _step(model, optimizer, shared)},
        rounds=args.rounds,
    )

    rows = args.clips * args.questions_per_clip
    print(f"training step, {args.clips} clips x {args.questions_per_clip} questions ({rows} rows), "
          f"{args.threads} threads, s / step:")
    print_table(results, baseline=copied_name)
    for name, timings in results.items():
        print(f"  {name}: {rows / median_range(timings.wall)[0]:.0f} questions / s (median wall)")
    time_ratio = ratios(results, shared_name, copied_name)
    print(f"speed-up: {1 / median_range(time_ratio)[0]:.2f}x (time ratio {format_ratio(time_ratio)}, "
          f"CPU {format_ratio(ratios(results, shared_name, copied_name, 'cpu'))})")


if __name__ == "__main__":
    main()
