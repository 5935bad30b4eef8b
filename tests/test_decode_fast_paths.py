"""The decoder's two small speed-ups give what the straightforward computation gives: the media cross-attention mask
built once per generate() call (not at every step), and no cache built in a training forward."""

import pytest
import torch
from transformers import DynamicCache

import mirasol_hf.modeling_mirasol as modeling
import mirasol_hf.text_decoder as text_decoder
from mirasol_hf import MirasolConfig, MirasolForConditionalGeneration

NEW_TOKENS = 5


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    # Open gates so the media (and so their mask) change the logits; untied embeddings so tokens vary.
    config = MirasolConfig.from_preset(
        "tiny", text_config={"cross_attention_gate_init": 1.0, "tie_word_embeddings": False, "initializer_range": 0.2}
    )
    return MirasolForConditionalGeneration(config).eval()


@pytest.fixture(scope="module")
def inputs(model):
    """Random media latents with a chunk mask that matters: row 0 has two chunks masked, row 1 only chunk 0."""
    generator = torch.Generator().manual_seed(1)
    text = model.config.text_config
    num_chunks, tokens_per_chunk = 4, model.config.combiner_config.num_output_tokens
    return {
        "input_ids": torch.randint(3, text.vocab_size, (2, 6), generator=generator),
        "attention_mask": torch.ones(2, 6, dtype=torch.long),
        "media_latents": torch.randn(2, num_chunks, tokens_per_chunk, text.cross_attention_hidden_size,
                                     generator=generator),
        "media_chunk_mask": torch.tensor([[True, False, True, False], [True, False, False, False]]),
    }


def count_mask_builds(monkeypatch) -> list:
    calls = []
    build = text_decoder.build_media_attention_mask

    def counted(*args):
        calls.append(args)
        return build(*args)

    monkeypatch.setattr(text_decoder, "build_media_attention_mask", counted)
    monkeypatch.setattr(modeling, "build_media_attention_mask", counted)
    return calls


@pytest.mark.parametrize(
    "mode", [{"do_sample": False}, {"num_beams": 3, "num_return_sequences": 2}, {"do_sample": True, "top_k": 5}]
)
def test_generate_builds_the_media_mask_once_and_decodes_as_before(model, inputs, monkeypatch, mode):
    """Reference: `media_attention_mask=None`, so every step builds the mask from `media_chunk_mask` (the old path)."""
    calls = count_mask_builds(monkeypatch)
    settings = dict(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, return_dict_in_generate=True,
                    output_logits=True, **mode)
    torch.manual_seed(0)
    fast = model.generate(**inputs, **settings)
    assert len(calls) == 1, f"the media mask was built {len(calls)} times in one generate() call"
    torch.manual_seed(0)
    rebuilt = model.generate(**inputs, media_attention_mask=None, **settings)
    assert len(calls) == 1 + NEW_TOKENS, "the reference should build the mask at every forward"
    torch.testing.assert_close(fast.sequences, rebuilt.sequences, rtol=0, atol=0)
    for step_fast, step_rebuilt in zip(fast.logits, rebuilt.logits, strict=True):
        torch.testing.assert_close(step_fast, step_rebuilt, rtol=0, atol=0)


def test_a_given_mask_equals_the_one_built_from_the_chunk_mask(model, inputs):
    media = {key: inputs[key] for key in ("media_latents", "media_chunk_mask")}
    ids, labels = inputs["input_ids"], inputs["input_ids"]
    mask = text_decoder.build_media_attention_mask(inputs["media_chunk_mask"], inputs["media_latents"].shape[2],
                                                    torch.float32)
    with torch.no_grad():
        built = model(input_ids=ids, labels=labels, **media)
        given = model(input_ids=ids, labels=labels, media_attention_mask=mask, **media)
        other_dtype = model(input_ids=ids, labels=labels, media_attention_mask=mask.double(), **media)
        unmasked = model(input_ids=ids, media_latents=inputs["media_latents"])
    for output in (given, other_dtype):
        torch.testing.assert_close(output.logits, built.logits, rtol=0, atol=0)
        torch.testing.assert_close(output.loss, built.loss, rtol=0, atol=0)
    assert not torch.allclose(unmasked.logits, built.logits), "the chunk mask does not change the logits"
    with pytest.raises(ValueError, match="media_attention_mask must be"):
        model(input_ids=ids, media_attention_mask=mask[:, :, :, 1:], **media)


def test_a_training_forward_builds_no_cache(model, inputs):
    """Loss, logits and gradients equal those of a training forward with a cache explicitly asked for."""
    model.train()
    try:
        results = {}
        for use_cache in (None, True):
            model.zero_grad()
            torch.manual_seed(0)  # the same dropout draws in both forwards
            output = model(**inputs, labels=inputs["input_ids"], use_cache=use_cache)
            output.loss.backward()
            grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
            results[use_cache] = output, grads
        default, cached = results[None][0], results[True][0]
        assert default.cache is None
        assert isinstance(cached.cache, DynamicCache)
        torch.testing.assert_close(default.logits, cached.logits, rtol=0, atol=0)
        torch.testing.assert_close(default.loss, cached.loss, rtol=0, atol=0)
        for grad, grad_cached in zip(results[None][1], results[True][1], strict=True):
            torch.testing.assert_close(grad, grad_cached, rtol=0, atol=0)
        with torch.no_grad():  # no gradients, no backward: a forward in training mode still caches by default
            assert isinstance(model(**inputs).cache, DynamicCache)
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()
    with torch.no_grad():
        assert isinstance(model(**inputs).cache, DynamicCache), "an eval forward caches by default (config.use_cache)"
        assert model(**inputs, use_cache=False).cache is None
