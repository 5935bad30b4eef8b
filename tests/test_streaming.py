"""Streaming: chunk-by-chunk encoding equals whole-clip encoding; long clips (1024 frames) work."""

import pytest
import torch

from conftest import open_gates, random_media, random_text, tiny_model
from mirasol_hf import MirasolConfig, MirasolForConditionalGeneration

COMBINER_TYPES = ["transformer", "ttm", "perceiver", "cls"]


def _chunks(config: MirasolConfig, media: dict, sizes: list[int], masks: dict | None = None):
    """Splits whole-clip inputs into successive calls of `sizes` chunks each."""
    masks = masks or {}
    start = 0
    for size in sizes:
        stop = start + size
        call = {
            "pixel_values_videos": media["pixel_values_videos"][
                :, start * config.frames_per_chunk : stop * config.frames_per_chunk
            ],
            "input_features": media["input_features"][
                :, :, start * config.audio_frames_per_chunk : stop * config.audio_frames_per_chunk
            ],
        }
        call.update({name: mask[:, start:stop] for name, mask in masks.items()})
        yield call
        start = stop


def _stream(model, media: dict, sizes: list[int], masks: dict | None = None):
    state = None
    new_chunks = []
    for call in _chunks(model.config, media, sizes, masks):
        output, state = model.encode_media_chunk(**call, state=state)
        new_chunks.append(output)
    return new_chunks, state


def _assert_same_encoding(streamed, whole):
    torch.testing.assert_close(streamed.media_latents, whole.media_latents, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(streamed.combined_features, whole.combined_features, atol=1e-5, rtol=1e-5)
    assert torch.equal(streamed.media_chunk_mask, whole.media_chunk_mask)


@pytest.mark.parametrize("combiner_type", COMBINER_TYPES)
@torch.no_grad()
def test_streaming_equals_whole_clip_encoding(combiner_type):
    model = tiny_model(combiner_config={"combiner_type": combiner_type})
    media = random_media(model.config, num_chunks=5)
    whole = model.encode_media(**media)
    new_chunks, state = _stream(model, media, [1] * 5)
    _assert_same_encoding(state.media_output(), whole)
    for t, output in enumerate(new_chunks):  # each call returns its own chunk's outputs
        torch.testing.assert_close(output.media_latents, whole.media_latents[:, t : t + 1], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_streaming_in_uneven_groups_of_chunks_equals_whole_clip_encoding():
    model = tiny_model(combiner_config={"combiner_type": "ttm"})
    media = random_media(model.config, num_chunks=6)
    _, state = _stream(model, media, [1, 3, 2])
    _assert_same_encoding(state.media_output(), model.encode_media(**media))


@torch.no_grad()
def test_streaming_follows_the_chunk_masks_as_whole_clip_encoding_does():
    model = tiny_model(combiner_config={"combiner_type": "ttm"})
    media = random_media(model.config, num_chunks=5)
    masks = {
        "video_chunk_mask": torch.tensor([[True, False, True, True, False], [True, True, True, True, True]]),
        "audio_chunk_mask": torch.tensor([[False, False, True, False, True], [True, True, False, True, True]]),
    }
    _, state = _stream(model, media, [2, 1, 2], masks)
    _assert_same_encoding(state.media_output(), model.encode_media(**media, **masks))
    assert not state.media_chunk_mask[0, 1]  # the chunk with neither video nor audio


@torch.no_grad()
def test_streaming_video_only_equals_whole_clip_encoding():
    model = tiny_model(combiner_config={"combiner_type": "ttm"})
    media = random_media(model.config, num_chunks=3)
    frames = media["pixel_values_videos"]
    per_chunk = model.config.frames_per_chunk
    state = None
    for t in range(3):
        chunk = frames[:, t * per_chunk : (t + 1) * per_chunk]
        _, state = model.encode_media_chunk(pixel_values_videos=chunk, state=state)
    _assert_same_encoding(state.media_output(), model.encode_media(pixel_values_videos=frames))


@torch.no_grad()
def test_streamed_media_answers_like_the_whole_clip():
    model = tiny_model(combiner_config={"combiner_type": "ttm"})
    media, input_ids = random_media(model.config), random_text(model.config)
    _, state = _stream(model, media, [1] * model.config.num_chunks)
    streamed = state.media_output()
    torch.testing.assert_close(
        model(input_ids=input_ids, media_latents=streamed).logits,
        model(input_ids=input_ids, **media).logits,
        atol=1e-5,
        rtol=1e-5,
    )
    settings = dict(max_new_tokens=5, min_new_tokens=5, do_sample=False)
    assert torch.equal(
        model.generate(input_ids=input_ids, media_latents=streamed, **settings),
        model.generate(input_ids=input_ids, **media, **settings),
    )


@torch.no_grad()
def test_stream_state_keeps_one_chunk_of_keys_per_chunk_and_a_fixed_memory():
    model = tiny_model(combiner_config={"combiner_type": "ttm"})
    config = model.config
    media = random_media(config, num_chunks=4)
    state = None
    m, k = config.combiner_config.num_output_tokens, config.combiner_config.ttm_memory_tokens
    for t, call in enumerate(_chunks(config, media, [1] * 4), start=1):
        _, state = model.encode_media_chunk(**call, state=state)
        assert state.num_chunks == t
        assert len(state.latent_cache.layers) == config.latent_config.num_hidden_layers
        assert all(layer.keys.shape[2] == t * m for layer in state.latent_cache.layers)
        assert state.combiner_state.shape == (2, k, config.combiner_config.hidden_size)


@torch.no_grad()
def test_streaming_rejects_a_chunk_of_another_batch_size():
    model = tiny_model()
    media = random_media(model.config, num_chunks=1)
    _, state = model.encode_media_chunk(**media)
    with pytest.raises(ValueError, match="batch size"):
        model.encode_media_chunk(**{name: value[:1] for name, value in media.items()}, state=state)
    with pytest.raises(ValueError, match="empty"):
        type(state)().media_output()


def _long_video_config(combiner_type: str) -> MirasolConfig:
    # 1024 frames in 128 chunks of 8, at 16x16 pixels: long in time, tiny in everything else.
    return MirasolConfig.from_preset(
        "tiny",
        num_chunks=128,
        frames_per_chunk=8,
        video_config={"image_size": 16},
        combiner_config={"combiner_type": combiner_type},
    )


@pytest.mark.parametrize("combiner_type", ["transformer", "ttm"])
@torch.no_grad()
def test_1024_frames_encode_as_128_chunks_whole_or_streamed(combiner_type):
    config = _long_video_config(combiner_type)
    torch.manual_seed(0)
    model = open_gates(MirasolForConditionalGeneration(config)).eval()
    media, input_ids = random_media(config, batch=1), random_text(config, batch=1)
    assert media["pixel_values_videos"].shape[1] == 1024
    out = model(input_ids=input_ids, labels=input_ids, **media)
    m, width = config.combiner_config.num_output_tokens, config.latent_config.hidden_size
    assert out.media_latents.shape == (1, 128, m, width)
    assert torch.isfinite(out.loss) and torch.isfinite(out.latent_loss) and torch.isfinite(out.reconstruction_loss)
    _, state = _stream(model, media, [8] * 16)  # calls of 8 chunks keep the test fast; 1 per call is tested above
    torch.testing.assert_close(state.media_output().media_latents, out.media_latents, atol=1e-5, rtol=1e-5)
