"""Benchmark readers: each official annotation format, written small by the tests, read into a datasets.Dataset."""

import json
import logging
import os

import pytest

from dataset_fixtures import copy_clip, write_clips, write_csv
from mirasol_hf.data import (
    ACTION_QUESTION,
    KINETICS_SOUNDS_CLASSES,
    SOUND_QUESTION,
    load_activitynet_qa,
    load_epic_sounds,
    load_kinetics_sound,
    load_msrvtt_qa,
    load_next_qa,
    load_video_qa_dataset,
    load_vggsound,
    parse_timestamp,
)


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    write_clips(folder, ["clip.mp4"])
    return folder / "clip.mp4"


def test_msrvtt_qa_reads_questions_answers_and_question_words(tmp_path, clip_file):
    copy_clip(clip_file, tmp_path / "videos", ["video7.mp4", "video9.mp4"])
    records = [
        {"answer": "man", "category_id": 3, "id": 0, "question": "who is singing?", "video_id": 7},
        {"answer": "guitar", "category_id": 3, "id": 1, "question": "what is he playing?", "video_id": "video9"},
        {"answer": "stage", "category_id": 3, "id": 2, "question": "Where is he?", "video_id": 7},
        {"answer": "yes", "category_id": 3, "id": 3, "question": "is it loud?", "video_id": 9},
    ]
    (tmp_path / "train_qa.json").write_text(json.dumps(records))

    dataset = load_msrvtt_qa(tmp_path / "train_qa.json", tmp_path / "videos")

    assert dataset["id"] == ["0", "1", "2", "3"]
    assert dataset["question"] == [record["question"] for record in records]
    assert dataset["answer"] == ["man", "guitar", "stage", "yes"]
    assert dataset["question_type"] == ["who", "what", "where", "other"]
    assert [os.path.basename(path) for path in dataset["video"]] == ["video7.mp4", "video9.mp4"] * 2
    assert all(os.path.isabs(path) and os.path.exists(path) for path in dataset["video"])


def test_activitynet_qa_joins_questions_and_answers_on_question_id(tmp_path, clip_file):
    # ActivityNet files are v_{youtube id}; a plain {youtube id} file is found too, in any video extension.
    copy_clip(clip_file, tmp_path / "videos", ["v_abc123.mp4", "xyz_789.mkv"])
    questions = [
        {"video_name": "abc123", "question": "what is the person doing", "question_id": "v_abc123_0"},
        {"video_name": "xyz_789", "question": "is the man outdoors", "question_id": "v_xyz_789_1"},
    ]
    answers = [  # in another order than the questions: joined by id
        {"answer": "yes", "type": 3, "question_id": "v_xyz_789_1"},
        {"answer": "dancing", "type": 0, "question_id": "v_abc123_0"},
    ]
    (tmp_path / "train_q.json").write_text(json.dumps(questions))
    (tmp_path / "train_a.json").write_text(json.dumps(answers))

    dataset = load_activitynet_qa(tmp_path / "train_q.json", tmp_path / "train_a.json", tmp_path / "videos")

    assert dataset["id"] == ["v_abc123_0", "v_xyz_789_1"]
    assert dataset["answer"] == ["dancing", "yes"]
    assert dataset["question_type"] == ["motion", "yes_no"]
    assert [os.path.basename(path) for path in dataset["video"]] == ["v_abc123.mp4", "xyz_789.mkv"]

    (tmp_path / "train_a.json").write_text(json.dumps(answers[:1]))
    with pytest.raises(ValueError, match="no answer for question_id 'v_abc123_0'"):
        load_activitynet_qa(tmp_path / "train_q.json", tmp_path / "train_a.json", tmp_path / "videos")


