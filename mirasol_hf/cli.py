"""Command line: `mirasol-hf answer VIDEO "question" [--model PATH] [--frames N] [--json]`;
`mirasol-hf preprocess ...` (a training cache, see mirasol_hf.preprocess)."""

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
    commands.add_parser("preprocess", help="decode a data set's videos once into a training cache (see --help)")
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
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["preprocess"]:
        # Its options and imports (datasets, the training code) live in mirasol_hf.preprocess.
        from . import preprocess

        parser = argparse.ArgumentParser(prog="mirasol-hf preprocess", description=preprocess.__doc__,
                                         formatter_class=argparse.RawDescriptionHelpFormatter)
        preprocess.add_arguments(parser)
        return preprocess.run(parser.parse_args(argv[1:]))
    args = _parser().parse_args(argv)
    return answer(args)


if __name__ == "__main__":
    sys.exit(main())
