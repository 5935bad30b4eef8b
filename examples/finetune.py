"""Train Mirasol with transformers' Trainer on a benchmark's annotation files and a local video folder.

The paper's stages are one flag, `--stage`: `pretrain` (text decoder frozen, all else trained; losses 1:1:1),
`audio_pretrain` (only the audio weights trained) and `finetune` (everything trained, text loss x10). Start from a
preset (a model from scratch; its tokenizer is built from the training text unless `--tokenizer` names one) or from a
checkpoint (`--model`). Every TrainingArguments flag works (`--learning-rate`, `--per-device-train-batch-size`,
`--num-train-epochs`, `--report-to tensorboard`, `--resume-from-checkpoint`, ...). Recipes: docs/training.md.

    python examples/finetune.py --preset tiny --dataset-format msrvtt_qa \\
        --annotations train_qa.json --video-dir videos/ --output-dir runs/msrvtt --max-steps 100

    accelerate launch --multi_gpu --num_processes 2 examples/finetune.py ...   # DDP (CPU too)
    accelerate launch --config_file examples/accelerate/fsdp.yaml examples/finetune.py ...   # FSDP2 (CPU too)
    accelerate launch --config_file examples/accelerate/deepspeed_zero3.yaml examples/finetune.py ...   # (CPU too)

A batch is `--per-device-train-batch-size` clips, each with all its questions (`--questions-per-clip N`: N of them,
drawn each step): every clip is decoded and encoded once per step. `--no-group-by-clip` makes it that many questions,
each with its own copy of its clip.
"""

import multiprocessing
import os
from dataclasses import dataclass, field

import torch
from accelerate.utils import is_deepspeed_available
from transformers import AutoTokenizer, HfArgumentParser, TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

from mirasol_hf import MirasolConfig, MirasolForConditionalGeneration, MirasolProcessor
from mirasol_hf.data import DATASET_FORMATS, ON_MISSING_VIDEO, group_by_clip, load_video_qa_dataset
from mirasol_hf.preprocess import CachedClips, load_cache
from mirasol_hf.tokenization_mirasol import DEFAULT_VOCAB_SIZE
from mirasol_hf.training import (
    DEFAULT_LORA_ALPHA,
    DEFAULT_LORA_DROPOUT,
    DEFAULT_LORA_RANK,
    STAGE_LOSS_WEIGHTS,
    TRAINING_STAGES,
    MediaAugmentation,
    MirasolDataCollator,
    MirasolTrainer,
    apply_training_stage,
    build_shared_tokenizer,
    lora_config,
)


ENCODER_CONFIGS = ("video_config", "audio_config", "combiner_config", "latent_config", "reconstruction_config")
RESUME_FROM_LAST = "last"


