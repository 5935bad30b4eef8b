"""Parameter counts per component, computed on the meta device (no weights are allocated)."""

from __future__ import annotations

import torch

from .configuration_mirasol import MirasolConfig


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_parameters(config: MirasolConfig) -> dict[str, int]:
    """Parameters of each part of `MirasolForConditionalGeneration(config)`, and the total (tied weights once)."""
    from .modeling_mirasol import MirasolForConditionalGeneration

    with torch.device("meta"):
        model = MirasolForConditionalGeneration(config)
    text = model.model.text_model
    cross_attention = _count(text.cross_attention_blocks)
    embedding = _count(text.embed_tokens)
    counts = {
        "video encoder": _count(model.model.video_encoder),
        "audio encoder": _count(model.model.audio_encoder),
        "combiner": _count(model.model.combiner),
        "latent model": _count(model.model.latent_model) + _count(model.latent_predictor),
        "reconstruction decoder": _count(model.reconstruction_decoder),
        "text decoder (Llama layers)": _count(text) - cross_attention - embedding,
        "text decoder (cross-attention)": cross_attention,
        "text decoder (vocabulary embedding)": embedding,
    }
    if not config.tie_word_embeddings:
        counts["text decoder (LM head)"] = _count(model.lm_head)
    counts["total"] = sum(p.numel() for p in model.parameters())  # parameters() yields a tied weight once
    return counts
