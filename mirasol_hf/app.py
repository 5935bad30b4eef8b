"""A Gradio demo: ask questions about a video and see which chunks of it each answer looked at.

    pip install -e ".[app]"
    python -m mirasol_hf.app                       # the default model, on http://127.0.0.1:7860
    python -m mirasol_hf.app --model PATH_OR_HUB_ID --host 0.0.0.0 --port 7860

The page takes an uploaded (or recorded) video and any number of questions, answers them with the
"video-question-answering" pipeline (the video is read and encoded once for all questions), and draws the sampled
frames grouped by chunk with their time spans, the audio log-mel of each chunk, and how much the text decoder's
cross-attention went to each chunk while it wrote each answer. `examples/app/app.py` is the same app as a Hugging Face
Space. A second tab, "Watch a stream", follows a live source (a URL or a file being written) with a `MirasolWatcher`
and shows, as the stream plays, each answer with the span of the stream it covers and its attention per chunk.
Nothing here reaches the network: Gradio's analytics are off and no share link is made (a Hub id given as the
model is the one download).
"""

from __future__ import annotations

import argparse
import html
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .default_model import DEFAULT_MODEL
from .media import MediaClip
from .pipeline import _normalize

# Gradio reads this when it is imported; analytics would send a request per launch and per event.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

DEFAULT_MODEL_LABEL = "default"  # what the model box shows for mirasol_hf.DEFAULT_MODEL
MAX_NEW_TOKENS = 8
# The clip README's first command (examples/answer.py) writes and asks about.
SAMPLE_SEED = 2024

# Watching a stream: seconds of the source per chunk (the CLI's default) and how often the page looks for answers.
WATCH_CHUNK_SECONDS = 1.0
WATCH_REFRESH_SECONDS = 0.5
WATCH_STOP_TIMEOUT = 5.0  # seconds `Stop` waits for the chunk in progress
# Addresses the tab follows (FFmpeg protocols); files on the server (paths, file://) only when the app allows them.
NETWORK_STREAM_SCHEMES = ("http", "https", "udp", "rtp", "rtsp", "rtmp", "srt", "tcp")

# Drawing the chunk picture, in pixels.
FRAME_SIDE = 64
FRAMES_PER_ROW = 4
LABEL_WIDTH = 300
CHUNK_GAP = 16
MARGIN = 12
LOG_MEL_HEIGHT = 96
BAR_ROW_HEIGHT = 40
FONT_SIZE = 15
SMALL_FONT_SIZE = 12
BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 30)
MUTED = (110, 110, 120)
BAR = (230, 110, 30)
BAR_TRACK = (238, 238, 242)
# Colour map for the log-mel (dark blue -> teal -> yellow), anchors spread evenly over [0, 1].
LOG_MEL_COLORS = np.array([(30, 20, 70), (40, 90, 140), (40, 160, 130), (150, 210, 70), (250, 230, 40)], np.float32)


@dataclass
class VideoAnswers:
    """Answers about one video, with what the model saw and where it looked.

    Attributes:
        questions, answers: one answer per question.
        chunk_attention: `(Q, T)` share of the text decoder's cross-attention that went to each chunk while writing
            each answer (rows sum to 1; see `chunk_attention`).
        clip: the sampled frames and audio, as the processor read them.
        chunk_windows: `(T, 2)` start and end time of each chunk in seconds.
        log_mel: `(mels, T * A)` the model's audio input (chunk `t` is columns `t * A` to `(t + 1) * A`).
        audio_chunk_mask: `(T,)` chunk holds real audio.
    """

    questions: list[str]
    answers: list[str]
    chunk_attention: np.ndarray
    clip: MediaClip
    chunk_windows: np.ndarray
    log_mel: np.ndarray
    audio_chunk_mask: np.ndarray


