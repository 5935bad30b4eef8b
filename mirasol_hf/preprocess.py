"""Decode once, train many epochs: a data set's videos -> a sharded cache of model-ready media.

    mirasol-hf preprocess --dataset-format msrvtt_qa --annotations train_qa.json --video-dir videos/ \\
        --preset mirasol-small --output cache/msrvtt-train --num-proc 8

Each clip (a reader's rows grouped by `video` / `start_time` / `end_time`, see `mirasol_hf.data.group_by_clip`) is
decoded once with the processor's settings into `frames` (F, S, S, 3) uint8 at the model's frame size,
`input_features` (mels, T * A) float32 log-mel, and `video_chunk_mask` / `audio_chunk_mask` (T,), next to its
questions and answers (lists). Decoding runs in `datasets.Dataset.map(num_proc=...)` and the result is saved with
`save_to_disk` as Arrow shards, which `load_cache` memory-maps (or `to_iterable_dataset` streams) so DataLoader
workers read it without decoding. A video that cannot be read is reported and left out, with a count.

Training on the cache: `examples/finetune.py --cache cache/msrvtt-train` (MirasolDataCollator takes cached rows).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from datasets import Array2D, Array4D, Dataset, Features, Sequence, Value, load_from_disk

from .data import group_by_clip
from .training import CACHED_MEDIA, video_input


logger = logging.getLogger(__name__)

CACHE_INFO_FILE = "mirasol_cache.json"
ERROR_COLUMN = "decode_error"
DEFAULT_SHARD_CLIPS = 1000  # clips per Arrow shard


@dataclass
class PreprocessReport:
    """What `preprocess` did: clips kept, clips whose video could not be read (path, reason), where it wrote."""

    output_dir: str
    clips: int
    questions: int
    failed: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        line = f"{self.clips} clips ({self.questions} questions) cached in {self.output_dir}"
        if self.failed:
            line += f"; {len(self.failed)} unreadable video(s) skipped, first: {self.failed[0][0]}: {self.failed[0][1]}"
        return line


def _media_features(processor) -> dict:
    num_frames, size, num_chunks = processor.num_frames, processor.image_size, processor.num_chunks
    mels = processor.feature_extractor.num_mel_bins
    audio_frames = num_chunks * processor.feature_extractor.audio_frames_per_chunk
    return {
        "frames": Array4D(shape=(num_frames, size, size, 3), dtype="uint8"),
        "input_features": Array2D(shape=(mels, audio_frames), dtype="float32"),
        "video_chunk_mask": Sequence(Value("bool"), length=num_chunks),
        "audio_chunk_mask": Sequence(Value("bool"), length=num_chunks),
        ERROR_COLUMN: Value("string"),
    }


class _Decoder:
    """`map` function: one clip row -> its decoded media, or the reason it failed (picklable for num_proc)."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, row: dict) -> dict:
        try:
            media = self.processor.decode_videos([video_input(row)])
        except (ValueError, OSError) as error:  # the media reader's errors name the file and what is wrong
            return {**{name: None for name in CACHED_MEDIA}, ERROR_COLUMN: str(error) or type(error).__name__}
        return {**{name: values[0] for name, values in media.items()}, ERROR_COLUMN: None}


