"""mirasol-hf: Mirasol3B (audio-video question answering over long videos) as a transformers model.

Importing the package registers the model with transformers' Auto classes.
"""

from transformers import AutoConfig, AutoModel, AutoModelForMultimodalLM

from .configuration_mirasol import (
    MirasolAudioConfig,
    MirasolCombinerConfig,
    MirasolConfig,
    MirasolLatentConfig,
    MirasolReconstructionConfig,
    MirasolTextConfig,
    MirasolVideoConfig,
)
from .modeling_mirasol import (
    MirasolForConditionalGeneration,
    MirasolMediaOutput,
    MirasolModel,
    MirasolPreTrainedModel,
)

__version__ = "0.1.0"

AutoConfig.register(MirasolConfig.model_type, MirasolConfig, exist_ok=True)
AutoModel.register(MirasolConfig, MirasolModel, exist_ok=True)
AutoModelForMultimodalLM.register(MirasolConfig, MirasolForConditionalGeneration, exist_ok=True)

__all__ = [
    "MirasolAudioConfig",
    "MirasolCombinerConfig",
    "MirasolConfig",
    "MirasolForConditionalGeneration",
    "MirasolLatentConfig",
    "MirasolMediaOutput",
    "MirasolModel",
    "MirasolPreTrainedModel",
    "MirasolReconstructionConfig",
    "MirasolTextConfig",
    "MirasolVideoConfig",
]
