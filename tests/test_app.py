"""The Gradio app (mirasol_hf/app.py): in a real browser, and its parts alone."""

import ast
import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

from app_browser import (
    AppServer,
    answer_sample_in_page,
    ask_in_page,
    browser_missing_reason,
    open_browser,
    outside_requests,
    record_in_page,
)
from mirasol_hf import DEFAULT_MODEL
from mirasol_hf import app
from mirasol_hf.synthetic import generate_clip, write_mp4

ROOT = Path(__file__).resolve().parents[1]
CLIP_SEED = 11
RECORD_SECONDS = 2.0


@pytest.fixture(scope="module")
def answerer():
    return pipeline("video-question-answering", model=DEFAULT_MODEL)


def test_app_in_a_browser_answers_uploads_and_recordings_like_the_pipeline_and_shows_bad_uploads(tmp_path, answerer):
    reason = browser_missing_reason()
    if reason:
        pytest.skip(f"no browser to drive: {reason}")
    clip = generate_clip(CLIP_SEED)
    video = write_mp4(clip, tmp_path / "clip.mp4")
    questions = [clip.questions[0].question, clip.questions[2].question]
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all " * 200)

    with AppServer(DEFAULT_MODEL, tmp_path) as server:
        # While the app starts: what the pipeline answers, and the picture the app should send for them.
        replies = answerer(str(video), questions, max_new_tokens=app.MAX_NEW_TOKENS)
        expected_answers = [reply["answer"] for reply in replies]
        expected = app.answer_video(answerer, str(video), questions)
        with pytest.raises(ValueError) as processor_error:
            answerer.processor.read_video(str(broken))
        server.wait()
        with open_browser(tmp_path) as driver:
            page = ask_in_page(driver, server.url, video, questions, screenshot=tmp_path / "app.png")
            bad_page = ask_in_page(driver, server.url, broken, questions[:1])
            sample_page = answer_sample_in_page(driver, server.url)
            recorded_page = record_in_page(driver, server.url, RECORD_SECONDS, questions[:1])
            browser_outside = outside_requests(driver)
        app_outside = server.network_attempts()

    assert expected.answers == expected_answers
    assert page["answers"] == expected_answers, page["page_text"]
    # The chunk picture the page shows is the one drawn for these answers: a column of frames per chunk.
    picture = np.asarray(page["chunk_picture"])
    assert picture.shape == np.asarray(app.chunk_picture(expected)).shape
    assert np.array_equal(picture, np.asarray(app.chunk_picture(expected)))
    # The percentages in the table are the attention shares, rounded.
    assert page["attention"] == [f"{100 * share:.0f}%" for share in expected.chunk_attention.ravel()]
    assert (tmp_path / "app.png").stat().st_size > 10_000

    # A file that is not a video: the processor's own message on the page (the uploaded copy has another folder).
    message_after_path = str(processor_error.value).split(str(broken))[1].split(":")[1].strip()
    assert bad_page["status"].startswith("Could not use this video:"), bad_page["status"]
    assert message_after_path in bad_page["status"]
    assert bad_page["answers"] == [] and bad_page["chunk_picture"] is None
    assert "Traceback" not in bad_page["page_text"]

    # Two clicks answer the sample clip's five questions (the README's clip), as the pipeline does.
    sample_video, sample_questions, _ = app.write_sample_clip(tmp_path)
    assert sample_page["questions"] == sample_questions and len(sample_questions) == 5
    sample_answers = answerer(sample_video, sample_questions, max_new_tokens=app.MAX_NEW_TOKENS)
    assert sample_page["answers"] == [reply["answer"] for reply in sample_answers]

    # A webcam recording (Chromium's fake camera and microphone) is answered as the pipeline answers that file.
    assert Path(recorded_page["recording"]).is_file() and recorded_page["recording"].endswith(".webm")
    assert recorded_page["status"].startswith("Answered 1 question"), recorded_page["status"]
    recorded_answers = answerer(recorded_page["recording"], questions[:1], max_new_tokens=app.MAX_NEW_TOKENS)
    assert recorded_page["answers"] == [reply["answer"] for reply in recorded_answers]

    assert browser_outside == [], "the page asked for something outside this machine"
    assert app_outside == [], "the app tried to reach the network"


