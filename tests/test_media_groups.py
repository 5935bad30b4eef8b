"""Chunk groups write into one output: the grouped encoding equals the combiner over every chunk at once."""

import torch

from conftest import random_media, tiny_model


def test_grouped_combined_features_and_gradients_equal_one_combiner_pass_over_all_chunks():
    # 7 chunks in groups of 3 (3 + 3 + 1), one batch row missing its audio in chunk 5, against the encoders and the
    # combiner called directly on the whole clip (not through the grouping code).
    model = tiny_model(media_group_chunks=3).train()
    media = random_media(model.config, num_chunks=7)
    audio_chunk_mask = torch.ones(2, 7, dtype=torch.bool)
    audio_chunk_mask[1, 5] = False
    inner = model.model
    grouped = inner.encode_media(**media, audio_chunk_mask=audio_chunk_mask).combined_features  # (B, T, m, d_c)
    grouped.pow(2).sum().backward()
    grouped_grads = {name: p.grad.clone() for name, p in inner.named_parameters() if p.grad is not None}
    inner.zero_grad()

    video_tokens, audio_tokens, video_mask, audio_mask = inner._encode_modalities(
        media["pixel_values_videos"], media["input_features"], None, audio_chunk_mask, 2, 7
    )
    expected = inner.combiner.combine(video_tokens, audio_tokens, video_mask, audio_mask)
    expected.pow(2).sum().backward()

    torch.testing.assert_close(grouped, expected, atol=1e-5, rtol=1e-5)
    reference_grads = {name: p.grad for name, p in inner.named_parameters() if p.grad is not None}
    assert grouped_grads.keys() == reference_grads.keys()
    assert any(name.startswith("video_encoder") for name in grouped_grads)
    for name, grad in grouped_grads.items():
        torch.testing.assert_close(grad, reference_grads[name], atol=1e-5, rtol=1e-4, msg=name)
