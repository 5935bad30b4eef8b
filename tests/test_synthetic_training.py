"""Training on synthetic audio-visual QA: a few steps learn the answer format."""

import torch

from mirasol_hf import MirasolConfig, MirasolForConditionalGeneration, MirasolProcessor, build_tokenizer
from mirasol_hf.synthetic import ANSWER_VOCABULARY, generate_dataset


TRAIN_SEED = 5
UNSEEN_SEED = 7


def _normalize(answer: str) -> str:
    return " ".join(answer.lower().split())


def _answer(model, processor, clips) -> list[tuple]:
    """(question, generated answer) for every question of every clip, through processor -> generate -> decode."""
    questions = [(clip, question) for clip in clips for question in clip.questions]
    inputs = processor(videos=[clip.as_video_input() for clip, _ in questions], text=[q.question for _, q in questions])
    generated = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    answers = processor.post_process_answer(generated, inputs["input_ids"])
    return [(question, _normalize(answer)) for (_, question), answer in zip(questions, answers)]


def test_a_few_training_steps_lower_the_loss_and_teach_the_answer_vocabulary():
    torch.manual_seed(0)
    train_clips = generate_dataset(16, seed=TRAIN_SEED)
    test_clips = generate_dataset(4, seed=UNSEEN_SEED)
    texts = [q.question for clip in train_clips for q in clip.questions]
    tokenizer = build_tokenizer(texts + [a for answers in ANSWER_VOCABULARY.values() for a in answers], vocab_size=200)
    config = MirasolConfig.from_preset(
        "tiny",
        text_config={"vocab_size": len(tokenizer), "eos_token_id": tokenizer.eos_token_id,
                     "cross_attention_gate_init": 1.0},
        text_loss_weight=10.0,
    )
    processor = MirasolProcessor.from_model_config(config, tokenizer)
    model = MirasolForConditionalGeneration(config)
    questions = [(index, q) for index, clip in enumerate(train_clips) for q in clip.questions]
    media = processor(videos=[clip.as_video_input() for clip in train_clips])  # each clip processed once
    text = processor(text=[q.question for _, q in questions], answers=[q.answer for _, q in questions])
    clip_index = torch.tensor([index for index, _ in questions])

    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    generator = torch.Generator().manual_seed(0)
    text_losses = []
    for _ in range(100):
        clips = torch.randperm(len(train_clips), generator=generator)[:8]
        rows = torch.cat([torch.nonzero(clip_index == clip)[:, 0] for clip in clips.tolist()])
        media_index = (clip_index[rows, None] == clips[None]).int().argmax(dim=1)  # each question -> its clip
        batch = {key: value[clips] for key, value in media.items()} | {key: value[rows] for key, value in text.items()}
        output = model(**batch, media_index=media_index)
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        text_losses.append(output.text_loss.item())
    model.eval()

    assert sum(text_losses[-10:]) / 10 < 0.5 * sum(text_losses[:5]) / 5
    results = _answer(model, processor, test_clips)
    every_answer = {answer for answers in ANSWER_VOCABULARY.values() for answer in answers}
    outside = [(q.kind, q.question, answer) for q, answer in results if answer not in every_answer]
    assert not outside, outside  # well-formed answers, each followed by eos
    # The answer matches its question's kind: all but the odd confusion of similar templates after 100 steps
    # ("what color was the X?" vs "what appeared after the X?"), which varies with the numerics of the platform.
    other_kind = [(q.kind, q.question, answer) for q, answer in results if answer not in ANSWER_VOCABULARY[q.kind]]
    assert len(other_kind) <= len(results) // 10, other_kind
