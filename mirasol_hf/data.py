"""Readers for the benchmarks' official annotation files, as `datasets.Dataset`s of video paths and QA text.

Every reader takes the annotation file(s) as the benchmark distributes them and a local folder holding the videos,
and returns one row per question with the columns

    id            the benchmark's question / annotation id (str)
    video         absolute path of the video file
    question      the question (classification sets: a fixed question such as "what sound is this?")
    answer        the answer (classification sets: the class name)

plus, where the format has them:

    start_time, end_time   seconds into the video file (None: the whole file); VGG-Sound, Epic-Sounds, Kinetics-Sound
    question_type          MSRVTT-QA: the question word; ActivityNet-QA: its type names; NExT-QA: causal / temporal /
                           descriptive (from the type code, kept in `type_code`)
    additional_answers     NExT-QA: further accepted answers (from `add_reference_answer_*.json`)

Video files are found by name anywhere under the folder (sub-folders included, any of `VIDEO_EXTENSIONS`, case of the
extension ignored), so the layouts the download scripts produce all work. A row whose video is not there raises a
`ValueError` naming the annotation file and the video (`on_missing_video="error"`, the default), or is dropped with a
warning that counts the dropped rows (`"skip"`; YouTube-sourced sets always miss some videos). A missing field raises
a `ValueError` naming the file, the row and the field.

The classification sets (VGG-Sound, Epic-Sounds, Kinetics-Sound) become "generate the class name", as the paper
evaluates them.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from datasets import Dataset


logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v")
ON_MISSING_VIDEO = ("error", "skip")

SOUND_QUESTION = "what sound is this?"
ACTION_QUESTION = "what is happening?"

# MSRVTT-QA groups its questions by their first word (Xu et al., 2017).
MSRVTT_QUESTION_WORDS = ("what", "who", "how", "when", "where")
OTHER_QUESTION_TYPE = "other"
# ActivityNet-QA's `type` field (its dataset README): 0-2 question types, 3-8 the answer types of "free" questions.
ACTIVITYNET_QA_TYPES = ("motion", "spatial", "temporal", "yes_no", "color", "object", "location", "number", "other")
# NExT-QA type codes: C[W|H] causal why/how, T[N|P|C] temporal next/previous/concurrent, D[B|C|L|O] descriptive.
NEXT_QA_TYPE_GROUPS = {"C": "causal", "T": "temporal", "D": "descriptive"}
# NExT-QA multiple choice: the five options; `answer` is the index of the right one.
NEXT_QA_CHOICE_COLUMNS = ("a0", "a1", "a2", "a3", "a4")
# VGG-Sound clips are 10 s from `start_seconds` of the YouTube video.
VGGSOUND_CLIP_SECONDS = 10.0
# Kinetics-Sound: the classes of Arandjelovic & Zisserman, "Look, Listen and Learn" (ICCV 2017) that exist in
# Kinetics-400 under these names (31 classes, the set most audio-visual papers report on). Pass `classes=` for
# another variant.
KINETICS_SOUNDS_CLASSES = (
    "blowing nose",
    "blowing out candles",
    "bowling",
    "chopping wood",
    "dribbling basketball",
    "laughing",
    "mowing lawn",
    "playing accordion",
    "playing bagpipes",
    "playing bass guitar",
    "playing clarinet",
    "playing drums",
    "playing guitar",
    "playing harmonica",
    "playing keyboard",
    "playing organ",
    "playing piano",
    "playing saxophone",
    "playing trombone",
    "playing trumpet",
    "playing violin",
    "playing xylophone",
    "ripping paper",
    "shoveling snow",
    "shuffling cards",
    "singing",
    "stomping grapes",
    "tap dancing",
    "tapping guitar",
    "tapping pen",
    "tickling",
)
SECONDS_PER_MINUTE = 60
SECONDS_PER_HOUR = 3600


class VideoFolder:
    """The video files under a folder, found by file name without extension (sub-folders searched too)."""

    def __init__(self, root: str | os.PathLike, extensions: Sequence[str] = VIDEO_EXTENSIONS):
        root = Path(root)
        if not root.is_dir():
            raise ValueError(f"video folder {str(root)!r} does not exist or is not a folder")
        self.root = root
        extensions = {extension.lower() for extension in extensions}
        self._paths: dict[str, list[str]] = {}
        for folder, _, files in os.walk(root, followlinks=True):
            for name in files:
                stem, extension = os.path.splitext(name)
                if extension.lower() in extensions:
                    self._paths.setdefault(stem, []).append(os.path.abspath(os.path.join(folder, name)))

    def find(self, *stems: str) -> str | None:
        """Path of the first of `stems` present, or None; a name found twice is an error (which one is meant?)."""
        for stem in stems:
            paths = self._paths.get(stem)
            if paths is None:
                continue
            if len(paths) > 1:
                raise ValueError(f"video {stem!r} is ambiguous in {str(self.root)!r}: {sorted(paths)}")
            return paths[0]
        return None


def _field(record: dict, name: str, source: str, index: int):
    if name not in record or record[name] is None or record[name] == "":
        raise ValueError(f"{source}: entry {index} has no {name!r} field (fields: {sorted(record)})")
    return record[name]


def _read_json_list(path: str | os.PathLike) -> list[dict]:
    with open(path, encoding="utf-8") as file:
        records = json.load(file)
    if not isinstance(records, list) or not all(isinstance(record, dict) for record in records):
        raise ValueError(f"{os.fspath(path)}: expected a JSON list of objects")
    return records


def _read_csv(path: str | os.PathLike, fieldnames: Sequence[str] | None = None) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as file:
        return [row for row in csv.DictReader(file, fieldnames=fieldnames) if any(value for value in row.values())]


def _check_on_missing(on_missing_video: str) -> None:
    if on_missing_video not in ON_MISSING_VIDEO:
        raise ValueError(f"on_missing_video must be one of {ON_MISSING_VIDEO}, got {on_missing_video!r}")


def _build(
    rows: Iterable[tuple[dict, tuple[str, ...]]],
    folder: VideoFolder,
    source: str,
    on_missing_video: str,
    locate: Callable[[dict, str], dict] | None = None,
) -> Dataset:
    """Rows with their candidate video names -> a Dataset; applies the missing-video policy.

    `locate(row, path)` may adjust a row once its file is known (e.g. a full video needs the clip's time range).
    """
    _check_on_missing(on_missing_video)
    kept, missing = [], []
    for row, stems in rows:
        path = folder.find(*stems)
        if path is None:
            if on_missing_video == "error":
                raise ValueError(
                    f"{source}: video {stems[0]!r} (question {row['id']!r}) not found under {str(folder.root)!r} "
                    f"(looked for {list(stems)} with extensions {list(VIDEO_EXTENSIONS)}); "
                    "pass on_missing_video='skip' to drop such rows"
                )
            missing.append(stems[0])
            continue
        row = {"id": row["id"], "video": path, **{k: v for k, v in row.items() if k != "id"}}
        kept.append(locate(row, path) if locate is not None else row)
    if missing:
        logger.warning(
            "%s: skipped %d of %d rows whose videos are not under %s (first: %s)",
            source,
            len(missing),
            len(missing) + len(kept),
            folder.root,
            missing[0],
        )
    if not kept:
        raise ValueError(f"{source}: no row has its video under {str(folder.root)!r}")
    return Dataset.from_list(kept)


def load_msrvtt_qa(
    annotation_file: str | os.PathLike, video_dir: str | os.PathLike, on_missing_video: str = "error"
) -> Dataset:
    """MSRVTT-QA: `{train,val,test}_qa.json`, a list of `{"question", "answer", "video_id", "id", ...}`.

    `video_id` is the MSR-VTT number (`video{video_id}.mp4`; a string "video123" is taken as the name).
    `question_type` is the question word (what / who / how / when / where, else "other").
    """
    source = os.fspath(annotation_file)
    folder = VideoFolder(video_dir)

    def rows():
        for index, record in enumerate(_read_json_list(annotation_file)):
            question = str(_field(record, "question", source, index)).strip()
            video_id = str(_field(record, "video_id", source, index))
            video_name = video_id if video_id.startswith("video") else f"video{video_id}"
            first_word = question.split()[0].lower() if question else ""
            row = {
                "id": str(record.get("id", index)),
                "question": question,
                "answer": str(_field(record, "answer", source, index)).strip(),
                "question_type": first_word if first_word in MSRVTT_QUESTION_WORDS else OTHER_QUESTION_TYPE,
            }
            yield row, (video_name,)

    return _build(rows(), folder, source, on_missing_video)


def load_activitynet_qa(
    questions_file: str | os.PathLike,
    answers_file: str | os.PathLike,
    video_dir: str | os.PathLike,
    on_missing_video: str = "error",
) -> Dataset:
    """ActivityNet-QA: `{split}_q.json` (`{"video_name", "question", "question_id"}`) and `{split}_a.json`
    (`{"answer", "type", "question_id"}`), joined on `question_id`.

    `video_name` is the YouTube id; ActivityNet's files are named `v_{id}` (also found: `{id}`). `question_type` is
    the name of `type` (`ACTIVITYNET_QA_TYPES`).
    """
    source = f"{os.fspath(questions_file)} + {os.fspath(answers_file)}"
    folder = VideoFolder(video_dir)
    answers = {}
    for index, record in enumerate(_read_json_list(answers_file)):
        answers[str(_field(record, "question_id", os.fspath(answers_file), index))] = (index, record)

    def rows():
        for index, record in enumerate(_read_json_list(questions_file)):
            question_id = str(_field(record, "question_id", os.fspath(questions_file), index))
            if question_id not in answers:
                raise ValueError(f"{os.fspath(answers_file)} has no answer for question_id {question_id!r}")
            answer_index, answer = answers[question_id]
            type_index = int(_field(answer, "type", os.fspath(answers_file), answer_index))
            if not 0 <= type_index < len(ACTIVITYNET_QA_TYPES):
                raise ValueError(f"{os.fspath(answers_file)}: entry {answer_index} has unknown type {type_index}")
            video_name = str(_field(record, "video_name", os.fspath(questions_file), index))
            row = {
                "id": question_id,
                "question": str(_field(record, "question", os.fspath(questions_file), index)).strip(),
                "answer": str(_field(answer, "answer", os.fspath(answers_file), answer_index)).strip(),
                "question_type": ACTIVITYNET_QA_TYPES[type_index],
            }
            yield row, (f"v_{video_name}", video_name)

    return _build(rows(), folder, source, on_missing_video)


def load_next_qa(
    annotation_file: str | os.PathLike,
    video_dir: str | os.PathLike,
    additional_answers_file: str | os.PathLike | None = None,
    video_map_file: str | os.PathLike | None = None,
    on_missing_video: str = "error",
) -> Dataset:
    """NExT-QA, either of its two CSV formats (told apart by the columns `a0`..`a4`):

    * open-ended (NExT-OE) `{train,val,test}.csv`: video, frame_count, width, height, question, answer, qid, type;
    * multiple choice (the main NExT-QA) `{train,val,test}.csv`: the same plus a0..a4, where `answer` is the index
      of the right choice. The row's `answer` is that choice's text, `choices` the five options in order and
      `answer_index` the index (`mirasol_hf.evaluation.rank_choices` scores it).

    `question_type` is causal / temporal / descriptive from the first letter of `type` (kept in `type_code`).
    `additional_answers_file` (`add_reference_answer_{split}.json`, `{video: {qid: answer}}`) adds accepted answers.
    Videos are found by id under `video_dir`; `video_map_file` (`map_vid_vidorID.json`, `{video: "folder/name"}`)
    is used when given.
    """
    source = os.fspath(annotation_file)
    folder = VideoFolder(video_dir)
    video_map = {}
    if video_map_file is not None:
        with open(video_map_file, encoding="utf-8") as file:
            video_map = {str(key): str(value) for key, value in json.load(file).items()}
    extra = {}
    if additional_answers_file is not None:
        with open(additional_answers_file, encoding="utf-8") as file:
            extra = json.load(file)

    def rows():
        for index, record in enumerate(_read_csv(annotation_file)):
            video = str(_field(record, "video", source, index))
            qid = str(_field(record, "qid", source, index))
            type_code = str(_field(record, "type", source, index)).strip()
            if type_code[:1] not in NEXT_QA_TYPE_GROUPS:
                raise ValueError(f"{source}: row {index} has unknown type {type_code!r} (expected C*, T* or D*)")
            additional = extra.get(video, {}).get(qid)
            answer = str(_field(record, "answer", source, index)).strip()
            choices = {}
            if NEXT_QA_CHOICE_COLUMNS[0] in record:
                options = [str(_field(record, column, source, index)).strip() for column in NEXT_QA_CHOICE_COLUMNS]
                if answer not in {str(position) for position in range(len(options))}:
                    raise ValueError(
                        f"{source}: row {index} is multiple choice (a0..a4) but its answer {answer!r} is not the "
                        f"index of a choice (0..{len(options) - 1})"
                    )
                choices = {"choices": options, "answer_index": int(answer)}
                answer = options[int(answer)]
            row = {
                # qid counts within a video: the video makes it unique.
                "id": f"{video}_{qid}",
                "question": str(_field(record, "question", source, index)).strip(),
                "answer": answer,
                "question_type": NEXT_QA_TYPE_GROUPS[type_code[0]],
                "type_code": type_code,
                "additional_answers": [str(additional).strip()] if additional else [],
                **choices,
            }
            stems = (Path(video_map[video]).name,) if video in video_map else ()
            yield row, (*stems, video)

    return _build(rows(), folder, source, on_missing_video)


def _time_range_when_untrimmed(full_video_names: Callable[[dict], set[str]]):
    """A `locate` hook: a file named like the full video (not the trimmed clip) gets the clip's time range."""

    def locate(row: dict, path: str) -> dict:
        is_full_video = Path(path).stem in full_video_names(row)
        start, end = row.pop("_start"), row.pop("_end")
        row["start_time"], row["end_time"] = (start, end) if is_full_video else (None, None)
        return row

    return locate


def load_vggsound(
    annotation_file: str | os.PathLike,
    video_dir: str | os.PathLike,
    split: str | None = None,
    question: str = SOUND_QUESTION,
    on_missing_video: str = "error",
) -> Dataset:
    """VGG-Sound: `vggsound.csv`, no header, rows `youtube_id,start_seconds,label,split` ("train" / "test").

    A trimmed 10 s clip is found as `{id}_{start:06d}`, `{id}_{start:06d}_{end:06d}` or `{id}_{start}`; a file named
    `{id}` is the full YouTube video, read from `start_seconds` for 10 s.
    """
    source = os.fspath(annotation_file)
    folder = VideoFolder(video_dir)

    def rows():
        fields = ("youtube_id", "start_seconds", "label", "split")
        for index, record in enumerate(_read_csv(annotation_file, fieldnames=fields)):
            if split is not None and str(_field(record, "split", source, index)).strip() != split:
                continue
            youtube_id = str(_field(record, "youtube_id", source, index)).strip()
            start = float(_field(record, "start_seconds", source, index))
            end = start + VGGSOUND_CLIP_SECONDS
            row = {
                "id": f"{youtube_id}_{int(start):06d}",
                "question": question,
                "answer": str(_field(record, "label", source, index)).strip(),
                "_start": start,
                "_end": end,
            }
            stems = (
                f"{youtube_id}_{int(start):06d}",
                f"{youtube_id}_{int(start):06d}_{int(end):06d}",
                f"{youtube_id}_{int(start)}",
                youtube_id,
            )
            yield row, stems

    locate = _time_range_when_untrimmed(lambda row: {row["id"].rsplit("_", 1)[0]})
    return _build(rows(), folder, source, on_missing_video, locate)


def parse_timestamp(timestamp: str) -> float:
    """"HH:MM:SS.fff" (or "MM:SS.fff", "SS.fff") -> seconds."""
    parts = timestamp.strip().split(":")
    if not 1 <= len(parts) <= 3:
        raise ValueError(f"timestamp {timestamp!r} is not HH:MM:SS.fff")
    seconds = 0.0
    for part, scale in zip(reversed(parts), (1, SECONDS_PER_MINUTE, SECONDS_PER_HOUR)):
        seconds += float(part) * scale
    return seconds


def load_epic_sounds(
    annotation_file: str | os.PathLike,
    video_dir: str | os.PathLike,
    question: str = SOUND_QUESTION,
    on_missing_video: str = "error",
) -> Dataset:
    """Epic-Sounds: `EPIC_Sounds_{train,validation}.csv` with columns annotation_id, participant_id, video_id,
    start_timestamp, stop_timestamp, [start_sample, stop_sample,] description, class, class_id.

    The videos are EPIC-KITCHENS-100's (`{video_id}.MP4`, e.g. under `P01/videos/`); each row reads its
    `[start_timestamp, stop_timestamp)` segment. The answer is `class` (the 44 classes), not the free `description`.
    """
    source = os.fspath(annotation_file)
    folder = VideoFolder(video_dir)

    def rows():
        for index, record in enumerate(_read_csv(annotation_file)):
            start = parse_timestamp(str(_field(record, "start_timestamp", source, index)))
            end = parse_timestamp(str(_field(record, "stop_timestamp", source, index)))
            if end <= start:
                raise ValueError(f"{source}: row {index} ends ({end} s) before it starts ({start} s)")
            row = {
                "id": str(_field(record, "annotation_id", source, index)),
                "question": question,
                "answer": str(_field(record, "class", source, index)).strip(),
                "start_time": start,
                "end_time": end,
            }
            yield row, (str(_field(record, "video_id", source, index)).strip(),)

    return _build(rows(), folder, source, on_missing_video)


def load_kinetics_sound(
    annotation_file: str | os.PathLike,
    video_dir: str | os.PathLike,
    split: str | None = None,
    classes: Sequence[str] | None = KINETICS_SOUNDS_CLASSES,
    question: str = ACTION_QUESTION,
    on_missing_video: str = "error",
) -> Dataset:
    """Kinetics-Sound: a Kinetics csv (`label,youtube_id,time_start,time_end,split[,is_cc]`) kept to `classes`
    (default `KINETICS_SOUNDS_CLASSES`; None keeps every class).

    A trimmed clip is found as `{id}_{start:06d}_{end:06d}` (the name the Kinetics download scripts give); a file
    named `{id}` is the full YouTube video, read from `time_start` to `time_end`.
    """
    source = os.fspath(annotation_file)
    folder = VideoFolder(video_dir)
    wanted = None if classes is None else set(classes)

    def rows():
        for index, record in enumerate(_read_csv(annotation_file)):
            if split is not None and str(_field(record, "split", source, index)).strip() != split:
                continue
            label = str(_field(record, "label", source, index)).strip()
            if wanted is not None and label not in wanted:
                continue
            youtube_id = str(_field(record, "youtube_id", source, index)).strip()
            start = float(_field(record, "time_start", source, index))
            end = float(_field(record, "time_end", source, index))
            clip_name = f"{youtube_id}_{int(start):06d}_{int(end):06d}"
            row = {"id": clip_name, "question": question, "answer": label, "_start": start, "_end": end}
            yield row, (clip_name, youtube_id)

    locate = _time_range_when_untrimmed(lambda row: {row["id"].rsplit("_", 2)[0]})
    return _build(rows(), folder, source, on_missing_video, locate)


DATASET_FORMATS = {
    "msrvtt_qa": load_msrvtt_qa,
    "activitynet_qa": load_activitynet_qa,
    "next_qa": load_next_qa,
    "vggsound": load_vggsound,
    "epic_sounds": load_epic_sounds,
    "kinetics_sound": load_kinetics_sound,
}
# How many annotation files each format takes, in the order its reader takes them (the rest are options).
_ANNOTATION_FILES = {"activitynet_qa": 2}


def load_video_qa_dataset(
    dataset_format: str, annotation_files: Sequence[str | os.PathLike], video_dir: str | os.PathLike, **options
) -> Dataset:
    """Any reader by its `DATASET_FORMATS` name; `annotation_files` are the files it takes (ActivityNet-QA: the
    questions and the answers file; NExT-QA: the csv, optionally followed by `add_reference_answer_*.json`)."""
    if dataset_format not in DATASET_FORMATS:
        raise ValueError(f"unknown dataset format {dataset_format!r}; choose one of {sorted(DATASET_FORMATS)}")
    annotation_files = list(annotation_files)
    expected = _ANNOTATION_FILES.get(dataset_format, 1)
    if dataset_format == "next_qa" and len(annotation_files) == 2:
        options.setdefault("additional_answers_file", annotation_files.pop())
    if len(annotation_files) != expected:
        raise ValueError(f"{dataset_format} takes {expected} annotation file(s), got {len(annotation_files)}")
    options = {key: value for key, value in options.items() if value is not None}
    return DATASET_FORMATS[dataset_format](*annotation_files, video_dir, **options)


# ---- one row per clip -----------------------------------------------------------------------------------------------

CLIP_COLUMNS = ("video", "start_time", "end_time")


def group_by_clip(dataset: Dataset) -> Dataset:
    """One row per clip (same `video`, `start_time`, `end_time`) from a reader's one row per question.

    The clip columns stay as they are; every other column becomes a list with one entry per question, in the order the
    questions came (so `question` and `answer` are lists of the same length). Clips keep the order of their first
    question. `MirasolDataCollator` batches such rows with `media_index`: each clip is decoded and encoded once per
    step however many of its questions the step trains on.
    """
    clip_columns = [column for column in CLIP_COLUMNS if column in dataset.column_names]
    if "video" not in clip_columns:
        raise ValueError(f"group_by_clip needs a 'video' column, the dataset has {dataset.column_names}")
    question_columns = [column for column in dataset.column_names if column not in clip_columns]
    clips: dict[tuple, dict] = {}
    for row in dataset:
        key = tuple(row[column] for column in clip_columns)
        clip = clips.get(key)
        if clip is None:
            clip = clips[key] = {**{column: row[column] for column in clip_columns},
                                 **{column: [] for column in question_columns}}
        for column in question_columns:
            clip[column].append(row[column])
    return Dataset.from_list(list(clips.values()))
