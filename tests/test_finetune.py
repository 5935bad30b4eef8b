"""Training with Trainer: the paper's stages, the collator, augmentation, per-loss logging, resume, and the
examples/finetune.py script (its 2-process FSDP launch: tests/test_training_at_scale.py)."""

import pytest
import torch
from transformers import TrainerCallback

from conftest import load_example
from dataset_fixtures import training_arguments, write_msrvtt_qa
from mirasol_hf import MirasolConfig, MirasolForConditionalGeneration, MirasolProcessor, build_tokenizer
from mirasol_hf.data import load_msrvtt_qa
from mirasol_hf.training import (
    LOSS_COMPONENTS,
    MediaAugmentation,
    MirasolDataCollator,
    MirasolTrainer,
    apply_training_stage,
)


NUM_VIDEOS, QUESTIONS_PER_VIDEO = 4, 2  # 8 training rows


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory):
    """An MSRVTT-QA-format folder of synthetic clips: (annotation file, video folder, dataset)."""
    annotation, videos = write_msrvtt_qa(tmp_path_factory.mktemp("msrvtt"), NUM_VIDEOS, QUESTIONS_PER_VIDEO)
    dataset = load_msrvtt_qa(annotation, videos)
    # Built once: two builds from the same texts can give different vocabularies (so different models).
    dataset.tokenizer = build_tokenizer(list(dataset["question"]) + list(dataset["answer"]), vocab_size=200)
    return annotation, videos, dataset


def model_and_processor(dataset, seed: int = 0, **overrides):
    """A tiny model from scratch with a tokenizer built from the dataset's text, as finetune.py builds one."""
    tokenizer = dataset.tokenizer
    config = MirasolConfig.from_preset(
        "tiny",
        text_config={"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
                     "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id},
        **overrides,
    )
    torch.manual_seed(seed)
    model = MirasolForConditionalGeneration(config)
    return model, MirasolProcessor.from_model_config(config, tokenizer)


TEXT_DECODER = ("model.text_model.embed_tokens.", "model.text_model.layers.", "model.text_model.norm.", "lm_head.")
AUDIO = ("model.audio_encoder.", "model.combiner.audio_projection.", "model.combiner.audio_type_embedding",
         "model.combiner.no_audio_embedding")
# What the stages train, restated by hand: (name prefixes trained, module groups that must move in a few steps).
STAGES = {
    "pretrain": (
        lambda name: not name.startswith(TEXT_DECODER),
        ("model.text_model.cross_attention_blocks.", "model.video_encoder.", "model.audio_encoder.", "model.combiner.",
         "model.latent_model.", "latent_predictor.", "reconstruction_decoder."),
    ),
    "audio_pretrain": (
        lambda name: name.startswith(AUDIO), ("model.audio_encoder.", "model.combiner.audio_projection.")
    ),
    "finetune": (
        lambda name: True, ("model.text_model.layers.", "model.text_model.embed_tokens.", "model.video_encoder.")
    ),
}


@pytest.mark.parametrize("stage", list(STAGES))
def test_each_stage_trains_exactly_its_parameters(tmp_path, benchmark, stage):
    _, _, dataset = benchmark
    model, processor = model_and_processor(dataset)
    is_trained, must_move = STAGES[stage]
    trained = apply_training_stage(model, stage)
    names = [name for name, _ in model.named_parameters()]
    assert trained == [name for name in names if is_trained(name)]
    assert "model.text_model.cross_attention_blocks.0.cross_attn.q_proj.weight" in trained or stage == "audio_pretrain"
    assert ("model.text_model.layers.0.mlp.up_proj.weight" in trained) is (stage == "finetune")

    # DDP runs without find_unused_parameters: every trained parameter must get a gradient from a real batch.
    batch = MirasolDataCollator(processor)([dataset[0], dataset[3]])
    model.train()
    model(**batch).loss.backward()
    assert [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None] == []
    model.zero_grad(set_to_none=True)

    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    MirasolTrainer(
        model=model, args=training_arguments(tmp_path), train_dataset=dataset,
        data_collator=MirasolDataCollator(processor),
    ).train()
    after = dict(model.named_parameters())
    frozen_changed = [name for name in names if name not in trained and not torch.equal(before[name], after[name])]
    assert frozen_changed == []
    for prefix in must_move:
        assert any(not torch.equal(before[name], after[name]) for name in names if name.startswith(prefix)), prefix


class RecordLogs(TrainerCallback):
    """What every `report_to` integration (TensorBoard, ...) receives: the dict passed to `on_log`."""

    def __init__(self):
        self.logs = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs))


