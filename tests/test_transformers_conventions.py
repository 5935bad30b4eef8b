"""Mirasol behaves as a transformers 5.24 model: recorded outputs, tuples, configs, attention choice, loss kwargs,
parallelism plans (the checks of transformers' `ModelTesterMixin`, on the tiny preset)."""

import copy

import pytest
import torch

from mirasol_hf import MirasolConfig, MirasolForConditionalGeneration, MirasolModel

NUM_CHUNKS = 4


def tiny_config(**overrides):
    return MirasolConfig.from_preset("tiny", **overrides)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = tiny_config()
    # Open gates, so the cross-attention changes the text and the comparisons below are not trivial.
    config.text_config.cross_attention_gate_init = 0.5
    return MirasolForConditionalGeneration(config).eval()


def make_media(config, batch=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    size = config.video_config.image_size
    return {
        "pixel_values_videos": torch.randn(
            batch, NUM_CHUNKS * config.frames_per_chunk, 3, size, size, generator=generator
        ),
        "input_features": torch.randn(
            batch, config.audio_config.num_mel_bins, NUM_CHUNKS * config.audio_frames_per_chunk, generator=generator
        ),
    }


def make_ids(config, batch=2, length=6, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, config.text_config.vocab_size, (batch, length), generator=generator)


# ---- 1. recorded outputs -------------------------------------------------------------------------------------------


def test_forward_records_hidden_states_attentions_and_cross_attentions(model):
    config = model.config
    text = config.text_config
    ids, media = make_ids(config), make_media(config)
    with torch.no_grad():
        out = model(input_ids=ids, **media, output_attentions=True, output_hidden_states=True)
    batch, length = ids.shape
    m = config.combiner_config.num_output_tokens
    assert len(out.hidden_states) == text.num_hidden_layers + 1
    assert all(h.shape == (batch, length, text.hidden_size) for h in out.hidden_states)
    # The last hidden state is the normed one the LM head reads, as in Llama.
    torch.testing.assert_close(model.lm_head(out.hidden_states[-1]), out.logits)
    assert len(out.attentions) == text.num_hidden_layers
    for weights in out.attentions:
        assert weights.shape == (batch, text.num_attention_heads, length, length)
        assert torch.all(weights.triu(1) == 0), "self-attention must be causal"
    assert len(out.cross_attentions) == len(text.cross_attention_layers)
    for weights in out.cross_attentions:
        assert weights.shape == (batch, text.num_attention_heads, length, NUM_CHUNKS * m)
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
    assert len(out.latent_attentions) == config.latent_config.num_hidden_layers
    for weights in out.latent_attentions:
        assert weights.shape == (batch, config.latent_config.num_attention_heads, NUM_CHUNKS * m, NUM_CHUNKS * m)


def test_nothing_recorded_unless_asked(model):
    with torch.no_grad():
        out = model(input_ids=make_ids(model.config), **make_media(model.config))
    assert out.hidden_states is None and out.attentions is None and out.cross_attentions is None
    assert out.latent_attentions is None


def test_cross_attentions_match_an_independent_computation(model):
    """softmax(q k^T / sqrt(D)) from the block's own projections of the text state entering it and the latents."""
    config = model.config
    ids, media = make_ids(config), make_media(config)
    with torch.no_grad():
        encoded = model.encode_media(**media)
        out = model(input_ids=ids, media_latents=encoded, output_attentions=True, output_hidden_states=True)
        (layer_index,) = config.text_config.cross_attention_layers
        block = model.model.text_model.cross_attention_blocks[0]
        entering = out.hidden_states[layer_index]  # output of the decoder layer before the block
        attention = block.cross_attn
        query = attention._heads(attention.q_proj(block.input_layernorm(entering)))
        tokens = encoded.media_latents.flatten(1, 2)  # (B, T*m, d), chunk-major
        key = attention._heads(attention.k_proj(tokens)).repeat_interleave(attention.num_key_value_groups, dim=1)
        expected = (query @ key.transpose(-1, -2) * attention.head_dim**-0.5).softmax(-1)
    torch.testing.assert_close(out.cross_attentions[0], expected)


def test_cross_attention_tokens_are_chunk_major(model):
    """A chunk without media gets no attention; unflatten(-1, (T, m)) puts that zero on exactly that chunk."""
    config = model.config
    m = config.combiner_config.num_output_tokens
    ids, media = make_ids(config), make_media(config)
    mask = torch.ones(2, NUM_CHUNKS, dtype=torch.bool)
    mask[0, 2] = False
    mask[1, 0] = False
    with torch.no_grad():
        out = model(
            input_ids=ids, **media, video_chunk_mask=mask, audio_chunk_mask=mask, output_attentions=True
        )
    per_chunk = out.cross_attentions[0].unflatten(-1, (NUM_CHUNKS, m)).sum(-1)  # (B, heads, L, T)
    assert torch.all(per_chunk[0, ..., 2] == 0) and torch.all(per_chunk[1, ..., 0] == 0)
    assert torch.all(per_chunk[0, ..., [0, 1, 3]] > 0) and torch.all(per_chunk[1, ..., 1:] > 0)
    torch.testing.assert_close(per_chunk.sum(-1), torch.ones(per_chunk.shape[:-1]))


def test_generate_returns_cross_attentions_per_step(model):
    config = model.config
    ids, media = make_ids(config), make_media(config)
    new_tokens = 3
    out = model.generate(
        input_ids=ids,
        **media,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        return_dict_in_generate=True,
        output_attentions=True,
        output_hidden_states=True,
    )
    m = config.combiner_config.num_output_tokens
    heads = config.text_config.num_attention_heads
    assert len(out.cross_attentions) == len(out.attentions) == len(out.hidden_states) == new_tokens
    for step, layers in enumerate(out.cross_attentions):
        q_len = ids.shape[1] if step == 0 else 1
        assert len(layers) == len(config.text_config.cross_attention_layers)
        assert all(weights.shape == (2, heads, q_len, NUM_CHUNKS * m) for weights in layers)
    # Step 0 (prefill) is the forward pass on the prompt.
    with torch.no_grad():
        forward = model(input_ids=ids, **media, output_attentions=True)
    torch.testing.assert_close(out.cross_attentions[0][0], forward.cross_attentions[0])
    # A decoding step's attention equals the forward pass's last row on the sequence so far.
    with torch.no_grad():
        forward = model(input_ids=out.sequences[:, :-1], **media, output_attentions=True)
    torch.testing.assert_close(out.cross_attentions[-1][0][:, :, -1], forward.cross_attentions[0][:, :, -1])


def test_output_attentions_with_sdpa_model_gives_the_eager_weights(model):
    config = model.config
    ids, media = make_ids(config), make_media(config)
    sdpa = copy.deepcopy(model)
    sdpa.set_attn_implementation("sdpa")
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    with torch.no_grad():
        from_sdpa = sdpa(input_ids=ids, **media, output_attentions=True)
        from_eager = eager(input_ids=ids, **media, output_attentions=True)
    for name in ("attentions", "cross_attentions", "latent_attentions"):
        for a, b in zip(getattr(from_sdpa, name), getattr(from_eager, name), strict=True):
            torch.testing.assert_close(a, b)
