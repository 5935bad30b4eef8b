"""Mirasol behaves as a transformers 5.24 model: recorded outputs, tuples, configs, attention choice, loss kwargs,
parallelism plans (the checks of transformers' `ModelTesterMixin`, on the tiny preset)."""

import copy

import pytest
import torch

from conftest import random_media, random_text
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
    return random_media(config, batch, NUM_CHUNKS, seed)


def make_ids(config, batch=2, length=6, seed=1):
    return random_text(config, batch, length, seed)


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


# Given inputs_embeds, the embedding layer does not run and the first decoder layer's input stands in, which is the
# embeddings unless a cross-attention block comes before layer 0.
@pytest.mark.parametrize("use_embeds, cross_attention_layers", [(False, [0, 1]), (True, [1])])
def test_hidden_states_start_with_the_embeddings(use_embeds, cross_attention_layers):
    text_config = {"cross_attention_layers": cross_attention_layers, "cross_attention_gate_init": 0.5}
    config = tiny_config(text_config=text_config)
    model = MirasolForConditionalGeneration(config).eval()
    ids, media = make_ids(config), make_media(config)
    embeddings = model.get_input_embeddings()(ids)
    text = {"inputs_embeds": embeddings} if use_embeds else {"input_ids": ids}
    with torch.no_grad():
        out = model(**text, **media, output_hidden_states=True)
    assert len(out.hidden_states) == config.text_config.num_hidden_layers + 1
    torch.testing.assert_close(out.hidden_states[0], embeddings)


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_eager_and_sdpa_agree_on_hidden_states(model, dtype, padding_side):
    """transformers' eager-vs-SDPA check: every hidden state of the real (unpadded) tokens, with media."""
    config = model.config
    ids, media = make_ids(config, length=7), make_media(config)
    attention_mask = torch.ones_like(ids)
    padded = slice(0, 3) if padding_side == "left" else slice(4, 7)
    attention_mask[0, padded] = 0
    media = {key: value.to(dtype) for key, value in media.items()}
    outputs = {}
    for implementation in ("eager", "sdpa"):
        copy_ = copy.deepcopy(model).to(dtype)
        copy_.set_attn_implementation(implementation)
        with torch.no_grad():
            outputs[implementation] = copy_(
                input_ids=ids, attention_mask=attention_mask, **media, output_hidden_states=True
            ).hidden_states
    tolerance = {torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 3e-2}[dtype]
    real = attention_mask.bool()
    for eager, sdpa in zip(outputs["eager"], outputs["sdpa"], strict=True):
        assert torch.isfinite(eager[real]).all() and torch.isfinite(sdpa[real]).all()
        torch.testing.assert_close(sdpa[real].float(), eager[real].float(), atol=tolerance, rtol=tolerance)


# ---- 2. return_dict ------------------------------------------------------------------------------------------------


def test_return_dict_false_gives_the_tuple_of_the_output(model):
    config = model.config
    ids, media = make_ids(config), make_media(config)
    with torch.no_grad():
        as_dict = model(input_ids=ids, **media, labels=ids, output_hidden_states=True)
        as_tuple = model(input_ids=ids, **media, labels=ids, output_hidden_states=True, return_dict=False)
        base_tuple = model.model(input_ids=ids, **media, return_dict=False)
    assert isinstance(as_tuple, tuple) and isinstance(base_tuple, tuple)
    assert len(as_tuple) == len(as_dict.to_tuple())
    torch.testing.assert_close(as_tuple[0], as_dict.loss)
    torch.testing.assert_close(as_tuple[1], as_dict.logits)
    torch.testing.assert_close(base_tuple[0], as_dict.hidden_states[-1])


def test_config_return_dict_false_gives_tuples():
    config = tiny_config(return_dict=False)
    model = MirasolForConditionalGeneration(config).eval()
    ids = make_ids(config)
    with torch.no_grad():
        assert isinstance(model(input_ids=ids), tuple)
        assert isinstance(model.model(input_ids=ids), tuple)
        assert isinstance(model(input_ids=ids, return_dict=True).logits, torch.Tensor)
        # generate() still works: it asks the forward for a dict.
        assert model.generate(input_ids=ids, max_new_tokens=2, do_sample=False).shape == (2, 8)


# ---- 3. token ids and vocabulary on the top-level config ------------------------------------------------------------


@pytest.mark.parametrize("name, value", [("vocab_size", 200), ("pad_token_id", 5), ("bos_token_id", 6),
                                         ("eos_token_id", [2, 7])])
def test_token_ids_and_vocab_size_are_settable_and_kept_in_text_config(name, value, tmp_path):
    config = tiny_config()
    setattr(config, name, value)
    assert getattr(config, name) == value and getattr(config.text_config, name) == value
    config.save_pretrained(tmp_path)
    reloaded = MirasolConfig.from_pretrained(tmp_path)
    assert getattr(reloaded, name) == value and getattr(reloaded.text_config, name) == value
    assert getattr(MirasolConfig.from_preset("tiny", **{name: value}).text_config, name) == value