def test_training_logs_each_loss_component_next_to_the_total(tmp_path, benchmark):
    _, _, dataset = benchmark
    # Only the text loss counts towards the total here, so the logged total must equal the logged text loss: this
    # pins the text component as the mean over the answer tokens of the whole accumulated batch.
    model, processor = model_and_processor(dataset, text_loss_weight=1.0, latent_loss_weight=0.0,
                                           reconstruction_loss_weight=0.0)
    recorder = RecordLogs()
    trainer = MirasolTrainer(
        model=model,
        args=training_arguments(tmp_path, per_device_train_batch_size=1, gradient_accumulation_steps=2,
                                learning_rate=1e-3),
        train_dataset=dataset,
        data_collator=MirasolDataCollator(processor),
        callbacks=[recorder],
    )
    trainer.train()
    step_logs = [logs for logs in recorder.logs if "loss" in logs]
    assert len(step_logs) == 2
    for logs in step_logs:
        assert set(LOSS_COMPONENTS) <= set(logs)
        assert logs["text_loss"] == pytest.approx(logs["loss"], rel=1e-5)
        assert logs["latent_loss"] > 0 and logs["reconstruction_loss"] > 0
    assert [logs for logs in trainer.state.log_history if "loss" in logs] == [
        {**logs, "step": step} for step, logs in enumerate(step_logs, start=1)
    ]


def test_the_collator_decodes_paths_with_time_ranges_and_explains_missing_columns(benchmark):
    _, _, dataset = benchmark
    _, processor = model_and_processor(dataset)
    row = {**dataset[0], "start_time": 0.5, "end_time": 1.5}
    batch = MirasolDataCollator(processor)([row, dataset[1]])
    expected = processor(
        videos=[{"path": row["video"], "start_time": 0.5, "end_time": 1.5}, dataset[1]["video"]],
        text=[row["question"], dataset[1]["question"]],
        answers=[row["answer"], dataset[1]["answer"]],
    )
    assert batch.keys() == expected.keys()
    for key in batch:
        torch.testing.assert_close(batch[key], expected[key], rtol=0, atol=0)
    prompts = MirasolDataCollator(processor, with_answers=False)([dataset[0]])
    assert "labels" not in prompts and prompts["input_ids"].shape[0] == 1

    with pytest.raises(ValueError, match="remove_unused_columns=False"):
        MirasolDataCollator(processor)([{"input_ids": [1, 2]}])


def _media_batch(batch=3, num_chunks=4, frames_per_chunk=2, audio_frames=8, mels=6):
    """Each clip's media filled with its own index, so mixing is readable in the values."""
    fill = torch.arange(batch, dtype=torch.float32)
    return {
        "pixel_values_videos": fill[:, None, None, None, None].expand(batch, num_chunks * frames_per_chunk, 3, 4, 4)
        .clone(),
        "video_chunk_mask": torch.ones(batch, num_chunks, dtype=torch.bool),
        "input_features": fill[:, None, None].expand(batch, mels, num_chunks * audio_frames).clone(),
        "audio_chunk_mask": torch.tensor([[True] * 4, [True, True, True, False], [True] * 4]),
        "input_ids": torch.arange(batch * 5).reshape(batch, 5),
        "labels": torch.arange(batch * 5).reshape(batch, 5),
    }


def test_spec_augment_masks_bands_of_the_log_mel_with_the_clip_mean():
    torch.manual_seed(0)
    batch = _media_batch()
    batch["input_features"] = torch.randn_like(batch["input_features"])
    original = {key: value.clone() for key, value in batch.items()}
    augmented = MediaAugmentation(spec_augment=True, time_mask_fraction=0.25, frequency_mask_fraction=0.4)(batch)

    for key in original:  # inputs are not modified in place
        assert torch.equal(batch[key], original[key])
    assert torch.equal(augmented["pixel_values_videos"], original["pixel_values_videos"])
    changed = augmented["input_features"] != original["input_features"]
    assert changed.any(dim=(1, 2)).all()  # every clip got masks
    for index in range(3):
        has_audio = original["audio_chunk_mask"][index].repeat_interleave(8)  # (T * A,)
        fill = original["input_features"][index][:, has_audio].mean()
        values = augmented["input_features"][index][changed[index]]
        torch.testing.assert_close(values, fill.expand_as(values))
        assert not changed[index][:, ~has_audio].any()  # chunks without audio keep their padding
    assert changed[1][:, :24].any()  # clip 1 is masked where it has audio


