"""MirasolProcessor, MirasolFeatureExtractor and build_tokenizer: the tensor contract, alignment, text, saving."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from media_utils import AUDIO_RATE, TONE_HZ, tone, write_video
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoFeatureExtractor, AutoProcessor, AutoTokenizer, PreTrainedTokenizerFast

from mirasol_hf.configuration_mirasol import MirasolConfig
from mirasol_hf.feature_extraction_mirasol import MirasolFeatureExtractor
from mirasol_hf.processing_mirasol import IGNORE_INDEX, MirasolProcessor
from mirasol_hf.tokenization_mirasol import build_tokenizer


NUM_CHUNKS, FRAMES_PER_CHUNK, AUDIO_FRAMES_PER_CHUNK, IMAGE_SIZE, NUM_MEL_BINS = 4, 4, 16, 32, 16
TEXTS = [
    "question: what is playing? answer: a guitar",
    "question: what animal is it? answer: a dog",
    "question: how many people are there? answer: two",
]
SILENT_LOG_MEL = -15.0  # digital silence floors near log(1e-10) = -23
LOUD_LOG_MEL = 0.0


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(TEXTS, vocab_size=200)


@pytest.fixture(scope="module")
def processor(tokenizer):
    return make_processor(tokenizer)


def make_processor(tokenizer) -> MirasolProcessor:
    feature_extractor = MirasolFeatureExtractor(NUM_MEL_BINS, audio_frames_per_chunk=AUDIO_FRAMES_PER_CHUNK)
    return MirasolProcessor(
        feature_extractor, tokenizer, num_chunks=NUM_CHUNKS, frames_per_chunk=FRAMES_PER_CHUNK, image_size=IMAGE_SIZE
    )


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    directory = tmp_path_factory.mktemp("clips")
    return {
        "long": write_video(directory / "long.mp4", seconds=4.0, fps=10, width=64, height=48),
        "short": write_video(directory / "short.mp4", seconds=1.0, fps=25, width=40, height=30),
        "silent": write_video(directory / "silent.mp4", seconds=2.0, fps=10, audio=None),
    }


def tone_band(feature_extractor) -> int:
    """The mel bin whose filter responds most to the test tone."""
    frequencies = np.linspace(0, feature_extractor.sampling_rate / 2, feature_extractor.mel_filters.shape[0])
    return int(feature_extractor.mel_filters[np.abs(frequencies - TONE_HZ).argmin()].argmax())


def test_batch_of_clips_of_different_lengths_and_sizes_follows_the_tensor_contract(processor, clips):
    out = processor(videos=[clips["long"], clips["short"]], text=["what is playing?", "what animal is it?"])
    frames = NUM_CHUNKS * FRAMES_PER_CHUNK
    assert out["pixel_values_videos"].shape == (2, frames, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert out["pixel_values_videos"].dtype == torch.float32
    assert out["video_chunk_mask"].shape == (2, NUM_CHUNKS) and out["video_chunk_mask"].dtype == torch.bool
    assert out["video_chunk_mask"].all()
    assert out["input_features"].shape == (2, NUM_MEL_BINS, NUM_CHUNKS * AUDIO_FRAMES_PER_CHUNK)
    assert out["input_features"].dtype == torch.float32
    assert out["audio_chunk_mask"].shape == (2, NUM_CHUNKS) and out["audio_chunk_mask"].all()
    assert out["input_ids"].shape == out["attention_mask"].shape and out["input_ids"].shape[0] == 2
    # Normalized with mean 0.5 / std 0.5: pixels in [-1, 1].
    assert out["pixel_values_videos"].min() >= -1.0 and out["pixel_values_videos"].max() <= 1.0
    assert set(processor.model_input_names) >= set(out.keys())


@pytest.mark.parametrize("variable_frame_rate", [False, True])
def test_tone_energy_lands_in_the_chunk_whose_frames_span_it(processor, tmp_path, variable_frame_rate):
    # 4 s clip, tone from 2.5 s on. Chunk windows come from frame timestamps; with the variable frame rate the
    # chunks are uneven and the tone starts in chunk 1 instead.
    if variable_frame_rate:
        times = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 1.0, 1.5, 2.0, 2.4, 3.2, 3.4, 3.6, 3.8]
        path = write_video(tmp_path / "vfr.mp4", frame_times=times, fps=5, tone_start=2.5)
        chunk_starts = [0.0, 0.4, 1.0, 3.2]
    else:
        path = write_video(tmp_path / "cfr.mp4", seconds=4.0, fps=4, tone_start=2.5)  # 16 frames: 1 s chunks
        chunk_starts = [0.0, 1.0, 2.0, 3.0]
    out = processor(videos=str(path), return_tensors="np")
    band = out["input_features"][0, tone_band(processor.feature_extractor)]  # (T * A,)
    chunk_ends = chunk_starts[1:] + [4.0]
    tone_chunk = next(t for t in range(NUM_CHUNKS) if chunk_starts[t] <= 2.5 < chunk_ends[t])
    for t in range(NUM_CHUNKS):
        bins = band[t * AUDIO_FRAMES_PER_CHUNK : (t + 1) * AUDIO_FRAMES_PER_CHUNK]
        edges = np.linspace(chunk_starts[t], chunk_ends[t], AUDIO_FRAMES_PER_CHUNK + 1)
        bin_starts, bin_ends = edges[:-1], edges[1:]
        if t < tone_chunk:
            assert bins.max() < SILENT_LOG_MEL, f"chunk {t} before the tone has sound"
        elif t > tone_chunk:
            assert bins.min() > LOUD_LOG_MEL, f"chunk {t} after the tone is quiet"
        else:
            # Inside the chunk the onset is at its place in time (bins touching 2.5 s are a mix).
            assert bins[bin_ends < 2.5 - 0.02].max() < SILENT_LOG_MEL
            assert bins[bin_starts > 2.5 + 0.02].min() > LOUD_LOG_MEL
    assert out["audio_chunk_mask"].all()


def test_video_without_audio_has_all_false_audio_mask_and_no_fake_silence(processor, clips):
    out = processor(videos=[clips["silent"], clips["long"]], text=["a", "b"])
    assert out["audio_chunk_mask"][0].tolist() == [False] * NUM_CHUNKS
    assert out["audio_chunk_mask"][1].all()
    assert torch.all(out["input_features"][0] == processor.feature_extractor.padding_value)


def test_clip_with_fewer_frames_than_chunks_masks_the_audio_of_empty_windows(processor, tmp_path):
    path = write_video(tmp_path / "two_frames.mp4", seconds=1.0, fps=2)  # frames at 0 s and 0.5 s
    out = processor(videos=str(path), return_tensors="np")
    # 16 sampled frames are 8 x frame 0 then 8 x frame 1: chunks 0 and 2 start where the next chunk starts.
    assert out["video_chunk_mask"].tolist() == [[True] * NUM_CHUNKS]
    assert out["audio_chunk_mask"].tolist() == [[False, True, False, True]]


def test_labels_supervise_only_the_answer_and_eos(processor, clips, tokenizer):
    questions, answers = ["what is playing?", "how many people are there?"], ["a guitar", "two"]
    out = processor(videos=[clips["long"], clips["short"]], text=questions, answers=answers)
    for row, answer in enumerate(answers):
        labels, ids = out["labels"][row], out["input_ids"][row]
        supervised = labels != IGNORE_INDEX
        expected = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        assert labels[supervised].tolist() == expected
        assert torch.equal(ids[supervised], labels[supervised])
        assert supervised[-len(expected) :].all()  # the answer ends the row
        prompt = tokenizer(processor.prompt_template.format(question=questions[row]))["input_ids"]
        assert ids[out["attention_mask"][row].bool()].tolist() == prompt + expected
    assert not (out["labels"][out["attention_mask"] == 0] != IGNORE_INDEX).any()


def test_text_is_left_padded_for_generation(processor, clips, tokenizer):
    out = processor(videos=[clips["long"], clips["short"]], text=["what?", "how many people are there?"])
    mask = out["attention_mask"]
    assert mask[0, 0] == 0 and mask[:, -1].all()  # padding on the left, every prompt ends at the last column
    assert (out["input_ids"][mask == 0] == tokenizer.pad_token_id).all()
    assert all(ids[ids != tokenizer.pad_token_id][0] == tokenizer.bos_token_id for ids in out["input_ids"])


def test_arrays_and_dicts_with_waveform_are_accepted(processor):
    frames = np.random.default_rng(0).integers(0, 256, (30, 20, 24, 3), dtype=np.uint8)
    waveform = tone(3.0, 1.6)  # 30 frames over 3 s: the 16 sampled frames put chunk 2 at [1.5 s, 2.2 s)
    out = processor(
        videos=[{"frames": frames, "waveform": waveform, "sampling_rate": AUDIO_RATE}, torch.from_numpy(frames)],
        text=["what is it?", "what is it?"],
    )
    assert out["pixel_values_videos"].shape == (2, NUM_CHUNKS * FRAMES_PER_CHUNK, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert out["audio_chunk_mask"].tolist() == [[True] * NUM_CHUNKS, [False] * NUM_CHUNKS]
    band = out["input_features"][0, tone_band(processor.feature_extractor)].reshape(NUM_CHUNKS, -1)
    assert band[:2].max() < SILENT_LOG_MEL and band[3:].min() > LOUD_LOG_MEL


def test_video_dict_with_time_range_reads_that_range(processor, clips):
    whole = processor(videos=clips["long"], return_tensors="np")
    second_half = processor(videos={"path": clips["long"], "start_time": 2.0}, return_tensors="np")
    assert not np.array_equal(whole["pixel_values_videos"], second_half["pixel_values_videos"])
    assert second_half["pixel_values_videos"].shape == whole["pixel_values_videos"].shape


def test_bad_inputs_are_value_errors(processor, clips, tmp_path):
    with pytest.raises(ValueError, match="missing.mp4: file not found"):
        processor(videos=str(tmp_path / "missing.mp4"), text="what?")
    with pytest.raises(ValueError, match="2 videos but 1 texts"):
        processor(videos=[clips["long"], clips["short"]], text=["what?"])
    with pytest.raises(ValueError, match="answers"):
        processor(videos=clips["long"], text=["what?"], answers=["a", "b"])
    with pytest.raises(ValueError, match="not images"):
        processor(images=np.zeros((8, 8, 3), np.uint8), text="what?")
    with pytest.raises(ValueError, match="uint8"):
        processor(videos=np.zeros((4, 8, 8, 3), np.float32), text="what?")
    with pytest.raises(TypeError, match="unexpected"):
        processor(videos=clips["long"], text="what?", fsp=2)


def test_post_process_answer_strips_the_prompt_and_what_follows_eos(processor, tokenizer):
    prompt = processor(text=["what animal is it?", "what is playing?"])["input_ids"]
    answer_ids = [tokenizer(answer, add_special_tokens=False)["input_ids"] for answer in ("a dog", "a guitar")]
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    width = max(map(len, answer_ids)) + 2
    generated_tail = [ids + [eos] + [pad] * (width - len(ids) - 1) for ids in answer_ids]
    generated = torch.cat([prompt, torch.tensor(generated_tail)], dim=1)
    assert processor.post_process_answer(generated, prompt) == ["a dog", "a guitar"]
    assert processor.batch_decode(torch.tensor(generated_tail), skip_special_tokens=True) == ["a dog", "a guitar"]
    assert processor.decode(answer_ids[0]) == "a dog"


def test_chat_template_renders_the_prompt_format_and_reads_the_video(processor, clips):
    content = [{"type": "video", "path": str(clips["long"])}, {"type": "text", "text": "what is playing?"}]
    messages = [{"role": "user", "content": content}]
    rendered = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert rendered == processor.prompt_template.format(question="what is playing?")
    out = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    direct = processor(videos=str(clips["long"]), text="what is playing?")
    assert set(out.keys()) == set(direct.keys())
    for key in direct:
        assert torch.equal(out[key], direct[key]), key
    # A finished exchange renders as the training text: prompt, answer, eos.
    exchange = messages + [{"role": "assistant", "content": [{"type": "text", "text": "a guitar"}]}]
    assert processor.apply_chat_template(exchange) == "question: what is playing? answer: a guitar</s>"


def test_chat_template_batch_takes_one_video_per_conversation(processor, clips):
    conversations = [
        [{"role": "user", "content": [{"type": "video", "path": str(path)}, {"type": "text", "text": "what?"}]}]
        for path in (clips["long"], clips["short"])
    ]
    out = processor.apply_chat_template(conversations, add_generation_prompt=True, tokenize=True, return_dict=True)
    assert out["pixel_values_videos"].shape[0] == 2 and out["input_ids"].shape[0] == 2


def test_save_and_load_round_trip_including_auto_processor(processor, clips, tmp_path):
    processor.save_pretrained(tmp_path)
    loaded = MirasolProcessor.from_pretrained(tmp_path)
    settings = ("num_chunks", "frames_per_chunk", "image_size", "image_mean", "image_std", "prompt_template")
    for name in settings + ("chat_template",):
        assert getattr(loaded, name) == getattr(processor, name), name
    assert loaded.feature_extractor.to_dict() == processor.feature_extractor.to_dict()
    expected = processor(videos=clips["short"], text="what is playing?", answers="a guitar")
    for key, value in loaded(videos=clips["short"], text="what is playing?", answers="a guitar").items():
        assert torch.equal(value, expected[key]), key

    AutoProcessor.register(MirasolConfig, MirasolProcessor, exist_ok=True)
    AutoFeatureExtractor.register(MirasolConfig, MirasolFeatureExtractor, exist_ok=True)
    assert isinstance(AutoProcessor.from_pretrained(tmp_path), MirasolProcessor)
    assert isinstance(AutoFeatureExtractor.from_pretrained(tmp_path), MirasolFeatureExtractor)


def test_feature_extractor_round_trips_and_matches_after_reload(tmp_path):
    feature_extractor = MirasolFeatureExtractor(num_mel_bins=NUM_MEL_BINS, audio_frames_per_chunk=8, max_frequency=7e3)
    feature_extractor.save_pretrained(tmp_path)
    loaded = MirasolFeatureExtractor.from_pretrained(tmp_path)
    assert loaded.to_dict() == feature_extractor.to_dict()
    waveform = tone(1.0, 0.2, rate=feature_extractor.sampling_rate)
    np.testing.assert_array_equal(
        loaded(waveform, num_chunks=2)["input_features"], feature_extractor(waveform, num_chunks=2)["input_features"]
    )
    with pytest.raises(ValueError, match="resample"):
        feature_extractor(waveform, sampling_rate=AUDIO_RATE)


def test_from_model_config_reads_the_model_chunking(tokenizer):
    duck = SimpleNamespace(
        num_chunks=3,
        frames_per_chunk=2,
        audio_frames_per_chunk=8,
        video_config=SimpleNamespace(image_size=24),
        audio_config=SimpleNamespace(num_mel_bins=12),
    )
    for config in (duck, MirasolConfig.from_preset("tiny")):
        processor = MirasolProcessor.from_model_config(config, tokenizer)
        assert processor.num_chunks == config.num_chunks
        assert processor.frames_per_chunk == config.frames_per_chunk
        assert processor.audio_frames_per_chunk == config.audio_frames_per_chunk
        assert processor.image_size == config.video_config.image_size
        assert processor.feature_extractor.num_mel_bins == config.audio_config.num_mel_bins


def test_build_tokenizer_defines_special_tokens_and_reloads(tokenizer, tmp_path):
    special_ids = (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id)
    assert special_ids == (0, 1, 2, 3)
    ids = tokenizer("What is Playing? #2")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == "what is playing? # 2"
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded("what is playing?")["input_ids"] == tokenizer("what is playing?")["input_ids"]


def test_any_fast_tokenizer_works_byte_level_bpe_with_pad_equal_to_eos(clips):
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(TEXTS, trainer=trainer)
    gpt2_like = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    processor = make_processor(gpt2_like)
    questions = ["what?", "what animal is it?"]
    out = processor(videos=[clips["long"], clips["short"]], text=questions, answers=["a dog", "two"])
    labels = out["labels"][0][out["labels"][0] != IGNORE_INDEX].tolist()
    # The answer keeps the leading-space token it has in running text ("answer: a dog").
    assert labels == gpt2_like(" a dog")["input_ids"] + [gpt2_like.eos_token_id]
    prompts = processor(text=questions)["input_ids"]
    eos = gpt2_like.eos_token_id
    answer_ids = [gpt2_like(answer)["input_ids"] + [eos] for answer in (" a dog", " two")]
    width = max(map(len, answer_ids))
    generated_tail = torch.tensor([ids + [eos] * (width - len(ids)) for ids in answer_ids])  # eos is also pad
    assert processor.post_process_answer(torch.cat([prompts, generated_tail], dim=1), prompts) == ["a dog", "two"]


def test_log_mel_standardisation_applies_to_real_chunks_only_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    plain = MirasolFeatureExtractor(num_mel_bins=16, audio_frames_per_chunk=8)
    waveform = rng.normal(0, 0.1, plain.sampling_rate * 2).astype(np.float32)  # 2 s of noise
    windows = np.array([[0.0, 1.0], [1.0, 2.0], [2.0, 3.0]])  # the third window is past the audio's end
    raw = plain(waveform, chunk_windows=windows, return_tensors="np")
    assert raw["audio_chunk_mask"].tolist() == [[True, True, False]]
    mean, std = plain.compute_normalization(raw["input_features"], raw["audio_chunk_mask"])
    assert mean < -1  # the natural log of mel power sits well below zero

    standardised = MirasolFeatureExtractor(num_mel_bins=16, audio_frames_per_chunk=8, feature_mean=mean, feature_std=std)
    out = standardised(waveform, chunk_windows=windows, return_tensors="np")
    real, masked = out["input_features"][0, :, :16], out["input_features"][0, :, 16:]
    np.testing.assert_allclose(real, (raw["input_features"][0, :, :16] - mean) / std, rtol=1e-4, atol=1e-4)
    assert abs(real.mean()) < 1e-3 and abs(real.std() - 1) < 1e-3
    assert (masked == standardised.padding_value).all()  # a chunk without audio stays padding, not shifted silence

    standardised.save_pretrained(tmp_path)
    reloaded = MirasolFeatureExtractor.from_pretrained(tmp_path)
    assert (reloaded.feature_mean, reloaded.feature_std) == (mean, std)
    np.testing.assert_array_equal(reloaded(waveform, chunk_windows=windows)["input_features"], out["input_features"])

    with pytest.raises(ValueError, match="together"):
        MirasolFeatureExtractor(feature_mean=-5.0)
    with pytest.raises(ValueError, match="feature_std"):
        MirasolFeatureExtractor(feature_mean=-5.0, feature_std=0.0)


def test_build_tokenizer_is_deterministic_and_encodes_unseen_words_from_pieces():
    texts = ["what color was the square?", "which shape was red?", "the square moved"]
    first, second = build_tokenizer(texts, vocab_size=200), build_tokenizer(list(texts), vocab_size=200)
    assert first.get_vocab() == second.get_vocab()
    vocabulary = first.get_vocab()
    assert "square" in vocabulary and "the" in vocabulary  # frequent words are whole tokens
    pieces = first.tokenize("squares!")
    assert pieces == ["square", "##s", "!"]  # an unseen word: the longest known pieces
    assert first.decode(first("squares!")["input_ids"], skip_special_tokens=True) == "squares!"
    small = build_tokenizer(texts, vocab_size=len(vocabulary) - 2)  # room for all words but two
    assert "square" in small.get_vocab() and len(small) == len(vocabulary) - 2
