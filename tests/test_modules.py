"""The parts of the architecture, each on its own."""

import pytest
import torch

from mirasol_hf import MirasolConfig, MirasolVideoConfig
from mirasol_hf.audio_encoder import MirasolAudioEncoder
from mirasol_hf.combiners import build_combiner
from mirasol_hf.configuration_mirasol import MirasolCombinerConfig, MirasolReconstructionConfig, conv_output_size
from mirasol_hf.latent_model import MirasolLatentModel, block_causal_mask, latent_loss
from mirasol_hf.layers import sincos_embedding
from mirasol_hf.reconstruction import MirasolReconstructionDecoder, reconstruction_loss
from mirasol_hf.video_encoder import MirasolVideoEncoder

TUBES = [
    {"kernel": [1, 8, 8], "stride": [2, 8, 8], "offset": [0, 0, 0]},
    {"kernel": [4, 8, 8], "stride": [4, 16, 16], "offset": [0, 0, 0]},
    {"kernel": [2, 4, 4], "stride": [2, 16, 16], "offset": [0, 8, 8]},
]


@pytest.mark.parametrize("hidden_size", [6, 33, 47, 64, 100])
def test_video_encoder_works_for_any_hidden_size(hidden_size):
    config = MirasolVideoConfig(
        hidden_size=hidden_size, num_attention_heads=1, num_hidden_layers=1, intermediate_size=16, tubes=TUBES
    )
    encoder = MirasolVideoEncoder(config).eval()
    frames = torch.randn(3, 4, 3, 32, 32)
    tokens = encoder(frames)
    assert tokens.shape == (3, 32 + 4 + 8, hidden_size)
    assert torch.isfinite(tokens).all()


@pytest.mark.parametrize("frames, height, width", [(4, 32, 32), (6, 40, 24), (8, 33, 17)])
def test_each_tube_emits_its_conv_output_size(frames, height, width):
    config = MirasolVideoConfig(hidden_size=12, num_attention_heads=2, num_hidden_layers=1, tubes=TUBES)
    encoder = MirasolVideoEncoder(config)
    embedded = encoder.embed(torch.randn(1, frames, 3, height, width))
    expected = 0
    for tube in TUBES:
        count = 1
        for size, k, s, o in zip((frames, height, width), tube["kernel"], tube["stride"], tube["offset"]):
            count *= conv_output_size(size, k, s, o)
        expected += count
    assert embedded.shape[1] == expected


def test_tube_tokens_carry_distinct_positions():
    config = MirasolVideoConfig(hidden_size=33, num_attention_heads=3, num_hidden_layers=1, tubes=TUBES)
    encoder = MirasolVideoEncoder(config)
    for conv in encoder.tubes:
        torch.nn.init.zeros_(conv.weight)
        torch.nn.init.zeros_(conv.bias)
    tokens = encoder.embed(torch.randn(1, 4, 3, 32, 32))[0]  # only the position embeddings remain
    # tokens of different tubes or places differ, the 2D path's 16 patches of frame 0 and frame 2 differ in time
    assert torch.unique(tokens, dim=0).shape[0] == tokens.shape[0]


def test_sincos_embedding_pads_dims_that_do_not_split_evenly():
    table = sincos_embedding(torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]), 47)
    assert table.shape == (2, 47)
    assert torch.all(table[:, 42:] == 0)  # 3 axes x 2 x 7 frequencies = 42 channels used
    with pytest.raises(ValueError, match="dim >= 6"):
        sincos_embedding(torch.zeros(1, 3), 5)


def test_video_chunk_too_small_for_a_tube_is_a_clear_error():
    config = MirasolVideoConfig(hidden_size=12, num_attention_heads=2, num_hidden_layers=1, tubes=TUBES)
    with pytest.raises(ValueError, match="too small for the tube"):
        MirasolVideoEncoder(config)(torch.randn(1, 2, 3, 32, 32))  # the 4-frame tube does not fit in 2 frames


