"""Two small decoder costs: the media cross-attention mask at every decoding step, and a cache in training forwards.

    python benchmarks/decode_step.py [--frames 512] [--steps 32] [--train-frames 32] [--rounds 7] [--threads 1]

* **Decoding step** at `--frames` frames (chunks of 8 frames, m = 8 latents a chunk, so 512 frames give 64 chunks and
  512 media tokens): after a prefill of a 16-token prompt, `--steps` one-token forwards with the cache, as generate()
  runs them, with the (B, 1, 1, T*m) mask passed in (built once, what generate() does now) against
  `media_attention_mask=None` (built from `media_chunk_mask` at every step, as before). The cache is cropped back to
  the prompt before each timed call (the media keys/values stay). A third row times the mask build alone.
* **Training forward** (training mode, gradients on, labels, raw media at `--train-frames` frames, batch 4, 32 text
  tokens): the default, which builds no cache now, against `use_cache=True`, which builds the DynamicCache every
  training forward used to build.

Both pairs are checked to give equal logits first. Settings run in alternating rounds; the tables give median (min-max)
wall and CPU time per call and the medians (min-max) of the per-round ratios (benchmarks/_timing.py), with the load
average. The model is the "tiny" preset at width 64 (as benchmarks/long_video.py); its weights are random, which does
not change the cost.
"""

import argparse

import torch

from _timing import compare, print_table
from mirasol_hf import MirasolConfig, MirasolForConditionalGeneration
from mirasol_hf.text_decoder import build_media_attention_mask

FRAMES_PER_CHUNK = 8
PROMPT_LENGTH = 16


def _config(frames: int) -> MirasolConfig:
    encoder = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 256}
    return MirasolConfig.from_preset(
        "tiny",
        num_chunks=frames // FRAMES_PER_CHUNK,
        frames_per_chunk=FRAMES_PER_CHUNK,
        audio_frames_per_chunk=2 * FRAMES_PER_CHUNK,
        video_config=encoder,
        audio_config=encoder,
        combiner_config={**encoder, "num_output_tokens": 8},
        latent_config=encoder,
    )


def decode_settings(frames: int, steps: int) -> dict:
    config = _config(frames)
    torch.manual_seed(0)
    model = MirasolForConditionalGeneration(config).eval()
    generator = torch.Generator().manual_seed(0)
    m = config.combiner_config.num_output_tokens
    latents = torch.randn(1, config.num_chunks, m, config.text_config.cross_attention_hidden_size, generator=generator)
    chunk_mask = torch.ones(1, config.num_chunks, dtype=torch.bool)
    prompt = torch.randint(3, config.vocab_size, (1, PROMPT_LENGTH), generator=generator)
    token = prompt[:, -1:]
    with torch.inference_mode():
        cache = model(input_ids=prompt, media_latents=latents, media_chunk_mask=chunk_mask, use_cache=True).cache
    mask = build_media_attention_mask(chunk_mask, m, torch.float32)

    def decode(media_attention_mask):
        generated = cache.get_seq_length() - PROMPT_LENGTH
        if generated:
            cache.crop(-generated)  # back to the prompt; the cross-attention slots keep the media keys/values
        with torch.inference_mode():
            for _ in range(steps):
                logits = model(input_ids=token, cache=cache, media_chunk_mask=chunk_mask,
                               media_attention_mask=media_attention_mask).logits
        return logits

    torch.testing.assert_close(decode(mask), decode(None), rtol=0, atol=0)
    return {
        "mask built at every step": lambda: decode(None),
        "mask built once (generate() now)": lambda: decode(mask),
        # What the second setting saves per step, for scale (`--steps` builds, so per build in the table).
        "the mask build alone": lambda: [build_media_attention_mask(chunk_mask, m, mask.dtype) for _ in range(steps)],
    }


def training_settings(frames: int) -> dict:
    config = _config(frames)
    torch.manual_seed(0)
    model = MirasolForConditionalGeneration(config).train()
    generator = torch.Generator().manual_seed(0)
    size = config.video_config.image_size
    ids = torch.randint(3, config.vocab_size, (4, 32), generator=generator)
    inputs = {
        "input_ids": ids,
        "labels": ids,
        "pixel_values_videos": torch.randn(4, frames, 3, size, size, generator=generator),
        "input_features": torch.randn(
            4, config.audio_config.num_mel_bins, config.num_chunks * config.audio_frames_per_chunk, generator=generator
        ),
    }

    def forward(use_cache):
        torch.manual_seed(0)  # the same dropout draws
        output = model(**inputs, use_cache=use_cache)
        return output.logits.detach(), output.cache

    (default_logits, default_cache), (cached_logits, cache) = forward(None), forward(True)
    assert default_cache is None and cache is not None
    torch.testing.assert_close(default_logits, cached_logits, rtol=0, atol=0)
    return {"use_cache=True (a cache built)": lambda: forward(True), "default (no cache)": lambda: forward(None)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=512)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--train-frames", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    results = compare(decode_settings(args.frames, args.steps), rounds=args.rounds)
    chunks = args.frames // FRAMES_PER_CHUNK
    print(f"decoding step, {args.frames} frames ({chunks} chunks, {chunks * 8} media tokens), batch 1, "
          f"{args.threads} threads, ms / step:")
    print_table(results, baseline="mask built at every step", unit=args.steps / 1000, unit_name="ms")

    results = compare(training_settings(args.train_frames), rounds=args.rounds)
    print(f"\ntraining forward (labels, no backward), {args.train_frames} frames, batch 4, 32 tokens, "
          f"{args.threads} threads, ms / forward:")
    print_table(results, baseline="use_cache=True (a cache built)", unit=1 / 1000, unit_name="ms")


if __name__ == "__main__":
    main()
