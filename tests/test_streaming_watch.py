"""Asking while a stream is encoded: answers from the state so far, on the default model, over clips back to back."""

import queue

import numpy as np
import pytest
import torch
from transformers import AutoConfig

import mirasol_hf
from mirasol_hf import MirasolForConditionalGeneration, MirasolProcessor
from mirasol_hf.streaming import LiveChunk, MirasolWatcher, chunk_inputs
from mirasol_hf.synthetic import generate_dataset

UNSEEN_SEED = 2026  # clips neither trained nor reported on (as in test_default_model.py)
# A live chunk's audio features against the same chunk in the whole clip (standardised log-mel): measured bit-equal
# here; the guarantee is float32 rounding (was 0.05, for up to half a hop of STFT offset; 0.57 measured before).
LIVE_AUDIO_TOLERANCE = 1e-5
NUM_CLIPS = 5
GENERATE = dict(max_new_tokens=4, do_sample=False)


@pytest.fixture(scope="module")
def streaming_default_model():
    """The default model with a latent-model window of the clip length it was trained on (4 chunks)."""
    config = AutoConfig.from_pretrained(mirasol_hf.DEFAULT_MODEL)
    config.latent_config.context_chunks = config.num_chunks
    model = MirasolForConditionalGeneration.from_pretrained(mirasol_hf.DEFAULT_MODEL, config=config).eval()
    return model, MirasolProcessor.from_pretrained(mirasol_hf.DEFAULT_MODEL)


def _chunk_dicts(processor, clips):
    """Each clip's processor outputs cut into per-chunk inputs, clips back to back on one clock (1 s per chunk)."""
    media = processor(videos=[clip.as_video_input() for clip in clips])
    per_video, per_audio = processor.frames_per_chunk, processor.audio_frames_per_chunk
    for index in range(len(clips)):
        for chunk in range(processor.num_chunks):
            start = (index * processor.num_chunks + chunk) * clips[index].duration / processor.num_chunks
            video = slice(chunk * per_video, (chunk + 1) * per_video)
            audio = slice(chunk * per_audio, (chunk + 1) * per_audio)
            yield {
                "pixel_values_videos": media["pixel_values_videos"][index : index + 1, video],
                "input_features": media["input_features"][index : index + 1, :, audio],
                "audio_chunk_mask": media["audio_chunk_mask"][index : index + 1, chunk : chunk + 1],
                "start_time": start,
                "end_time": start + clips[index].duration / processor.num_chunks,
            }


def _controlled(feed: queue.Queue):
    """A source whose chunks arrive when the test puts them in `feed` (None ends it)."""
    while (item := feed.get()) is not None:
        yield item


def _alone_answers(model, processor, clips) -> list[list[str]]:
    media = processor(videos=[clip.as_video_input() for clip in clips])
    questions = [(index, question.question) for index, clip in enumerate(clips) for question in clip.questions]
    prompts = processor(text=[question for _, question in questions])
    with torch.no_grad():
        generated = model.generate(
            **prompts,
            media_latents=model.encode_media(**media),
            media_index=torch.tensor([index for index, _ in questions]),
            **GENERATE,
        )
    answers = iter(processor.post_process_answer(generated, prompts["input_ids"]))
    return [[next(answers) for _ in clip.questions] for clip in clips]


def test_questions_about_the_latest_clip_of_a_stream_get_the_answers_of_the_clip_alone(streaming_default_model):
    model, processor = streaming_default_model
    clips = generate_dataset(NUM_CLIPS, seed=UNSEEN_SEED)
    expected = _alone_answers(model, processor, clips)
    encoded_frames = []
    hook = model.model.video_encoder.register_forward_hook(
        lambda module, args, output: encoded_frames.append(args[0].shape[0])  # chunks in this call
    )
    feed = queue.Queue()
    watcher = MirasolWatcher(model, processor, _controlled(feed), **GENERATE).start()
    chunks = list(_chunk_dicts(processor, clips))
    try:
        for index, clip in enumerate(clips):
            for chunk in chunks[index * 4 : index * 4 + 4]:
                feed.put(chunk)
            assert watcher.wait_for_chunks(4 * (index + 1), timeout=30)
            answers = [watcher.ask(question.question) for question in clip.questions]
            assert [answer.text for answer in answers] == expected[index]
            # each answer covers the last 4 chunks: this clip, 4 s of the stream's clock
            assert {(a.first_chunk, a.last_chunk, a.start_time, a.end_time) for a in answers} == {
                (4 * index, 4 * index + 3, 4.0 * index, 4.0 * index + 4)
            }
        feed.put(None)
        watcher.join(timeout=30)
    finally:
        hook.remove()
        feed.put(None)
    # every chunk went through the video encoder once, however many questions were asked
    assert sum(encoded_frames) == 4 * NUM_CLIPS


