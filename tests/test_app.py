"""The Gradio app (mirasol_hf/app.py): in a real browser, and its parts alone."""

import ast
import contextlib
import http.server
import importlib.util
import io
import re
import threading
import time
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
    free_port,
    open_browser,
    outside_requests,
    record_in_page,
    watch_in_page,
    watch_then_leave,
)
from mirasol_hf import DEFAULT_MODEL
from mirasol_hf import app
from mirasol_hf.streaming import LiveReader, LiveSourceError, MirasolWatcher
from mirasol_hf.streaming.live import write_transport_stream
from mirasol_hf.synthetic import generate_clip, generate_dataset, write_mp4

ROOT = Path(__file__).resolve().parents[1]
CLIP_SEED = 11
RECORD_SECONDS = 2.0
STREAM_SEED = 2026  # clips neither trained nor reported on
STREAM_CLIPS = 2  # 8 s of stream: 8 chunks of app.WATCH_CHUNK_SECONDS
WATCH_EVERY = 2.0  # seconds of the stream: asked as of chunks 2, 4, 6 and 8 (ending at 2, 4, 6, 8 s)
STREAM_PIECES, STREAM_PAUSE = 16, 0.15  # the server sends the stream in pieces, pausing between them
LEAVE_PAUSE = 0.5  # a slow stream (8 s to send) for leaving the page while it plays


class _LiveStreamHandler(http.server.BaseHTTPRequestHandler):
    """Serves `server.data` at /live.ts as a live server does: chunked transfer, a piece at a time."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path != "/live.ts":
            self.send_error(404)
            return
        data = self.server.data
        self.send_response(200)
        self.send_header("Content-Type", "video/mp2t")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        step = -(-len(data) // STREAM_PIECES)
        try:
            for start in range(0, len(data), step):
                piece = data[start : start + step]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.flush()
                time.sleep(self.server.pause)
            self.wfile.write(b"0\r\n\r\n")  # the end of the stream
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # the reader stopped reading
            self.server.dropped.set()
        self.close_connection = True

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve_stream(data: bytes, pause: float = STREAM_PAUSE):
    """`data` served over HTTP on 127.0.0.1 from a thread; yields the server: its `url`, and `dropped`, set when a
    reader closed the connection before the end."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _LiveStreamHandler)
    server.data, server.pause, server.daemon_threads, server.dropped = data, pause, True, threading.Event()
    server.url = f"http://127.0.0.1:{server.server_port}/live.ts"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _stream_bytes(clips) -> bytes:
    output = io.BytesIO()
    write_transport_stream(output, np.concatenate([clip.frames for clip in clips]), clips[0].fps,
                           np.concatenate([clip.waveform for clip in clips]), clips[0].sampling_rate)
    return output.getvalue()


def _live_reader(source, processor) -> LiveReader:
    """The reader the app's stream tab makes."""
    return LiveReader(source, chunk_seconds=app.WATCH_CHUNK_SECONDS, frames_per_chunk=processor.frames_per_chunk,
                      size=processor.image_size, sampling_rate=processor.feature_extractor.sampling_rate)


@pytest.fixture(scope="module")
def answerer():
    return pipeline("video-question-answering", model=DEFAULT_MODEL)


