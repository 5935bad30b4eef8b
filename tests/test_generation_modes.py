"""Every `generate()` mode transformers 5.24 ships for decoder-only models works with media (the checks of
transformers' `GenerationTesterMixin`): greedy, sampling, beam search, beam sampling, prompt lookup, assisted
decoding with a smaller Mirasol, and the static cache (with its compiled decoding step). Each is compared with
decoding without a cache, or with greedy decoding where the mode promises the same tokens.

Contrastive search and DoLa left transformers in 5.x (they are Hub `custom_generate` repositories now), so they are
not tested here.
"""

import pytest
import torch
from transformers import CompileConfig

from mirasol_hf import MirasolConfig, MirasolForConditionalGeneration

NUM_CHUNKS = 4
NEW_TOKENS = 6


def build(seed=0, **text_overrides):
    torch.manual_seed(seed)
    # Open gates, so the media change the tokens (with closed gates any media would give the same answer); untied
    # embeddings, as a random tied model only repeats its last token.
    config = MirasolConfig.from_preset(
        "tiny", text_config={"cross_attention_gate_init": 1.0, "tie_word_embeddings": False, "initializer_range": 0.2}
    )
    for key, value in text_overrides.items():
        setattr(config.text_config, key, value)
    return MirasolForConditionalGeneration(config).eval()


@pytest.fixture(scope="module")
def model():
    return build()


@pytest.fixture(scope="module")
def inputs(model):
    config = model.config
    generator = torch.Generator().manual_seed(3)
    size = config.video_config.image_size
    ids = torch.randint(3, 40, (2, 5), generator=generator)
    return {
        "input_ids": torch.cat([ids, ids], dim=1),  # repeated, so prompt lookup finds drafts
        "attention_mask": torch.ones(2, 10, dtype=torch.long),
        "pixel_values_videos": torch.randn(
            2, NUM_CHUNKS * config.frames_per_chunk, 3, size, size, generator=generator
        ),
        "input_features": torch.randn(
            2, config.audio_config.num_mel_bins, NUM_CHUNKS * config.audio_frames_per_chunk, generator=generator
        ),
    }


def generate(model, inputs, seed=0, **kwargs):
    torch.manual_seed(seed)
    return model.generate(**inputs, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, **kwargs)


@pytest.fixture(scope="module")
def greedy(model, inputs):
    return generate(model, inputs, do_sample=False)


def test_greedy_equals_argmax_of_full_forward_passes(model, inputs, greedy):
    """The reference recomputes everything from scratch each step: no cache, no generate()."""
    sequence = inputs["input_ids"]
    media = {key: inputs[key] for key in ("pixel_values_videos", "input_features")}
    with torch.no_grad():
        for _ in range(NEW_TOKENS):
            logits = model(input_ids=sequence, **media, use_cache=False).logits
            sequence = torch.cat([sequence, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    torch.testing.assert_close(greedy, sequence)
    other_media = {key: value.flip(0) for key, value in media.items()}
    assert not torch.equal(generate(model, {**inputs, **other_media}, do_sample=False), greedy), "media unused"


@pytest.mark.parametrize(
    "mode",
    [
        {"do_sample": False},
        {"do_sample": True, "top_k": 5},
        {"do_sample": False, "num_beams": 3},
        {"do_sample": True, "num_beams": 2, "top_k": 5},
    ],
    ids=["greedy", "sample", "beam_search", "beam_sample"],
)
def test_cache_equals_no_cache(model, inputs, mode):
    with_cache = generate(model, inputs, **mode)
    without_cache = generate(model, inputs, use_cache=False, **mode)
    torch.testing.assert_close(with_cache, without_cache)


def test_beam_search_scores_its_beams_with_media(model, inputs):
    out = generate(model, inputs, do_sample=False, num_beams=3, num_return_sequences=3, return_dict_in_generate=True,
                   output_scores=True)
    assert out.sequences.shape == (6, inputs["input_ids"].shape[1] + NEW_TOKENS)
    # Beams come back best first.
    scores = out.sequences_scores.view(2, 3)
    assert torch.all(scores[:, :-1] >= scores[:, 1:])


# transformers' assisted decoding (prompt lookup included) takes one prompt at a time.
@pytest.mark.parametrize("row", [0, 1])
def test_prompt_lookup_equals_greedy(model, inputs, greedy, row):
    one = {key: value[row : row + 1] for key, value in inputs.items()}
    torch.testing.assert_close(generate(model, one, do_sample=False, prompt_lookup_num_tokens=3), greedy[row : row + 1])


@pytest.mark.parametrize("row", [0, 1])
def test_assisted_decoding_with_a_smaller_mirasol_equals_greedy(model, inputs, greedy, row):
    # A one-layer text decoder on the same media width; its own answers differ, so drafts get rejected and the cache
    # is cropped (the cross-attention keys/values must survive that).
    one = {key: value[row : row + 1] for key, value in inputs.items()}
    assistant = build(seed=1, num_hidden_layers=1, cross_attention_layers=[0])
    assert not torch.equal(generate(assistant, one, do_sample=False), greedy[row : row + 1])
    assisted = generate(model, one, do_sample=False, assistant_model=assistant)
    torch.testing.assert_close(assisted, greedy[row : row + 1])


def test_static_cache_equals_dynamic_cache(model, inputs, greedy):
    torch.testing.assert_close(generate(model, inputs, do_sample=False, cache_implementation="static"), greedy)


def test_static_cache_compiled_decoding_step_equals_dynamic_cache(inputs, greedy):
    model = build()
    # What transformers' compile tests do on CPU; the eager backend traces the whole step (fullgraph) without the
    # inductor's code generation.
    compile_config = CompileConfig(backend="eager", fullgraph=True)
    compile_config._compile_all_devices = True
    compiled = generate(model, inputs, do_sample=False, cache_implementation="static", compile_config=compile_config)
    torch.testing.assert_close(compiled, greedy)
    assert hasattr(model, "_compiled_call")  # generate() did compile the decoding step


def test_static_cache_follows_clips_of_other_lengths_and_text_only(model, inputs):
    """A static cache sized for one clip's media tokens is not reused for another length, nor for text alone."""
    one = {key: value[:1] for key, value in inputs.items()}
    frames, audio = model.config.frames_per_chunk, model.config.audio_frames_per_chunk
    for num_chunks in (2, NUM_CHUNKS, 3):
        clip = {
            **one,
            "pixel_values_videos": one["pixel_values_videos"][:, : num_chunks * frames],
            "input_features": one["input_features"][:, :, : num_chunks * audio],
        }
        static = generate(model, clip, do_sample=False, cache_implementation="static")
        torch.testing.assert_close(static, generate(model, clip, do_sample=False))
    text = {key: one[key] for key in ("input_ids", "attention_mask")}
    static = generate(model, text, do_sample=False, cache_implementation="static")
    torch.testing.assert_close(static, generate(model, text, do_sample=False))


def test_assistant_of_another_media_width_is_refused_clearly(model, inputs):
    torch.manual_seed(0)
    text_config = {"num_hidden_layers": 1, "cross_attention_layers": [0]}
    config = MirasolConfig.from_preset("tiny", latent_config={"hidden_size": 48}, text_config=text_config)
    assistant = MirasolForConditionalGeneration(config).eval()
    one = {key: value[:1] for key, value in inputs.items()}
    with pytest.raises(ValueError, match="assistant_model cross-attends to media latents of width 48"):
        generate(model, one, do_sample=False, assistant_model=assistant)