def test_a_question_does_not_stall_encoding(streaming_default_model):
    model, processor = streaming_default_model
    chunks = list(_chunk_dicts(processor, generate_dataset(2, seed=UNSEEN_SEED)))
    feed = queue.Queue()
    watcher = MirasolWatcher(model, processor, _controlled(feed), **GENERATE).start()
    for chunk in chunks[:4]:
        feed.put(chunk)
    assert watcher.wait_for_chunks(4, timeout=30)
    original_generate = model.generate
    encoded_while_answering = []

    def slow_generate(**kwargs):
        # While this question is being answered, two more chunks arrive and must get encoded.
        feed.put(chunks[4])
        feed.put(chunks[5])
        encoded_while_answering.append(watcher.wait_for_chunks(6, timeout=30))
        return original_generate(**kwargs)

    model.generate = slow_generate
    try:
        answer = watcher.ask("what sound was heard?")
    finally:
        del model.generate
        feed.put(None)
        watcher.join(timeout=30)
    assert encoded_while_answering == [True]
    assert (answer.first_chunk, answer.last_chunk) == (0, 3)  # the state when the question was asked


def test_asking_before_any_chunk_and_a_failing_source_are_clear_errors(streaming_default_model):
    model, processor = streaming_default_model

    def failing():
        yield from []
        raise OSError("camera unplugged")

    watcher = MirasolWatcher(model, processor, failing()).start()
    with pytest.raises(OSError, match="unplugged"):
        watcher.join(timeout=30)
    with pytest.raises(ValueError, match="no chunk encoded yet.*unplugged"):
        watcher.ask("what sound was heard?")


def test_a_live_chunk_is_prepared_as_the_processor_prepares_its_window(streaming_default_model):
    _, processor = streaming_default_model
    clip = generate_dataset(1, seed=UNSEEN_SEED)[0]
    read = processor.read_video(clip.as_video_input())
    windows = read.chunk_windows(processor.num_chunks)
    whole = processor(videos=clip.as_video_input())
    rate, per_video = processor.feature_extractor.sampling_rate, processor.frames_per_chunk
    per_audio = processor.audio_frames_per_chunk
    for index, (start, end) in enumerate(windows):
        # what a LiveReader hands out: the chunk's frames and its audio with 50 ms of context on each side
        first, last = max(0, round((start - 0.05) * rate)), round((end + 0.05) * rate)
        frames = read.frames[index * per_video : (index + 1) * per_video]
        chunk = LiveChunk(index, start, end, frames, read.waveform[first:last], first / rate)
        inputs = chunk_inputs(processor, chunk)
        expected_pixels = whole["pixel_values_videos"][0, index * per_video : (index + 1) * per_video]
        assert torch.equal(inputs["pixel_values_videos"][0], expected_pixels)
        # the audio features of this chunk in the whole clip (the processor reads the file's audio block by block):
        # STFT frames on the clock's hop grid make them the same, up to float32 rounding
        audio = slice(index * per_audio, (index + 1) * per_audio)
        torch.testing.assert_close(
            inputs["input_features"][0], whole["input_features"][0, :, audio], atol=LIVE_AUDIO_TOLERANCE, rtol=0
        )
        assert inputs["audio_chunk_mask"][0, 0] == whole["audio_chunk_mask"][0, index]


def test_the_watch_command_answers_every_few_seconds_of_a_live_source(tmp_path, capsys, streaming_default_model):
    from mirasol_hf.cli import main
    from mirasol_hf.streaming.live import write_transport_stream

    model, processor = streaming_default_model
    clips = generate_dataset(2, seed=UNSEEN_SEED)
    source = tmp_path / "two_clips.ts"
    write_transport_stream(
        source,
        np.concatenate([clip.frames for clip in clips]),
        clips[0].fps,
        np.concatenate([clip.waveform for clip in clips]),
        clips[0].sampling_rate,
    )
    questions = [clips[1].questions[1].question, clips[1].questions[3].question]
    argv = ["watch", str(source), "--every", "4s", "--stall-timeout", "0.2", "--max-new-tokens", "4"]
    assert main(argv + [arg for question in questions for arg in ("--ask", question)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4  # at 4 s and at 8 s of the source, each question
    spans = [line.split("]")[0] for line in lines]
    assert spans[0] == spans[1] and spans[2] == spans[3] and spans[0] != spans[2]
    start, end = (float(value) for value in spans[2].strip("[ s").split("-"))
    assert end - start == pytest.approx(4.0, abs=0.1)
    # at 8 s the window is the second clip: the answers it gets alone
    expected = _alone_answers(model, processor, clips)[1]
    assert [line.split("? ", 1)[1] for line in lines[2:]] == [expected[1], expected[3]]


def test_the_watch_command_reports_bad_arguments_clearly(tmp_path, capsys):
    from mirasol_hf.cli import main

    assert main(["watch", str(tmp_path / "missing.ts"), "--ask", "what?", "--every", "soon"]) == 2
    assert "--every" in capsys.readouterr().err
    assert main(["watch", str(tmp_path / "missing.ts"), "--ask", "what?"]) == 2
    assert "no such file" in capsys.readouterr().err
