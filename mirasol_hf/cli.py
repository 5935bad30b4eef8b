"""Command line: `mirasol-hf answer VIDEO "question" [--model PATH] [--frames N] [--json]`, and
`mirasol-hf watch SOURCE --ask "question" [--every 5s]` for a live source (see `mirasol_hf.streaming.watch`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm.auto import tqdm


def _default_model() -> str | None:
    try:
        from .default_model import DEFAULT_MODEL
    except ImportError:
        return None
    return DEFAULT_MODEL if Path(DEFAULT_MODEL).is_dir() else None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mirasol-hf", description="Audio-video question answering with Mirasol.")
    commands = parser.add_subparsers(dest="command", required=True)
    answer = commands.add_parser("answer", help="answer questions about a video")
    answer.add_argument("video", help="path of a video file (mp4, mkv, webm, ...)")
    answer.add_argument("questions", nargs="+", help="one or more questions")
    answer.add_argument("--model", help="checkpoint folder or Hub id (default: the model shipped with the package)")
    answer.add_argument("--frames", type=int, help="frames to sample (a multiple of the model's frames per chunk)")
    answer.add_argument("--max-new-tokens", type=int, default=16, help="longest answer, in tokens")
    answer.add_argument("--num-beams", type=int, default=1, help="beam search width (1: greedy)")
    answer.add_argument("--json", action="store_true", help="print JSON instead of text")
    answer.add_argument("--quiet", action="store_true", help="no progress bar")
    watch = commands.add_parser("watch", help="follow a live source and answer questions as it plays")
    watch.add_argument("source", help="a file being written, '-' for stdin, or a URL (http://, udp://, ...)")
    watch.add_argument("--ask", action="append", required=True, help="a question (repeat for several)")
    watch.add_argument("--every", help="ask every so much of the source's time (5s, 500ms, 2m); default: at its end")
    watch.add_argument("--model", help="checkpoint folder or Hub id (default: the model shipped with the package)")
    watch.add_argument("--chunk-seconds", type=float, default=1.0, help="seconds of the source per chunk")
    watch.add_argument("--context-chunks", type=int, help="chunks a question sees (default: the model's num_chunks)")
    watch.add_argument("--stall-timeout", type=float, default=10.0, help="seconds without data before giving up")
    watch.add_argument("--format", help="container format, for sources FFmpeg cannot probe (e.g. mpegts)")
    watch.add_argument("--max-new-tokens", type=int, default=16, help="longest answer, in tokens")
    watch.add_argument("--json", action="store_true", help="print one JSON object per answer")
    return parser


def _fail(message: str) -> int:
    print(f"mirasol-hf: error: {message}", file=sys.stderr)
    return 2


def answer(args) -> int:
    video = Path(args.video)
    if not video.is_file():
        return _fail(f"no such video file: {video}")
    model_path = args.model or _default_model()
    if model_path is None:
        return _fail("no default model is shipped with this installation; pass --model PATH")

    # Imported here so that `--help` and argument errors answer at once.
    from transformers import pipeline

    from . import pipeline as _registers_the_task  # noqa: F401

    try:
        answerer = pipeline("video-question-answering", model=model_path)
    except (OSError, ValueError) as error:
        return _fail(f"cannot load a Mirasol model from {model_path}: {error}")
    frames = args.frames or answerer.processor.num_frames
    progress = tqdm(total=frames, desc="decoding frames", unit="frame", disable=args.quiet, file=sys.stderr)
    try:
        answers = answerer(
            str(video),
            args.questions,
            num_frames=args.frames,
            progress=progress.update,
            max_new_tokens=args.max_new_tokens,
            num_beams=args.num_beams,
            do_sample=False,
        )
    except ValueError as error:
        return _fail(str(error))
    finally:
        progress.close()
    replies = [entry["answer"] for entry in answers]
    if args.json:
        print(json.dumps([{"question": q, "answer": a} for q, a in zip(args.questions, replies)], indent=2))
    else:
        for question, reply in zip(args.questions, replies):
            print(reply if len(replies) == 1 else f"{question} {reply}")
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "watch":
        from .streaming.watch import watch_command  # imported here so that `--help` answers at once

        return watch_command(args, _default_model())
    return answer(args)


if __name__ == "__main__":
    sys.exit(main())
