"""The default model shipped inside the package answers synthetic audio-visual questions about clips it never saw."""

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from transformers import pipeline

import mirasol_hf
from mirasol_hf import MirasolForConditionalGeneration, MirasolProcessor
from mirasol_hf.synthetic import QUESTION_KINDS, generate_dataset, write_mp4


# examples/train_synthetic.py trains on seed 0 and reports on seed 1; these clips come from neither.
UNSEEN_SEED = 2026
NUM_CLIPS = 40  # one question of each kind per clip: 200 questions
MAX_BYTES = 25 * 2**20


@pytest.fixture(scope="module")
def default_model():
    model = MirasolForConditionalGeneration.from_pretrained(mirasol_hf.DEFAULT_MODEL).eval()
    processor = MirasolProcessor.from_pretrained(mirasol_hf.DEFAULT_MODEL)
    return model, processor


def test_default_model_is_a_small_safetensors_checkpoint_with_its_processor():
    folder = Path(mirasol_hf.DEFAULT_MODEL)
    files = {path.name for path in folder.iterdir()}
    assert "model.safetensors" in files and not any(name.endswith((".bin", ".pt", ".py")) for name in files)
    assert {"config.json", "processor_config.json", "tokenizer.json"} <= files
    assert sum(path.stat().st_size for path in folder.iterdir()) <= MAX_BYTES
    # loadable by name from the Auto classes, with no code copied next to the weights, and a card that says so
    assert "auto_map" not in json.loads((folder / "config.json").read_text())
    card = (folder / "README.md").read_text()
    assert "trust_remote_code" not in card and "exact match, chunked, all (%)" in card


def test_default_model_answers_unseen_clips(default_model):
    model, processor = default_model
    clips = generate_dataset(NUM_CLIPS, seed=UNSEEN_SEED)
    questions = [(index, question) for index, clip in enumerate(clips) for question in clip.questions]
    media = processor(videos=[clip.as_video_input() for clip in clips])
    prompts = processor(text=[question.question for _, question in questions])
    with torch.no_grad():
        encoded = model.encode_media(**media)  # each clip once, for its five questions
        generated = model.generate(
            **prompts,
            media_latents=encoded,
            media_index=torch.tensor([index for index, _ in questions]),
            max_new_tokens=4,
            do_sample=False,
        )
    answers = processor.post_process_answer(generated, prompts["input_ids"])
    correct, total = Counter(), Counter()
    for (_, question), answer in zip(questions, answers):
        total[question.kind] += 1
        correct[question.kind] += " ".join(answer.split()) == question.answer
    accuracy = sum(correct.values()) / sum(total.values())
    by_kind = {kind: correct[kind] / total[kind] for kind in QUESTION_KINDS}
    assert accuracy >= 0.8, by_kind
    # every kind is answered well above its chance level (at most 50%: "the X or the Y?")
    assert min(by_kind.values()) >= 0.6, by_kind


def test_default_model_through_the_pipeline_on_an_mp4(tmp_path):
    clip = generate_dataset(1, seed=UNSEEN_SEED + 1)[0]
    video = write_mp4(clip, tmp_path / "clip.mp4")
    answerer = pipeline("video-question-answering", model=mirasol_hf.DEFAULT_MODEL)
    replies = answerer(video, [question.question for question in clip.questions], max_new_tokens=4)
    right = sum(reply["answer"] == question.answer for question, reply in zip(clip.questions, replies))
    assert right >= len(clip.questions) - 1, [(q.question, q.answer, r["answer"]) for q, r in zip(clip.questions, replies)]


def test_command_line_and_readme_example_use_the_default_model(tmp_path):
    clip = generate_dataset(1, seed=UNSEEN_SEED + 2)[0]
    video = write_mp4(clip, tmp_path / "clip.mp4")
    questions = [question.question for question in clip.questions]
    result = subprocess.run(
        [sys.executable, "-m", "mirasol_hf.cli", "answer", str(video), *questions, "--json", "--quiet"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    answers = [entry["answer"] for entry in json.loads(result.stdout)]
    right = sum(answer == question.answer for answer, question in zip(answers, clip.questions))
    assert right >= len(questions) - 1, list(zip(questions, answers))
    # the README's first command: a sample clip written as mp4, its questions, the answers checked
    example = Path(__file__).parents[1] / "examples" / "answer.py"
    demo = subprocess.run([sys.executable, str(example)], capture_output=True, text=True, timeout=300)
    assert demo.returncode == 0, demo.stderr
    correct, asked = map(int, re.search(r"(\d+)/(\d+) answered correctly", demo.stdout).groups())
    assert asked == 5 and correct >= 4, demo.stdout
