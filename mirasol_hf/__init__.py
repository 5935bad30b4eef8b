"""mirasol-hf: Mirasol3B (audio-video question answering over long videos) as a transformers model.

Importing the package registers the model, processor and the "video-question-answering" pipeline with
transformers' Auto classes, and marks the classes so that saved checkpoints carry the code and `auto_map` that
`trust_remote_code=True` loading needs. Everything else (training, data sets, backbones, streaming) is imported
on first use, as transformers' own `_LazyModule` does.
"""

import sys
from typing import TYPE_CHECKING

from transformers.utils.import_utils import _LazyModule


__version__ = "0.1.0"

# module -> the public names it defines
_import_structure = {
    "backbones": ["from_pretrained_backbones"],
    "configuration_mirasol": [
        "MirasolAudioConfig",
        "MirasolCombinerConfig",
        "MirasolConfig",
        "MirasolLatentConfig",
        "MirasolReconstructionConfig",
        "MirasolTextConfig",
        "MirasolVideoConfig",
    ],
    "default_model": ["DEFAULT_MODEL"],
    "feature_extraction_mirasol": ["MirasolFeatureExtractor"],
    "encoded_media": ["MirasolMediaOutput", "MirasolStreamingState"],
    "modeling_mirasol": [
        "MirasolForConditionalGeneration",
        "MirasolModel",
        "MirasolPreTrainedModel",
    ],
    "pipeline": ["VideoQuestionAnsweringPipeline"],
    "processing_mirasol": ["MirasolProcessor"],
    "streaming": ["LiveReader", "LiveSourceError", "MirasolWatcher"],
    "tokenization_mirasol": ["build_tokenizer"],
    "training": ["MirasolDataCollator", "MirasolTrainer", "apply_training_stage"],
}


def register() -> None:
    """Registers the Mirasol classes with transformers' Auto classes and the "video-question-answering" pipeline
    (done on import; idempotent)."""
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForMultimodalLM, AutoProcessor
    from transformers.pipelines import PIPELINE_REGISTRY

    from .configuration_mirasol import MirasolConfig
    from .feature_extraction_mirasol import MirasolFeatureExtractor
    from .hub import CUSTOM_PIPELINES, PIPELINE_TASK
    from .modeling_mirasol import MirasolForConditionalGeneration, MirasolModel
    from .pipeline import VideoQuestionAnsweringPipeline
    from .processing_mirasol import MirasolProcessor

    AutoConfig.register(MirasolConfig.model_type, MirasolConfig, exist_ok=True)
    AutoModel.register(MirasolConfig, MirasolModel, exist_ok=True)
    AutoModelForMultimodalLM.register(MirasolConfig, MirasolForConditionalGeneration, exist_ok=True)
    AutoProcessor.register(MirasolConfig, MirasolProcessor, exist_ok=True)
    AutoFeatureExtractor.register(MirasolConfig, MirasolFeatureExtractor, exist_ok=True)

    MirasolConfig.register_for_auto_class("AutoConfig")
    MirasolModel.register_for_auto_class("AutoModel")
    MirasolForConditionalGeneration.register_for_auto_class("AutoModelForMultimodalLM")
    MirasolProcessor.register_for_auto_class("AutoProcessor")
    MirasolFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")

    PIPELINE_REGISTRY.register_pipeline(
        PIPELINE_TASK,
        pipeline_class=VideoQuestionAnsweringPipeline,
        pt_model=AutoModelForMultimodalLM,
        type=CUSTOM_PIPELINES[PIPELINE_TASK]["type"],
    )


if TYPE_CHECKING:
    from .backbones import from_pretrained_backbones
    from .configuration_mirasol import (
        MirasolAudioConfig,
        MirasolCombinerConfig,
        MirasolConfig,
        MirasolLatentConfig,
        MirasolReconstructionConfig,
        MirasolTextConfig,
        MirasolVideoConfig,
    )
    from .default_model import DEFAULT_MODEL
    from .feature_extraction_mirasol import MirasolFeatureExtractor
    from .encoded_media import MirasolMediaOutput, MirasolStreamingState
    from .modeling_mirasol import MirasolForConditionalGeneration, MirasolModel, MirasolPreTrainedModel
    from .pipeline import VideoQuestionAnsweringPipeline
    from .processing_mirasol import MirasolProcessor
    from .streaming import LiveReader, LiveSourceError, MirasolWatcher
    from .tokenization_mirasol import build_tokenizer
    from .training import MirasolDataCollator, MirasolTrainer, apply_training_stage
else:
    sys.modules[__name__] = _LazyModule(
        __name__,
        globals()["__file__"],
        _import_structure,
        module_spec=__spec__,
        extra_objects={"__version__": __version__, "register": register},
    )
    register()
