"""Training: Trainer with gradient accumulation, the latent loss's gradient path, memorising a few examples."""

import pytest
import torch

from conftest import random_media, tiny_model
from dataset_fixtures import one_sgd_step_updates
from mirasol_hf import MirasolConfig, MirasolForConditionalGeneration


def _examples(config, answer_lengths, seed=0):
    """One dict per example: media, a 4-token question and an answer of the given length (+ eos), labels."""
    generator = torch.Generator().manual_seed(seed)
    media = random_media(config, batch=len(answer_lengths), seed=seed)
    examples = []
    longest = max(answer_lengths)
    for i, length in enumerate(answer_lengths):
        question = torch.randint(3, config.vocab_size, (4,), generator=generator)
        answer = torch.randint(3, config.vocab_size, (length,), generator=generator)
        padding = torch.full((longest - length,), config.pad_token_id)
        input_ids = torch.cat([question, answer, torch.tensor([config.eos_token_id]), padding])
        labels = input_ids.clone()
        labels[:4] = -100
        labels[4 + length + 1 :] = -100
        examples.append(
            {
                "input_ids": input_ids,
                "attention_mask": (labels != -100).long().index_fill(0, torch.arange(4), 1),
                "labels": labels,
                "pixel_values_videos": media["pixel_values_videos"][i],
                "input_features": media["input_features"][i],
            }
        )
    return examples


def _collate(examples):
    return {key: torch.stack([example[key] for example in examples]) for key in examples[0]}


@pytest.mark.parametrize(
    "answer_lengths, weights",
    [
        # text loss alone: exact even when the micro-batches hold different numbers of answer tokens
        ([1, 4], {"latent_loss_weight": 0.0, "reconstruction_loss_weight": 0.0}),
        # all three losses: exact when the micro-batches hold the same number of answer tokens
        ([3, 3], {}),
    ],
)
def test_gradient_accumulation_matches_one_large_batch(tmp_path, answer_lengths, weights):
    config = MirasolConfig.from_preset("tiny", **weights)
    examples = _examples(config, answer_lengths)
    large = one_sgd_step_updates(tmp_path, config, examples, _collate, batch_size=2, accumulation=1)
    accumulated = one_sgd_step_updates(tmp_path, config, examples, _collate, batch_size=1, accumulation=2)
    for name in large:
        torch.testing.assert_close(accumulated[name], large[name], atol=1e-6, rtol=1e-4, msg=name)
    assert sum(update.abs().sum() for update in large.values()) > 0


@pytest.mark.parametrize("detach_input", [True, False])
def test_latent_loss_reaches_the_combiner_only_when_asked(detach_input):
    model = tiny_model(
        text_loss_weight=0.0,
        reconstruction_loss_weight=0.0,
        latent_config={"latent_loss_detach_input": detach_input},
    ).train()
    examples = _collate(_examples(model.config, [2, 2]))
    model(**examples).loss.backward()
    combiner_grad = sum(p.grad.abs().sum() for p in model.model.combiner.parameters() if p.grad is not None)
    latent_grad = sum(p.grad.abs().sum() for p in model.model.latent_model.parameters() if p.grad is not None)
    assert latent_grad > 0
    assert bool(combiner_grad > 0) is (not detach_input)


def test_tiny_model_memorises_answers_that_only_the_media_can_tell_apart():
    torch.manual_seed(0)
    config = MirasolConfig.from_preset("tiny")
    model = MirasolForConditionalGeneration(config).train()
    count = 4
    media = random_media(config, batch=count, seed=0)
    question = torch.tensor([config.bos_token_id, 10, 11, 12, 13]).expand(count, -1)  # the same question for all
    answers = torch.randint(20, config.vocab_size, (count, 3), generator=torch.Generator().manual_seed(0))
    input_ids = torch.cat([question, answers, torch.full((count, 1), config.eos_token_id)], dim=1)
    labels = input_ids.clone()
    labels[:, : question.shape[1]] = -100
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    for _ in range(300):
        out = model(input_ids=input_ids, labels=labels, **media)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    assert out.text_loss.item() < 0.05
    model.eval()
    generated = model.generate(input_ids=question, **media, max_new_tokens=4, do_sample=False)
    assert torch.equal(generated[:, question.shape[1] :], input_ids[:, question.shape[1] :])
