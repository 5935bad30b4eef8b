"""Sharing checkpoints: the code files, `auto_map` and `custom_pipelines` that `trust_remote_code=True` needs, and
the model card.

A folder written by `save_pretrained` (or pushed by `push_to_hub`, which saves the same way) loads in an environment
without this package: `AutoConfig`, `AutoModel`, `AutoModelForMultimodalLM`, `AutoProcessor` and
`AutoFeatureExtractor` all resolve through `auto_map` to the code files copied next to the weights, and
`pipeline("video-question-answering", model=..., trust_remote_code=True)` through `custom_pipelines` (transformers'
custom-pipeline convention) to the pipeline's code file.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from transformers.dynamic_module_utils import get_relative_import_files

PACKAGE_DIR = Path(__file__).parent
# Auto class -> "module.Class", for every Auto class the package registers.
AUTO_MAP = {
    "AutoConfig": "configuration_mirasol.MirasolConfig",
    "AutoModel": "modeling_mirasol.MirasolModel",
    "AutoModelForMultimodalLM": "modeling_mirasol.MirasolForConditionalGeneration",
    "AutoProcessor": "processing_mirasol.MirasolProcessor",
    "AutoFeatureExtractor": "feature_extraction_mirasol.MirasolFeatureExtractor",
}
PIPELINE_TASK = "video-question-answering"
# config.custom_pipelines: task -> the pipeline class ("module.Class" among the code files) and its Auto model class.
CUSTOM_PIPELINES = {
    PIPELINE_TASK: {
        "impl": "pipeline.VideoQuestionAnsweringPipeline",
        "pt": ["AutoModelForMultimodalLM"],
        "type": "multimodal",
    }
}
PACKAGE_NAME = "mirasol_hf"
MODEL_CARD = "README.md"
# A phrase of the card transformers' push_to_hub writes when a repository has none.
GENERIC_CARD_MARKER = "This model card has been automatically generated"


def code_files() -> list[Path]:
    """The package files `auto_map` and `custom_pipelines` point at, with everything they import relatively."""
    files = set()
    targets = [*AUTO_MAP.values(), *(entry["impl"] for entry in CUSTOM_PIPELINES.values())]
    for target in targets:
        module_file = PACKAGE_DIR / f"{target.split('.')[0]}.py"
        files.add(module_file)
        files.update(Path(path) for path in get_relative_import_files(str(module_file)))
    return sorted(files)


def without_remote_pipelines_when_installed(config_kwargs: dict) -> dict:
    """`config_kwargs` without `custom_pipelines` where this package is imported (and so has registered its own
    pipeline): otherwise `pipeline(task, model=folder)` would run the folder's copy and demand `trust_remote_code`."""
    if sys.modules.get(PACKAGE_NAME) is not None:
        config_kwargs.pop("custom_pipelines", None)
    return config_kwargs


def write_remote_code(save_directory) -> None:
    """Copies the code files into `save_directory` so `trust_remote_code=True` finds every class of `AUTO_MAP`."""
    for path in code_files():
        shutil.copy(path, Path(save_directory) / path.name)


REMOTE_CODE_USAGE = """Without it, through the code files saved next to the weights:

```python
from transformers import AutoModelForMultimodalLM, AutoProcessor, pipeline

pipe = pipeline("video-question-answering", model="PATH_OR_REPO_ID", trust_remote_code=True)
print(pipe("clip.mp4", "what is happening?"))

model = AutoModelForMultimodalLM.from_pretrained("PATH_OR_REPO_ID", trust_remote_code=True)
processor = AutoProcessor.from_pretrained("PATH_OR_REPO_ID", trust_remote_code=True)
inputs = processor(videos="clip.mp4", text="what is happening?", return_tensors="pt")
output = model.generate(**inputs, max_new_tokens=16)
print(processor.post_process_answer(output, inputs["input_ids"]))
```

"""


def _format_count(count: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if count >= size:
            return f"{count / size:.2f}{unit}"
    return str(count)


def model_card(model, remote_code: bool = True) -> str:
    """A model card (README.md) for a Mirasol checkpoint: usage, architecture, size, training data and metrics.

    Training data and metrics come from `config.model_card` (a dict with "training_data", "metrics", "notes"),
    which training scripts fill in; absent entries say they were not recorded. `remote_code=False` leaves out the
    `trust_remote_code` usage, for a folder saved without the code files.
    """
    config = model.config
    info = config.model_card or {}
    total = sum(p.numel() for p in model.parameters())
    video, audio, combiner = config.video_config, config.audio_config, config.combiner_config
    latent, text = config.latent_config, config.text_config
    metrics = info.get("metrics") or {}
    metric_lines = "\n".join(f"| {name} | {value} |" for name, value in metrics.items())
    metrics_text = f"| metric | value |\n|---|---|\n{metric_lines}" if metrics else "Not recorded."
    remote_code_usage = REMOTE_CODE_USAGE if remote_code else ""
    return f"""---
library_name: transformers
pipeline_tag: any-to-any
tags:
- mirasol
- video-question-answering
- audio-visual
---

# Mirasol checkpoint

A [Mirasol3B](https://arxiv.org/abs/2311.05698)-style audio-video question answering model, built with
`mirasol-hf`. It reads {config.num_chunks * config.frames_per_chunk} frames ({config.num_chunks} chunks of
{config.frames_per_chunk}) and the audio track, and generates open-ended answers.

## Usage

With the `mirasol-hf` package installed:

```python
import mirasol_hf  # registers the pipeline and Auto classes
from transformers import pipeline

pipe = pipeline("video-question-answering", model="PATH_OR_REPO_ID")
print(pipe("clip.mp4", "what is happening?"))
```

{remote_code_usage}## Architecture

| part | size |
|---|---|
| parameters | {_format_count(total)} |
| video encoder | {video.num_hidden_layers} layers, width {video.hidden_size}, {len(video.tubes)} tubes, {video.image_size}x{video.image_size} frames |
| audio encoder | {audio.num_hidden_layers} layers, width {audio.hidden_size}, {audio.num_mel_bins} mel bins |
| combiner | `{combiner.combiner_type}`, {combiner.num_output_tokens} tokens per chunk, width {combiner.hidden_size} |
| latent model | {latent.num_hidden_layers} layers, width {latent.hidden_size}, block-causal over chunks |
| text decoder | {text.num_hidden_layers} Llama layers, width {text.hidden_size}, vocabulary {text.vocab_size}, cross-attention before layers {text.cross_attention_layers} |
| loss weights | text {config.text_loss_weight}, latent {config.latent_loss_weight}, reconstruction {config.reconstruction_loss_weight} |

## Training data

{info.get("training_data", "Not recorded.")}

## Evaluation

{metrics_text}

{info.get("notes", "")}
"""


def write_model_card(model, save_directory, overwrite: bool = False, remote_code: bool = True) -> None:
    """Writes README.md unless one is there already (a card written by hand is kept) or `overwrite`."""
    path = Path(save_directory) / MODEL_CARD
    if overwrite or not path.exists():
        path.write_text(model_card(model, remote_code=remote_code), encoding="utf-8")
