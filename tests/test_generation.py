"""generate(): decoding strategies, the cache, and encoding the media once."""

import torch

from conftest import random_media, random_text, tiny_model


def _count_calls(module):
    calls = []
    module.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_greedy_sampling_and_beam_search_generate_new_tokens():
    model = tiny_model()
    media, input_ids = random_media(model.config), random_text(model.config)
    vocab = model.config.vocab_size
    greedy = model.generate(input_ids=input_ids, **media, max_new_tokens=5, do_sample=False)
    assert greedy.shape == (2, 12) and torch.equal(greedy[:, :7], input_ids)
    torch.manual_seed(0)
    sampled = model.generate(input_ids=input_ids, **media, max_new_tokens=5, do_sample=True, top_k=20)
    assert sampled.shape[0] == 2 and sampled.max() < vocab
    beams = model.generate(input_ids=input_ids, **media, max_new_tokens=5, num_beams=3, num_return_sequences=2)
    assert beams.shape[0] == 4 and torch.equal(beams[::2, :7], input_ids)


def test_generation_with_cache_equals_generation_without():
    model = tiny_model()
    media, input_ids = random_media(model.config), random_text(model.config)
    settings = dict(max_new_tokens=6, do_sample=False, output_logits=True, return_dict_in_generate=True)
    cached = model.generate(input_ids=input_ids, **media, use_cache=True, **settings)
    uncached = model.generate(input_ids=input_ids, **media, use_cache=False, **settings)
    assert torch.equal(cached.sequences, uncached.sequences)
    for a, b in zip(cached.logits, uncached.logits):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    beams = dict(max_new_tokens=6, num_beams=3, do_sample=False)
    assert torch.equal(
        model.generate(input_ids=input_ids, **media, use_cache=True, **beams),
        model.generate(input_ids=input_ids, **media, use_cache=False, **beams),
    )


def test_media_is_encoded_once_per_generate_call():
    model = tiny_model()
    media, input_ids = random_media(model.config), random_text(model.config)
    video_calls = _count_calls(model.model.video_encoder)
    audio_calls = _count_calls(model.model.audio_encoder)
    for settings in ({"do_sample": False}, {"num_beams": 3}, {"do_sample": False, "use_cache": False}):
        video_calls.clear()
        audio_calls.clear()
        model.generate(input_ids=input_ids, **media, max_new_tokens=5, **settings)
        assert len(video_calls) == 1 and len(audio_calls) == 1, settings


def test_cross_attention_keys_and_values_are_computed_once_and_reused_from_the_cache():
    model = tiny_model()
    media, input_ids = random_media(model.config), random_text(model.config)
    block = model.model.text_model.cross_attention_blocks[0]
    key_calls, query_calls = _count_calls(block.cross_attn.k_proj), _count_calls(block.cross_attn.q_proj)
    model.generate(input_ids=input_ids, **media, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    assert len(key_calls) == 1  # prefill only
    assert len(query_calls) == 5  # every step still queries the media


def test_generate_from_media_latents_equals_generate_from_raw_media():
    model = tiny_model()
    media, input_ids = random_media(model.config), random_text(model.config)
    encoded = model.encode_media(**media)
    video_calls = _count_calls(model.model.video_encoder)
    settings = dict(max_new_tokens=6, do_sample=False)
    from_latents = [model.generate(input_ids=input_ids, media_latents=encoded, **settings) for _ in range(3)]
    assert not video_calls  # asking again about the same video does not re-encode it
    raw = model.generate(input_ids=input_ids, **media, **settings)
    for output in from_latents:
        assert torch.equal(output, raw)


def test_left_padded_batch_generates_what_each_prompt_generates_alone():
    model = tiny_model()
    media = random_media(model.config)
    short, long = random_text(model.config, batch=1, length=4, seed=5), random_text(model.config, batch=1, length=7)
    pad = model.config.pad_token_id
    input_ids = torch.cat([torch.cat([torch.full((1, 3), pad), short], dim=1), long])
    attention_mask = (torch.arange(7)[None] >= torch.tensor([[3], [0]])).long()
    settings = dict(max_new_tokens=5, min_new_tokens=5, do_sample=False)
    batched = model.generate(input_ids=input_ids, attention_mask=attention_mask, **media, **settings)
    alone_short = model.generate(input_ids=short, **{k: v[:1] for k, v in media.items()}, **settings)
    alone_long = model.generate(input_ids=long, **{k: v[1:] for k, v in media.items()}, **settings)
    assert torch.equal(batched[0, 7:], alone_short[0, 4:])
    assert torch.equal(batched[1, 7:], alone_long[0, 7:])