def test_next_qa_open_ended_groups_type_codes_and_adds_reference_answers(tmp_path, clip_file):
    # NExTVideo keeps videos in numbered sub-folders; map_vid_vidorID.json says which.
    copy_clip(clip_file, tmp_path / "NExTVideo", ["0000/4010069381.mp4", "1150/6233408665.mp4"])
    header = ["video", "frame_count", "width", "height", "question", "answer", "qid", "type"]
    rows = [
        [4010069381, 369, 640, 480, "why does the lady walk away", "help man", 3, "CW"],
        [4010069381, 369, 640, 480, "what are the people doing in the video", "performing", 9, "TC"],
        [6233408665, 600, 640, 360, "how many people are there", "two", 6, "DC"],
        [6233408665, 600, 640, 360, "what did the man do after the song", "clap", 2, "TN"],
    ]
    write_csv(tmp_path / "val.csv", header, rows)
    (tmp_path / "add_reference_answer_val.json").write_text(json.dumps({"6233408665": {"6": "2"}}))
    (tmp_path / "map_vid_vidorID.json").write_text(
        json.dumps({"4010069381": "0000/4010069381", "6233408665": "1150/6233408665"})
    )

    dataset = load_next_qa(
        tmp_path / "val.csv",
        tmp_path / "NExTVideo",
        additional_answers_file=tmp_path / "add_reference_answer_val.json",
        video_map_file=tmp_path / "map_vid_vidorID.json",
    )

    assert dataset["id"] == ["4010069381_3", "4010069381_9", "6233408665_6", "6233408665_2"]
    assert dataset["question_type"] == ["causal", "temporal", "descriptive", "temporal"]
    assert dataset["type_code"] == ["CW", "TC", "DC", "TN"]
    assert dataset["answer"] == ["help man", "performing", "two", "clap"]
    assert dataset["additional_answers"] == [[], [], ["2"], []]
    assert [os.path.relpath(path, tmp_path / "NExTVideo") for path in dataset["video"]] == [
        os.path.join("0000", "4010069381.mp4")
    ] * 2 + [os.path.join("1150", "6233408665.mp4")] * 2

    # Through the dispatcher: the second file is the additional answers; no map needed (found by name).
    through_dispatcher = load_video_qa_dataset(
        "next_qa", [tmp_path / "val.csv", tmp_path / "add_reference_answer_val.json"], tmp_path / "NExTVideo"
    )
    assert through_dispatcher["additional_answers"] == dataset["additional_answers"]
    assert through_dispatcher["video"] == dataset["video"]


def test_vggsound_reads_trimmed_clips_whole_and_full_videos_from_the_start_time(tmp_path, clip_file):
    copy_clip(clip_file, tmp_path / "video", ["---g-f_I2yQ_000001.mp4", "--U7joUcTCo.mp4"])
    rows = [
        ["---g-f_I2yQ", 1, "people marching", "test"],
        ["--U7joUcTCo", 0, "people eating crisps", "train"],
        ["-0BIyqJj9ZU", 30, "dog barking", "train"],  # not downloaded
    ]
    write_csv(tmp_path / "vggsound.csv", None, rows)  # the official file has no header

    dataset = load_vggsound(tmp_path / "vggsound.csv", tmp_path / "video", on_missing_video="skip")

    assert dataset["id"] == ["---g-f_I2yQ_000001", "--U7joUcTCo_000000"]
    assert dataset["question"] == [SOUND_QUESTION] * 2
    assert dataset["answer"] == ["people marching", "people eating crisps"]
    # The trimmed clip is the 10 s already; the full video is read from start_seconds for 10 s.
    assert dataset["start_time"] == [None, 0.0]
    assert dataset["end_time"] == [None, 10.0]

    train = load_vggsound(tmp_path / "vggsound.csv", tmp_path / "video", split="train", on_missing_video="skip")
    assert train["answer"] == ["people eating crisps"]


def test_epic_sounds_reads_segments_of_the_kitchen_videos(tmp_path, clip_file):
    copy_clip(clip_file, tmp_path / "EPIC-KITCHENS", ["P01/videos/P01_11.MP4"])
    header = ["annotation_id", "participant_id", "video_id", "start_timestamp", "stop_timestamp", "start_sample",
              "stop_sample", "description", "class", "class_id"]
    rows = [
        ["P01_11_0", "P01", "P01_11", "00:00:00.250", "00:00:01.000", 6000, 24000, "clang / clatter",
         "ceramic / wood collision", 34],
        ["P01_11_1", "P01", "P01_11", "00:00:01.000", "00:00:01.750", 24000, 42000, "paper rustle", "rustle", 4],
    ]
    write_csv(tmp_path / "EPIC_Sounds_train.csv", header, rows)

    dataset = load_epic_sounds(tmp_path / "EPIC_Sounds_train.csv", tmp_path / "EPIC-KITCHENS")

    assert dataset["id"] == ["P01_11_0", "P01_11_1"]
    assert dataset["answer"] == ["ceramic / wood collision", "rustle"]  # the class, not the free description
    assert dataset["question"] == [SOUND_QUESTION] * 2
    assert dataset["start_time"] == [0.25, 1.0]
    assert dataset["end_time"] == [1.0, 1.75]
    assert all(path.endswith(os.path.join("P01", "videos", "P01_11.MP4")) for path in dataset["video"])
    assert parse_timestamp("01:02:03.500") == 3723.5


