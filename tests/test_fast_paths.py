"""Shortcuts taken for speed give what the straightforward computation gives: the transformer combiner's last layer
on the kept tokens only and SDPA's own causal mask, the cached sin-cos position tables, the fused pixel
normalisation."""

import numpy as np
import pytest
import torch
from media_utils import write_video

from mirasol_hf.audio_encoder import MirasolAudioEncoder, patch_position_embedding
from mirasol_hf.combiners import build_combiner
from mirasol_hf.configuration_mirasol import MirasolAudioConfig, MirasolCombinerConfig, MirasolVideoConfig
from mirasol_hf.feature_extraction_mirasol import MirasolFeatureExtractor
from mirasol_hf.layers import additive_mask, sincos_embedding
from mirasol_hf.processing_mirasol import MirasolProcessor
from mirasol_hf.tokenization_mirasol import build_tokenizer
from mirasol_hf.video_encoder import MirasolVideoEncoder, tube_centres, tube_position_embedding


def transformer_combiner(attention_type: str, attn_implementation: str, num_output_tokens: int, num_layers: int = 2):
    config = MirasolCombinerConfig(
        combiner_type="transformer", hidden_size=16, num_attention_heads=2, num_hidden_layers=num_layers,
        intermediate_size=32, num_output_tokens=num_output_tokens, attention_type=attention_type,
    )
    config._attn_implementation = attn_implementation
    torch.manual_seed(0)
    combiner = build_combiner(config, video_hidden_size=8, audio_hidden_size=12)
    for name, parameter in combiner.named_parameters():
        if "embedding" in name:  # zeros until the model's _init_weights; make them matter
            torch.nn.init.normal_(parameter)
    return combiner


def reference_combine(combiner, video, audio, video_mask, audio_mask):
    """The combiner before the shortcuts: every layer over every token with a built mask, then the last m."""
    tokens = combiner.chunk_tokens(video, audio, video_mask, audio_mask)
    batch, num_chunks, length, width = tokens.shape
    mask = None
    if combiner.config.attention_type == "causal":
        mask = additive_mask(torch.ones(length, length, dtype=torch.bool).tril()[None, None], tokens.dtype)
    outputs = combiner.encoder(tokens.reshape(batch * num_chunks, length, width), attention_mask=mask)
    m = combiner.config.num_output_tokens
    return outputs[:, -m:].reshape(batch, num_chunks, m, width)


@pytest.mark.parametrize("attention_type", ["causal", "full"])
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize(("num_output_tokens", "num_layers"), [(3, 2), (1, 1), (11, 2), (3, 0)])
def test_transformer_combiner_matches_the_full_computation(attention_type, attn_implementation, num_output_tokens,
                                                          num_layers):
    combiner = transformer_combiner(attention_type, attn_implementation, num_output_tokens, num_layers)
    generator = torch.Generator().manual_seed(1)
    video = torch.randn(2, 3, 5, 8, generator=generator, requires_grad=True)  # 5 + 6 = 11 tokens a chunk
    audio = torch.randn(2, 3, 6, 12, generator=generator)
    video_mask = torch.tensor([[True, True, False], [True, True, True]])
    audio_mask = torch.tensor([[True, False, True], [True, True, True]])

    output = combiner.combine(video, audio, video_mask, audio_mask)
    expected = reference_combine(combiner, video, audio, video_mask, audio_mask)
    torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-5)
    # The same gradients, to the inputs and to every weight.
    weights = dict(combiner.named_parameters())
    weights_and_input = [*weights.values(), video]
    grads = torch.autograd.grad(output.square().sum(), weights_and_input, allow_unused=True)
    expected_grads = torch.autograd.grad(expected.square().sum(), weights_and_input, allow_unused=True)
    for name, grad, expected_grad in zip([*weights, "video"], grads, expected_grads):
        if expected_grad is None:
            assert grad is None, name
        else:
            torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-5, msg=name)


def test_causal_combiner_uses_sdpa_causal_flag_without_a_mask(monkeypatch):
    combiner = transformer_combiner("causal", "sdpa", num_output_tokens=3)
    calls = []
    original = torch.nn.functional.scaled_dot_product_attention

    def recording(query, key, value, attn_mask=None, is_causal=False, **kwargs):
        calls.append((query.shape[2], key.shape[2], attn_mask is None, is_causal))
        return original(query, key, value, attn_mask=attn_mask, is_causal=is_causal, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording)
    video, audio = torch.randn(1, 2, 5, 8), torch.randn(1, 2, 6, 12)
    mask = torch.ones(1, 2, dtype=torch.bool)
    with torch.no_grad():
        combiner.combine(video, audio, mask, mask)
    # Layer 1: 11 queries, SDPA's causal flag, no mask; layer 2: the 3 kept queries with their rows of the mask.
    assert calls == [(11, 11, True, True), (3, 11, False, False)]


