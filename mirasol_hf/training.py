"""Training with `transformers.Trainer`: the data collator, the paper's training stages, audio-video augmentation,
a Trainer that logs each loss component, and LoRA settings for the text decoder.

    collator = MirasolDataCollator(processor)                 # rows {"video", "question", "answer"} -> a batch
    apply_training_stage(model, "pretrain")                   # freeze what the stage does not train
    trainer = MirasolTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                             augmentation=MediaAugmentation(spec_augment=True, mixup_alpha=0.5))
    trainer.train()                                           # logs loss, text_loss, latent_loss, reconstruction_loss

See docs/training.md for the recipes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import Trainer

from .modeling_mirasol import media_loss_pairs
from .processing_mirasol import IGNORE_INDEX
from .tokenization_mirasol import DEFAULT_VOCAB_SIZE, build_tokenizer


# ---- the paper's stages ---------------------------------------------------------------------------------------------

TRAINING_STAGES = ("pretrain", "audio_pretrain", "finetune")

# The text decoder proper: the Llama layers, the token embedding (tied with the LM head), the final norm, the LM head.
# Its gated cross-attention blocks (model.text_model.cross_attention_blocks) are not in it: pretraining trains them.
TEXT_DECODER_PARAMETERS = (
    "model.text_model.embed_tokens",
    "model.text_model.layers",
    "model.text_model.norm",
    "lm_head",
)
# "Audio weights": the audio encoder and the combiner's audio input stage (projection to the combiner width, the audio
# modality embedding, the learned "no audio" embedding). The combiner's shared transformer, the video path, the latent
# model, the heads and the text decoder stay as they are.
AUDIO_PARAMETERS = (
    "model.audio_encoder",
    "model.combiner.audio_projection",
    "model.combiner.audio_type_embedding",
    "model.combiner.no_audio_embedding",
)
# Loss weights each stage starts from (the paper: 1:1:1 in pretraining, text x10 in fine-tuning).
STAGE_LOSS_WEIGHTS = {
    "pretrain": {"text_loss_weight": 1.0, "latent_loss_weight": 1.0, "reconstruction_loss_weight": 1.0},
    "audio_pretrain": {"text_loss_weight": 1.0, "latent_loss_weight": 1.0, "reconstruction_loss_weight": 1.0},
    "finetune": {"text_loss_weight": 10.0, "latent_loss_weight": 1.0, "reconstruction_loss_weight": 1.0},
}


def _matches(name: str, prefixes: Sequence[str]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def is_trained_in_stage(parameter_name: str, stage: str) -> bool:
    """Whether `stage` trains the parameter of this name (a name of `MirasolForConditionalGeneration`)."""
    if stage == "pretrain":
        return not _matches(parameter_name, TEXT_DECODER_PARAMETERS)
    if stage == "audio_pretrain":
        return _matches(parameter_name, AUDIO_PARAMETERS)
    if stage == "finetune":
        return True
    raise ValueError(f"unknown training stage {stage!r}; choose one of {TRAINING_STAGES}")


def apply_training_stage(model, stage: str) -> list[str]:
    """Sets `requires_grad` for `stage` on a `MirasolForConditionalGeneration`; returns the trained parameter names.

    * "pretrain": the text decoder is frozen (Llama layers, embedding, final norm, LM head); the gated
      cross-attention blocks, the encoders, the combiner, the latent model and the two loss heads train.
    * "audio_pretrain": only the audio weights train (`AUDIO_PARAMETERS`).
    * "finetune": everything trains.

    Loss weights are separate: see `STAGE_LOSS_WEIGHTS`.
    """
    if stage not in TRAINING_STAGES:
        raise ValueError(f"unknown training stage {stage!r}; choose one of {TRAINING_STAGES}")
    trained = []
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(is_trained_in_stage(name, stage))
        if parameter.requires_grad:
            trained.append(name)
    return trained


# ---- data collator --------------------------------------------------------------------------------------------------

TIME_RANGE_COLUMNS = ("start_time", "end_time")
# Columns of a clip preprocessed by mirasol_hf.preprocess: `MirasolProcessor.decode_videos`'s outputs, one clip each.
CACHED_MEDIA = ("frames", "input_features", "video_chunk_mask", "audio_chunk_mask")


def video_input(row: dict, video_column: str = "video"):
    """A data set row's video as the processor takes it: the path, or `{"path", "start_time", "end_time"}` when the
    row names a time range."""
    times = {key: row[key] for key in TIME_RANGE_COLUMNS if row.get(key) is not None}
    if not times:
        return row[video_column]
    return {"path": row[video_column], **times}


@dataclass
class MirasolDataCollator:
    """Dataset rows (video path + question + answer) -> a training batch, decoding the media here, per batch.

    Rows come from `mirasol_hf.data` readers: `video` (a path), `question`, `answer`, and optionally `start_time` /
    `end_time` (seconds; None for the whole file). The processor reads the frames and audio, left-pads the text,
    stacks video and audio with their chunk masks and, with `with_answers`, adds `labels` (-100 on the prompt and
    padding). With `with_answers=False` the batch is prompts only, for `generate()`.

    Rows grouped by clip (`mirasol_hf.data.group_by_clip`: `question` and `answer` are lists) give one media row per
    clip and one text row per question, with `media_index` (B_text,) pointing each question at its clip: a clip is
    decoded and encoded once per batch however many questions ride on it. `questions_per_clip` keeps a random subset
    of at most that many questions of each clip (drawn from torch's generator, so Trainer's seed and each DataLoader
    worker's seed govern it); None keeps them all.

    Trainer drops dataset columns that the model's `forward` does not name unless `remove_unused_columns=False`;
    the collator needs `video`, `question` (and `answer`), so set that (examples/finetune.py does).
    """

    processor: object
    with_answers: bool = True
    questions_per_clip: int | None = None
    video_column: str = "video"
    question_column: str = "question"
    answer_column: str = "answer"

    def __post_init__(self):
        if self.questions_per_clip is not None and self.questions_per_clip < 1:
            raise ValueError(f"questions_per_clip must be at least 1 (or None for all), got {self.questions_per_clip}")

    def __call__(self, rows: list[dict]) -> dict:
        needed = [self.video_column, self.question_column] + ([self.answer_column] if self.with_answers else [])
        missing = [column for column in needed if column not in rows[0]]
        if missing:
            raise ValueError(
                f"MirasolDataCollator needs the columns {needed}, the batch rows have {sorted(rows[0])} (missing "
                f"{missing}). Trainer removes columns that the model's forward() does not take unless "
                "TrainingArguments(remove_unused_columns=False)."
            )
        batch = self._media(rows)
        if not isinstance(rows[0][self.question_column], list):
            questions = [row[self.question_column] for row in rows]
            answers = [row[self.answer_column] for row in rows] if self.with_answers else None
            batch.update(self.processor(text=questions, answers=answers, return_tensors="pt"))
            return batch

        questions, answers, media_index = [], [], []
        for clip, row in enumerate(rows):
            kept = self.question_positions(row)
            questions += [row[self.question_column][position] for position in kept]
            if self.with_answers:
                answers += [row[self.answer_column][position] for position in kept]
            media_index += [clip] * len(kept)
        batch.update(self.processor(text=questions, answers=answers if self.with_answers else None, return_tensors="pt"))
        batch["media_index"] = torch.tensor(media_index, dtype=torch.long)  # (B_text,): each question's clip
        return batch

    def _media(self, rows: list[dict]) -> dict:
        """The media tensors: decoded from the videos, or read from a preprocessed cache's rows (`CACHED_MEDIA`)."""
        if CACHED_MEDIA[0] not in rows[0]:
            return dict(self.processor(videos=[self._video(row) for row in rows], return_tensors="pt"))
        media = {name: np.stack([np.asarray(row[name]) for row in rows]) for name in CACHED_MEDIA}
        expected = (self.processor.num_frames, self.processor.image_size, self.processor.image_size, 3)
        if media["frames"].shape[1:] != expected or media["frames"].dtype != np.uint8:
            raise ValueError(
                f"the preprocessed cache holds frames {media['frames'].dtype} {media['frames'].shape[1:]}, the "
                f"processor expects uint8 {expected}: preprocess again with this model's settings"
            )
        pixel_values = self.processor.normalize_frames(media.pop("frames"))
        return {
            "pixel_values_videos": torch.from_numpy(pixel_values),
            **{name: torch.from_numpy(np.ascontiguousarray(values)) for name, values in media.items()},
        }

    def question_positions(self, row: dict) -> list[int]:
        """Which of a grouped row's questions go into the batch (positions in its lists, in order)."""
        count = len(row[self.question_column])
        if count == 0:
            raise ValueError(f"clip {row[self.video_column]!r} has no questions")
        if self.questions_per_clip is None or count <= self.questions_per_clip:
            return list(range(count))
        return sorted(torch.randperm(count)[: self.questions_per_clip].tolist())

    def _video(self, row: dict):
        return video_input(row, self.video_column)


def build_shared_tokenizer(texts, vocab_size: int = DEFAULT_VOCAB_SIZE):
    """`build_tokenizer` on the main process, sent to the others: every process gets the same vocabulary.

    `build_tokenizer` is deterministic, but each process may read a different shard of the texts (or a different
    order of a streaming data set), which would give each a different vocabulary; building it once and broadcasting
    rules that out. Without a process group this is `build_tokenizer`.
    """
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    tokenizer = [build_tokenizer(texts, vocab_size=vocab_size) if PartialState().is_main_process else None]
    return broadcast_object_list(tokenizer)[0]


# ---- augmentation ---------------------------------------------------------------------------------------------------

DEFAULT_TIME_MASKS = 2
DEFAULT_TIME_MASK_FRACTION = 0.1  # of the clip's log-mel frames, at most, per mask
DEFAULT_FREQUENCY_MASKS = 2
DEFAULT_FREQUENCY_MASK_FRACTION = 0.15  # of the mel bins, at most, per mask


@dataclass
class MediaAugmentation:
    """SpecAugment and Mixup on a batch of model inputs, for audio-video classification data.

    * SpecAugment (`spec_augment`): `time_masks` bands of up to `time_mask_fraction` of the log-mel frames and
      `frequency_masks` bands of up to `frequency_mask_fraction` of the mel bins are set, per clip, to that clip's
      mean log-mel value (over its chunks with audio); the mean is neutral where 0 would be a loud log-power.
    * Mixup (`mixup_alpha > 0`): each clip's frames and log-mel are mixed with another clip of the batch,
      `lam * own + (1 - lam) * other`, `lam ~ Beta(alpha, alpha)` folded to `lam >= 0.5` so the clip's own media
      dominates, and the clip keeps its own answer. Classification-as-generation has no soft label to mix: a mixed
      target would need two teacher-forced decoder passes, one per answer. Training on the dominant clip's answer
      keeps one pass and still regularizes like Mixup with a hard label. Chunks mix only where both clips have that
      modality; elsewhere the clip keeps its own. The log-mel is mixed as it is (log domain), not the waveform.
      Needs batches of two or more (a batch of one is left as it is).

    Randomness comes from torch's global generator, which Trainer seeds and restores on resume. Apply in training
    only (`MirasolTrainer` does).
    """

    spec_augment: bool = False
    time_masks: int = DEFAULT_TIME_MASKS
    time_mask_fraction: float = DEFAULT_TIME_MASK_FRACTION
    frequency_masks: int = DEFAULT_FREQUENCY_MASKS
    frequency_mask_fraction: float = DEFAULT_FREQUENCY_MASK_FRACTION
    mixup_alpha: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.spec_augment or self.mixup_alpha > 0

    def __call__(self, batch: dict) -> dict:
        batch = dict(batch)
        if self.mixup_alpha > 0:
            batch = self._mixup(batch)
        if self.spec_augment and batch.get("input_features") is not None:
            batch["input_features"] = self._spec_augment(batch["input_features"], batch.get("audio_chunk_mask"))
        return batch

    def _spec_augment(self, features: torch.Tensor, audio_chunk_mask: torch.Tensor | None) -> torch.Tensor:
        features = features.clone()
        batch, num_mel_bins, num_frames = features.shape
        if audio_chunk_mask is None:
            audio_chunk_mask = torch.ones(batch, 1, dtype=torch.bool, device=features.device)
        frames_per_chunk = num_frames // audio_chunk_mask.shape[1]
        # (B, T) chunk mask -> (B, T * A) frame mask: which frames hold real audio (the rest is padding to leave).
        has_audio = audio_chunk_mask.bool().repeat_interleave(frames_per_chunk, dim=1)
        for index in range(batch):
            if not has_audio[index].any():
                continue
            masked = torch.zeros(num_mel_bins, num_frames, dtype=torch.bool, device=features.device)
            for _ in range(self.time_masks):
                start, width = self._band(num_frames, self.time_mask_fraction, features.device)
                masked[:, start : start + width] = True
            for _ in range(self.frequency_masks):
                start, width = self._band(num_mel_bins, self.frequency_mask_fraction, features.device)
                masked[start : start + width, :] = True
            masked &= has_audio[index][None, :]
            features[index][masked] = features[index][:, has_audio[index]].mean()
        return features

    @staticmethod
    def _band(size: int, fraction: float, device) -> tuple[int, int]:
        """A random band of width in [0, fraction * size] inside [0, size)."""
        max_width = int(fraction * size)
        width = int(torch.randint(0, max_width + 1, (1,), device=device))
        start = int(torch.randint(0, size - width + 1, (1,), device=device))
        return start, width

    def sample_mixup(self, batch_size: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Each clip's partner (B,) and own share lam (B,), lam >= 0.5; what `__call__` draws for a batch."""
        # Each clip's partner is the one before it in a random cycle over the batch: never the clip itself.
        order = torch.randperm(batch_size, device=device)
        partner = torch.empty_like(order)
        partner[order] = order.roll(1)
        lam = torch.distributions.Beta(self.mixup_alpha, self.mixup_alpha).sample((batch_size,)).to(device)
        return partner, torch.maximum(lam, 1 - lam)

    def _mixup(self, batch: dict) -> dict:
        reference = batch.get("pixel_values_videos", batch.get("input_features"))
        if reference is None or reference.shape[0] < 2:
            return batch
        size = reference.shape[0]
        partner, lam = self.sample_mixup(size, reference.device)
        for values, mask_name in (("pixel_values_videos", "video_chunk_mask"), ("input_features", "audio_chunk_mask")):
            tensor = batch.get(values)
            if tensor is None:
                continue
            mask = batch.get(mask_name)
            if mask is None:
                mask = torch.ones(size, 1, dtype=torch.bool, device=tensor.device)
            num_chunks = mask.shape[1]
            both = mask.bool() & mask.bool()[partner]  # (B, T): chunks where both clips have this modality
            share = torch.where(both, lam[:, None], torch.ones_like(lam[:, None]))  # (B, T)
            if values == "pixel_values_videos":
                # (B, T) -> (B, T * f, 1, 1, 1) over the frames of each chunk
                share = share.repeat_interleave(tensor.shape[1] // num_chunks, dim=1)[:, :, None, None, None]
            else:
                # (B, T) -> (B, 1, T * A) over the log-mel frames of each chunk
                share = share.repeat_interleave(tensor.shape[2] // num_chunks, dim=1)[:, None, :]
            share = share.to(tensor.dtype)
            batch[values] = share * tensor + (1 - share) * tensor[partner]
        return batch


# ---- Trainer --------------------------------------------------------------------------------------------------------

LOSS_COMPONENTS = ("text_loss", "latent_loss", "reconstruction_loss")


def batch_media_loss_pairs(batch: dict) -> torch.Tensor | None:
    """`media_loss_pairs` of a collated batch (its chunk masks, one row per clip); None without media or masks."""
    has_video, has_audio = batch.get("pixel_values_videos") is not None, batch.get("input_features") is not None
    video_chunk_mask, audio_chunk_mask = batch.get("video_chunk_mask"), batch.get("audio_chunk_mask")
    if not (has_video or has_audio) or (has_video and video_chunk_mask is None) or (has_audio and audio_chunk_mask is None):
        return None
    # As the model's encode_media: a modality not given counts as absent in every chunk.
    masks = [mask.bool() for mask, given in ((video_chunk_mask, has_video), (audio_chunk_mask, has_audio)) if given]
    media_chunk_mask = masks[0] if len(masks) == 1 else masks[0] | masks[1]
    return media_loss_pairs(media_chunk_mask, video_chunk_mask if has_video else None)


def fsdp_requested(args) -> bool:
    """Whether FSDP was asked for: by TrainingArguments (`fsdp=...`) or by `accelerate launch` (a config with
    `distributed_type: FSDP` sets ACCELERATE_USE_FSDP)."""
    return args.fsdp_plugin_args is not None or os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def enable_fsdp_on_cpu(trainer: Trainer) -> None:
    """Turns FSDP on where Accelerate leaves it off: several CPU processes (gloo).

    Accelerate enables FSDP only on accelerators and trains CPU processes with DDP whatever the config says. FSDP2's
    `fully_shard` works on CPU meshes with gloo, so this switches the Trainer's Accelerator to FSDP2 (FSDP1 is not
    supported on CPU) before the model is prepared; elsewhere it does nothing.
    """
    from accelerate import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = trainer.accelerator.state
    if state.distributed_type != DistributedType.MULTI_CPU or not fsdp_requested(trainer.args):
        return
    if trainer.args.fsdp_plugin_args is not None:
        plugin = FullyShardedDataParallelPlugin(**trainer.args.fsdp_plugin_args)
    else:
        plugin = FullyShardedDataParallelPlugin()  # from the FSDP_* variables accelerate launch sets
    if plugin.fsdp_version != 2:
        raise ValueError("FSDP on CPU needs FSDP2: set fsdp_version: 2 (fsdp_config={'version': 2})")
    state.fsdp_plugin = plugin
    state.distributed_type = DistributedType.FSDP
    # Every AcceleratorState() copies PartialState's fields over its own: set it there too, as Accelerate does.
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    trainer.is_fsdp_enabled = True


class MirasolTrainer(Trainer):
    """`Trainer` that logs each loss component next to the total and applies `augmentation` in training steps.

    Logged at every logging step, averaged over the steps since the last log and over all processes:
    `text_loss` (mean cross-entropy per answer token, however the batch was split over gradient accumulation and
    processes), `latent_loss` and `reconstruction_loss` (mean over micro-batches). They are the unweighted
    components; `loss` is Trainer's weighted total. They go wherever `report_to` sends logs (console, TensorBoard).
    """

    def __init__(self, *args, augmentation: MediaAugmentation | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if self.args.label_smoothing_factor > 0:
            # Trainer's own smoother takes the labels away from the model, which then computes no loss at all (and
            # no latent or reconstruction loss): the model applies `config.label_smoothing` to its text loss.
            raise ValueError(
                "set label smoothing on the model (config.label_smoothing), not in "
                "TrainingArguments.label_smoothing_factor"
            )
        self.augmentation = augmentation
        # [text CE sum, text tokens, latent sum, latent count, reconstruction sum, reconstruction count]
        self._component_totals = None
        # (2,) chunk pairs of the latent and reconstruction losses in the batch Trainer last counted items of
        self._media_pairs_in_batch = None

    def create_accelerator_and_postprocess(self):
        super().create_accelerator_and_postprocess()
        enable_fsdp_on_cpu(self)

    def _save(self, output_dir=None, state_dict=None):
        # FSDP2 swaps the model's class for a subclass it makes (FSDPMirasol...), which save_pretrained would write
        # into the checkpoint's auto_map, copying FSDP's source files beside it: save under the model's own class.
        from torch.distributed.fsdp import FSDPModule

        sharded_class = type(self.model)
        if not isinstance(self.model, FSDPModule):
            return super()._save(output_dir, state_dict)
        # FSDP2's class is (FSDPModule, the model's class): the first base that is not FSDP's
        own_class = next(cls for cls in sharded_class.__mro__[1:] if not issubclass(cls, FSDPModule))
        self.model.__class__ = own_class
        try:
            super()._save(output_dir, state_dict)
        finally:
            self.model.__class__ = sharded_class

    def _get_num_items_in_batch(self, batch_samples: list, device) -> torch.Tensor | int | None:
        """Trainer's count of supervised tokens, and beside it the media losses' chunk pairs (`media_loss_pairs`).

        The model divides the text loss's sum by the tokens of the whole accumulated batch; with the pairs it does
        the same for the latent and reconstruction losses, so k micro-batches (of any sizes, on any number of
        processes) add up to exactly the gradient of one k-times larger batch for every loss.
        """
        num_items_in_batch = super()._get_num_items_in_batch(batch_samples, device)
        self._media_pairs_in_batch = None
        if num_items_in_batch is None:
            return None
        counts = [batch_media_loss_pairs(batch) for batch in batch_samples]
        if any(count is None for count in counts):
            return num_items_in_batch  # the model falls back to weighting media losses by token share
        pairs = torch.stack(counts).sum(dim=0).to(device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            # As Trainer does for the tokens: the loss is then scaled by the number of processes, which DDP/FSDP's
            # gradient averaging undoes.
            pairs = self.accelerator.gather(pairs[None]).sum(dim=0)
        self._media_pairs_in_batch = pairs
        return num_items_in_batch

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.augmentation is not None and model.training:
            inputs = self.augmentation(inputs)
        if num_items_in_batch is not None and self._media_pairs_in_batch is not None:
            inputs = {**inputs, "media_pairs_in_batch": self._media_pairs_in_batch}
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if model.training and "labels" in inputs:
            self._accumulate_components(outputs, inputs["labels"], num_items_in_batch)
        return (loss, outputs) if return_outputs else loss

    @torch.no_grad()
    def _accumulate_components(self, outputs, labels, num_items_in_batch) -> None:
        device = self.args.device
        if self._component_totals is None:
            self._component_totals = torch.zeros(2 * len(LOSS_COMPONENTS), device=device, dtype=torch.float64)
        tokens = (labels[:, 1:] != IGNORE_INDEX).sum().to(device)
        text_loss = outputs.get("text_loss")
        if text_loss is not None:
            # The model divides the summed cross-entropy by `num_items_in_batch` when given (the tokens of the whole
            # accumulated batch, on all processes), else by this batch's tokens: undo it to get this batch's sum.
            divisor = tokens if num_items_in_batch is None else torch.as_tensor(num_items_in_batch).to(device)
            self._component_totals[0] += text_loss.detach().double().to(device) * divisor
            self._component_totals[1] += tokens
        for slot, name in enumerate(LOSS_COMPONENTS[1:], start=1):
            value = outputs.get(name)
            if value is not None:
                self._component_totals[2 * slot] += value.detach().double().to(device)
                self._component_totals[2 * slot + 1] += 1

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # "loss" marks the periodic training log, which every process reaches together (the reduce needs all).
        if "loss" in logs and self._component_totals is not None:
            totals = self.accelerator.reduce(self._component_totals.clone(), reduction="sum")
            for slot, name in enumerate(LOSS_COMPONENTS):
                total, count = totals[2 * slot].item(), totals[2 * slot + 1].item()
                if count > 0:
                    logs[name] = total / count
            self._component_totals.zero_()
        super().log(logs, start_time)


# ---- LoRA -----------------------------------------------------------------------------------------------------------

LORA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def lora_target_modules(
    cross_attention: bool = True, projections: Sequence[str] = LORA_PROJECTIONS, self_attention_layers: bool = True
) -> str:
    """A PEFT `target_modules` regex for the text decoder's projections only.

    The encoders, combiner, latent model and reconstruction decoder also have `q_proj`... `down_proj` modules, so a
    list of names would put adapters on them too; the regex (full match on module names) keeps to
    `model.text_model.layers.*` (the Llama layers) and, with `cross_attention`,
    `model.text_model.cross_attention_blocks.*`.
    """
    parents = (["layers"] if self_attention_layers else []) + (["cross_attention_blocks"] if cross_attention else [])
    if not parents:
        raise ValueError("choose the Llama layers, the cross-attention blocks, or both")
    names = "|".join(re.escape(name) for name in projections)
    return rf"model\.text_model\.(?:{'|'.join(parents)})\.\d+\.(?:self_attn|cross_attn|mlp)\.(?:{names})"


DEFAULT_LORA_RANK = 16
DEFAULT_LORA_ALPHA = 32
DEFAULT_LORA_DROPOUT = 0.05


def lora_config(
    r: int = DEFAULT_LORA_RANK,
    lora_alpha: int = DEFAULT_LORA_ALPHA,
    lora_dropout: float = DEFAULT_LORA_DROPOUT,
    cross_attention: bool = True,
    **kwargs,
):
    """A `peft.LoraConfig` on the text decoder (and its cross-attention, by default); `kwargs` go to `LoraConfig`.

    The cross-attention blocks' tanh gates are plain parameters and stay frozen under LoRA: adapt a model whose gates
    are already open (a trained checkpoint), not a fresh one (gates at zero, so cross-attention adapters would get
    no gradient).
    """
    from peft import LoraConfig

    return LoraConfig(
        r=r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=lora_target_modules(cross_attention),
        bias="none",
        **kwargs,
    )
