"""The transformer combiner's shortcuts and the cached position tables, each against the computation it replaces.

    python benchmarks/combiner.py [--rounds 9] [--threads 1]

* combiner: `MirasolTransformerCombiner.combine` (last layer on the kept m tokens only; SDPA's `is_causal` instead
  of a built mask) against the full computation (every layer over every token with the built causal mask, then the
  last m: what `combine` did before), on 16 chunks of 100 video + 32 audio tokens, width 256, 4 layers of 4 heads,
  m = 8 and m = 32, SDPA attention, eval, `torch.inference_mode`;
* position tables: the video encoder's `embed` (tube convolutions + sin-cos positions) with the cached tables
  against rebuilding them on every call (the cache cleared before each call), three tubes on 16 chunks of 8 frames
  at 64x64, width 256.
Outputs are checked equal before timing. Alternating rounds, medians of per-round ratios (benchmarks/_timing.py).
"""

import argparse

import torch

from _timing import compare, print_table
from mirasol_hf.combiners import build_combiner
from mirasol_hf.configuration_mirasol import MirasolCombinerConfig, MirasolVideoConfig
from mirasol_hf.layers import additive_mask
from mirasol_hf.video_encoder import MirasolVideoEncoder, tube_position_embedding

WIDTH, LAYERS, HEADS, CHUNKS, VIDEO_TOKENS, AUDIO_TOKENS = 256, 4, 4, 16, 100, 32


def full_computation(combiner, video, audio, mask):
    """The combiner before the shortcuts: all layers over all tokens, a built causal mask, then the last m."""
    tokens = combiner.chunk_tokens(video, audio, mask, mask)
    batch, num_chunks, length, width = tokens.shape
    causal = additive_mask(torch.ones(length, length, dtype=torch.bool).tril()[None, None], tokens.dtype)
    outputs = combiner.encoder(tokens.reshape(batch * num_chunks, length, width), attention_mask=causal)
    m = combiner.config.num_output_tokens
    return outputs[:, -m:].reshape(batch, num_chunks, m, width)


def combiner_table(rounds: int, m: int):
    config = MirasolCombinerConfig(
        combiner_type="transformer", hidden_size=WIDTH, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=4 * WIDTH, num_output_tokens=m, attention_type="causal",
    )
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    combiner = build_combiner(config, video_hidden_size=WIDTH, audio_hidden_size=WIDTH).eval()
    video, audio = torch.randn(1, CHUNKS, VIDEO_TOKENS, WIDTH), torch.randn(1, CHUNKS, AUDIO_TOKENS, WIDTH)
    mask = torch.ones(1, CHUNKS, dtype=torch.bool)
    with torch.inference_mode():
        expected = full_computation(combiner, video, audio, mask)
        torch.testing.assert_close(combiner.combine(video, audio, mask, mask), expected)
        results = compare(
            {
                "full computation (before)": lambda: full_computation(combiner, video, audio, mask),
                "combine (kept tokens, is_causal)": lambda: combiner.combine(video, audio, mask, mask),
            },
            rounds=rounds,
        )
    print(f"\ntransformer combiner, {CHUNKS} chunks of {VIDEO_TOKENS} + {AUDIO_TOKENS} tokens, width {WIDTH}, "
          f"{LAYERS} layers, m = {m}:")
    print_table(results, baseline="full computation (before)")


def position_table(rounds: int):
    config = MirasolVideoConfig(
        hidden_size=WIDTH, num_hidden_layers=1, num_attention_heads=HEADS, intermediate_size=4 * WIDTH, image_size=64,
        tubes=[{"kernel": [1, 8, 8], "stride": [2, 8, 8], "offset": [0, 0, 0]},
               {"kernel": [4, 8, 8], "stride": [4, 16, 16], "offset": [0, 0, 0]},
               {"kernel": [2, 4, 4], "stride": [2, 16, 16], "offset": [0, 8, 8]}],
    )
    torch.manual_seed(0)
    encoder = MirasolVideoEncoder(config).eval()
    pixels = torch.randn(CHUNKS, 8, 3, 64, 64)

    def rebuilt():
        tube_position_embedding.cache_clear()
        return encoder.embed(pixels)

    with torch.inference_mode():
        torch.testing.assert_close(rebuilt(), encoder.embed(pixels), rtol=0, atol=0)
        results = compare({"tables rebuilt per call (before)": rebuilt, "cached tables": lambda: encoder.embed(pixels)},
                          rounds=rounds)
    print(f"\nvideo encoder embed (3 tubes, {CHUNKS} chunks of 8 frames at 64x64, width {WIDTH}):")
    print_table(results, baseline="tables rebuilt per call (before)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch threads {torch.get_num_threads()}")
    for m in (8, 32):
        combiner_table(args.rounds, m)
    position_table(args.rounds)


if __name__ == "__main__":
    main()
