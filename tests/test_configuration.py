import json

import pytest

from mirasol_hf import MirasolConfig
from mirasol_hf.configuration_mirasol import PRESETS, MirasolVideoConfig, num_video_tokens
from mirasol_hf.parameter_count import count_parameters


def test_presets_build_and_override():
    assert {"tiny", "mirasol-small", "mirasol-3b"} <= set(PRESETS)
    config = MirasolConfig.from_preset("tiny", num_chunks=8, text_config={"vocab_size": 300})
    assert config.num_chunks == 8
    assert config.text_config.vocab_size == 300
    # untouched preset fields of the overridden sub-config stay
    assert config.text_config.cross_attention_layers == PRESETS["tiny"]["text_config"]["cross_attention_layers"]
    # the text decoder reads the latent model's width
    assert config.text_config.cross_attention_hidden_size == config.latent_config.hidden_size


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown preset"):
        MirasolConfig.from_preset("mirasol-7b")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"combiner_config": {"attention_type": "sideways"}}, "attention_type"),
        ({"latent_config": {"latent_loss_type": "l1"}}, "latent_loss_type"),
        ({"text_config": {"cross_attention_layers": [5]}}, "cross_attention_layers"),
        ({"audio_frames_per_chunk": 12}, "audio_frames_per_chunk"),
        ({"video_config": {"hidden_size": 30, "num_attention_heads": 4}}, "not divisible"),
        ({"video_config": {"tubes": [{"kernel": [1, 8], "stride": [1, 8, 8], "offset": [0, 0, 0]}]}}, "kernel"),
        ({"reconstruction_config": {"patch_size": [3, 4, 4]}}, "patch_size"),
        ({"num_chunks": 0}, "num_chunks"),
    ],
)
def test_bad_config_values_raise_value_error(overrides, message):
    with pytest.raises(ValueError, match=message):
        MirasolConfig.from_preset("tiny", **overrides)


def test_config_round_trips_through_json(tmp_path):
    config = MirasolConfig.from_preset("tiny", text_loss_weight=10.0)
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "mirasol"
    loaded = MirasolConfig.from_pretrained(tmp_path)
    assert loaded.text_loss_weight == 10.0
    assert loaded.video_config.tubes == config.video_config.tubes
    assert loaded.text_config.to_dict() == config.text_config.to_dict()


def test_token_count_per_tube_is_the_conv_output_size():
    config = MirasolVideoConfig(
        hidden_size=32,
        num_attention_heads=2,
        tubes=[
            {"kernel": [1, 16, 16], "stride": [8, 16, 16], "offset": [0, 0, 0]},  # 1 x 14 x 14
            {"kernel": [8, 8, 8], "stride": [8, 32, 32], "offset": [0, 0, 0]},  # 1 x 7 x 7
            {"kernel": [4, 12, 12], "stride": [4, 32, 32], "offset": [0, 16, 16]},  # 2 x 7 x 7 (196 - 16 - 12 = 196)
        ],
    )
    assert num_video_tokens(config, 8, 224, 224) == 196 + 49 + 98


@pytest.mark.parametrize("preset, target", [("mirasol-small", 1.15e9), ("mirasol-3b", 3.0e9)])
def test_paper_presets_match_the_paper_sizes(preset, target):
    counts = count_parameters(MirasolConfig.from_preset(preset))
    assert abs(counts["total"] - target) / target < 0.15
    # the reconstruction path is a small part of the model, not a giant pixel head
    assert counts["reconstruction decoder"] / counts["total"] < 0.10
    parts = sum(count for name, count in counts.items() if name != "total")
    assert parts == counts["total"]
