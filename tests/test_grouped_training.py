"""Training on clips with many questions: grouping rows by clip (`media_index`), and gradient accumulation that is
exactly one larger batch for every loss."""

import functools

import numpy as np
import pytest
import torch
from datasets import Dataset

from dataset_fixtures import one_sgd_step_updates
from mirasol_hf import MirasolConfig, MirasolForConditionalGeneration, MirasolProcessor, build_tokenizer
from mirasol_hf.data import group_by_clip
from mirasol_hf.training import MirasolDataCollator, MirasolTrainer


SAMPLING_RATE = 16000
WORDS = "what is the man doing who plays red blue ball dog cat runs jumps sings very fast slowly".split()


def _clip(seed: int, seconds: float = 2.0, frames: int = 16) -> dict:
    """A clip as arrays, the way a decoder hands them over: uint8 frames and a mono waveform."""
    rng = np.random.default_rng(seed)
    return {
        "frames": rng.integers(0, 256, (frames, 32, 32, 3), dtype=np.uint8),
        "fps": frames / seconds,
        "waveform": rng.standard_normal(int(SAMPLING_RATE * seconds)).astype(np.float32),
        "sampling_rate": SAMPLING_RATE,
    }


def _rows(questions_per_clip, seed: int = 0) -> list[dict]:
    """One row per question (a reader's layout); answers of 1 to 5 words, so micro-batches hold unequal tokens."""
    rng = np.random.default_rng(seed)
    rows = []
    for clip_index, count in enumerate(questions_per_clip):
        for question_index in range(count):
            rows.append({
                "id": f"{clip_index}-{question_index}",
                "video": f"clip{clip_index}.mp4",
                "question": " ".join(rng.choice(WORDS, 4)),
                "answer": " ".join(rng.choice(WORDS, 1 + (clip_index + 2 * question_index) % 5)),
            })
    return rows


@pytest.fixture(scope="module")
def processor():
    tokenizer = build_tokenizer([" ".join(WORDS)], vocab_size=100)
    return MirasolProcessor.from_model_config(_config(tokenizer), tokenizer)


def _config(tokenizer) -> MirasolConfig:
    return MirasolConfig.from_preset(
        "tiny",
        text_config={"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
                     "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id},
    )


class _ArrayClips:
    """Collator wrapper: a row's `video` name -> that clip's arrays (the collator passes dicts on to the processor)."""

    def __init__(self, collator, clips, short_clips=()):
        self.collator, self.clips, self.short_clips = collator, clips, set(short_clips)

    def __call__(self, rows):
        names = [row["video"] for row in rows]
        batch = self.collator([{**row, "video": self.clips[row["video"]]} for row in rows])
        for row, name in enumerate(names if "media_index" in batch else []):
            if name in self.short_clips:  # a clip shorter than the window: its last two chunks are padding
                batch["video_chunk_mask"][row, 2:] = False
                batch["audio_chunk_mask"][row, 2:] = False
        return batch


def test_group_by_clip_keeps_every_question_with_its_clip_in_order():
    rows = _rows([3, 1, 2])
    rows.insert(1, rows.pop(4))  # clips interleaved, as annotation files often are
    grouped = group_by_clip(Dataset.from_list(rows))
    assert grouped["video"] == ["clip0.mp4", "clip2.mp4", "clip1.mp4"]
    assert [len(questions) for questions in grouped["question"]] == [3, 2, 1]
    flat = {(row["video"], row["question"], row["answer"], row["id"]) for row in rows}
    regrouped = {
        (clip["video"], question, answer, identifier)
        for clip in grouped
        for question, answer, identifier in zip(clip["question"], clip["answer"], clip["id"])
    }
    assert regrouped == flat and len(flat) == len(rows)


def test_grouped_batch_gives_the_losses_of_the_per_question_batch(processor):
    clips = {f"clip{index}.mp4": _clip(index) for index in range(2)}
    rows = _rows([2, 2])  # equal questions per clip: the per-question batch weights each clip equally too
    per_question = _ArrayClips(MirasolDataCollator(processor), clips)(rows)
    grouped = _ArrayClips(MirasolDataCollator(processor), clips)(list(group_by_clip(Dataset.from_list(rows))))
    assert grouped["pixel_values_videos"].shape[0] == 2 and per_question["pixel_values_videos"].shape[0] == 4
    assert grouped["media_index"].tolist() == [0, 0, 1, 1]
    torch.manual_seed(0)
    model = MirasolForConditionalGeneration(_config(processor.tokenizer)).eval()
    with torch.no_grad():
        expected, got = model(**per_question), model(**grouped)
    for name in ("loss", "text_loss", "latent_loss", "reconstruction_loss"):
        torch.testing.assert_close(got[name], expected[name], msg=name)
    torch.testing.assert_close(got.logits, expected.logits)


def test_questions_per_clip_samples_a_subset_of_each_clip(processor):
    clips = {f"clip{index}.mp4": _clip(index) for index in range(2)}
    grouped = list(group_by_clip(Dataset.from_list(_rows([5, 1]))))
    collator = MirasolDataCollator(processor, questions_per_clip=2)
    torch.manual_seed(0)
    batch = _ArrayClips(collator, clips)(grouped)
    assert batch["media_index"].tolist() == [0, 0, 1]
    assert batch["input_ids"].shape[0] == 3
    draws = {tuple(collator.question_positions(grouped[0])) for _ in range(40)}
    assert len(draws) > 1 and all(len(draw) == 2 and set(draw) <= set(range(5)) for draw in draws)
    with pytest.raises(ValueError, match="questions_per_clip"):
        MirasolDataCollator(processor, questions_per_clip=0)


@pytest.mark.parametrize("grouped", [True, False], ids=["grouped by clip", "one row per question"])
def test_gradient_accumulation_is_one_larger_batch_for_every_loss(tmp_path, processor, grouped):
    # 3 clips with 3, 1 and 2 questions, answers of unequal length; one clip has only 2 of its 4 chunks. Batch 2 x
    # accumulation 2 splits them into micro-batches of 2 clips and 1 clip (grouped) or 2 + 2 questions (per question),
    # with unequal tokens and unequal chunk pairs: each loss must still add up to the one batch of everything.
    clips = {f"clip{index}.mp4": _clip(index) for index in range(3)}
    rows = _rows([3, 1, 2])
    if grouped:
        dataset, short = list(group_by_clip(Dataset.from_list(rows))), ["clip1.mp4"]
        large_batch = 3
    else:
        dataset, short = rows[2:], []  # 4 questions (clip 0's last, clip 1's, clip 2's two)
        large_batch = 4
    collator = _ArrayClips(MirasolDataCollator(processor), clips, short)
    config = _config(processor.tokenizer)
    step = functools.partial(one_sgd_step_updates, tmp_path, config, dataset, collator, trainer_class=MirasolTrainer)
    large = step(batch_size=large_batch, accumulation=1)
    accumulated = step(batch_size=2, accumulation=2)
    for name in large:
        torch.testing.assert_close(accumulated[name], large[name], atol=1e-6, rtol=1e-4, msg=name)
    for head in ("reconstruction_decoder.pixel_head.weight", "latent_predictor"):
        moved = sum(update.abs().sum() for name, update in large.items() if name.startswith(head))
        assert moved > 0, head
