"""mirasol-hf: Mirasol3B (audio-video question answering over long videos) as a transformers model.

Importing the package registers the model, processor and the "video-question-answering" pipeline with
transformers' Auto classes, and marks the classes so that saved checkpoints carry the code and `auto_map` that
`trust_remote_code=True` loading needs.
"""

from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModel,
    AutoModelForMultimodalLM,
    AutoProcessor,
)
from transformers.pipelines import PIPELINE_REGISTRY

from .backbones import from_pretrained_backbones
from .default_model import DEFAULT_MODEL
from .configuration_mirasol import (
    MirasolAudioConfig,
    MirasolCombinerConfig,
    MirasolConfig,
    MirasolLatentConfig,
    MirasolReconstructionConfig,
    MirasolTextConfig,
    MirasolVideoConfig,
)
from .feature_extraction_mirasol import MirasolFeatureExtractor
from .modeling_mirasol import (
    MirasolForConditionalGeneration,
    MirasolMediaOutput,
    MirasolModel,
    MirasolPreTrainedModel,
)
from .pipeline import VideoQuestionAnsweringPipeline
from .processing_mirasol import MirasolProcessor
from .streaming import MirasolStreamingState
from .training import MirasolDataCollator, MirasolTrainer, apply_training_stage
from .tokenization_mirasol import build_tokenizer

__version__ = "0.1.0"

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
    "video-question-answering",
    pipeline_class=VideoQuestionAnsweringPipeline,
    pt_model=AutoModelForMultimodalLM,
    type="multimodal",
)

__all__ = [
    "MirasolAudioConfig",
    "MirasolCombinerConfig",
    "MirasolConfig",
    "MirasolFeatureExtractor",
    "MirasolForConditionalGeneration",
    "MirasolLatentConfig",
    "MirasolMediaOutput",
    "MirasolModel",
    "MirasolPreTrainedModel",
    "MirasolProcessor",
    "MirasolReconstructionConfig",
    "MirasolStreamingState",
    "MirasolTextConfig",
    "MirasolVideoConfig",
    "MirasolDataCollator",
    "MirasolTrainer",
    "VideoQuestionAnsweringPipeline",
    "apply_training_stage",
    "build_tokenizer",
    "from_pretrained_backbones",
]
