import pytest
import torch

from mirasol_hf import MirasolConfig, MirasolForConditionalGeneration


def open_gates(model, value: float = 1.0):
    """Cross-attention gates start at zero (text decoder = plain LM); open them so the media matters."""
    for block in model.model.text_model.cross_attention_blocks:
        block.cross_attn_attn_gate.data.fill_(value)
        if block.mlp is not None:
            block.cross_attn_mlp_gate.data.fill_(value)
    return model


def tiny_model(seed: int = 0, **overrides) -> MirasolForConditionalGeneration:
    torch.manual_seed(seed)
    return open_gates(MirasolForConditionalGeneration(MirasolConfig.from_preset("tiny", **overrides))).eval()


def random_media(config: MirasolConfig, batch: int = 2, num_chunks: int | None = None, seed: int = 1) -> dict:
    """Random inputs that follow the tensor contract for `config`."""
    generator = torch.Generator().manual_seed(seed)
    num_chunks = num_chunks or config.num_chunks
    size = config.video_config.image_size
    return {
        "pixel_values_videos": torch.randn(
            batch, num_chunks * config.frames_per_chunk, 3, size, size, generator=generator
        ),
        "input_features": torch.randn(
            batch, config.audio_config.num_mel_bins, num_chunks * config.audio_frames_per_chunk, generator=generator
        ),
    }


def random_text(config: MirasolConfig, batch: int = 2, length: int = 7, seed: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, config.text_config.vocab_size, (batch, length), generator=generator)


@pytest.fixture
def model():
    return tiny_model()