def test_audio_encoder_patches_each_chunk():
    config = MirasolConfig.from_preset("tiny").audio_config
    encoder = MirasolAudioEncoder(config).eval()
    tokens = encoder(torch.randn(5, config.num_mel_bins, 16))
    assert tokens.shape == (5, (16 // 8) * (16 // 8), config.hidden_size)
    with pytest.raises(ValueError, match="mel bins"):
        encoder(torch.randn(5, config.num_mel_bins + 1, 16))


def _combiner(attention_type="causal", m=3):
    config = MirasolCombinerConfig(
        hidden_size=16, num_attention_heads=2, num_hidden_layers=1, intermediate_size=32, num_output_tokens=m,
        attention_type=attention_type,
    )
    torch.manual_seed(0)
    combiner = build_combiner(config, video_hidden_size=8, audio_hidden_size=12).eval()
    for parameter in (combiner.no_video_embedding, combiner.no_audio_embedding, combiner.audio_type_embedding):
        torch.nn.init.normal_(parameter)
    return combiner


def test_transformer_combiner_keeps_the_last_m_outputs_per_chunk():
    combiner = _combiner(m=3)
    video, audio = torch.randn(2, 4, 5, 8), torch.randn(2, 4, 6, 12)
    mask = torch.ones(2, 4, dtype=torch.bool)
    combined = combiner.combine(video, audio, mask, mask)
    assert combined.shape == (2, 4, 3, 16)
    # chunks are combined independently: changing chunk 2 changes only chunk 2
    video2 = video.clone()
    video2[:, 2] += 1
    changed = combiner.combine(video2, audio, mask, mask)
    assert torch.equal(changed[:, [0, 1, 3]], combined[:, [0, 1, 3]])
    assert not torch.allclose(changed[:, 2], combined[:, 2])


def test_combiner_mask_switch_changes_what_tokens_see():
    video, audio = torch.randn(1, 2, 5, 8), torch.randn(1, 2, 6, 12)
    mask = torch.ones(1, 2, dtype=torch.bool)
    causal, full = _combiner("causal"), _combiner("full")
    full.load_state_dict(causal.state_dict())
    assert not torch.allclose(causal.combine(video, audio, mask, mask), full.combine(video, audio, mask, mask))


def test_chunk_without_audio_uses_the_learned_no_audio_embedding():
    combiner = _combiner()
    video = torch.randn(1, 3, 5, 8)
    on = torch.ones(1, 3, dtype=torch.bool)
    off = torch.tensor([[True, False, True]])
    a = combiner.combine(video, torch.randn(1, 3, 6, 12), on, off)
    b = combiner.combine(video, torch.randn(1, 3, 6, 12), on, off)
    silence = combiner.combine(video, torch.zeros(1, 3, 6, 12), on, on)
    assert torch.equal(a[:, 1], b[:, 1])  # the masked chunk ignores its audio
    assert not torch.allclose(a[:, 1], silence[:, 1])  # and is not the same as silent audio


def _latent_model(num_layers=2):
    config = MirasolConfig.from_preset("tiny", latent_config={"num_hidden_layers": num_layers}).latent_config
    torch.manual_seed(0)
    model = MirasolLatentModel(config, input_size=32, tokens_per_chunk=4).eval()
    torch.nn.init.normal_(model.slot_embedding)
    return model


def test_latents_are_causal_in_time():
    model = _latent_model()
    x = torch.randn(2, 5, 4, 32)
    mask = torch.ones(2, 5, dtype=torch.bool)
    h = model(x, mask)
    for t in range(4):
        changed = x.clone()
        changed[:, t + 1 :] = torch.randn_like(changed[:, t + 1 :])
        h_changed = model(changed, mask)
        assert torch.equal(h_changed[:, : t + 1], h[:, : t + 1])
        assert not torch.allclose(h_changed[:, t + 1], h[:, t + 1])


def test_chunks_without_media_are_invisible_to_later_chunks():
    model = _latent_model()
    x = torch.randn(1, 4, 4, 32)
    mask = torch.tensor([[True, False, True, True]])
    changed = x.clone()
    changed[:, 1] = torch.randn_like(changed[:, 1])
    h, h_changed = model(x, mask), model(changed, mask)
    assert torch.equal(h[:, 2:], h_changed[:, 2:])


def test_block_causal_mask_shape_and_pattern():
    mask = block_causal_mask(torch.ones(1, 3, dtype=torch.bool), tokens_per_chunk=2)[0, 0]
    expected = torch.tensor(
        [[1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 0, 0], [1] * 6, [1] * 6],
        dtype=torch.bool,
    )
    assert torch.equal(mask, expected)


@pytest.mark.parametrize("loss_type", ["cosine", "l2"])
def test_latent_loss_stops_gradient_at_its_target(loss_type):
    predicted = torch.randn(2, 4, 3, 8, requires_grad=True)
    combined = torch.randn(2, 4, 3, 8, requires_grad=True)
    mask = torch.ones(2, 4, dtype=torch.bool)
    loss = latent_loss(predicted, combined, mask, loss_type)
    loss.backward()
    assert combined.grad is None
    assert predicted.grad[:, :-1].abs().sum() > 0
    assert torch.all(predicted.grad[:, -1] == 0)  # the last chunk has no next chunk to predict
    perfect = latent_loss(combined[:, 1:].detach().repeat(1, 2, 1, 1)[:, :4], combined, mask, loss_type)
    assert perfect.item() == pytest.approx(0.0, abs=1e-6)


def test_latent_loss_skips_pairs_with_a_missing_chunk():
    predicted, combined = torch.randn(1, 3, 2, 8), torch.randn(1, 3, 2, 8)
    mask = torch.tensor([[True, True, False]])
    only_first_pair = latent_loss(predicted[:, :2], combined[:, :2], mask[:, :2], "l2")
    assert latent_loss(predicted, combined, mask, "l2") == pytest.approx(only_first_pair.item())


def test_reconstruction_targets_the_downsampled_next_chunk():
    config = MirasolReconstructionConfig(
        hidden_size=16, num_attention_heads=2, num_hidden_layers=1, num_frames=2, image_size=8, patch_size=[1, 4, 4]
    )
    decoder = MirasolReconstructionDecoder(config, latent_size=32, num_channels=3).eval()
    frames = torch.rand(5, 4, 3, 32, 32)
    target = decoder.target(frames)
    assert target.shape == (5, 2 * 2 * 2, 3 * 4 * 4)
    # each target pixel is the mean of the block of frames it stands for
    block_mean = frames[0, 0:2, 0, 0:4, 0:4].mean()
    assert target[0, 0, 0].item() == pytest.approx(block_mean.item(), rel=1e-5)
    assert decoder(torch.randn(5, 4, 32)).shape == target.shape


def test_reconstruction_loss_ignores_pairs_without_frames():
    config = MirasolReconstructionConfig(hidden_size=16, num_attention_heads=2, num_hidden_layers=1)
    decoder = MirasolReconstructionDecoder(config, latent_size=8, num_channels=3).eval()
    latents, frames = torch.randn(1, 3, 2, 8), torch.rand(1, 3, 2, 3, 16, 16)
    media = torch.ones(1, 3, dtype=torch.bool)
    video = torch.tensor([[True, True, False]])
    changed = frames.clone()
    changed[:, 2] = torch.rand_like(changed[:, 2])
    assert reconstruction_loss(decoder, latents, frames, media, video) == reconstruction_loss(
        decoder, latents, changed, media, video
    )
