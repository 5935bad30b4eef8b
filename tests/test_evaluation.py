"""Open-ended exact match on known predictions; batched generation; examples/evaluate.py on a NExT-QA folder."""

import json

import pytest

from conftest import load_example, tiny_model_and_processor
from dataset_fixtures import copy_clip, write_clips, write_csv
from mirasol_hf.data import load_next_qa
from mirasol_hf.evaluation import (
    exact_match,
    format_results_table,
    generate_answers,
    normalize_answer,
    score_answers,
)
from mirasol_hf.training import MirasolDataCollator


@pytest.mark.parametrize(
    "text, normalized",
    [
        ("The Dog.", "dog"),
        ("  a   red\tball ", "red ball"),
        ("cut / chop", "cut chop"),
        ("metal-only collision", "metal only collision"),
        ("an apple, the end!", "apple end"),
        ("Theatre", "theatre"),  # articles only as whole words
        ("baby's", "baby s"),
    ],
)
def test_answers_are_normalized_before_matching(text, normalized):
    assert normalize_answer(text) == normalized


def test_exact_match_is_strict_after_normalization_and_accepts_any_reference():
    assert exact_match("The dog", "dog")
    assert not exact_match("dogs", "dog")  # no stemming
    assert not exact_match("red ball", "ball red")  # word order counts
    assert not exact_match("", "dog")
    assert exact_match("2", ["two", "2"])
    assert not exact_match("three", ["two", "2"])


def test_scores_overall_and_per_question_type_on_known_predictions():
    predictions = ["dog", "Two.", "the kitchen", "jump", "blue", "clap"]
    references = ["dog", ["two", "2"], "garden", "jumps", "blue", "clap hands"]
    types = ["causal", "descriptive", "descriptive", "temporal", "descriptive", None]
    scores = score_answers(predictions, references, types)
    assert scores["correct"] == 3 and scores["count"] == 6
    assert scores["exact_match"] == pytest.approx(50.0)
    assert scores["by_type"] == {
        "causal": {"exact_match": 100.0, "correct": 1, "count": 1},
        "descriptive": {"exact_match": pytest.approx(200 / 3), "correct": 2, "count": 3},
        "temporal": {"exact_match": 0.0, "correct": 0, "count": 1},
    }
    table = format_results_table(scores, title="next_qa")
    lines = table.splitlines()
    assert lines[0].split("|")[1].strip() == "next_qa"
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["causal", "descriptive", "temporal", "all"]
    assert lines[-1].split("|")[2].strip() == "50.00"

    assert score_answers(["a"], ["a"])["by_type"] == {}
    with pytest.raises(ValueError, match="predictions for"):
        score_answers(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="question types"):
        score_answers(["a"], ["a"], ["x", "y"])


@pytest.fixture(scope="module")
def next_qa_benchmark(tmp_path_factory):
    """A NExT-QA (open-ended) folder: val.csv, add_reference_answer_val.json, NExTVideo/<folder>/<id>.mp4, and a
    tiny model checkpoint whose tokenizer knows the answers."""
    root = tmp_path_factory.mktemp("nextqa")
    write_clips(root / "NExTVideo" / "0000", ["1001.mp4"])
    copy_clip(root / "NExTVideo" / "0000" / "1001.mp4", root / "NExTVideo" / "0001", ["1002.mp4"])
    header = ["video", "frame_count", "width", "height", "question", "answer", "qid", "type"]
    rows = [
        [1001, 16, 32, 32, "why did the square appear", "to move", 0, "CW"],
        [1001, 16, 32, 32, "what happened after the beep", "circle", 1, "TN"],
        [1002, 16, 32, 32, "how many shapes are there", "three", 2, "DC"],
        [1002, 16, 32, 32, "where is the triangle", "left", 3, "DL"],
        [1002, 16, 32, 32, "what is the color of the circle", "red", 4, "DO"],
    ]
    write_csv(root / "val.csv", header, rows)
    (root / "add_reference_answer_val.json").write_text(json.dumps({"1002": {"2": "3"}}))

    # Wider random weights than the default: answers that differ from question to question, so the batched
    # generation test below compares something.
    texts = [row[4] for row in rows] + [row[5] for row in rows] + ["3"]
    model, processor = tiny_model_and_processor(texts=texts, vocab_size=150, text_config={"initializer_range": 0.2})
    model.save_pretrained(root / "checkpoint")
    processor.save_pretrained(root / "checkpoint")
    return root, model, processor


def test_batched_generation_gives_the_answers_of_one_by_one_generation(next_qa_benchmark):
    root, model, processor = next_qa_benchmark
    dataset = load_next_qa(root / "val.csv", root / "NExTVideo")
    # Questions of different lengths in one batch: left padding must not change any answer.
    batched = generate_answers(model, processor, dataset, batch_size=5, max_new_tokens=4, show_progress=False)
    one_by_one = []
    collator = MirasolDataCollator(processor, with_answers=False)
    for row in dataset:
        inputs = collator([row])
        output = model.generate(**inputs, max_new_tokens=4, do_sample=False)
        one_by_one.extend(processor.post_process_answer(output, inputs["input_ids"]))
    assert batched == one_by_one
    assert len(batched) == len(dataset) and len(set(batched)) > 1


def test_evaluate_script_writes_scores_per_question_type_and_every_prediction(tmp_path, next_qa_benchmark, capsys):
    root, _, _ = next_qa_benchmark
    evaluate = load_example("evaluate")
    output = tmp_path / "results.json"
    evaluate.main([
        "--model", str(root / "checkpoint"), "--dataset-format", "next_qa",
        "--annotations", str(root / "val.csv"), str(root / "add_reference_answer_val.json"),
        "--video-dir", str(root / "NExTVideo"), "--batch-size", "2", "--max-new-tokens", "4",
        "--output", str(output),
    ])
    results = json.loads(output.read_text())
    predictions = results["predictions"]
    assert [entry["id"] for entry in predictions] == ["1001_0", "1001_1", "1002_2", "1002_3", "1002_4"]
    assert [entry["question_type"] for entry in predictions] == ["causal", "temporal"] + ["descriptive"] * 3
    assert predictions[2]["answers"] == ["three", "3"]
    # The scores are those of the written predictions.
    expected = score_answers(
        [entry["prediction"] for entry in predictions],
        [entry["answers"] for entry in predictions],
        [entry["question_type"] for entry in predictions],
    )
    assert results["scores"] == expected
    assert [entry["correct"] for entry in predictions] == [
        exact_match(entry["prediction"], entry["answers"]) for entry in predictions
    ]
    table = capsys.readouterr().out
    for name in ("causal", "temporal", "descriptive", "all"):
        assert f"| {name}" in table
