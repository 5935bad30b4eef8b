"""Command line: `mirasol-hf answer VIDEO "question" [--model PATH] [--frames N] [--json] [--quiet]`.

`mirasol-hf preprocess ...`: a training cache (see mirasol_hf.preprocess).
`mirasol-hf watch SOURCE --ask "question" [--every 5s]`: a live source (see mirasol_hf.streaming.watch).

Each subcommand is a `Command`: a function adding its arguments and a function running it, which imports what it
needs itself, so `--help` and argument errors answer without loading torch models. Only the command being run gets
its arguments built, so a command whose options come from a heavy module costs nothing to the others. Add one by
appending to `COMMANDS`. Every bad argument ends in one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

PROG = "mirasol-hf"
USAGE_ERROR = 2
# "https://...", "rtsp://...": given to the reader as they are, never as a path (which would fold "//" into "/").
URL_PATTERN = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


class UsageError(Exception):
    """A bad argument: reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


@dataclass
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _add_answer_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", help="a video or audio file (mp4, mkv, webm, wav, m4a, ...) or a URL")
    parser.add_argument("questions", nargs="+", help="one or more questions")
    parser.add_argument("--model", help="checkpoint folder or Hub id (default: the model shipped with the package)")
    parser.add_argument("--frames", type=positive_int, help="frames to sample (a multiple of the model's frames per chunk)")
    parser.add_argument("--max-new-tokens", type=positive_int, default=16, help="longest answer, in tokens")
    parser.add_argument("--num-beams", type=positive_int, default=1, help="beam search width (1: greedy)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _default_model() -> str | None:
    from .default_model import DEFAULT_MODEL

    return DEFAULT_MODEL if Path(DEFAULT_MODEL).is_dir() else None


def _check_model(model: str) -> None:
    """A folder must exist and hold a checkpoint; anything else must read as a Hub id."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise UsageError(f"--model {model}: the folder has no config.json (not a saved checkpoint)")
        return
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    looks_like_path = model.startswith((".", "/", "~")) or "\\" in model or model.count("/") > 1
    try:
        validate_repo_id(model)
    except HFValidationError:
        looks_like_path = True
    if looks_like_path:
        raise UsageError(f"--model {model}: no such folder (and not a Hub id like 'user/model')")


@contextmanager
def _quiet(enabled: bool):
    """No progress bars or info logs from transformers and the Hub ("Loading weights", downloads) while inside."""
    if not enabled:
        yield
        return
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from transformers.utils import logging

    verbosity, bars, hub_bars_off = logging.get_verbosity(), logging.is_progress_bar_enabled(), are_progress_bars_disabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    disable_progress_bars()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()
        if not hub_bars_off:
            enable_progress_bars()


def run_answer(args: argparse.Namespace) -> int:
    video = args.video
    if not URL_PATTERN.match(video) and not Path(video).is_file():
        raise UsageError(f"no such video file: {video}")
    model_path = args.model or _default_model()
    if model_path is None:
        raise UsageError("no default model is shipped with this installation; pass --model PATH")
    _check_model(model_path)
    with _quiet(args.quiet):
        return _answer(args, video, model_path)


def _answer(args: argparse.Namespace, video: str, model_path: str) -> int:
    from tqdm.auto import tqdm
    from transformers import pipeline

    try:
        answerer = pipeline("video-question-answering", model=model_path)
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot load a Mirasol model from {model_path}: {error}") from None
    frames = args.frames or answerer.processor.num_frames
    progress = tqdm(total=frames, desc="decoding frames", unit="frame", disable=args.quiet, file=sys.stderr)
    try:
        answers = answerer(
            video,
            args.questions,
            num_frames=args.frames,
            progress=progress.update,
            max_new_tokens=args.max_new_tokens,
            num_beams=args.num_beams,
            do_sample=False,
        )
    except ValueError as error:  # MediaError included: the file named, what is wrong with it
        raise UsageError(str(error)) from None
    finally:
        progress.close()
    replies = [entry["answer"] for entry in answers]
    if args.json:
        print(json.dumps([{"question": q, "answer": a} for q, a in zip(args.questions, replies)], indent=2))
    else:
        for question, reply in zip(args.questions, replies):
            print(reply if len(replies) == 1 else f"{question} {reply}")
    return 0


def _add_preprocess_arguments(parser: argparse.ArgumentParser) -> None:
    from . import preprocess  # datasets and the training code: imported only for this command

    parser.description = preprocess.__doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    preprocess.add_arguments(parser)


def run_preprocess(args: argparse.Namespace) -> int:
    from . import preprocess

    return preprocess.run(args)


def _add_watch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="a file being written, '-' for stdin, or a URL (http://, udp://, ...)")
    parser.add_argument("--ask", action="append", required=True, help="a question (repeat for several)")
    parser.add_argument("--every", help="ask every so much of the source's time (5s, 500ms, 2m); default: at its end")
    parser.add_argument("--model", help="checkpoint folder or Hub id (default: the model shipped with the package)")
    parser.add_argument("--chunk-seconds", type=float, default=1.0, help="seconds of the source per chunk")
    parser.add_argument("--context-chunks", type=positive_int, help="chunks a question sees (default: the model's num_chunks)")
    parser.add_argument("--stall-timeout", type=float, default=10.0, help="seconds without data before giving up")
    parser.add_argument("--format", help="container format, for sources FFmpeg cannot probe (e.g. mpegts)")
    parser.add_argument("--max-new-tokens", type=positive_int, default=16, help="longest answer, in tokens")
    parser.add_argument("--json", action="store_true", help="print one JSON object per answer")


def run_watch(args: argparse.Namespace) -> int:
    from .streaming.watch import watch_command

    if args.model is not None:
        _check_model(args.model)
    return watch_command(args, _default_model())


COMMANDS = [
    Command("answer", "answer questions about a video (or a sound)", _add_answer_arguments, run_answer),
    Command("preprocess", "decode a data set's videos once into a training cache", _add_preprocess_arguments,
            run_preprocess),
    Command("watch", "follow a live source and answer questions as it plays", _add_watch_arguments, run_watch),
]


def build_parser(argv=None) -> argparse.ArgumentParser:
    """The parser; only the subcommand named first in `argv` (all of them when None) gets its arguments."""
    selected = None if argv is None else next((arg for arg in argv if not arg.startswith("-")), "")
    parser = _Parser(prog=PROG, description="Audio-video question answering with Mirasol.")
    subcommands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for command in COMMANDS:
        subparser = subcommands.add_parser(command.name, help=command.help, description=command.help)
        if selected is None or command.name == selected:
            command.add_arguments(subparser)
        subparser.set_defaults(run=command.run)
    return parser


def main(argv=None) -> int:
    try:
        argv = sys.argv[1:] if argv is None else list(argv)
        args = build_parser(argv).parse_args(argv)
        return args.run(args)
    except UsageError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return USAGE_ERROR


if __name__ == "__main__":
    sys.exit(main())