def test_kinetics_sound_keeps_the_kinetics_sounds_classes(tmp_path, clip_file):
    names = ["playing bagpipes/abc_000010_000020.mp4", "bowling/def_000000_000010.mp4"]  # a folder per class
    copy_clip(clip_file, tmp_path / "train", names)
    header = ["label", "youtube_id", "time_start", "time_end", "split", "is_cc"]
    rows = [
        ["playing bagpipes", "abc", 10, 20, "train", 0],
        ["abseiling", "ghi", 0, 10, "train", 0],  # not a Kinetics-Sounds class
        ["bowling", "def", 0, 10, "train", 0],
        ["bowling", "jkl", 5, 15, "val", 0],  # another split
    ]
    write_csv(tmp_path / "kinetics_train.csv", header, rows)

    dataset = load_kinetics_sound(tmp_path / "kinetics_train.csv", tmp_path / "train", split="train")

    assert {"playing bagpipes", "bowling"} <= set(KINETICS_SOUNDS_CLASSES)
    assert "abseiling" not in KINETICS_SOUNDS_CLASSES
    assert dataset["id"] == ["abc_000010_000020", "def_000000_000010"]
    assert dataset["answer"] == ["playing bagpipes", "bowling"]
    assert dataset["question"] == [ACTION_QUESTION] * 2
    assert dataset["start_time"] == [None, None]


def test_a_missing_video_is_an_error_naming_it_or_a_counted_skip(tmp_path, clip_file, caplog):
    copy_clip(clip_file, tmp_path / "videos", ["video1.mp4"])
    records = [
        {"answer": "a", "id": 0, "question": "what?", "video_id": 1},
        {"answer": "b", "id": 1, "question": "who?", "video_id": 2},
        {"answer": "c", "id": 2, "question": "how?", "video_id": 3},
    ]
    (tmp_path / "qa.json").write_text(json.dumps(records))

    with pytest.raises(ValueError, match=r"qa\.json: video 'video2' \(question '1'\) not found"):
        load_msrvtt_qa(tmp_path / "qa.json", tmp_path / "videos")
    with caplog.at_level(logging.WARNING, logger="mirasol_hf.data"):
        dataset = load_msrvtt_qa(tmp_path / "qa.json", tmp_path / "videos", on_missing_video="skip")
    assert dataset["id"] == ["0"]
    assert "skipped 2 of 3 rows" in caplog.text


def test_a_missing_field_is_an_error_naming_the_file_row_and_field(tmp_path, clip_file):
    copy_clip(clip_file, tmp_path / "videos", ["video1.mp4"])
    (tmp_path / "qa.json").write_text(json.dumps([{"answer": "a", "id": 0, "question": "what?", "video_id": 1},
                                                  {"id": 1, "question": "who?", "video_id": 1}]))
    with pytest.raises(ValueError, match=r"qa\.json: entry 1 has no 'answer' field"):
        load_msrvtt_qa(tmp_path / "qa.json", tmp_path / "videos")

    write_csv(tmp_path / "epic.csv", ["annotation_id", "participant_id", "video_id", "start_timestamp", "class"],
              [["P01_11_0", "P01", "P01_11", "00:00:00.250", "rustle"]])
    with pytest.raises(ValueError, match=r"epic\.csv: entry 0 has no 'stop_timestamp' field"):
        load_epic_sounds(tmp_path / "epic.csv", tmp_path / "videos")
    with pytest.raises(ValueError, match="does not exist"):
        load_msrvtt_qa(tmp_path / "qa.json", tmp_path / "no-such-folder")
    with pytest.raises(ValueError, match="takes 2 annotation file"):
        load_video_qa_dataset("activitynet_qa", [tmp_path / "qa.json"], tmp_path / "videos")
