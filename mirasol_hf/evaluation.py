"""Open-ended evaluation as the paper scores it: generate an answer, compare it with the reference by exact match.

Answers are normalised before comparison (`normalize_answer`): lowercase; punctuation becomes a space; the articles
"a", "an", "the" are dropped; runs of whitespace become one space. So "The dog." matches "dog" and "cut / chop"
matches "cut chop", while "dogs" does not match "dog" (no stemming) and word order counts. Where a question has more
than one accepted answer (NExT-QA's additional references) a match with any counts. Scores are percentages, overall
and per question type.

Two optional steps follow the VQA evaluation script (Antol et al., 2015; the normalisation most open-ended video-QA
papers inherit): `number_words` writes the number words zero to ten as digits (VQA's `manualMap`; ActivityNet-QA's
number answers are digits), `contractions` drops apostrophes inside words so "don't", "dont" and "don t" all match
(VQA maps the apostrophe-less forms onto the contractions; either way both spellings match). Hyphens become spaces by
default, as VQA's punctuation step does for "t-shirt" -> "t shirt". With both off the scores are plain exact match
after the normalisation above, which is what Mirasol3B reports.

NExT-QA multiple choice is scored as generative models are scored on it: `rank_choices` ranks the five options of
each question by the likelihood the model gives them as the answer (summed log-probabilities of the answer tokens and
eos) and the top one counts as the prediction; accuracy is reported per question type (causal / temporal /
descriptive) as NExT-QA's own evaluation reports it.
"""

from __future__ import annotations

import re
import string
from collections import defaultdict
from collections.abc import Sequence

import torch
from datasets import Dataset
from torch.utils.data import DataLoader

from .data import CLIP_COLUMNS, group_by_clip
from .processing_mirasol import IGNORE_INDEX
from .training import MirasolDataCollator


ARTICLES = ("a", "an", "the")
_PUNCTUATION = re.compile(f"[{re.escape(string.punctuation)}]")
_ARTICLES = re.compile(rf"\b(?:{'|'.join(ARTICLES)})\b")
PERCENT = 100.0
DEFAULT_BATCH_SIZE = 8
DEFAULT_MAX_NEW_TOKENS = 16


# The VQA evaluation script's `manualMap`: number words to digits.
NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
_APOSTROPHE_IN_WORD = re.compile(r"(?<=\w)['\u2019](?=\w)")


def normalize_answer(text: str, number_words: bool = False, contractions: bool = False) -> str:
    """Lowercase, punctuation to spaces, articles dropped, whitespace collapsed; optionally VQA's number words to
    digits and apostrophes inside words dropped (see the module docstring)."""
    text = text.lower()
    if contractions:
        text = _APOSTROPHE_IN_WORD.sub("", text)
    text = _PUNCTUATION.sub(" ", text)
    text = _ARTICLES.sub(" ", text)
    words = text.split()
    if number_words:
        words = [NUMBER_WORDS.get(word, word) for word in words]
    return " ".join(words)


def exact_match(prediction: str, references: str | Sequence[str], **normalization) -> bool:
    """Whether the normalised prediction equals a normalised reference (any of them, when several);
    `normalization` goes to `normalize_answer`."""
    if isinstance(references, str):
        references = [references]
    normalized = normalize_answer(prediction, **normalization)
    return any(normalized == normalize_answer(reference, **normalization) for reference in references)


def score_answers(
    predictions: Sequence[str],
    references: Sequence[str | Sequence[str]],
    question_types: Sequence[str | None] | None = None,
    **normalization,
) -> dict:
    """Exact match of `predictions` against `references` (one answer or a list of accepted ones per question);
    `normalization` goes to `normalize_answer`.

    Returns `{"exact_match": percent, "correct": n, "count": n, "by_type": {type: {...the same...}}}`; `by_type`
    is empty without `question_types`.
    """
    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions for {len(references)} references")
    hits = [exact_match(prediction, reference, **normalization) for prediction, reference in zip(predictions, references)]
    return score_hits(hits, question_types)


def score_choices(
    chosen: Sequence[int], answer_indices: Sequence[int], question_types: Sequence[str | None] | None = None
) -> dict:
    """Multiple-choice accuracy: `chosen[i] == answer_indices[i]`, overall and per type (as `score_answers`)."""
    if len(chosen) != len(answer_indices):
        raise ValueError(f"got {len(chosen)} choices for {len(answer_indices)} answers")
    return score_hits([int(a) == int(b) for a, b in zip(chosen, answer_indices)], question_types)


def score_hits(hits: Sequence[bool], question_types: Sequence[str | None] | None = None) -> dict:
    """Percent of `hits`, overall and per question type: the table `format_results_table` prints."""
    if question_types is not None and len(question_types) != len(hits):
        raise ValueError(f"got {len(question_types)} question types for {len(hits)} predictions")
    if not hits:
        raise ValueError("nothing to score: no predictions")
    by_type = defaultdict(list)
    for index, hit in enumerate(hits):
        if question_types is not None and question_types[index] is not None:
            by_type[question_types[index]].append(hit)
    return {**_summary(hits), "by_type": {name: _summary(group) for name, group in sorted(by_type.items())}}


def _summary(hits: Sequence[bool]) -> dict:
    correct = int(sum(hits))
    return {"exact_match": PERCENT * correct / len(hits), "correct": correct, "count": len(hits)}