def chunk_attention(generated, prompt_length: int, eos_token_id: int, num_chunks: int) -> np.ndarray:
    """`(B, T)` share of cross-attention each chunk got while each answer was written.

    `generated` is `generate(..., return_dict_in_generate=True, output_attentions=True)`'s output: its
    `cross_attentions` hold, per step, per cross-attention layer, `(B, heads, q_len, T * m)` over the media tokens
    (chunk-major). The query that writes answer token `k` is the last position of step `k`; the steps that wrote the
    answer (up to its eos, and at least the first) are averaged over layers and heads.
    """
    steps = generated["cross_attentions"]
    # (steps, layers, B, heads, T * m): the last query of each step
    per_step = torch.stack([torch.stack([layer[:, :, -1] for layer in step]) for step in steps])
    per_chunk = per_step.unflatten(-1, (num_chunks, -1)).sum(-1)  # (steps, layers, B, heads, T)
    per_chunk = per_chunk.float().mean(dim=(1, 3))  # (steps, B, T)
    new_tokens = generated["sequences"][:, prompt_length:]  # (B, steps)
    # steps before (and including) the first eos: the answer's tokens and the step that ended it
    ended_before = (new_tokens == eos_token_id).long().cumsum(-1) - (new_tokens == eos_token_id).long()
    answer_steps = (ended_before == 0).T[: len(steps)].float()  # (steps, B)
    answer_steps[0] = 1.0
    shares = (per_chunk * answer_steps[..., None]).sum(0) / answer_steps.sum(0)[:, None]  # (B, T)
    return shares.numpy()


def answer_video(answerer, video, questions, max_new_tokens: int = MAX_NEW_TOKENS) -> VideoAnswers:
    """Answer `questions` about `video` with a "video-question-answering" pipeline, keeping what the page shows.

    The video is read once by the pipeline's processor and encoded once for all questions. A video the processor
    cannot use raises its `ValueError` (a `MediaError` naming the file and the problem).
    """
    processor = answerer.processor
    clip = processor.read_video(video)
    items, _ = _normalize(clip, list(questions))
    model_inputs = answerer.preprocess(items)
    generate_kwargs = {"max_new_tokens": max_new_tokens, "return_dict_in_generate": True, "output_attentions": True}
    outputs = answerer.forward(model_inputs, generate_kwargs=generate_kwargs)
    generated = outputs["generated"]
    answers = answerer.postprocess({**outputs, "generated": generated["sequences"]})
    media = model_inputs["media"]
    num_chunks = media["video_chunk_mask"].shape[1]  # the processor's count (fps sampling makes it vary)
    return VideoAnswers(
        questions=list(items[0].questions),
        answers=answers,
        chunk_attention=chunk_attention(
            generated, outputs["input_ids"].shape[-1], processor.tokenizer.eos_token_id, num_chunks
        ),
        clip=clip,
        chunk_windows=clip.chunk_windows(num_chunks),
        log_mel=media["input_features"][0].numpy(),
        audio_chunk_mask=media["audio_chunk_mask"][0].numpy(),
    )


