"""MirasolProcessor follows transformers' ProcessingKwargs convention: tokenizer options, chat-template processor
kwargs, call-time video sampling, and a to_dict() that survives save/load."""

import numpy as np
import pytest
import torch
from media_utils import write_video

from mirasol_hf.feature_extraction_mirasol import MirasolFeatureExtractor
from mirasol_hf.processing_mirasol import IGNORE_INDEX, MirasolProcessor
from mirasol_hf.tokenization_mirasol import build_tokenizer


FRAMES_PER_CHUNK, NUM_CHUNKS, IMAGE_SIZE = 4, 2, 32
QUESTION = "what color was the square in the middle of the clip?"


@pytest.fixture(scope="module")
def processor():
    tokenizer = build_tokenizer([QUESTION + " red", "question: answer: blue green"], vocab_size=200)
    return MirasolProcessor(
        MirasolFeatureExtractor(num_mel_bins=16, audio_frames_per_chunk=8),
        tokenizer,
        num_chunks=NUM_CHUNKS,
        frames_per_chunk=FRAMES_PER_CHUNK,
        image_size=IMAGE_SIZE,
    )


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("kwargs") / "clip.mp4", seconds=4.0, fps=10, width=48, height=32)


def test_tokenizer_kwargs_flat_or_in_text_kwargs_match_the_tokenizer(processor):
    prompt = processor.prompt_template.format(question=QUESTION)
    expected = processor.tokenizer([prompt], truncation=True, max_length=5)["input_ids"]
    flat = processor(text=QUESTION, truncation=True, max_length=5)
    nested = processor(text=QUESTION, text_kwargs={"truncation": True, "max_length": 5})
    assert flat["input_ids"].tolist() == expected
    assert torch.equal(nested["input_ids"], flat["input_ids"])
    padded = processor(text=[QUESTION, "what?"], padding="max_length", max_length=30, return_tensors="np")
    assert isinstance(padded["input_ids"], np.ndarray) and padded["input_ids"].shape == (2, 30)
    # left padding: the pads come first
    assert padded["attention_mask"][1, 0] == 0 and padded["attention_mask"][1, -1] == 1


def test_answers_are_truncated_with_their_labels(processor):
    full = processor(text=QUESTION, answers="red")
    cut = processor(text=QUESTION, answers="red", truncation=True, max_length=6)
    # right truncation (the tokenizer's side) keeps the first 6 ids and the labels that belong to them
    assert cut["input_ids"].tolist() == [full["input_ids"][0, :6].tolist()]
    assert cut["labels"].tolist() == [full["labels"][0, :6].tolist()]


def test_chat_template_processor_kwargs_reach_the_tokenizer(processor):
    conversation = [{"role": "user", "content": [{"type": "text", "text": QUESTION}]}]
    out = processor.apply_chat_template(
        conversation, add_generation_prompt=True, tokenize=True, return_dict=True,
        processor_kwargs={"padding": "max_length", "truncation": True, "max_length": 24},
    )
    assert out["input_ids"].shape == (1, 24)
    direct = processor(text=QUESTION, padding="max_length", max_length=24)
    assert torch.equal(out["input_ids"], direct["input_ids"])


def test_assistant_tokens_mask_marks_exactly_the_supervised_answer_tokens(processor):
    conversation = [
        {"role": "user", "content": [{"type": "text", "text": QUESTION}]},
        {"role": "assistant", "content": [{"type": "text", "text": "red"}]},
    ]
    out = processor.apply_chat_template(conversation, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    # the independent reference: the tokens `answers=` supervises (the answer and eos)
    reference = processor(text=QUESTION, answers="red")
    assert torch.equal(out["input_ids"], reference["input_ids"])
    assert torch.equal(torch.as_tensor(out["assistant_masks"]).bool(), reference["labels"] != IGNORE_INDEX)


def test_call_time_num_frames_changes_the_chunk_count(processor, clip_path):
    out = processor(videos=str(clip_path), text="what?", num_frames=3 * FRAMES_PER_CHUNK)
    assert out["pixel_values_videos"].shape == (1, 12, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert out["video_chunk_mask"].shape == out["audio_chunk_mask"].shape == (1, 3)
    nested = processor(videos=str(clip_path), videos_kwargs={"num_frames": 12})
    assert torch.equal(nested["pixel_values_videos"], out["pixel_values_videos"])
    with pytest.raises(ValueError, match="multiple of frames_per_chunk"):
        processor(videos=str(clip_path), num_frames=6)
    with pytest.raises(TypeError, match="unexpected"):
        processor(videos=str(clip_path), num_frame=8)


def test_fps_and_time_range_sample_the_frames_shown_at_those_times(processor, clip_path):
    clip = processor.read_video(str(clip_path), fps=2.0)  # 4 s at 10 fps: frames 0, 5, 10, ..., 35
    assert clip.frame_indices.tolist() == list(range(0, 40, 5))
    ranged = processor.read_video({"path": str(clip_path)}, start_time=1.0, end_time=2.0)
    assert ranged.frame_times.min() >= 1.0 - 1e-6 and ranged.frame_times.max() < 2.0
    # the same options on decoded arrays sample the same frames
    frames = np.stack([np.full((32, 48, 3), index, np.uint8) for index in range(40)])
    from_arrays = processor.read_video({"frames": frames, "fps": 10.0}, fps=2.0)
    assert from_arrays.frame_indices.tolist() == clip.frame_indices.tolist()


def test_fps_gives_clips_their_own_chunk_count_and_pads_the_batch(processor, clip_path, tmp_path):
    short = write_video(tmp_path / "short.mp4", seconds=1.0, fps=10, width=48, height=32)
    out = processor(videos=[str(clip_path), str(short)], fps=2.0)
    # 8 frames -> 2 chunks; 2 frames spread over 1 chunk (repeated); padded to 2 chunks with an empty one
    assert out["video_chunk_mask"].tolist() == [[True, True], [True, False]]
    assert out["audio_chunk_mask"].tolist() == [[True, True], [True, False]]
    alone = processor(videos=str(short), fps=2.0)
    assert torch.equal(out["pixel_values_videos"][1, :FRAMES_PER_CHUNK], alone["pixel_values_videos"][0])


def test_to_dict_is_stable_over_save_and_load(processor, tmp_path):
    processor.save_pretrained(tmp_path / "first")
    first = MirasolProcessor.from_pretrained(tmp_path / "first")
    first.save_pretrained(tmp_path / "second")
    second = MirasolProcessor.from_pretrained(tmp_path / "second")
    assert first.to_dict() == second.to_dict()
    assert processor.to_dict() == first.to_dict()