def format_results_table(results: dict, title: str = "exact match") -> str:
    """`score_answers` output as a text table: one row per question type, then the overall score."""
    rows = [(name, summary) for name, summary in results.get("by_type", {}).items()] + [("all", results)]
    width = max(len(title), *(len(name) for name, _ in rows))
    lines = [f"| {title:<{width}} | {'accuracy':>8} | {'correct':>8} | {'count':>8} |"]
    lines.append(f"|{'-' * (width + 2)}|{'-' * 9}:|{'-' * 9}:|{'-' * 9}:|")
    for name, summary in rows:
        lines.append(
            f"| {name:<{width}} | {summary['exact_match']:>8.2f} | {summary['correct']:>8d} | {summary['count']:>8d} |"
        )
    return "\n".join(lines)


def _clip_batches(dataset, collator, batch_size: int, num_workers: int):
    """Rows grouped by clip, a DataLoader over them, and the dataset row of each text row the batches give, in order.

    The collator keeps every question of a clip in order (`questions_per_clip=None`), so the batches' text rows are
    the clips' `row_index` lists one after the other.
    """
    if collator.questions_per_clip is not None:
        raise ValueError("evaluation needs every question: use a collator with questions_per_clip=None")
    clips = group_by_clip(Dataset.from_list([{**row, "row_index": index} for index, row in enumerate(dataset)]))
    order = [index for indices in clips["row_index"] for index in indices]
    loader = DataLoader(clips, batch_size=batch_size, collate_fn=collator, num_workers=num_workers)
    return loader, order


def _in_dataset_order(values: list, order) -> list:
    """`values`, one per text row in the batches' order, put back in the dataset's (`order` from `_clip_batches`)."""
    in_order = [None] * len(values)
    for index, value in zip(order, values):
        in_order[index] = value
    return in_order


@torch.no_grad()
def generate_answers(
    model,
    processor,
    dataset,
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_workers: int = 0,
    show_progress: bool = True,
    group_by_clip: bool = True,
    **generate_kwargs,
) -> list[str]:
    """Answers `model` generates for every row of `dataset` (a `mirasol_hf.data` reader's output), in order.

    Batches are decoded by `MirasolDataCollator(with_answers=False)` (prompts only, left-padded) in `num_workers`
    DataLoader workers; `generate_kwargs` go to `model.generate` (default: greedy, `DEFAULT_MAX_NEW_TOKENS`). With
    `group_by_clip` (the default) a batch is `batch_size` clips with all their questions: each clip is decoded and
    encoded once (`media_index`); otherwise `batch_size` questions, each with its own copy of its clip.
    """
    from tqdm.auto import tqdm

    generate_kwargs.setdefault("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)
    generate_kwargs.setdefault("do_sample", False)
    collator = MirasolDataCollator(processor, with_answers=False)
    if group_by_clip:
        loader, order = _clip_batches(dataset, collator, batch_size, num_workers)
    else:
        loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collator, num_workers=num_workers)
        order = range(len(dataset))
    model.eval()
    answers = []
    for batch in tqdm(loader, desc="generating", unit="batch", disable=not show_progress):
        batch = {key: value.to(model.device) for key, value in batch.items()}
        output = model.generate(**batch, **generate_kwargs)
        answers.extend(processor.post_process_answer(output, batch["input_ids"]))
    return _in_dataset_order(answers, order)


@torch.no_grad()
def rank_choices(
    model,
    processor,
    dataset,
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_workers: int = 0,
    show_progress: bool = True,
) -> list[int]:
    """For each row with `choices` (NExT-QA multiple choice), the index of the choice the model finds most likely.

    Each choice is scored as the answer to the row's question: the sum of the log-probabilities of its tokens and the
    closing eos, teacher-forced. Batches are `batch_size` clips with every choice of every question about them, the
    clip encoded once (`media_index`).
    """
    from tqdm.auto import tqdm

    if "choices" not in dataset.column_names:
        raise ValueError(f"rank_choices needs a 'choices' column (NExT-QA multiple choice), got {dataset.column_names}")
    keep = [column for column in (*CLIP_COLUMNS, "question") if column in dataset.column_names]
    options = [
        {**{column: row[column] for column in keep}, "answer": choice}
        for row in dataset
        for choice in row["choices"]
    ]
    counts = [len(row["choices"]) for row in dataset]
    loader, order = _clip_batches(options, MirasolDataCollator(processor), batch_size, num_workers)
    model.eval()
    scores = []
    for batch in tqdm(loader, desc="ranking choices", unit="batch", disable=not show_progress):
        batch = {key: value.to(model.device) for key, value in batch.items()}
        labels = batch.pop("labels")
        logits = model(**batch).logits.float()
        targets = labels[:, 1:]  # token i + 1 is predicted at position i
        supervised = targets != IGNORE_INDEX
        log_probs = torch.log_softmax(logits[:, :-1], dim=-1)  # (B, L - 1, V)
        token_log_probs = log_probs.gather(-1, targets.clamp(min=0)[..., None])[..., 0]  # (B, L - 1)
        scores.extend((token_log_probs * supervised).sum(dim=1).tolist())
    in_order = _in_dataset_order(scores, order)
    chosen, start = [], 0
    for count in counts:
        row_scores = in_order[start : start + count]
        chosen.append(max(range(count), key=row_scores.__getitem__))
        start += count
    return chosen
