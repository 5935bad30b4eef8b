"""Bounded streams: a latent-model window over chunks, and encoding long clips in bounded groups of chunks."""

import pytest
import torch

from conftest import random_media, random_text, tiny_model
from mirasol_hf import MirasolConfig


def _calls(config: MirasolConfig, media: dict, sizes: list[int]):
    """Whole-clip inputs split into successive calls of `sizes` chunks each."""
    start = 0
    for size in sizes:
        stop = start + size
        yield {
            "pixel_values_videos": media["pixel_values_videos"][
                :, start * config.frames_per_chunk : stop * config.frames_per_chunk
            ],
            "input_features": media["input_features"][
                :, :, start * config.audio_frames_per_chunk : stop * config.audio_frames_per_chunk
            ],
        }
        start = stop


def _stream(model, media: dict, sizes: list[int], state=None):
    outputs = []
    for call in _calls(model.config, media, sizes):
        output, state = model.encode_media_chunk(**call, state=state)
        outputs.append(output)
    return outputs, state


def _join(first: dict, second: dict) -> dict:
    return {
        "pixel_values_videos": torch.cat([first["pixel_values_videos"], second["pixel_values_videos"]], dim=1),
        "input_features": torch.cat([first["input_features"], second["input_features"]], dim=2),
    }


def _close(actual, expected):
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("combiner_type", ["transformer", "ttm"])
@torch.no_grad()
def test_windowed_whole_clip_encoding_equals_windowed_streaming(combiner_type):
    model = tiny_model(combiner_config={"combiner_type": combiner_type}, latent_config={"context_chunks": 3})
    media = random_media(model.config, num_chunks=8)
    whole = model.encode_media(**media)
    for sizes in ([1] * 8, [2, 3, 1, 2]):
        outputs, state = _stream(model, media, sizes)
        _close(torch.cat([output.media_latents for output in outputs], dim=1), whole.media_latents)
        # A question sees the last 3 chunks, encoded by the latent model as a clip of 3 chunks.
        context = state.media_output()
        assert (state.num_chunks, state.first_chunk) == (8, 5)
        last_three = model.model.latent_model(whole.combined_features[:, 5:], whole.media_chunk_mask[:, 5:])
        _close(context.media_latents, last_three)
        _close(context.media_latents[:, -1], whole.media_latents[:, -1])


@torch.no_grad()
def test_a_window_wider_than_the_clip_changes_nothing():
    windowed = tiny_model(latent_config={"context_chunks": 6})
    unwindowed = tiny_model()
    media = random_media(windowed.config, num_chunks=6)
    expected = unwindowed.encode_media(**media).media_latents
    _close(windowed.encode_media(**media).media_latents, expected)
    _, state = _stream(windowed, media, [1] * 6)
    _close(state.media_output().media_latents, expected)


@torch.no_grad()
def test_a_window_late_in_a_stream_is_encoded_as_the_same_chunks_alone():
    # What a question sees after chunk 4 and after chunk 40 of a stream: the same as for the last 3 chunks alone,
    # positions included, so a model trained on short clips answers about the recent window of any stream.
    model = tiny_model(latent_config={"context_chunks": 3})
    recent = random_media(model.config, batch=1, num_chunks=3, seed=5)
    alone = model.encode_media(**recent)
    prompt = random_text(model.config, batch=1)
    settings = dict(max_new_tokens=4, min_new_tokens=4, do_sample=False)
    expected_answer = model.generate(input_ids=prompt, media_latents=alone, **settings)
    for prefix_chunks in (1, 37):
        prefix = random_media(model.config, batch=1, num_chunks=prefix_chunks, seed=prefix_chunks)
        _, state = _stream(model, _join(prefix, recent), [1] * (prefix_chunks + 3))
        context = state.media_output()
        _close(context.media_latents, alone.media_latents)
        assert state.first_chunk == prefix_chunks
        assert torch.equal(model.generate(input_ids=prompt, media_latents=context, **settings), expected_answer)


@torch.no_grad()
def test_a_windowed_stream_keeps_a_fixed_size_state():
    model = tiny_model(combiner_config={"combiner_type": "ttm"}, latent_config={"context_chunks": 2})
    media = random_media(model.config, num_chunks=6)
    state = None
    shapes = []
    for call in _calls(model.config, media, [1] * 6):
        _, state = model.encode_media_chunk(**call, state=state)
        shapes.append((state.context_combined.shape, state.context_latents.shape, state.combiner_state.shape))
        assert state.latent_cache.get_seq_length() == 0  # no keys/values pile up
    assert len(set(shapes[1:])) == 1 and shapes[-1][0][1] == 2


def test_a_window_must_hold_a_chunk():
    with pytest.raises(ValueError, match="context_chunks"):
        MirasolConfig.from_preset("tiny", latent_config={"context_chunks": 0})
    with pytest.raises(ValueError, match="media_group_chunks"):
        MirasolConfig.from_preset("tiny", media_group_chunks=0)


@pytest.mark.parametrize("combiner_type", ["transformer", "ttm"])
def test_encoding_in_groups_of_chunks_gives_the_same_logits_and_gradients(combiner_type):
    # 7 chunks in groups of 3 (3 + 3 + 1), the TTM's memory carried from group to group, against one pass.
    results = []
    for group in (3, None):
        model = tiny_model(combiner_config={"combiner_type": combiner_type}, media_group_chunks=group).train()
        media = random_media(model.config, num_chunks=7)
        input_ids = random_text(model.config)
        out = model(input_ids=input_ids, labels=input_ids, **media)
        out.loss.backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        results.append((out.logits.detach(), out.loss.detach(), grads))
    (logits, loss, grads), (whole_logits, whole_loss, whole_grads) = results
    _close(logits, whole_logits)
    _close(loss, whole_loss)
    assert grads.keys() == whole_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], whole_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_gradient_checkpointing_on_a_long_clip_gives_the_same_gradients():
    results = []
    for checkpointing in (True, False):
        model = tiny_model(media_group_chunks=4).train()
        if checkpointing:
            model.activation_checkpointing_enable()
        media = random_media(model.config, batch=1, num_chunks=12)
        input_ids = random_text(model.config, batch=1)
        model(input_ids=input_ids, labels=input_ids, **media).loss.backward()
        results.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    for name, grad in results[0].items():
        torch.testing.assert_close(grad, results[1][name], atol=1e-5, rtol=1e-4, msg=name)
