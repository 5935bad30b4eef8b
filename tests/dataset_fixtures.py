"""Tiny benchmark folders for the training tests: synthetic mp4 clips and annotation files in each official format."""

import csv
import json
import shutil
from pathlib import Path

import torch
from transformers import Trainer, TrainingArguments

from mirasol_hf import MirasolForConditionalGeneration
from mirasol_hf.synthetic import generate_clip, write_mp4


# Clips of 16 frames (the tiny preset's 4 chunks x 4 frames) of 32 x 32 (its frame size), 2 s long.
CLIP_SECONDS = 2.0
CLIP_FPS = 8.0
CLIP_SIZE = 32


def write_clips(folder, names, seed: int = 0) -> list:
    """Writes one synthetic clip per name (`folder/name`, sub-folders allowed); returns the clips (with questions)."""
    folder = Path(folder)
    clips = []
    for index, name in enumerate(names):
        clip = generate_clip((seed, index), duration=CLIP_SECONDS, fps=CLIP_FPS, size=CLIP_SIZE)
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_mp4(clip, path)
        clips.append(clip)
    return clips


def write_msrvtt_qa(root, num_videos: int = 4, questions_per_video: int = 2, seed: int = 0) -> tuple[Path, Path]:
    """`train_qa.json` + `videos/video{N}.mp4` with the synthetic clips' own questions; returns (annotation, videos)."""
    root = Path(root)
    videos = root / "videos"
    clips = write_clips(videos, [f"video{index}.mp4" for index in range(num_videos)], seed=seed)
    records = []
    for video_id, clip in enumerate(clips):
        for question in clip.questions[:questions_per_video]:
            records.append(
                {"answer": question.answer, "category_id": 0, "id": len(records), "question": question.question,
                 "video_id": video_id}
            )
    annotation = root / "train_qa.json"
    annotation.write_text(json.dumps(records))
    return annotation, videos


def copy_clip(source: Path, folder: Path, names) -> None:
    """The same clip under several names (readers only need the files to exist and decode)."""
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, path)


def write_csv(path: Path, header, rows) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        if header is not None:
            writer.writerow(header)
        writer.writerows(rows)
    return path


def training_arguments(output_dir, **overrides) -> TrainingArguments:
    """Small CPU Trainer settings: 2 steps of 2 clips, a log every step, no checkpoints, no reports."""
    settings = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=2,
        max_steps=2,
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=0,
    )
    settings.update(overrides)
    return TrainingArguments(**settings)


def one_sgd_step_updates(
    output_dir, config, dataset, collator, batch_size: int, accumulation: int, trainer_class=Trainer
) -> dict:
    """Each parameter's change after one Trainer step of plain SGD (learning rate 1, no clipping, no decay) on a fresh
    model of `config` (seed 0): two runs that see the same examples must change the parameters alike."""
    torch.manual_seed(0)
    model = MirasolForConditionalGeneration(config)
    before = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    args = training_arguments(
        output_dir / f"run-{batch_size}-{accumulation}",
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        learning_rate=1.0,
        optim="sgd",
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=0.0,
    )
    trainer_class(model=model, args=args, train_dataset=dataset, data_collator=collator).train()
    return {name: before[name] - parameter.detach() for name, parameter in model.named_parameters()}
