"""The assembled model: losses, media paths, masks, attention implementations, checkpoints, Auto classes."""

import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForMultimodalLM, LlamaConfig, LlamaForCausalLM

from conftest import random_media, random_text, tiny_model
from mirasol_hf import MirasolConfig, MirasolForConditionalGeneration, MirasolModel


def _labels(input_ids, prompt_length=3):
    labels = input_ids.clone()
    labels[:, :prompt_length] = -100
    return labels


def test_forward_returns_each_loss_and_their_weighted_total():
    model = tiny_model(text_loss_weight=10.0, latent_loss_weight=0.5, reconstruction_loss_weight=2.0)
    media, input_ids = random_media(model.config), random_text(model.config)
    out = model(input_ids=input_ids, labels=_labels(input_ids), **media)
    assert out.logits.shape == (2, 7, model.config.vocab_size)
    for name in ("text_loss", "latent_loss", "reconstruction_loss"):
        assert getattr(out, name).ndim == 0 and getattr(out, name) > 0
    expected = 10.0 * out.text_loss + 0.5 * out.latent_loss + 2.0 * out.reconstruction_loss
    torch.testing.assert_close(out.loss, expected)


def test_every_part_gets_a_gradient_from_the_total_loss():
    model = tiny_model().train()
    media, input_ids = random_media(model.config), random_text(model.config)
    model(input_ids=input_ids, labels=_labels(input_ids), **media).loss.backward()
    for part in ("model.video_encoder", "model.audio_encoder", "model.combiner", "model.latent_model",
                 "model.text_model", "latent_predictor", "reconstruction_decoder"):
        grads = [p.grad for name, p in model.named_parameters() if name.startswith(part)]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), part


def test_media_latents_give_identical_logits_and_text_loss():
    model = tiny_model()
    media, input_ids = random_media(model.config), random_text(model.config)
    labels = _labels(input_ids)
    direct = model(input_ids=input_ids, labels=labels, **media)
    encoded = model.encode_media(**media)
    assert encoded.media_latents.shape == (2, model.config.num_chunks, 4, model.config.latent_config.hidden_size)
    reused = model(input_ids=input_ids, labels=labels, media_latents=encoded.media_latents,
                   media_chunk_mask=encoded.media_chunk_mask)
    assert torch.equal(direct.logits, reused.logits)
    assert torch.equal(direct.text_loss, reused.text_loss)
    # the losses that need raw media are absent, not a crash, and `loss` is the weighted text loss
    assert reused.latent_loss is None and reused.reconstruction_loss is None
    torch.testing.assert_close(reused.loss, model.config.text_loss_weight * reused.text_loss)
    # the whole output object is accepted too
    assert torch.equal(model(input_ids=input_ids, media_latents=encoded).logits, direct.logits)


def test_media_index_shares_one_encoding_among_questions_about_a_clip():
    model = tiny_model()
    media, input_ids = random_media(model.config), random_text(model.config, batch=5)
    labels = _labels(input_ids)
    media_index = torch.tensor([0, 1, 1, 0, 1])
    repeated = {key: value[media_index] for key, value in media.items()}  # every question with its own copy
    with torch.no_grad():
        shared = model(input_ids=input_ids, labels=labels, media_index=media_index, **media)
        copied = model(input_ids=input_ids, labels=labels, **repeated)
        per_clip = model(input_ids=input_ids[:2], labels=labels[:2], **media)
    torch.testing.assert_close(shared.logits, copied.logits)
    torch.testing.assert_close(shared.text_loss, copied.text_loss)
    assert shared.media_latents.shape[0] == 5  # what each question attended to
    # the media losses are computed once per clip, not weighted by how often a clip is asked about
    torch.testing.assert_close(shared.latent_loss, per_clip.latent_loss)
    torch.testing.assert_close(shared.reconstruction_loss, per_clip.reconstruction_loss)

    generate = dict(max_new_tokens=3, do_sample=False)
    with_index = model.generate(input_ids=input_ids, media_index=media_index, **media, **generate)
    assert torch.equal(with_index, model.generate(input_ids=input_ids, **repeated, **generate))
    encoded = model.encode_media(**media)
    assert torch.equal(model.generate(input_ids=input_ids, media_latents=encoded, media_index=media_index, **generate),
                       with_index)


@pytest.mark.parametrize("bad_index, message", [
    (torch.tensor([0, 2, 1, 0, 1]), "must lie in"),  # only 2 clips
    (torch.tensor([0, 1]), "one entry per text row"),
    (torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0]), "integer tensor"),
])
def test_media_index_errors_name_the_problem(bad_index, message):
    model = tiny_model()
    media, input_ids = random_media(model.config), random_text(model.config, batch=5)
    with pytest.raises(ValueError, match=message):
        model(input_ids=input_ids, media_index=bad_index, **media)
    with pytest.raises(ValueError, match="without media"):
        model(input_ids=input_ids, media_index=torch.zeros(5, dtype=torch.long))