def test_answer_video_encodes_once_and_matches_the_pipeline(tmp_path, answerer, monkeypatch):
    clip = generate_clip(CLIP_SEED + 1)
    video = str(write_mp4(clip, tmp_path / "clip.mp4"))
    questions = [question.question for question in clip.questions]
    calls = []
    encode_media = answerer.model.encode_media
    monkeypatch.setattr(answerer.model, "encode_media", lambda **kw: calls.append(1) or encode_media(**kw))

    result = app.answer_video(answerer, video, questions)

    assert len(calls) == 1
    replies = answerer(video, questions, max_new_tokens=app.MAX_NEW_TOKENS)
    assert result.answers == [reply["answer"] for reply in replies]
    num_chunks = answerer.processor.num_chunks
    assert result.chunk_attention.shape == (len(questions), num_chunks)
    np.testing.assert_allclose(result.chunk_attention.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(result.chunk_windows, result.clip.chunk_windows(num_chunks))
    # The picture holds each sampled frame, upscaled, where its chunk's column is.
    picture = np.asarray(app.chunk_picture(result))
    frames_per_chunk = len(result.clip.frames) // num_chunks
    tile_side = app.FRAME_SIDE - 2
    for frame_index in (0, frames_per_chunk + 1, len(result.clip.frames) - 1):
        chunk, index = divmod(frame_index, frames_per_chunk)
        row, column = divmod(index, app.FRAMES_PER_ROW)
        left = app.MARGIN + app.LABEL_WIDTH + chunk * (app.FRAMES_PER_ROW * app.FRAME_SIDE + app.CHUNK_GAP)
        left += column * app.FRAME_SIDE + 1
        top = app.MARGIN + 2 * app.FONT_SIZE + 20 + row * (app.FRAME_SIDE + app.SMALL_FONT_SIZE + 4)
        tile = Image.fromarray(result.clip.frames[frame_index]).resize((tile_side, tile_side), Image.NEAREST)
        assert np.array_equal(picture[top : top + tile_side, left : left + tile_side], np.asarray(tile))


def test_chunk_attention_averages_the_answer_steps_per_chunk():
    """Per the generate() contract: per step, per cross-attention layer, (B, heads, q_len, T * m), chunk-major."""
    batch, heads, num_chunks, tokens_per_chunk, prompt_length, eos = 2, 3, 4, 2, 5, 9
    generator = torch.Generator().manual_seed(0)

    def attention(q_len):  # (B, heads, q_len, T * m), rows summing to 1
        return torch.rand(batch, heads, q_len, num_chunks * tokens_per_chunk, generator=generator).softmax(-1)

    steps = [(attention(prompt_length), attention(prompt_length))] + [(attention(1), attention(1)) for _ in range(2)]
    # question 0 wrote two tokens then eos (3 steps); question 1 ended at once (eos first: 1 step)
    sequences = torch.tensor([[1] * prompt_length + [4, 5, eos], [1] * prompt_length + [eos, eos, eos]])
    generated = {"cross_attentions": tuple(steps), "sequences": sequences}
    shares = app.chunk_attention(generated, prompt_length, eos, num_chunks)

    def expected(row, used_steps):
        total = torch.zeros(num_chunks)
        for step in steps[:used_steps]:
            for layer in step:
                last_query = layer[row, :, -1]  # (heads, T * m)
                total += last_query.reshape(heads, num_chunks, tokens_per_chunk).sum(-1).mean(0)
        return total / (used_steps * len(steps[0]))

    np.testing.assert_allclose(shares[0], expected(0, 3), rtol=1e-5)
    np.testing.assert_allclose(shares[1], expected(1, 1), rtol=1e-5)


def test_ask_shows_clear_messages_for_missing_inputs(tmp_path):
    assert app.ask(None, "what?", "default")[0] == "Upload or record a video first."
    assert app.ask(str(tmp_path / "clip.mp4"), " \n ", "default")[0] == "Write at least one question, one per line."
    status, answers, picture = app.ask(str(tmp_path / "clip.mp4"), "what?", str(tmp_path))  # a folder, no checkpoint
    assert status.startswith("**Could not load the model**") and "config.json" in status
    assert (answers, picture) == ("", None)


def test_space_files_install_what_the_package_needs():
    setup_call = next(
        node for node in ast.walk(ast.parse((ROOT / "setup.py").read_text()))
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setup"
    )
    arguments = {keyword.arg: ast.literal_eval(keyword.value) for keyword in setup_call.keywords
                 if keyword.arg in ("install_requires", "extras_require")}
    name = re.compile(r"^[A-Za-z0-9_.-]+")
    requirements = arguments["install_requires"] + arguments["extras_require"]["app"]
    required = {name.match(line).group().lower() for line in requirements}
    space_lines = (ROOT / "examples/app/requirements.txt").read_text().splitlines()
    listed = {name.match(line).group().lower() for line in space_lines if line and not line.startswith(("#", "-"))}
    assert required - {"gradio"} <= listed  # gradio comes from the Space's sdk_version
    sdk_version = re.search(r"^sdk_version: (\S+)$", (ROOT / "examples/app/README.md").read_text(), re.M).group(1)
    from packaging.specifiers import SpecifierSet

    gradio_range = next(line for line in arguments["extras_require"]["app"] if line.startswith("gradio"))
    assert sdk_version in SpecifierSet(gradio_range[len("gradio"):])


def test_sample_clip_is_the_one_examples_answer_writes():
    spec = importlib.util.spec_from_file_location("answer_example", ROOT / "examples/answer.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    assert app.SAMPLE_SEED == example.SAMPLE_SEED