def test_app_in_a_browser_answers_uploads_recordings_and_streams_like_the_pipeline_and_watcher(tmp_path, answerer):
    reason = browser_missing_reason()
    if reason:
        pytest.skip(f"no browser to drive: {reason}")
    clip = generate_clip(CLIP_SEED)
    video = write_mp4(clip, tmp_path / "clip.mp4")
    questions = [clip.questions[0].question, clip.questions[2].question]
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all " * 200)

    stream_clips = generate_dataset(STREAM_CLIPS, seed=STREAM_SEED)
    stream_questions = [stream_clips[1].questions[1].question, stream_clips[1].questions[3].question]
    dead_url = f"http://127.0.0.1:{free_port()}/live.ts"  # nothing listens there

    stream = _stream_bytes(stream_clips)
    with (AppServer(DEFAULT_MODEL, tmp_path) as server, serve_stream(stream) as stream_server,
          serve_stream(stream, pause=LEAVE_PAUSE) as slow_server):
        stream_url = stream_server.url
        # While the app starts: the watcher run directly on the same stream, and what the dead address raises.
        watch_model, watch_processor = app.load_watch_model(DEFAULT_MODEL)
        watcher = MirasolWatcher(watch_model, watch_processor, _live_reader(stream_url, watch_processor),
                                 max_new_tokens=app.MAX_NEW_TOKENS).start()
        watcher.join()
        with pytest.raises(LiveSourceError) as dead_error:
            next(iter(_live_reader(dead_url, watch_processor)))
        # What the pipeline answers, and the picture the app should send for them.
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
            watched_page = watch_in_page(driver, server.url, stream_url, stream_questions, WATCH_EVERY)
            dead_page = watch_in_page(driver, server.url, dead_url, stream_questions, WATCH_EVERY)
            left_status = watch_then_leave(driver, server.url, slow_server.url, stream_questions, WATCH_EVERY)
            # Leaving the page stops its watcher: the reader closes the connection long before the stream's end.
            left_page_stopped_reading = slow_server.dropped.wait(LEAVE_PAUSE * STREAM_PIECES / 2)
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

    # A stream over HTTP: every 2 s of it, both questions, answered as the watcher answers as of that chunk, with
    # the span it covers (the last 4 chunks: the window the model was trained on) and its attention per chunk.
    done = f"Done: {watcher.num_chunks} chunk(s) of {app.WATCH_CHUNK_SECONDS:g} s watched."
    assert watched_page["status"] == done, watched_page["page_text"]
    assert watcher.num_chunks == 8
    rows = sorted(watched_page["rows"], key=lambda row: row["last_chunk"])  # oldest first, questions in order
    assert [row["last_chunk"] for row in rows] == [1, 1, 3, 3, 5, 5, 7, 7], watched_page["page_text"]
    assert [row["question"] for row in rows] == stream_questions * 4
    for at_chunk, pair in zip((1, 3, 5, 7), (rows[i : i + 2] for i in range(0, 8, 2))):
        expected, generated, prompt_length = watcher.ask(stream_questions, at_chunk=at_chunk, return_generated=True)
        shares = app.chunk_attention(generated, prompt_length, watch_processor.tokenizer.eos_token_id,
                                     at_chunk - expected[0].first_chunk + 1)
        for row, answer, row_shares in zip(pair, expected, shares):
            assert (row["first_chunk"], row["last_chunk"]) == (answer.first_chunk, answer.last_chunk)
            assert answer.first_chunk == max(0, at_chunk - 3)
            assert row["answer"] == answer.text
            assert f"{answer.start_time:.1f}-{answer.end_time:.1f} s" in row["span"]
            assert row["attention"] == [f"{100 * share:.0f}%" for share in row_shares]
    # by the end the window is the second clip: the answers it gets alone
    alone = answerer(str(write_mp4(stream_clips[1], tmp_path / "second.mp4")), stream_questions,
                     max_new_tokens=app.MAX_NEW_TOKENS)
    assert [row["answer"] for row in rows[-2:]] == [reply["answer"] for reply in alone]

    # A dead address: the reader's own message on the page, no traceback, no answers.
    assert dead_page["status"].startswith("Could not watch this stream:"), dead_page["status"]
    assert str(dead_error.value).split(": ", 1)[1] in dead_page["status"]
    assert dead_page["rows"] == [] and "Traceback" not in dead_page["page_text"]

    assert left_status.startswith("Watching"), left_status
    assert left_page_stopped_reading, "the watcher went on reading after its page was left"

    assert browser_outside == [], "the page asked for something outside this machine"
    assert app_outside == [], "the app tried to reach the network"


def test_answer_video_encodes_once_and_matches_the_pipeline(tmp_path, answerer, monkeypatch):
    clip = generate_clip(CLIP_SEED + 1)
    video = str(write_mp4(clip, tmp_path / "clip.mp4"))
    questions = [question.question for question in clip.questions]
    calls = []
    # The base model's encode_media: every encoding goes through it, whichever entry point asks for it.
    encode_media = answerer.model.model.encode_media
    monkeypatch.setattr(
        answerer.model.model, "encode_media", lambda *a, **kw: calls.append(1) or encode_media(*a, **kw)
    )

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


def test_stopping_a_watched_stream_stops_its_watcher_thread():
    clips = generate_dataset(1, seed=STREAM_SEED)
    with serve_stream(_stream_bytes(clips), pause=0.2) as server:  # 4 s of stream sent over 3.2 s
        url = server.url
        session, status, _, active = app.start_watching(url, "what?\n", 2, "default", None)
        assert active and status.startswith("Watching")
        assert session.watcher.wait_for_chunks(1, timeout=60)
        status, active = app.stop_watching(session)
        assert not active and status.startswith("Stopped after")
        assert not session.watcher._thread.is_alive()
        # a new start on the same page stops the stream it replaces
        replaced, _, _, _ = app.start_watching(url, "what?", 2, "default", None)
        app.start_watching(url, "what?", 2, "default", replaced)
        assert not replaced.watcher._thread.is_alive()


def test_start_watching_shows_clear_messages_for_missing_inputs():
    assert app.start_watching(" ", "what?", 2, "default", None)[1].startswith("Give a stream's address")
    assert app.start_watching("x.ts", "\n", 2, "default", None)[1] == "Write at least one question, one per line."
    assert app.start_watching("x.ts", "what?", 0, "default", None)[1].startswith("Ask every")
    refused = "**Could not watch this stream:** this app follows network streams only"
    for source in ("/etc/hostname", "file:///etc/hostname"):
        assert app.start_watching(source, "what?", 2, "default", None, local_files=False)[1].startswith(refused)
    status = app.start_watching("gopher://127.0.0.1/x", "what?", 2, "default", None)[1]
    assert status.startswith("**Could not watch this stream:** gopher:// is not a stream address")
    # a path is followed where files are allowed (the reader says when there is no such file)
    session, status, _, _ = app.start_watching("/no/such/file.ts", "what?", 2, "default", None)
    assert not session.watcher.wait_for_chunks(1, timeout=30)  # the stream ended without a chunk
    assert app.refresh_watching(session)[0] == "**Could not watch this stream:** /no/such/file.ts: no such file"