def preprocess(
    dataset: Dataset,
    processor,
    output_dir: str | os.PathLike,
    num_proc: int | None = None,
    shard_clips: int = DEFAULT_SHARD_CLIPS,
) -> PreprocessReport:
    """Decodes every clip of `dataset` (a `mirasol_hf.data` reader's rows) once and saves the cache to `output_dir`.

    `num_proc` decoding processes (`Dataset.map`); shards of about `shard_clips` clips. Unreadable videos are
    logged with a count and left out; if none can be read this raises a `ValueError`.
    """
    clips = group_by_clip(dataset)
    features = Features({**clips.features, **_media_features(processor)})
    decoded = clips.map(_Decoder(processor), features=features, num_proc=num_proc, desc="decoding clips")
    errors = decoded[ERROR_COLUMN]
    failed = [(video, error) for video, error in zip(decoded["video"], errors) if error is not None]
    kept = decoded.select([index for index, error in enumerate(errors) if error is None]).remove_columns(ERROR_COLUMN)
    if failed:
        logger.warning(
            "preprocess: %d of %d videos could not be read and are left out (first: %s: %s)",
            len(failed), len(decoded), *failed[0],
        )
    if len(kept) == 0:
        raise ValueError(f"preprocess: none of the {len(decoded)} videos could be read (first: {failed[0][0]}: "
                         f"{failed[0][1]})")
    output_dir = Path(output_dir)
    num_shards = max(1, -(-len(kept) // shard_clips))
    writers = min(num_proc or 1, num_shards)  # save_to_disk needs a shard per writing process
    kept.save_to_disk(str(output_dir), num_shards=num_shards, num_proc=writers if writers > 1 else None)
    report = PreprocessReport(str(output_dir), len(kept), sum(len(q) for q in kept["question"]), failed)
    info = {
        "clips": report.clips,
        "questions": report.questions,
        "failed": [{"video": video, "error": error} for video, error in failed],
        "num_frames": processor.num_frames,
        "image_size": processor.image_size,
        "num_chunks": processor.num_chunks,
    }
    (output_dir / CACHE_INFO_FILE).write_text(json.dumps(info, indent=2))
    return report


class CachedClips(torch.utils.data.Dataset):
    """A cache written by `preprocess`, memory-mapped: row i is clip i's columns, its media as numpy arrays in their
    stored dtypes (uint8 frames; `datasets`' numpy format would widen them to int64), what MirasolDataCollator takes.

    A map-style torch Dataset, so Trainer's DataLoader workers read it in parallel; `self.dataset` is the
    `datasets.Dataset` (e.g. for `to_iterable_dataset()`).
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self._arrow = dataset.with_format("arrow")

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        table = self._arrow[int(index)]  # a one-row pyarrow Table
        row = {name: table.column(name).to_pylist()[0] for name in table.column_names if name not in CACHED_MEDIA}
        for name in CACHED_MEDIA:
            column = table.column(name).combine_chunks()
            if name.endswith("_chunk_mask"):
                row[name] = np.asarray(column.to_pylist()[0], dtype=bool)
            else:
                row[name] = column.to_numpy(zero_copy_only=False)[0]
        return row


def load_cache(cache_dir: str | os.PathLike) -> CachedClips:
    """The cache `preprocess` wrote to `cache_dir` (memory-mapped; see `CachedClips`)."""
    cache_dir = Path(cache_dir)
    if not (cache_dir / CACHE_INFO_FILE).is_file():
        raise ValueError(f"{str(cache_dir)!r} is not a cache written by `mirasol-hf preprocess` (no {CACHE_INFO_FILE})")
    return CachedClips(load_from_disk(str(cache_dir)))


def build_processor(preset: str | None = None, model: str | None = None, **overrides):
    """The processor whose media settings a cache is made with: a checkpoint's, or a preset's (with `image_size`,
    `num_chunks`, `frames_per_chunk` overrides, as examples/finetune.py applies them)."""
    from .configuration_mirasol import MirasolConfig
    from .processing_mirasol import MirasolProcessor
    from .tokenization_mirasol import build_tokenizer

    if (preset is None) == (model is None):
        raise ValueError("give a preset or a model checkpoint, not both")
    if model is not None:
        processor = MirasolProcessor.from_pretrained(model)
    else:
        # The cache holds media only: any tokenizer will do for the processor that decodes it.
        processor = MirasolProcessor.from_model_config(MirasolConfig.from_preset(preset), build_tokenizer(["media"]))
    for name, value in overrides.items():
        if value is not None:
            setattr(processor, name, value)
    return processor


def add_arguments(parser) -> None:
    """The `mirasol-hf preprocess` options."""
    from .data import DATASET_FORMATS, ON_MISSING_VIDEO

    parser.add_argument("--dataset-format", required=True, choices=sorted(DATASET_FORMATS))
    parser.add_argument("--annotations", required=True, nargs="+", help="annotation file(s), as for finetune.py")
    parser.add_argument("--video-dir", required=True)
    parser.add_argument("--output", required=True, help="folder to write the cache to")
    media = parser.add_mutually_exclusive_group(required=True)
    media.add_argument("--preset", help="media settings of this preset (tiny, mirasol-small, mirasol-3b)")
    media.add_argument("--model", help="media settings of this checkpoint's processor")
    parser.add_argument("--image-size", type=int, help="frame size (as finetune.py's --image-size)")
    parser.add_argument("--num-chunks", type=int)
    parser.add_argument("--frames-per-chunk", type=int)
    parser.add_argument("--num-proc", type=int, default=None, help="decoding processes")
    parser.add_argument("--split", default=None, help="VGG-Sound / Kinetics-Sound: rows of this split")
    parser.add_argument("--video-map", default=None, help="NExT-QA: map_vid_vidorID.json")
    parser.add_argument("--on-missing-video", default="error", choices=ON_MISSING_VIDEO)


def run(args) -> int:
    """`mirasol-hf preprocess`: prints the report; exit status 0 when at least one clip was cached."""
    from .data import load_video_qa_dataset

    dataset = load_video_qa_dataset(
        args.dataset_format, args.annotations, args.video_dir, split=args.split, video_map_file=args.video_map,
        on_missing_video=args.on_missing_video,
    )
    processor = build_processor(
        args.preset, args.model, image_size=args.image_size, num_chunks=args.num_chunks,
        frames_per_chunk=args.frames_per_chunk,
    )
    report = preprocess(dataset, processor, args.output, num_proc=args.num_proc)
    print(report.summary())
    for video, error in report.failed:
        print(f"skipped {video}: {error}")
    return 0