def test_eval_forward_is_deterministic_even_with_dropout_configured():
    model = tiny_model(
        video_config={"attention_dropout": 0.3, "hidden_dropout": 0.3},
        combiner_config={"hidden_dropout": 0.3},
        text_config={"attention_dropout": 0.3},
    )
    media, input_ids = random_media(model.config), random_text(model.config)
    assert torch.equal(model(input_ids=input_ids, **media).logits, model(input_ids=input_ids, **media).logits)
    model.train()
    assert not torch.equal(model(input_ids=input_ids, **media).logits, model(input_ids=input_ids, **media).logits)


def test_audio_mask_makes_the_model_ignore_audio_content():
    model = tiny_model()
    media, input_ids = random_media(model.config), random_text(model.config)
    no_audio = torch.zeros(2, model.config.num_chunks, dtype=torch.bool)
    a = model(input_ids=input_ids, audio_chunk_mask=no_audio, **media).logits
    other_audio = {**media, "input_features": torch.randn_like(media["input_features"])}
    b = model(input_ids=input_ids, audio_chunk_mask=no_audio, **other_audio).logits
    silent = {**media, "input_features": torch.zeros_like(media["input_features"])}
    c = model(input_ids=input_ids, **silent).logits
    without = model(input_ids=input_ids, pixel_values_videos=media["pixel_values_videos"]).logits
    assert torch.equal(a, b)
    assert torch.equal(a, without)  # no audio track at all == every audio chunk masked
    assert not torch.allclose(a, c)  # masked audio is not silence


def test_video_mask_makes_the_model_ignore_masked_frames():
    model = tiny_model()
    media, input_ids = random_media(model.config), random_text(model.config)
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    changed = media["pixel_values_videos"].clone()
    changed[0, 12:] = torch.randn_like(changed[0, 12:])  # frames of chunk 3 of the first clip
    a = model(input_ids=input_ids, video_chunk_mask=mask, **media).logits
    b = model(input_ids=input_ids, video_chunk_mask=mask, **{**media, "pixel_values_videos": changed}).logits
    assert torch.equal(a, b)


def test_text_only_input_skips_cross_attention():
    model = tiny_model()
    input_ids = random_text(model.config)
    out = model(input_ids=input_ids)
    assert out.media_latents is None and torch.isfinite(out.logits).all()


def test_sample_without_any_media_gets_no_cross_attention_update():
    model = tiny_model()
    media, input_ids = random_media(model.config), random_text(model.config)
    nothing = torch.tensor([[False] * 4, [True] * 4])
    logits = model(input_ids=input_ids, video_chunk_mask=nothing, audio_chunk_mask=nothing, **media).logits
    text_only = model(input_ids=input_ids).logits
    torch.testing.assert_close(logits[0], text_only[0])
    assert not torch.allclose(logits[1], text_only[1])


def test_eager_and_sdpa_attention_agree():
    model = tiny_model()
    media, input_ids = random_media(model.config), random_text(model.config)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, :2] = 0
    sdpa = model(input_ids=input_ids, attention_mask=attention_mask, **media).logits
    model.set_attn_implementation("eager")
    assert model.config.video_config._attn_implementation == "eager"
    eager = model(input_ids=input_ids, attention_mask=attention_mask, **media).logits
    real = attention_mask.bool()  # padding positions hold no prediction
    torch.testing.assert_close(sdpa[real], eager[real], atol=1e-5, rtol=1e-5)


def test_left_padding_does_not_change_the_logits():
    model = tiny_model()
    media, input_ids = random_media(model.config), random_text(model.config)
    unpadded = model(input_ids=input_ids, **media).logits
    padded_ids = torch.cat([torch.full((2, 3), model.config.pad_token_id), input_ids], dim=1)
    attention_mask = torch.cat([torch.zeros(2, 3, dtype=torch.long), torch.ones_like(input_ids)], dim=1)
    padded = model(input_ids=padded_ids, attention_mask=attention_mask, **media).logits[:, 3:]
    torch.testing.assert_close(padded, unpadded, atol=1e-5, rtol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients():
    media, input_ids = random_media(MirasolConfig.from_preset("tiny")), random_text(MirasolConfig.from_preset("tiny"))
    grads = []
    for checkpointing in (False, True):
        model = tiny_model().train()
        if checkpointing:
            model.activation_checkpointing_enable()
            assert model.model.text_model.layers[0].gradient_checkpointing
            assert model.model.video_encoder.encoder.layers[0].gradient_checkpointing
        model(input_ids=input_ids, labels=_labels(input_ids), **media).loss.backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-5)