@dataclass
class FinetuneArguments:
    """What to train, on what, and how; the rest is TrainingArguments."""

    # model
    preset: str | None = field(default=None, metadata={"help": "build a new model: tiny, mirasol-small, mirasol-3b"})
    model: str | None = field(default=None, metadata={"help": "start from this checkpoint folder (or Hub id)"})
    tokenizer: str | None = field(
        default=None, metadata={"help": "with --preset: a tokenizer to use (e.g. a Llama's); default: build one"}
    )
    vocab_from: list[str] = field(
        default_factory=list,
        metadata={"help": "with --preset, no --tokenizer: text files (a text per line) added to the tokenizer's "
                  "training text, which is the training set's questions and answers"},
    )
    vocab_size: int = field(default=DEFAULT_VOCAB_SIZE, metadata={"help": "size of a tokenizer built here"})
    image_size: int | None = field(default=None, metadata={"help": "frame size (the paper fine-tunes at 448)"})
    num_chunks: int | None = field(default=None, metadata={"help": "chunks per clip"})
    frames_per_chunk: int | None = field(default=None, metadata={"help": "frames per chunk"})
    # stage and losses
    stage: str = field(default="finetune", metadata={"help": f"one of {TRAINING_STAGES}"})
    text_loss_weight: float | None = field(default=None, metadata={"help": "default: the stage's (finetune: 10)"})
    latent_loss_weight: float | None = field(default=None, metadata={"help": "default: the stage's (1)"})
    reconstruction_loss_weight: float | None = field(default=None, metadata={"help": "default: the stage's (1)"})
    label_smoothing: float | None = field(default=None, metadata={"help": "on the text loss (paper fine-tuning: 0.2)"})
    dropout: float | None = field(
        default=None, metadata={"help": "attention and hidden dropout everywhere (paper fine-tuning: 0.1)"}
    )
    # augmentation (audio-video classification data)
    spec_augment: bool = field(default=False, metadata={"help": "SpecAugment time/frequency masks on the log-mel"})
    mixup_alpha: float = field(default=0.0, metadata={"help": "Mixup of the media, Beta(alpha, alpha); 0: off"})
    # data
    dataset_format: str | None = field(default=None, metadata={"help": f"one of {sorted(DATASET_FORMATS)}"})
    annotations: list[str] = field(
        default_factory=list,
        metadata={"help": "annotation file(s) (ActivityNet-QA: questions then answers json; NExT-QA: the csv, "
                  "optionally add_reference_answer_*.json)"},
    )
    video_dir: str | None = field(default=None, metadata={"help": "folder holding the videos (searched recursively)"})
    cache: str | None = field(
        default=None,
        metadata={"help": "train on a cache made by `mirasol-hf preprocess` (decoded clips with their questions) "
                  "instead of --dataset-format / --annotations / --video-dir"},
    )
    split: str | None = field(default=None, metadata={"help": "VGG-Sound / Kinetics-Sound: rows of this split"})
    video_map: str | None = field(default=None, metadata={"help": "NExT-QA: map_vid_vidorID.json"})
    on_missing_video: str = field(default="error", metadata={"help": f"one of {ON_MISSING_VIDEO}"})
    max_train_samples: int | None = field(default=None, metadata={"help": "keep the first N rows (--cache: clips)"})
    group_by_clip: bool = field(
        default=True, metadata={"help": "batch clips with their questions (one decode and encoding per clip)"}
    )
    questions_per_clip: int | None = field(
        default=None, metadata={"help": "with grouping: train on at most N questions of each clip per step (random)"}
    )
    # LoRA
    lora: bool = field(default=False, metadata={"help": "train LoRA adapters on the text decoder only"})
    lora_rank: int = DEFAULT_LORA_RANK
    lora_alpha: int = DEFAULT_LORA_ALPHA
    lora_dropout: float = DEFAULT_LORA_DROPOUT