@lru_cache(maxsize=2)
def load_answerer(model: str = DEFAULT_MODEL):
    """The "video-question-answering" pipeline for a checkpoint folder or Hub id (kept for the next question)."""
    from transformers import pipeline

    from . import pipeline as _registers_the_task  # noqa: F401

    return pipeline("video-question-answering", model=model)


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _colorize(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """`(H, W)` floats -> `(H, W, 3)` uint8 through `LOG_MEL_COLORS`, `low` and `high` at its two ends."""
    scaled = np.clip((values - low) / (high - low), 0, 1) if high > low else np.zeros_like(values)
    position = scaled * (len(LOG_MEL_COLORS) - 1)
    below = np.clip(np.floor(position).astype(int), 0, len(LOG_MEL_COLORS) - 2)
    fraction = (position - below)[..., None]
    colors = LOG_MEL_COLORS[below] * (1 - fraction) + LOG_MEL_COLORS[below + 1] * fraction
    return colors.round().astype(np.uint8)


def _fit(text: str, font, width: int) -> str:
    """`text` cut with an ellipsis to fit `width` pixels."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…"


def chunk_picture(result: VideoAnswers):
    """One PIL image, a column per chunk: its time span, its frames (with their times), its audio log-mel, and a bar
    per answer for the share of attention the chunk got while that answer was written."""
    from PIL import Image, ImageDraw

    frames, frame_times = result.clip.frames, result.clip.frame_times
    num_chunks = len(result.chunk_windows)
    frames_per_chunk = len(frames) // num_chunks
    frame_rows = -(-frames_per_chunk // FRAMES_PER_ROW)
    chunk_width = FRAMES_PER_ROW * FRAME_SIDE
    font, small = _font(FONT_SIZE), _font(SMALL_FONT_SIZE)
    title_height = 2 * FONT_SIZE + 20
    frame_block = frame_rows * (FRAME_SIDE + SMALL_FONT_SIZE + 4)
    height = MARGIN * 2 + title_height + frame_block + 8 + LOG_MEL_HEIGHT + 8 + BAR_ROW_HEIGHT * len(result.answers)
    width = MARGIN * 2 + LABEL_WIDTH + num_chunks * (chunk_width + CHUNK_GAP)
    picture = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(picture)

    top = MARGIN + title_height
    mel_top = top + frame_block + 8
    bars_top = mel_top + LOG_MEL_HEIGHT + 8
    draw.text((MARGIN, MARGIN), "what the model saw, chunk by chunk", font=font, fill=TEXT)
    draw.text((MARGIN, top + 4), "sampled frames", font=font, fill=TEXT)
    draw.text((MARGIN, mel_top + 4), "audio log-mel", font=font, fill=TEXT)
    draw.text((MARGIN, mel_top + 24), "(low pitch at the bottom)", font=small, fill=MUTED)
    audio_frames_per_chunk = result.log_mel.shape[-1] // num_chunks
    # (mels, T, A): one colour scale for every chunk that has audio, so loudness compares across chunks
    mel_chunks = result.log_mel.reshape(result.log_mel.shape[0], num_chunks, audio_frames_per_chunk)
    heard = mel_chunks[:, result.audio_chunk_mask.astype(bool)]
    low, high = (float(heard.min()), float(heard.max())) if heard.size else (0.0, 0.0)
    for chunk in range(num_chunks):
        left = MARGIN + LABEL_WIDTH + chunk * (chunk_width + CHUNK_GAP)
        start, end = result.chunk_windows[chunk]
        draw.text((left, MARGIN + FONT_SIZE + 8), f"chunk {chunk + 1}: {start:.2f}-{end:.2f} s", font=font, fill=TEXT)
        for index in range(frames_per_chunk):
            frame_index = chunk * frames_per_chunk + index
            row, column = divmod(index, FRAMES_PER_ROW)
            x, y = left + column * FRAME_SIDE, top + row * (FRAME_SIDE + SMALL_FONT_SIZE + 4)
            frame = Image.fromarray(frames[frame_index]).resize((FRAME_SIDE - 2, FRAME_SIDE - 2), Image.NEAREST)
            picture.paste(frame, (x + 1, y))
            draw.text((x + 2, y + FRAME_SIDE - 1), f"{frame_times[frame_index]:.2f} s", font=small, fill=MUTED)
        if result.audio_chunk_mask[chunk]:
            mel_image = Image.fromarray(_colorize(mel_chunks[::-1, chunk], low, high))  # low mel bins at the bottom
            picture.paste(mel_image.resize((chunk_width - 2, LOG_MEL_HEIGHT), Image.NEAREST), (left + 1, mel_top))
        else:
            draw.rectangle((left + 1, mel_top, left + chunk_width - 1, mel_top + LOG_MEL_HEIGHT), fill=BAR_TRACK)
            draw.text((left + 8, mel_top + LOG_MEL_HEIGHT // 2 - 8), "no audio", font=font, fill=MUTED)

    for row, (question, answer) in enumerate(zip(result.questions, result.answers)):
        y = bars_top + row * BAR_ROW_HEIGHT
        draw.text((MARGIN, y + 2), _fit(question, small, LABEL_WIDTH - 8), font=small, fill=MUTED)
        draw.text((MARGIN, y + 17), _fit(f"A: {answer}", font, LABEL_WIDTH - 8), font=font, fill=TEXT)
        for chunk, share in enumerate(result.chunk_attention[row]):
            left = MARGIN + LABEL_WIDTH + chunk * (chunk_width + CHUNK_GAP)
            draw.rectangle((left, y + 6, left + chunk_width - 60, y + BAR_ROW_HEIGHT - 6), fill=BAR_TRACK)
            bar_end = left + round((chunk_width - 60) * float(share))
            if bar_end > left:
                draw.rectangle((left, y + 6, bar_end, y + BAR_ROW_HEIGHT - 6), fill=BAR)
            draw.text((left + chunk_width - 54, y + 11), f"{100 * share:.0f}%", font=font, fill=TEXT)
    return picture


def answers_html(result: VideoAnswers) -> str:
    """The answers as an HTML table: question, answer, and the share of attention per chunk with its time span."""
    header = "".join(
        f"<th>chunk {chunk + 1}<br><small>{start:.2f}-{end:.2f} s</small></th>"
        for chunk, (start, end) in enumerate(result.chunk_windows)
    )
    rows = []
    for question, answer, shares in zip(result.questions, result.answers, result.chunk_attention):
        cells = "".join(
            f'<td class="attention" style="background: rgba(230, 110, 30, {float(share):.2f})">{100 * share:.0f}%</td>'
            for share in shares
        )
        rows.append(
            f'<tr><td class="question">{html.escape(question)}</td>'
            f'<td class="answer"><b>{html.escape(answer)}</b></td>{cells}</tr>'
        )
    return (
        '<table class="mirasol-answers"><thead><tr><th>question</th><th>answer</th>'
        f"{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        "<p><small>Percentages: the share of the text decoder's cross-attention that went to each chunk while it "
        "wrote the answer (averaged over layers, heads and the answer's tokens).</small></p>"
    )


def write_sample_clip(folder) -> tuple[str, list[str], list[str]]:
    """Write the README's sample clip (a synthetic clip the default model never saw) as an mp4 in `folder`.

    Returns the path, its questions and their true answers.
    """
    from .synthetic import generate_dataset, write_mp4

    clip = generate_dataset(1, seed=SAMPLE_SEED)[0]
    path = write_mp4(clip, Path(folder) / f"sample_{SAMPLE_SEED}.mp4")
    return str(path), [q.question for q in clip.questions], [q.answer for q in clip.questions]


def _model_name(model: str) -> str:
    model = (model or "").strip()
    return DEFAULT_MODEL if model in ("", DEFAULT_MODEL_LABEL) else model


def ask(video, questions_text: str, model: str):
    """The page's handler: (status markdown, answers HTML, chunk picture) for a video and questions, one a line.
    Problems with the input are reported in the status, never as a traceback."""
    questions = [line.strip() for line in (questions_text or "").splitlines() if line.strip()]
    if not video:
        return "Upload or record a video first.", "", None
    if not questions:
        return "Write at least one question, one per line.", "", None
    try:
        answerer = load_answerer(_model_name(model))
    except (OSError, ValueError) as error:
        return f"**Could not load the model** `{html.escape(model)}`: {html.escape(str(error))}", "", None
    try:
        result = answer_video(answerer, video, questions)
    except ValueError as error:  # the processor's MediaError names the file and what is wrong with it
        return f"**Could not use this video:** {html.escape(str(error))}", "", None
    status = (
        f"Answered {len(questions)} question(s) about {len(result.clip.frames)} frames "
        f"in {len(result.chunk_windows)} chunks."
    )
    return status, answers_html(result), chunk_picture(result)


@lru_cache(maxsize=2)
def load_watch_model(model: str = DEFAULT_MODEL):
    """`(model, processor)` as `mirasol-hf watch` loads them (a window of the model's `num_chunks`), kept."""
    from .streaming.watch import load_watch_model as load

    return load(model)


@dataclass
class WatchedAnswers:
    """Answers as of one chunk of a stream: `answers` (`MirasolWatchAnswer`s, one per question) and
    `chunk_attention` `(Q, covered chunks)`, the share of cross-attention per chunk (see `chunk_attention`)."""

    answers: list
    chunk_attention: np.ndarray


class WatchSession:
    """One page's stream: the watcher encoding it, its questions, when to ask, and the answers so far."""

    def __init__(self, watcher, source: str, questions: list[str], every: float):
        from .streaming.watch import AskSchedule

        self.watcher, self.source, self.questions = watcher, source, questions
        self.schedule = AskSchedule(every)
        self.results: list[WatchedAnswers] = []

    def ask(self, at_chunk: int | None = None) -> None:
        answers, generated, prompt_length = self.watcher.ask(self.questions, at_chunk=at_chunk, return_generated=True)
        covered = answers[0].last_chunk - answers[0].first_chunk + 1
        eos = self.watcher.processor.tokenizer.eos_token_id
        self.results.append(WatchedAnswers(answers, chunk_attention(generated, prompt_length, eos, covered)))

    def stop(self) -> None:
        self.watcher.stop(WATCH_STOP_TIMEOUT)


def watch_html(results: list[WatchedAnswers]) -> str:
    """Answers of a stream, newest first: the chunks and seconds each covers, question, answer, attention per chunk."""
    rows = []
    for result in reversed(results):
        for answer, shares in zip(result.answers, result.chunk_attention):
            cells = "".join(
                f'<td class="attention" style="background: rgba(230, 110, 30, {float(share):.2f})">'
                f"<small>chunk {answer.first_chunk + offset + 1}</small><br>{100 * share:.0f}%</td>"
                for offset, share in enumerate(shares)
            )
            rows.append(
                f'<tr data-first-chunk="{answer.first_chunk}" data-last-chunk="{answer.last_chunk}">'
                f'<td class="span">chunks {answer.first_chunk + 1}-{answer.last_chunk + 1}<br>'
                f"<small>{answer.start_time:.1f}-{answer.end_time:.1f} s</small></td>"
                f'<td class="question">{html.escape(answer.question)}</td>'
                f'<td class="answer"><b>{html.escape(answer.text)}</b></td>{cells}</tr>'
            )
    if not rows:
        return ""
    return (
        '<table class="mirasol-answers"><thead><tr><th>stream span</th><th>question</th><th>answer</th>'
        f"<th>attention per chunk</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _markdown_text(text) -> str:
    """`text` for a Markdown status: HTML tags escaped, quotes left as they are (an autolinked URL would show an
    escaped quote after it literally)."""
    return html.escape(str(text), quote=False)


def _markdown_code(text: str) -> str:
    """`text` as inline code in a Markdown status (shown as typed; backticks in it dropped)."""
    return "`" + str(text).replace("`", "") + "`"


def _watch_status(session: WatchSession) -> str:
    watcher = session.watcher
    chunks = f"{watcher.num_chunks} chunk(s) of {WATCH_CHUNK_SECONDS:g} s"
    if watcher.error is not None:
        from .streaming.live import LiveSourceError

        known = isinstance(watcher.error, (LiveSourceError, ValueError, OSError))
        message = str(watcher.error) if known else f"{type(watcher.error).__name__}: {watcher.error}"
        prefix = "Could not watch this stream" if not watcher.num_chunks else f"The stream failed after {chunks}"
        return f"**{prefix}:** {_markdown_text(message)}"
    if watcher.running:
        return f"Watching {_markdown_code(session.source)}: {chunks} so far."
    if not watcher.num_chunks:
        return f"**Could not watch this stream:** {_markdown_code(session.source)} gave no chunk."
    return f"Done: {chunks} watched."


def _refuse_source(source: str, local_files: bool) -> str | None:
    """Why `source` is not followed, or None: a URL with a scheme FFmpeg does not stream from the network, or a file
    on the server when `local_files` is off (a public Space must not read its own files for visitors)."""
    scheme = source.split("://", 1)[0].lower() if "://" in source else None
    if scheme is None or scheme == "file":
        return None if local_files else "this app follows network streams only (http://, udp://, ...), not files."
    if scheme not in NETWORK_STREAM_SCHEMES:
        return f"{scheme}:// is not a stream address; use one of: {', '.join(NETWORK_STREAM_SCHEMES)}."
    return None


def start_watching(source: str, questions_text: str, every, model: str, session: WatchSession | None,
                   local_files: bool = True):
    """The tab's Start: (session, status, answers HTML, timer active). A previous stream of the page is stopped.
    `local_files=False` refuses paths and file:// addresses."""
    from .streaming import LiveReader, MirasolWatcher

    if session is not None:
        session.stop()
    source = (source or "").strip()
    questions = [line.strip() for line in (questions_text or "").splitlines() if line.strip()]
    if not source:
        return None, "Give a stream's address: http://..., udp://... or a file being written.", "", False
    if not questions:
        return None, "Write at least one question, one per line.", "", False
    if every is None or not float(every) > 0:
        return None, "Ask every: give a positive number of seconds.", "", False
    refusal = _refuse_source(source, local_files)
    if refusal:
        return None, f"**Could not watch this stream:** {_markdown_text(refusal)}", "", False
    try:
        model, processor = load_watch_model(_model_name(model))
    except (OSError, ValueError) as error:
        return None, f"**Could not load the model** {_markdown_code(model)}: {_markdown_text(error)}", "", False
    try:
        reader = LiveReader(
            source,
            chunk_seconds=WATCH_CHUNK_SECONDS,
            frames_per_chunk=processor.frames_per_chunk,
            size=processor.image_size,
            sampling_rate=processor.feature_extractor.sampling_rate,
        )
    except ValueError as error:
        return None, f"**Could not watch this stream:** {_markdown_text(error)}", "", False
    watcher = MirasolWatcher(model, processor, reader, max_new_tokens=MAX_NEW_TOKENS).start()
    session = WatchSession(watcher, source, questions, float(every))
    return session, _watch_status(session), "", True


def refresh_watching(session: WatchSession | None):
    """The tab's timer: asks as of each chunk that is due, then (status, answers HTML, timer still active)."""
    if session is None:
        return gr_skip(), gr_skip(), False
    finished = not session.watcher.running  # read first: chunks encoded before it count as due below
    for index in session.schedule.due(session.watcher):
        session.ask(at_chunk=index)
    if finished and session.schedule.due_at_end(session.watcher):
        session.ask()  # the state at the end of the source
    return _watch_status(session), watch_html(session.results), not finished


def stop_watching(session: WatchSession | None):
    """The tab's Stop: stops the watcher thread; (status, timer active)."""
    if session is None:
        return "Nothing is being watched.", False
    session.stop()
    return f"Stopped after {session.watcher.num_chunks} chunk(s).", False


def gr_skip():
    import gradio as gr

    return gr.skip()


CSS = """
.mirasol-answers { border-collapse: collapse; margin-top: 4px; }
.mirasol-answers th, .mirasol-answers td { border: 1px solid #ddd; padding: 4px 10px; text-align: center; }
.mirasol-answers td.question { text-align: left; }
#video video { max-height: 300px; }
"""


def build_demo(model: str = DEFAULT_MODEL, sample_folder=None, model_choice: bool = True,
               watch_local_files: bool = True):
    """The Gradio app (a `gr.Blocks`) answering with `model` unless the page's model box says otherwise.

    `sample_folder` is where the sample clip is written (a temporary folder by default). `model_choice=False` hides
    the model box (a public Space should not let visitors make it download any checkpoint);
    `watch_local_files=False` makes the stream tab refuse files on the server (paths, file://).
    """
    import gradio as gr

    sample_folder = sample_folder or tempfile.mkdtemp(prefix="mirasol_app_")
    model_label = DEFAULT_MODEL_LABEL if model == DEFAULT_MODEL else model

    def load_sample():
        path, questions, answers = write_sample_clip(sample_folder)
        truth = ", ".join(f"{question} **{answer}**" for question, answer in zip(questions, answers))
        return path, "\n".join(questions), f"Sample clip loaded (true answers: {truth}). Press **Answer**."

    with gr.Blocks(title="Mirasol: ask a video", analytics_enabled=False) as demo:
        with gr.Tabs():
            with gr.Tab("Ask a video", id="ask-tab"):
                gr.Markdown(
                    "## Mirasol: ask a video\n"
                    "Upload or record a video, write questions (one per line) and press **Answer**. The model cuts "
                    "the video into chunks of frames and audio; below the answers, each chunk's frames, its audio "
                    "log-mel, and how much each answer attended to it. The default model knows only synthetic clips "
                    "of coloured shapes and sounds: press **Load the sample clip** to try it."
                )
                with gr.Row():
                    video = gr.Video(
                        label="Video", sources=["upload", "webcam"], include_audio=True, elem_id="video"
                    )
                    with gr.Column():
                        questions = gr.Textbox(label="Questions, one per line", lines=5, elem_id="questions")
                        model_box = gr.Textbox(
                            label="Model: a checkpoint folder or Hub id ('default': the model shipped with mirasol-hf)",
                            value=model_label,
                            visible=model_choice,
                            elem_id="model",
                        )
                        with gr.Row():
                            sample_button = gr.Button("Load the sample clip", elem_id="sample")
                            ask_button = gr.Button("Answer", variant="primary", elem_id="ask")
                status = gr.Markdown(elem_id="status")
                answers = gr.HTML(elem_id="answers")
                picture = gr.Image(
                    label="Chunks: frames, audio log-mel, attention per answer", show_label=False, type="pil",
                    format="png", elem_id="chunks",
                )
                sample_button.click(load_sample, outputs=[video, questions, status])
                ask_button.click(ask, inputs=[video, questions, model_box], outputs=[status, answers, picture])
            with gr.Tab("Watch a stream", id="watch-tab", elem_id="watch-tab"):
                _watch_tab(gr, demo, model_box, watch_local_files)
    demo.mirasol_css = CSS
    demo.mirasol_allowed_paths = [sample_folder]
    return demo


def _watch_tab(gr, demo, model_box, local_files: bool) -> None:
    """The "Watch a stream" tab's components and events (inside `build_demo`'s Blocks)."""
    gr.Markdown(
        "## Watch a stream\n"
        "Give a live source (`http://...`, `udp://...`, or a file being written, e.g. an MPEG-TS), questions (one "
        f"per line) and how often to ask, in seconds of the stream. The stream is cut into {WATCH_CHUNK_SECONDS:g} s "
        "chunks and encoded as it plays; each answer sees the last chunks the model was trained on and says which "
        "span it covers, with the share of attention each of those chunks got. Closing the page stops the watcher."
    )
    with gr.Row():
        with gr.Column():
            source = gr.Textbox(label="Stream address", placeholder="http://127.0.0.1:8080/live.ts", elem_id="source")
            every = gr.Number(label="Ask every (seconds of the stream)", value=4, minimum=0.1, elem_id="every")
        watch_questions = gr.Textbox(label="Questions, one per line", lines=4, elem_id="watch-questions")
    with gr.Row():
        start_button = gr.Button("Start watching", variant="primary", elem_id="start-watch")
        stop_button = gr.Button("Stop", elem_id="stop-watch")
    watch_status = gr.Markdown(elem_id="watch-status")
    watch_answers = gr.HTML(elem_id="watch-answers")
    # Per page. Gradio deletes a closed page's state an hour later (then its watcher is stopped too); the page's
    # unload event stops it at once, through `watching` (unload handlers get no inputs, only the session id).
    session = gr.State(None, delete_callback=lambda session: session is not None and session.stop())
    timer = gr.Timer(WATCH_REFRESH_SECONDS, active=False)
    watching: dict[str, WatchSession] = {}

    def start(source_text, questions_text, every_seconds, model, current, request: gr.Request):
        new_session, status, answers, active = start_watching(source_text, questions_text, every_seconds, model,
                                                              current, local_files)
        watching.pop(request.session_hash, None)
        if new_session is not None:
            watching[request.session_hash] = new_session
        return new_session, status, answers, gr.Timer(active=active)

    def page_closed(request: gr.Request):
        closed = watching.pop(request.session_hash, None)
        if closed is not None:
            closed.stop()

    # Gradio passes the request to a parameter annotated gr.Request (this module's annotations are strings).
    start.__annotations__["request"] = page_closed.__annotations__["request"] = gr.Request

    def refresh(current):
        status, answers, active = refresh_watching(current)
        return status, answers, gr.Timer(active=active)

    def stop(current):
        status, active = stop_watching(current)
        return status, gr.Timer(active=active)

    start_button.click(start, inputs=[source, watch_questions, every, model_box, session],
                       outputs=[session, watch_status, watch_answers, timer])
    timer.tick(refresh, inputs=[session], outputs=[watch_status, watch_answers, timer])
    stop_button.click(stop, inputs=[session], outputs=[watch_status, timer])
    demo.unload(page_closed)


def launch(demo, host: str = "127.0.0.1", port: int = 7860, **launch_kwargs):
    """Serve `demo` locally, with no share link and no analytics."""
    return demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        css=demo.mirasol_css,
        allowed_paths=demo.mirasol_allowed_paths,
        footer_links=[],
        **launch_kwargs,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help="checkpoint folder or Hub id (default: the shipped model)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=7860)
    args = parser.parse_args(argv)
    launch(build_demo(args.model), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