def test_resize_token_embeddings_updates_both_configs_and_the_head():
    torch.manual_seed(0)
    model = MirasolForConditionalGeneration(tiny_config()).eval()
    old_vocab = model.config.vocab_size
    model.resize_token_embeddings(old_vocab + 10)
    assert model.config.vocab_size == model.config.text_config.vocab_size == old_vocab + 10
    assert model.lm_head.weight.shape[0] == model.get_input_embeddings().weight.shape[0] == old_vocab + 10
    with torch.no_grad():
        out = model(input_ids=torch.tensor([[old_vocab + 9, 3]]), labels=torch.tensor([[old_vocab + 9, 3]]))
    assert out.logits.shape[-1] == old_vocab + 10 and torch.isfinite(out.loss)


# ---- 4. attention implementation per part --------------------------------------------------------------------------


def _implementations(model):
    base = model.model if isinstance(model, MirasolForConditionalGeneration) else model
    return {
        "text": base.text_model.layers[0].self_attn.config._attn_implementation,
        "video": base.video_encoder.encoder.layers[0].self_attn.config._attn_implementation,
        "latent": base.latent_model.encoder.layers[0].self_attn.config._attn_implementation,
    }


def test_from_pretrained_keeps_a_per_part_attention_implementation(tmp_path):
    MirasolModel(tiny_config()).save_pretrained(tmp_path)
    model = MirasolModel.from_pretrained(tmp_path, attn_implementation={"": "sdpa", "text_config": "eager"})
    assert _implementations(model) == {"text": "eager", "video": "sdpa", "latent": "sdpa"}
    model = MirasolForConditionalGeneration.from_pretrained(tmp_path, attn_implementation="eager")
    assert set(_implementations(model).values()) == {"eager"}


def test_text_config_attention_implementation_set_before_init_is_kept():
    config = tiny_config()
    config.get_text_config(decoder=True)._attn_implementation = "eager"
    model = MirasolModel(config)
    assert _implementations(model) == {"text": "eager", "video": "sdpa", "latent": "sdpa"}


# ---- 5. shift_labels -----------------------------------------------------------------------------------------------


def test_shift_labels_are_scored_as_for_causal_lm_loss(model):
    from transformers.loss.loss_utils import ForCausalLMLoss

    config = model.config
    ids = make_ids(config)
    labels = ids.clone()
    labels[:, :2] = -100
    shift_labels = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=-100)  # what context parallelism passes
    with torch.no_grad():
        from_labels = model(input_ids=ids, labels=labels)
        from_shift = model(input_ids=ids, shift_labels=shift_labels)
        other = model(input_ids=ids, labels=labels, shift_labels=torch.full_like(ids, 5))
        reference = ForCausalLMLoss(from_labels.logits, None, config.vocab_size, shift_labels=shift_labels)
        summed = model(input_ids=ids, shift_labels=shift_labels, num_items_in_batch=torch.tensor(40))
    torch.testing.assert_close(from_shift.loss, reference)
    torch.testing.assert_close(from_labels.loss, reference)
    torch.testing.assert_close(other.text_loss, ForCausalLMLoss(
        other.logits, None, config.vocab_size, shift_labels=torch.full_like(ids, 5)))
    torch.testing.assert_close(summed.loss, ForCausalLMLoss(
        from_labels.logits, None, config.vocab_size, num_items_in_batch=torch.tensor(40), shift_labels=shift_labels))


# ---- 7. parallelism plans name modules Mirasol has ---------------------------------------------------------------


def _generic_module_names(model):
    import re

    return {re.sub(r"\.\d+(?=\.|$)", ".*", name): module for name, module in model.named_modules()}


@pytest.mark.parametrize("overrides", [{}, {"text_config": {"cross_attention_layers": [0, 1]}}])
def test_every_parallelism_plan_entry_names_a_module(overrides):
    model = MirasolForConditionalGeneration(tiny_config(**overrides))
    modules = _generic_module_names(model)
    for plan in (model.tp_plan, model.pp_plan, model.fsdp_plan):
        assert plan
        for pattern in plan:
            assert pattern in modules, f"{pattern} matches no module"
    # Every linear layer of the text decoder is sharded by tensor parallelism, and only linear layers / embeddings.
    text_linears = {
        name for name, module in modules.items() if name.startswith("model.text_model.") and isinstance(
            module, torch.nn.Linear)
    }
    assert text_linears <= set(model.tp_plan)
    assert all(isinstance(modules[name], (torch.nn.Linear, torch.nn.Embedding)) for name in model.tp_plan)
    classes = {type(module).__name__ for module in model.modules()}
    assert model._no_split_modules and set(model._no_split_modules) <= classes
