import importlib.util
import os
from pathlib import Path

# The suite runs tiny models: one thread avoids thread start-up and contention costs that dominate at this size
# (10-80x slower on a busy 2-core machine). Set before torch is imported so subprocesses inherit it too.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from mirasol_hf import MirasolConfig, MirasolForConditionalGeneration

REPO = Path(__file__).resolve().parents[1]


def load_example(name: str):
    """`examples/<name>.py` imported as a module (its `main(argv)` runs the script in this process)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", REPO / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


QA_TEXTS = [
    "what color was the square?", "red", "which sound was heard?", "beep", "how many times?", "two",
    "what appeared first?", "the green circle",
]


def tiny_model_and_processor(seed: int = 0, texts=QA_TEXTS, vocab_size: int = 200, **overrides):
    """A tiny random model with a tokenizer trained on `texts` (a few QA texts) and the matching processor."""
    from mirasol_hf import MirasolProcessor, build_tokenizer

    tokenizer = build_tokenizer(texts, vocab_size=vocab_size)
    text_overrides = {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        **overrides.pop("text_config", {}),
    }
    model = tiny_model(seed, text_config=text_overrides, **overrides)
    return model, MirasolProcessor.from_model_config(model.config, tokenizer)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A folder with a tiny random model and its processor, saved as users save them."""
    folder = tmp_path_factory.mktemp("tiny-checkpoint")
    model, processor = tiny_model_and_processor()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def sample_clip(tmp_path_factory):
    """A 2 s mp4 (H.264 + AAC) written with PyAV."""
    from media_utils import write_video

    return write_video(tmp_path_factory.mktemp("clips") / "clip.mp4", seconds=2.0, fps=10, width=48, height=48)