def test_video_and_audio_position_tables_are_cached_and_equal_to_fresh_ones():
    video_config = MirasolVideoConfig(
        hidden_size=24, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, image_size=16,
        tubes=[{"kernel": [1, 8, 8], "stride": [2, 8, 8], "offset": [0, 0, 0]},
               {"kernel": [2, 4, 4], "stride": [2, 6, 6], "offset": [0, 2, 2]}],
    )
    audio_config = MirasolAudioConfig(
        hidden_size=24, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, num_mel_bins=16,
        patch_size=[8, 4],
    )
    torch.manual_seed(0)
    video_encoder, audio_encoder = MirasolVideoEncoder(video_config), MirasolAudioEncoder(audio_config)
    pixels, features = torch.randn(2, 4, 3, 16, 16), torch.randn(2, 16, 12)
    tube_position_embedding.cache_clear()
    patch_position_embedding.cache_clear()
    with torch.inference_mode():  # tables first built here must serve the training forward below
        video_encoder.embed(pixels)
        audio_encoder.embed(features)
    embedded_video = video_encoder.embed(pixels)
    embedded_audio = audio_encoder.embed(features)
    assert tube_position_embedding.cache_info().hits == 2 and patch_position_embedding.cache_info().hits == 1
    (embedded_video.sum() + embedded_audio.sum()).backward()  # the cached tables are no inference tensors

    # Fresh tables, as the encoders computed them on every call before.
    volume = pixels.transpose(1, 2)  # (N, f, C, H, W) -> (N, C, f, H, W)
    expected_video = []
    for tube, conv in zip(video_config.tubes, video_encoder.tubes):
        centres = tube_centres(tuple(volume.shape[2:]), tube["kernel"], tube["stride"], tube["offset"])
        t0, y0, x0 = tube["offset"]
        tokens = conv(volume[:, :, t0:, y0:, x0:]).flatten(2).transpose(1, 2)  # (N, n_t*n_h*n_w, hidden)
        expected_video.append(tokens + sincos_embedding(centres.flatten(0, 2), video_config.hidden_size))
    torch.testing.assert_close(embedded_video, torch.cat(expected_video, dim=1), rtol=0, atol=0)
    patches = audio_encoder.patch_embedding(features[:, None])  # (N, hidden, 2 mel, 3 time)
    mel_centres, time_centres = torch.meshgrid(torch.arange(2) * 8 + 3.5, torch.arange(3) * 4 + 1.5, indexing="ij")
    centres = torch.stack([mel_centres, time_centres], dim=-1).flatten(0, 1)  # (6, 2)
    expected_audio = patches.flatten(2).transpose(1, 2) + sincos_embedding(centres, audio_config.hidden_size)
    torch.testing.assert_close(embedded_audio, expected_audio, rtol=0, atol=0)


def test_fused_pixel_normalisation_matches_the_formula(tmp_path):
    tokenizer = build_tokenizer(["what is playing? a guitar"], vocab_size=100)
    processor = MirasolProcessor(
        MirasolFeatureExtractor(16, audio_frames_per_chunk=8), tokenizer, num_chunks=2, frames_per_chunk=2,
        image_size=24, image_mean=[0.48, 0.46, 0.41], image_std=[0.27, 0.26, 0.28],
    )
    clip = processor.read_video(write_video(tmp_path / "clip.mp4", seconds=1.0, fps=10, width=40, height=30))
    pixels = processor(videos=[clip, clip], return_tensors="np")["pixel_values_videos"]
    mean, std = np.array(processor.image_mean), np.array(processor.image_std)
    expected = ((clip.frames / 255.0 - mean) / std).transpose(0, 3, 1, 2)  # (F, S, S, 3) -> (F, 3, S, S), float64
    assert pixels.shape == (2, 4, 3, 24, 24) and pixels.dtype == np.float32 and pixels.flags.c_contiguous
    np.testing.assert_allclose(pixels, np.stack([expected, expected]), rtol=0, atol=1e-6)
    assert np.ptp(clip.frames) > 100  # the frames span the range