def test_text_decoder_is_a_llama_when_the_gates_are_closed():
    model = tiny_model()
    text_config = model.config.text_config
    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=text_config.vocab_size,
            hidden_size=text_config.hidden_size,
            intermediate_size=text_config.intermediate_size,
            num_hidden_layers=text_config.num_hidden_layers,
            num_attention_heads=text_config.num_attention_heads,
            num_key_value_heads=text_config.num_key_value_heads,
            rms_norm_eps=text_config.rms_norm_eps,
            tie_word_embeddings=True,
        )
    ).eval()
    llama_state = {k.removeprefix("model."): v for k, v in llama.state_dict().items() if k.startswith("model.")}
    missing, unexpected = model.model.text_model.load_state_dict(llama_state, strict=False)
    assert unexpected == []
    assert all(name.startswith("cross_attention_blocks.") for name in missing)  # only the new blocks are new
    model.lm_head.weight = model.model.text_model.embed_tokens.weight
    for block in model.model.text_model.cross_attention_blocks:
        block.cross_attn_attn_gate.data.zero_()
        block.cross_attn_mlp_gate.data.zero_()
    input_ids = random_text(model.config)
    media = random_media(model.config)
    torch.testing.assert_close(model(input_ids=input_ids, **media).logits, llama(input_ids=input_ids).logits)


@pytest.mark.parametrize(
    "media_change, message",
    [
        (lambda m: {**m, "pixel_values_videos": m["pixel_values_videos"][:, :10]}, "multiple of frames_per_chunk"),
        (lambda m: {**m, "input_features": m["input_features"][:, :, :20]}, "multiple of audio_frames_per_chunk"),
        (lambda m: {**m, "input_features": m["input_features"][:, :, :32]}, "disagree"),
        (lambda m: {**m, "pixel_values_videos": (m["pixel_values_videos"] * 255).to(torch.uint8)}, "float tensor"),
        (lambda m: {**m, "video_chunk_mask": torch.ones(2, 3, dtype=torch.bool)}, "video_chunk_mask"),
        (lambda m: {**m, "media_latents": torch.zeros(2, 4, 4, 32)}, "not both"),
    ],
)
def test_malformed_media_raises_a_clear_value_error(media_change, message):
    model = tiny_model()
    media, input_ids = random_media(model.config), random_text(model.config)
    with pytest.raises(ValueError, match=message):
        model(input_ids=input_ids, **media_change(media))


def test_auto_classes_resolve_to_mirasol(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    assert type(AutoConfig.from_pretrained(tmp_path)).__name__ == "MirasolConfig"
    assert isinstance(AutoModel.from_pretrained(tmp_path), MirasolModel)
    assert isinstance(AutoModelForMultimodalLM.from_pretrained(tmp_path), MirasolForConditionalGeneration)


def test_save_pretrained_writes_safetensors_and_reloads_identically_in_a_fresh_process(tmp_path):
    model = tiny_model()
    media, input_ids = random_media(model.config), random_text(model.config)
    expected = model(input_ids=input_ids, **media).logits
    model.save_pretrained(tmp_path / "model")
    assert (tmp_path / "model" / "model.safetensors").exists()
    torch.save({"media": media, "input_ids": input_ids, "expected": expected}, tmp_path / "inputs.pt")
    script = textwrap.dedent(
        f"""
        import torch
        from transformers import AutoModelForMultimodalLM
        import mirasol_hf
        data = torch.load({str(tmp_path / "inputs.pt")!r})
        for device_map in (None, "auto"):
            model = AutoModelForMultimodalLM.from_pretrained({str(tmp_path / "model")!r}, device_map=device_map).eval()
            logits = model(input_ids=data["input_ids"], **data["media"]).logits
            assert torch.equal(logits, data["expected"]), (device_map, (logits - data["expected"]).abs().max())
        print("identical")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "identical" in result.stdout


def test_tied_lm_head_stays_tied_after_loading(tmp_path):
    model = tiny_model()
    assert model.lm_head.weight is model.model.text_model.embed_tokens.weight
    model.save_pretrained(tmp_path)
    loaded = MirasolForConditionalGeneration.from_pretrained(tmp_path)
    assert loaded.lm_head.weight.data_ptr() == loaded.model.text_model.embed_tokens.weight.data_ptr()


def test_cross_attention_gates_start_closed_unless_the_config_opens_them():
    torch.manual_seed(0)
    closed = MirasolForConditionalGeneration(MirasolConfig.from_preset("tiny"))
    torch.manual_seed(0)
    opened = MirasolForConditionalGeneration(
        MirasolConfig.from_preset("tiny", text_config={"cross_attention_gate_init": 0.5})
    )
    for block_closed, block_open in zip(closed.model.text_model.cross_attention_blocks,
                                        opened.model.text_model.cross_attention_blocks):
        assert block_closed.cross_attn_attn_gate.item() == 0.0 and block_closed.cross_attn_mlp_gate.item() == 0.0
        assert block_open.cross_attn_attn_gate.item() == 0.5 and block_open.cross_attn_mlp_gate.item() == 0.5
    media, input_ids = random_media(closed.config), random_text(closed.config)
    without_media = closed.eval()(input_ids=input_ids).logits
    # closed gates: the media change nothing; open ones: they do
    torch.testing.assert_close(closed(input_ids=input_ids, **media).logits, without_media, rtol=0, atol=0)
    assert not torch.allclose(opened.eval()(input_ids=input_ids, **media).logits, opened(input_ids=input_ids).logits)