def test_mixup_mixes_media_with_the_clips_own_share_dominant_and_keeps_its_answer():
    augmentation = MediaAugmentation(mixup_alpha=1.0)
    batch = _media_batch()
    torch.manual_seed(0)
    partner, lam = augmentation.sample_mixup(3)
    torch.manual_seed(0)
    augmented = augmentation(batch)

    assert torch.equal(augmented["labels"], batch["labels"]) and torch.equal(augmented["input_ids"], batch["input_ids"])
    assert all(int(partner[index]) != index for index in range(3)) and bool((lam >= 0.5).all())
    own = torch.arange(3.0)
    torch.testing.assert_close(augmented["pixel_values_videos"][:, 5, 1, 2, 3], lam * own + (1 - lam) * own[partner])
    for index in range(3):
        features = augmented["input_features"][index]
        torch.testing.assert_close(features[:, :24], (lam[index] * index + (1 - lam[index]) * partner[index].float())
                                   .expand(6, 24))
        # Clip 1's last chunk has no audio: neither it nor the clip paired with it mixes there.
        last = lam[index] * index + (1 - lam[index]) * partner[index].float()
        if index == 1 or int(partner[index]) == 1:
            last = torch.tensor(float(index))
        torch.testing.assert_close(features[:, 24:], last.expand(6, 8))
    single = augmentation({key: value[:1] for key, value in batch.items()})
    assert torch.equal(single["pixel_values_videos"], batch["pixel_values_videos"][:1])


class CountingAugmentation(MediaAugmentation):
    calls = 0

    def __call__(self, batch):
        CountingAugmentation.calls += 1
        return super().__call__(batch)


def test_trainer_augments_training_batches_only(tmp_path, benchmark):
    _, _, dataset = benchmark
    model, processor = model_and_processor(dataset)
    trainer = MirasolTrainer(
        model=model,
        args=training_arguments(tmp_path, max_steps=1, per_device_eval_batch_size=4),
        train_dataset=dataset,
        eval_dataset=dataset.select(range(4)),
        data_collator=MirasolDataCollator(processor),
        augmentation=CountingAugmentation(spec_augment=True, mixup_alpha=0.4),
    )
    trainer.train()
    assert CountingAugmentation.calls == 1
    metrics = trainer.evaluate()
    assert CountingAugmentation.calls == 1 and metrics["eval_loss"] > 0


class StopAfter(TrainerCallback):
    """Ends training after `step` steps (after that step's checkpoint), as an interrupted job would."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def _losses(trainer):
    keys = ("loss", *LOSS_COMPONENTS)
    return {entry["step"]: [entry[key] for key in keys] for entry in trainer.state.log_history if "loss" in entry}


def test_resuming_from_a_checkpoint_continues_the_loss_curve(tmp_path, benchmark):
    _, _, dataset = benchmark
    dropout = {"hidden_dropout": 0.1, "attention_dropout": 0.1}  # randomness the checkpoint's RNG state must restore

    def run(output_dir, stop_after=None, resume=None):
        model, processor = model_and_processor(dataset, combiner_config=dropout, latent_config=dropout)
        trainer = MirasolTrainer(
            model=model,
            args=training_arguments(output_dir, max_steps=4, save_strategy="steps", save_steps=2,
                                    learning_rate=3e-3, warmup_steps=1),
            train_dataset=dataset,
            data_collator=MirasolDataCollator(processor),
            augmentation=MediaAugmentation(spec_augment=True, mixup_alpha=0.4),
            callbacks=[StopAfter(stop_after)] if stop_after else [],
        )
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    straight = _losses(run(tmp_path / "straight"))
    interrupted = run(tmp_path / "interrupted", stop_after=2)
    assert sorted(_losses(interrupted)) == [1, 2]
    resumed = _losses(run(tmp_path / "interrupted", resume=str(tmp_path / "interrupted" / "checkpoint-2")))
    # The resumed run's history starts with the checkpoint's (steps 1-2); steps 3-4 are its own.
    assert sorted(straight) == [1, 2, 3, 4] and sorted(resumed) == [1, 2, 3, 4]
    for step in (3, 4):
        assert resumed[step] == pytest.approx(straight[step], rel=1e-5), step
    assert straight[3] != pytest.approx(straight[2], rel=1e-3)  # the curve moves: the comparison is not vacuous


def test_finetune_script_resumed_from_scratch_keeps_the_checkpoints_tokenizer(tmp_path, benchmark):
    annotation, videos, _ = benchmark
    finetune = load_example("finetune")
    output = tmp_path / "run"
    common = [
        "--preset", "tiny", "--vocab-size", "200", "--dataset-format", "msrvtt_qa", "--annotations", str(annotation),
        "--video-dir", str(videos), "--output-dir", str(output), "--per-device-train-batch-size", "2",
        "--save-steps", "1", "--report-to", "none", "--use-cpu", "--disable-tqdm", "true",
    ]
    finetune.main(common + ["--max-steps", "1"])
    vocabulary = MirasolProcessor.from_pretrained(output / "checkpoint-1").tokenizer.get_vocab()
    # A new tokenizer built from the same text may number the tokens differently: resuming must not build one.
    finetune.main(common + ["--max-steps", "2", "--resume-from-checkpoint", "last"])
    assert (output / "checkpoint-2").exists()
    assert MirasolProcessor.from_pretrained(output).tokenizer.get_vocab() == vocabulary
