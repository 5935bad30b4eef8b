"""Open-ended evaluation as the paper scores it: generate an answer, compare it with the reference by exact match.

Answers are normalised before comparison (`normalize_answer`): lowercase; punctuation becomes a space; the articles
"a", "an", "the" are dropped; runs of whitespace become one space. So "The dog." matches "dog" and "cut / chop"
matches "cut chop", while "dogs" does not match "dog" (no stemming) and word order counts. Where a question has more
than one accepted answer (NExT-QA's additional references) a match with any counts. Scores are percentages, overall
and per question type.
"""

from __future__ import annotations

import re
import string
from collections import defaultdict
from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader

from .training import MirasolDataCollator


ARTICLES = ("a", "an", "the")
_PUNCTUATION = re.compile(f"[{re.escape(string.punctuation)}]")
_ARTICLES = re.compile(rf"\b(?:{'|'.join(ARTICLES)})\b")
PERCENT = 100.0
DEFAULT_BATCH_SIZE = 8
DEFAULT_MAX_NEW_TOKENS = 16


def normalize_answer(text: str) -> str:
    """Lowercase, punctuation to spaces, articles dropped, whitespace collapsed."""
    text = _PUNCTUATION.sub(" ", text.lower())
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, references: str | Sequence[str]) -> bool:
    """Whether the normalised prediction equals a normalised reference (any of them, when several)."""
    if isinstance(references, str):
        references = [references]
    normalized = normalize_answer(prediction)
    return any(normalized == normalize_answer(reference) for reference in references)


def score_answers(
    predictions: Sequence[str],
    references: Sequence[str | Sequence[str]],
    question_types: Sequence[str | None] | None = None,
) -> dict:
    """Exact match of `predictions` against `references` (one answer or a list of accepted ones per question).

    Returns `{"exact_match": percent, "correct": n, "count": n, "by_type": {type: {...the same...}}}`; `by_type`
    is empty without `question_types`.
    """
    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions for {len(references)} references")
    if question_types is not None and len(question_types) != len(predictions):
        raise ValueError(f"got {len(question_types)} question types for {len(predictions)} predictions")
    if not predictions:
        raise ValueError("nothing to score: no predictions")
    hits = [exact_match(prediction, reference) for prediction, reference in zip(predictions, references)]
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


@torch.no_grad()
def generate_answers(
    model,
    processor,
    dataset,
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_workers: int = 0,
    show_progress: bool = True,
    **generate_kwargs,
) -> list[str]:
    """Answers `model` generates for every row of `dataset` (a `mirasol_hf.data` reader's output), in order.

    Batches are decoded by `MirasolDataCollator(with_answers=False)` (prompts only, left-padded) in `num_workers`
    DataLoader workers; `generate_kwargs` go to `model.generate` (default: greedy, `DEFAULT_MAX_NEW_TOKENS`).
    """
    from tqdm.auto import tqdm

    generate_kwargs.setdefault("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)
    generate_kwargs.setdefault("do_sample", False)
    collator = MirasolDataCollator(processor, with_answers=False)
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collator, num_workers=num_workers)
    model.eval()
    answers = []
    for batch in tqdm(loader, desc="generating", unit="batch", disable=not show_progress):
        batch = {key: value.to(model.device) for key, value in batch.items()}
        output = model.generate(**batch, **generate_kwargs)
        answers.extend(processor.post_process_answer(output, batch["input_ids"]))
    return answers
