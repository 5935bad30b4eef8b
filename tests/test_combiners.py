"""The four combiners (transformer, ttm, perceiver, cls): shapes, causality in time, the TTM memory, checkpoints,
generate, gradient checkpointing, attention implementations and the paper's TTM sizes."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from conftest import random_media, random_text, tiny_model
from mirasol_hf import MirasolConfig, MirasolForConditionalGeneration
from mirasol_hf.combiners import COMBINERS, build_combiner
from mirasol_hf.configuration_mirasol import MirasolCombinerConfig, num_video_tokens
from mirasol_hf.layers import MirasolAttention

COMBINER_TYPES = ["transformer", "ttm", "perceiver", "cls"]


def _model(combiner_type: str, seed: int = 0, **combiner_fields) -> MirasolForConditionalGeneration:
    return tiny_model(seed, combiner_config={"combiner_type": combiner_type, **combiner_fields})


def _tokens(batch=2, num_chunks=5, seed=3):
    """Encoder outputs (B, T, N, d) for a combiner built with video width 8 and audio width 12."""
    generator = torch.Generator().manual_seed(seed)
    video = torch.randn(batch, num_chunks, 5, 8, generator=generator)
    audio = torch.randn(batch, num_chunks, 6, 12, generator=generator)
    return video, audio, torch.ones(batch, num_chunks, dtype=torch.bool)


def _combiner(combiner_type: str, **fields):
    sizes = dict(hidden_size=16, num_attention_heads=2, num_hidden_layers=2, intermediate_size=32, num_output_tokens=3)
    ttm_sizes = dict(ttm_memory_tokens=4, ttm_read_tokens=6)
    config = MirasolCombinerConfig(combiner_type=combiner_type, **{**sizes, **ttm_sizes, **fields})
    torch.manual_seed(0)
    combiner = build_combiner(config, video_hidden_size=8, audio_hidden_size=12).eval()
    for name, parameter in combiner.named_parameters():
        if "embedding" in name or "memory" in name:  # zeros until the model's _init_weights; make them matter
            torch.nn.init.normal_(parameter)
    return combiner


def test_every_combiner_type_is_registered():
    assert sorted(COMBINERS) == sorted(COMBINER_TYPES)
    with pytest.raises(ValueError, match="unknown combiner_type"):
        _combiner("lstm")


@pytest.mark.parametrize("combiner_type", COMBINER_TYPES)
def test_each_combiner_gives_m_tokens_per_chunk(combiner_type):
    model = _model(combiner_type)
    config = model.config
    media = random_media(config, num_chunks=3)
    encoded = model.encode_media(**media)
    m, width = config.combiner_config.num_output_tokens, config.combiner_config.hidden_size
    assert encoded.combined_features.shape == (2, 3, m, width)
    assert encoded.media_latents.shape == (2, 3, m, config.latent_config.hidden_size)
    assert torch.isfinite(encoded.media_latents).all()


@pytest.mark.parametrize("combiner_type", COMBINER_TYPES)
def test_each_combiner_is_causal_in_time(combiner_type):
    combiner = _combiner(combiner_type)
    video, audio, mask = _tokens()
    combined = combiner.combine(video, audio, mask, mask)
    for t in range(video.shape[1] - 1):
        later_video, later_audio = video.clone(), audio.clone()
        later_video[:, t + 1 :] = torch.randn_like(later_video[:, t + 1 :])
        later_audio[:, t + 1 :] = torch.randn_like(later_audio[:, t + 1 :])
        changed = combiner.combine(later_video, later_audio, mask, mask)
        assert torch.equal(changed[:, : t + 1], combined[:, : t + 1])
        assert not torch.allclose(changed[:, t + 1], combined[:, t + 1])


@pytest.mark.parametrize("combiner_type", COMBINER_TYPES)
def test_model_latents_are_causal_in_time_with_each_combiner(combiner_type):
    model = _model(combiner_type)
    config = model.config
    media = random_media(config, num_chunks=3)
    encoded = model.encode_media(**media)
    changed = {key: value.clone() for key, value in media.items()}
    changed["pixel_values_videos"][:, 2 * config.frames_per_chunk :] += 1.0  # chunk 2's frames
    changed["input_features"][:, :, 2 * config.audio_frames_per_chunk :] += 1.0  # and its audio
    encoded_changed = model.encode_media(**changed)
    assert torch.equal(encoded_changed.media_latents[:, :2], encoded.media_latents[:, :2])
    assert not torch.allclose(encoded_changed.media_latents[:, 2], encoded.media_latents[:, 2])


def test_ttm_memory_carries_earlier_chunks_into_later_outputs():
    video, audio, mask = _tokens()
    first_changed = video.clone()
    first_changed[:, 0] += 1.0
    ttm, transformer = _combiner("ttm"), _combiner("transformer")
    # the TTM's last chunk depends on its first through the memory; the transformer combiner sees each chunk alone
    last_ttm, last_transformer = (
        (combiner.combine(first_changed, audio, mask, mask)[:, -1], combiner.combine(video, audio, mask, mask)[:, -1])
        for combiner in (ttm, transformer)
    )
    assert not torch.allclose(*last_ttm)
    assert torch.equal(*last_transformer)


def test_ttm_chunk_without_media_leaves_the_memory_unchanged():
    combiner = _combiner("ttm")
    video, audio, mask = _tokens(num_chunks=3)
    gap = torch.tensor([[True, False, True], [True, False, True]])
    with_gap = combiner.combine(video, audio, gap, gap)
    without_the_chunk = combiner.combine(video[:, [0, 2]], audio[:, [0, 2]], mask[:, :2], mask[:, :2])
    assert torch.equal(with_gap[:, 2], without_the_chunk[:, 1])


def test_ttm_state_is_a_fixed_size_memory():
    combiner = _combiner("ttm")
    video, audio, mask = _tokens(num_chunks=4)
    combined, memory = combiner.combine_streaming(video, audio, mask, mask)
    assert memory.shape == (2, combiner.config.ttm_memory_tokens, combiner.config.hidden_size)
    _, memory_after = combiner.combine_streaming(video, audio, mask, mask, state=memory)
    assert memory_after.shape == memory.shape  # the same k tokens whatever the length of the stream
    # stateless combiners carry nothing
    assert _combiner("perceiver").combine_streaming(video, audio, mask, mask)[1] is None


def test_ttm_reading_m_tokens_outputs_the_processed_tokens_directly():
    combiner = _combiner("ttm", ttm_process_hidden_size=12, ttm_process_num_heads=3)
    combiner_m = _combiner("ttm", ttm_read_tokens=3)
    video, audio, mask = _tokens()
    assert combiner.output_learner is not None and combiner_m.output_learner is None
    assert combiner.process_unit.encoder.layers[0].self_attn.q_proj.out_features == 12  # its own width
    for module in (combiner, combiner_m):
        assert module.combine(video, audio, mask, mask).shape == (2, 5, 3, 16)


@pytest.mark.parametrize("combiner_type", COMBINER_TYPES)
def test_learned_embeddings_are_initialised(combiner_type):
    model = _model(combiner_type)
    learned = {
        name: parameter
        for name, parameter in model.model.combiner.named_parameters()
        if "embedding" in name or "memory" in name
    }
    assert learned
    for name, parameter in learned.items():
        assert torch.isfinite(parameter).all() and parameter.std() > 0, name


@pytest.mark.parametrize("combiner_type", COMBINER_TYPES)
def test_save_pretrained_reloads_identical_logits(combiner_type, tmp_path):
    model = _model(combiner_type)
    media, input_ids = random_media(model.config), random_text(model.config)
    expected = model(input_ids=input_ids, **media).logits
    model.save_pretrained(tmp_path)
    loaded = MirasolForConditionalGeneration.from_pretrained(tmp_path).eval()
    for name, value in model.config.combiner_config.to_dict().items():
        if name.startswith("ttm_") or name in ("combiner_type", "num_output_tokens"):
            assert getattr(loaded.config.combiner_config, name) == value, name
    assert torch.equal(loaded(input_ids=input_ids, **media).logits, expected)


@pytest.mark.parametrize("combiner_type", COMBINER_TYPES)
def test_generate_works_with_each_combiner(combiner_type):
    model = _model(combiner_type)
    media, input_ids = random_media(model.config), random_text(model.config)
    settings = dict(max_new_tokens=4, min_new_tokens=4, do_sample=False)
    raw = model.generate(input_ids=input_ids, **media, **settings)
    assert raw.shape == (2, 11)
    assert torch.equal(model.generate(input_ids=input_ids, media_latents=model.encode_media(**media), **settings), raw)
    beams = model.generate(input_ids=input_ids, **media, max_new_tokens=4, num_beams=2)
    assert beams.shape[0] == 2


def _checkpointed_layer(combiner):
    if hasattr(combiner, "process_unit"):
        return combiner.process_unit.encoder.layers[0]
    if hasattr(combiner, "layers"):
        return combiner.layers[0]
    return combiner.encoder.layers[0]


@pytest.mark.parametrize("combiner_type", COMBINER_TYPES)
def test_gradient_checkpointing_gives_the_same_gradients(combiner_type):
    config = MirasolConfig.from_preset("tiny")
    media, input_ids = random_media(config), random_text(config)
    labels = input_ids.clone()
    labels[:, :3] = -100
    grads = []
    for checkpointing in (False, True):
        model = _model(combiner_type).train()
        if checkpointing:
            model.activation_checkpointing_enable()
            assert _checkpointed_layer(model.model.combiner).gradient_checkpointing
        model(input_ids=input_ids, labels=labels, **media).loss.backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    assert any(name.startswith("model.combiner.") and grad.abs().sum() > 0 for name, grad in grads[1].items())
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("combiner_type", ["ttm", "perceiver", "cls"])
def test_eager_and_sdpa_attention_agree_with_each_combiner(combiner_type):
    model = _model(combiner_type)
    media = random_media(model.config)
    sdpa = model.encode_media(**media).media_latents
    model.set_attn_implementation("eager")
    # every attention of the combiner follows, the TTM's process transformer included (it reads the combiner's config)
    attentions = [module for module in model.model.combiner.modules() if isinstance(module, MirasolAttention)]
    assert attentions and all(attention.config._attn_implementation == "eager" for attention in attentions)
    torch.testing.assert_close(model.encode_media(**media).media_latents, sdpa, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"ttm_memory_tokens": 0}, "ttm_memory_tokens"),
        ({"ttm_read_tokens": 0}, "ttm_read_tokens"),
        ({"ttm_process_num_layers": 0}, "ttm_process_num_layers"),
        ({"ttm_token_learner_hidden_size": 0}, "ttm_token_learner_hidden_size"),
        ({"ttm_process_num_heads": 0}, "ttm_process_num_heads"),
        ({"ttm_process_num_heads": 3}, "set ttm_process_head_dim"),
        ({"ttm_process_head_dim": 0}, "ttm_process_head_dim"),
    ],
)
def test_ttm_config_rejects_bad_sizes(fields, message):
    with pytest.raises(ValueError, match=message):
        MirasolConfig.from_preset("tiny", combiner_config={"combiner_type": "ttm", **fields})


def test_ttm_process_sizes_default_to_the_combiners():
    config = MirasolConfig.from_preset("tiny", combiner_config={"combiner_type": "ttm"}).combiner_config
    assert config.ttm_process_hidden_size == config.hidden_size
    assert config.ttm_process_num_heads == config.num_attention_heads
    assert config.ttm_process_intermediate_size == config.intermediate_size
    odd_heads = MirasolCombinerConfig(ttm_process_num_heads=3, ttm_process_head_dim=8)
    assert odd_heads.ttm_process_head_dim == 8


def _one_chunk_flops(config: MirasolConfig) -> int:
    """FLOPs of the combiner on one chunk at the preset's sizes, counted on the meta device (nothing allocated)."""
    config._attn_implementation = "eager"  # attention as plain matmuls, which the counter sees on any device
    size = config.video_config.image_size
    num_video = num_video_tokens(config.video_config, config.frames_per_chunk, size, size)
    patch_mel, patch_time = config.audio_config.patch_size
    num_audio = (config.audio_config.num_mel_bins // patch_mel) * (config.audio_frames_per_chunk // patch_time)
    with torch.device("meta"):
        combiner = build_combiner(
            config.combiner_config, config.video_config.hidden_size, config.audio_config.hidden_size
        )
        video = torch.empty(1, 1, num_video, config.video_config.hidden_size)
        audio = torch.empty(1, 1, num_audio, config.audio_config.hidden_size)
        mask = torch.ones(1, 1, dtype=torch.bool)
        with FlopCounterMode(display=False) as counter:
            combiner.eval().combine(video, audio, mask, mask)
    return counter.get_total_flops()


def test_3b_preset_holds_the_paper_ttm_sizes_and_the_ttm_costs_fewer_flops():
    ttm = MirasolConfig.from_preset("mirasol-3b", combiner_config={"combiner_type": "ttm"})
    combiner = ttm.combiner_config
    assert (combiner.num_output_tokens, combiner.ttm_read_tokens, combiner.ttm_memory_tokens) == (32, 512, 256)
    process = (combiner.ttm_process_num_layers, combiner.ttm_process_num_heads, combiner.ttm_process_head_dim)
    assert process == (2, 12, 128)
    transformer = MirasolConfig.from_preset("mirasol-3b")
    assert transformer.combiner_config.combiner_type == "transformer"  # the paper's main combiner stays the default
    assert _one_chunk_flops(ttm) <= 0.85 * _one_chunk_flops(transformer)
