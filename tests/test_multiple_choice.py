"""NExT-QA multiple choice: the MC CSV read as choice text with its five options, choices ranked by likelihood and
scored per question type; VQA-style answer normalisation."""

import json

import pytest
import torch

from conftest import load_example, tiny_model_and_processor
from dataset_fixtures import copy_clip, write_clips, write_csv
from mirasol_hf.data import load_next_qa, load_video_qa_dataset
from mirasol_hf.evaluation import exact_match, normalize_answer, rank_choices, score_choices


HEADER = ["video", "frame_count", "width", "height", "question", "answer", "qid", "type", "a0", "a1", "a2", "a3", "a4"]
ROWS = [
    [1001, 16, 32, 32, "why did the square appear", 2, 0, "CW", "to hide", "to jump", "to move", "to sing", "to sleep"],
    [1001, 16, 32, 32, "what happened after the beep", 0, 1, "TN", "circle", "square", "line", "dot", "star"],
    [1002, 16, 32, 32, "how many shapes are there", 4, 2, "DC", "one", "two", "three", "four", "five"],
    [1002, 16, 32, 32, "where is the triangle", 1, 3, "DL", "right", "left", "top", "bottom", "middle"],
]


@pytest.fixture(scope="module")
def next_qa_mc(tmp_path_factory):
    """A NExT-QA multiple-choice folder (val.csv with a0..a4, NExTVideo/) and a tiny checkpoint."""
    root = tmp_path_factory.mktemp("nextqa_mc")
    write_clips(root / "NExTVideo" / "0000", ["1001.mp4"])
    copy_clip(root / "NExTVideo" / "0000" / "1001.mp4", root / "NExTVideo" / "0001", ["1002.mp4"])
    write_csv(root / "val.csv", HEADER, ROWS)
    texts = [row[4] for row in ROWS] + [choice for row in ROWS for choice in row[8:]]
    model, processor = tiny_model_and_processor(texts=texts, vocab_size=150, text_config={"initializer_range": 0.2})
    model.save_pretrained(root / "checkpoint")
    processor.save_pretrained(root / "checkpoint")
    return root, model, processor


def test_multiple_choice_csv_gives_the_right_choice_text_and_keeps_the_five_options(next_qa_mc, tmp_path):
    root, _, _ = next_qa_mc
    dataset = load_video_qa_dataset("next_qa", [root / "val.csv"], root / "NExTVideo")
    assert dataset["answer"] == ["to move", "circle", "five", "left"]
    assert dataset["answer_index"] == [2, 0, 4, 1]
    assert dataset["choices"][3] == ["right", "left", "top", "bottom", "middle"]
    assert dataset["question_type"] == ["causal", "temporal", "descriptive", "descriptive"]
    bad = write_csv(tmp_path / "bad.csv", HEADER, [ROWS[0][:5] + ["to move"] + ROWS[0][6:]])
    with pytest.raises(ValueError, match=r"bad\.csv: row 0 .* not the index of a choice"):
        load_next_qa(bad, root / "NExTVideo")


def _reference_log_likelihood(model, processor, row, choice) -> float:
    """Summed log-probability of `choice` (+ eos) as the answer, from the model's own mean text loss, one at a time."""
    inputs = processor(videos=[row["video"]], text=[row["question"]], answers=[choice], return_tensors="pt")
    with torch.no_grad():
        output = model(**inputs)
    tokens = (inputs["labels"][:, 1:] != -100).sum()
    return -(output.text_loss * tokens).item()


def test_ranking_picks_the_choice_the_model_finds_most_likely(next_qa_mc):
    root, model, processor = next_qa_mc
    dataset = load_next_qa(root / "val.csv", root / "NExTVideo")
    chosen = rank_choices(model, processor, dataset, batch_size=2, show_progress=False)
    expected = []
    for row in dataset:
        scores = [_reference_log_likelihood(model, processor, row, choice) for choice in row["choices"]]
        assert len(set(round(score, 4) for score in scores)) == len(scores)  # a real ranking, no ties
        expected.append(max(range(len(scores)), key=scores.__getitem__))
    assert chosen == expected

    scores = score_choices(chosen, dataset["answer_index"], dataset["question_type"])
    hits = [a == b for a, b in zip(expected, dataset["answer_index"])]
    assert scores["correct"] == sum(hits) and scores["count"] == 4
    assert scores["by_type"]["descriptive"]["correct"] == sum(hits[2:])


def test_evaluate_script_ranks_choices_on_the_multiple_choice_csv(tmp_path, next_qa_mc, capsys):
    root, model, processor = next_qa_mc
    evaluate = load_example("evaluate")
    output = tmp_path / "results.json"
    evaluate.main([
        "--model", str(root / "checkpoint"), "--dataset-format", "next_qa", "--annotations", str(root / "val.csv"),
        "--video-dir", str(root / "NExTVideo"), "--batch-size", "1", "--output", str(output),
    ])
    results = json.loads(output.read_text())
    dataset = load_next_qa(root / "val.csv", root / "NExTVideo")
    chosen = rank_choices(model, processor, dataset, batch_size=2, show_progress=False)
    assert [entry["prediction"] for entry in results["predictions"]] == [
        row["choices"][index] for row, index in zip(dataset, chosen)
    ]
    assert results["scores"] == score_choices(chosen, dataset["answer_index"], dataset["question_type"])
    assert "| causal" in capsys.readouterr().out


@pytest.mark.parametrize(
    "text, options, normalized",
    [
        ("Two dogs", {}, "two dogs"),
        ("Two dogs", {"number_words": True}, "2 dogs"),
        ("none", {"number_words": True}, "0"),
        ("ten-year-old", {"number_words": True}, "10 year old"),
        ("someone", {"number_words": True}, "someone"),  # whole words only
        ("don't", {}, "don t"),
        ("don't", {"contractions": True}, "dont"),
        ("the man's hat", {"contractions": True}, "mans hat"),
        ("'quoted'", {"contractions": True}, "quoted"),
    ],
)
def test_vqa_style_normalisation_is_opt_in(text, options, normalized):
    assert normalize_answer(text, **options) == normalized


def test_number_words_match_digit_answers_only_when_asked():
    assert not exact_match("two", "2")
    assert exact_match("two", "2", number_words=True)
    assert exact_match("dont know", "don't know", contractions=True)