def deepspeed_launch() -> bool:
    """Whether `accelerate launch` was given a DeepSpeed config (`distributed_type: DEEPSPEED`)."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def check_launch() -> None:
    """Refuses a launch that would silently train otherwise than asked.

    `accelerate launch --num_processes N` without `--multi_gpu` (or a multi-process config) on a machine without
    GPUs runs one process with MASTER_PORT set for the N it was asked for, and says nothing.
    """
    launched_by_accelerate = "ACCELERATE_DYNAMO_BACKEND" in os.environ
    if launched_by_accelerate and "MASTER_PORT" in os.environ and "WORLD_SIZE" not in os.environ:
        raise SystemExit(
            "accelerate launch was asked for several processes but started one (its single-process launcher): add "
            "--multi_gpu (DDP; works on CPU too) or --config_file examples/accelerate/fsdp.yaml (FSDP)"
        )
    if deepspeed_launch() and not is_deepspeed_available():
        raise SystemExit("the launch config asks for DeepSpeed, which is not installed: pip install deepspeed")


def parse_arguments(argv=None) -> tuple[FinetuneArguments, TrainingArguments]:
    check_launch()
    parser = HfArgumentParser((FinetuneArguments, TrainingArguments))
    deepspeed = deepspeed_launch()
    launch_precision = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if deepspeed and launch_precision in ("bf16", "fp16"):
        if not torch.accelerator.is_available():
            # Trainer allows bf16 on CPUs only with --use-cpu, which turns DeepSpeed off.
            raise SystemExit(f"DeepSpeed on CPUs trains in fp32: give accelerate launch --mixed_precision no (the "
                             f"launch asked for {launch_precision})")
        # DeepSpeed's config takes the launch's precision and Trainer refuses to train unless its own flag agrees.
        parser.set_defaults(**{launch_precision: True})
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.accelerator.is_available():
        if deepspeed:
            # Several processes with no GPU under DeepSpeed: DeepSpeed's CPU accelerator joins the process group
            # with gloo when told the backend (else Accelerate sees no backend and counts one process).
            parser.set_defaults(ddp_backend="gloo")
        else:
            # Trainer joins the process group only when told to use the CPU; otherwise every process would train
            # a model of its own. Accelerate then turns FSDP off on CPU processes; MirasolTrainer turns it back on
            # (FSDP2 with gloo) when the launch asked for it.
            parser.set_defaults(use_cpu=True)
    script, training = parser.parse_args_into_dataclasses(args=argv)
    if deepspeed and training.use_cpu:
        # Accelerate would quietly train CPU processes with DDP instead.
        parser.error("--use-cpu turns DeepSpeed off (Accelerate then trains with DDP): drop it, DeepSpeed runs on "
                     "CPUs without it")
    if script.questions_per_clip is not None and not script.group_by_clip:
        parser.error("--questions-per-clip needs grouping by clip (drop --no-group-by-clip)")
    if (training.dataloader_num_workers > 0 and training.dataloader_multiprocessing_context is None
            and (training.use_cpu or not torch.accelerator.is_available())
            and "forkserver" in multiprocessing.get_all_start_methods()):
        # Training on CPUs, workers forked from this process would share the weights' and AdamW's pages
        # copy-on-write, and each page the optimizer writes would then be copied while they live: up to the whole
        # training state again (benchmarks/worker_memory.py). A forkserver is a fresh process: its workers share none.
        # It imports what the workers run once, so each worker (again every epoch) starts without importing it.
        training.dataloader_multiprocessing_context = "forkserver"
        multiprocessing.set_forkserver_preload(["mirasol_hf.training", "mirasol_hf.preprocess", "datasets"])
    if (script.preset is None) == (script.model is None):
        parser.error("give --preset (a new model) or --model (a checkpoint), not both")
    if script.model is not None and (script.tokenizer is not None or script.vocab_from):
        parser.error("--tokenizer and --vocab-from are for --preset: a checkpoint brings its own tokenizer")
    if script.stage not in TRAINING_STAGES:
        parser.error(f"--stage must be one of {TRAINING_STAGES}")
    if script.cache is not None:
        if script.dataset_format is not None or script.annotations or script.video_dir is not None:
            parser.error("--cache replaces --dataset-format, --annotations and --video-dir: give one or the other")
        if not script.group_by_clip:
            parser.error("a cache holds clips with their questions: --no-group-by-clip does not apply")
    elif script.dataset_format is None or not script.annotations or script.video_dir is None:
        parser.error("give --dataset-format, --annotations and --video-dir (or --cache)")
    if script.lora and script.stage != "finetune":
        parser.error("--lora trains adapters on the text decoder: use it with --stage finetune")
    if training.label_smoothing_factor > 0:
        parser.error("use --label-smoothing (the model's text loss), not --label-smoothing-factor")
    # The collator reads the `video`, `question` and `answer` columns, which the model's forward() does not name.
    training.remove_unused_columns = False
    if training.ddp_find_unused_parameters is None:
        # Every trainable parameter takes part in every forward (tests/test_finetune.py checks each stage), so DDP
        # need not search the graph for unused ones each step.
        training.ddp_find_unused_parameters = False
    return script, training


def build_model_and_processor(args: FinetuneArguments, train_texts, resume_from: str | None = None):
    """The model (config overrides applied before it is built, as dropout layers read them then) and its processor.

    A new model (`--preset`) resumed from a checkpoint takes the checkpoint's tokenizer: building it again from the
    same text could give another vocabulary.
    """
    if args.model is not None:
        config = MirasolConfig.from_pretrained(args.model)
        processor = MirasolProcessor.from_pretrained(args.model)
    else:
        if resume_from is not None:
            tokenizer = MirasolProcessor.from_pretrained(resume_from).tokenizer
        elif args.tokenizer is not None:
            tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
        else:
            texts = list(train_texts)
            for path in args.vocab_from:
                with open(path, encoding="utf-8") as file:
                    texts.extend(line.strip() for line in file if line.strip())
            tokenizer = build_shared_tokenizer(texts, vocab_size=args.vocab_size)
        config = MirasolConfig.from_preset(
            args.preset,
            text_config={
                "vocab_size": len(tokenizer),
                "pad_token_id": tokenizer.pad_token_id,
                "bos_token_id": tokenizer.bos_token_id,
                "eos_token_id": tokenizer.eos_token_id,
            },
        )
        processor = MirasolProcessor.from_model_config(config, tokenizer)

    for name, value in {**STAGE_LOSS_WEIGHTS[args.stage], "label_smoothing": config.label_smoothing}.items():
        chosen = getattr(args, name)
        setattr(config, name, value if chosen is None else chosen)
    if args.dropout is not None:
        for name in ENCODER_CONFIGS:
            getattr(config, name).attention_dropout = args.dropout
            getattr(config, name).hidden_dropout = args.dropout
        config.text_config.attention_dropout = args.dropout
    if args.image_size is not None:
        config.video_config.image_size = processor.image_size = args.image_size
    if args.num_chunks is not None:
        config.num_chunks = processor.num_chunks = args.num_chunks
    if args.frames_per_chunk is not None:
        config.frames_per_chunk = processor.frames_per_chunk = args.frames_per_chunk

    if args.model is not None:
        model = MirasolForConditionalGeneration.from_pretrained(args.model, config=config)
    else:
        model = MirasolForConditionalGeneration(config)
    return model, processor


def main(argv=None):
    args, training_args = parse_arguments(argv)
    set_seed(training_args.seed)
    if args.cache is not None:
        dataset = load_cache(args.cache)
        if args.max_train_samples is not None:  # clips, here
            dataset = CachedClips(dataset.dataset.select(range(min(args.max_train_samples, len(dataset)))))
        questions = [question for clip in dataset.dataset["question"] for question in clip]
        texts = questions + [answer for clip in dataset.dataset["answer"] for answer in clip]
    else:
        dataset = load_video_qa_dataset(
            args.dataset_format,
            args.annotations,
            args.video_dir,
            split=args.split,
            video_map_file=args.video_map,
            on_missing_video=args.on_missing_video,
        )
        if args.max_train_samples is not None:
            dataset = dataset.select(range(min(args.max_train_samples, len(dataset))))
        questions = list(dataset["question"])
        texts = questions + list(dataset["answer"])

    resume = training_args.resume_from_checkpoint
    if resume == RESUME_FROM_LAST:
        resume = get_last_checkpoint(training_args.output_dir)
        if resume is None:
            raise ValueError(f"--resume-from-checkpoint last: no checkpoint-* folder in {training_args.output_dir}")
    model, processor = build_model_and_processor(args, texts, resume_from=resume)
    trained = apply_training_stage(model, args.stage)
    if args.lora:
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(args.lora_rank, args.lora_alpha, args.lora_dropout))
    if args.group_by_clip and args.cache is None:
        dataset = group_by_clip(dataset)
    if training_args.process_index == 0:
        count = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        what = "LoRA adapters" if args.lora else f"stage {args.stage!r}: {len(trained)} tensors"
        examples = f"{len(dataset)} clips, {len(questions)} questions" if args.group_by_clip else f"{len(questions)} questions"
        print(f"training on {examples}; training {count:,} of {total:,} parameters ({what})")

    augmentation = MediaAugmentation(spec_augment=args.spec_augment, mixup_alpha=args.mixup_alpha)
    trainer = MirasolTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=MirasolDataCollator(processor, questions_per_clip=args.questions_per_clip),
        processing_class=processor,  # saved with every checkpoint, so each is a complete model folder
        augmentation=augmentation if augmentation.enabled else None,
    )
    result = trainer.train(resume_from_checkpoint=resume)
    if trainer.is_fsdp_enabled:
        # Sharded parameters are DTensors: each process holds its shard (`to_local()`) of the whole (`numel()`).
        parameters = list(trainer.model_wrapped.parameters())
        held = sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in parameters)
        print(f"FSDP process {training_args.process_index}: holds {held:,} of {sum(p.numel() for p in parameters):,} "
              "parameter values")
    elif trainer.is_deepspeed_enabled:
        # ZeRO-3 partitions each parameter: a process holds `ds_tensor` (its part, padded) of `ds_numel` values. Both
        # stages partition the optimizer: DeepSpeed's ZeRO optimizer steps Trainer's own (AdamW) on this process's
        # flat part of the fp32 weights only, so that is what its state (Adam's moments) covers.
        parameters = list(trainer.model_wrapped.parameters())
        held = sum(p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel() for p in parameters)
        total = sum(getattr(p, "ds_numel", p.numel()) for p in parameters)
        moments = trainer.model_wrapped.optimizer.optimizer.state.values()
        optimized = sum(state["exp_avg"].numel() for state in moments if "exp_avg" in state)
        stage = trainer.accelerator.state.deepspeed_plugin.zero_stage
        print(f"DeepSpeed ZeRO-{stage} process {training_args.process_index}: holds {held:,} of {total:,} parameter "
              f"values and optimizer state for {optimized:,}")
    trainer.save_model()
    trainer.save_state()
    trainer.log_metrics("train", result.metrics)
    # Every process leaves the process group together: exiting with gloo's threads still running can abort a process
    # ("terminate called without an active exception") after the work is done.
    trainer.accelerator.end_training()


if __name__ == "__main__":
    main()
