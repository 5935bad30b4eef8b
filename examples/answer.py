"""Answer questions about a video with the model the package ships.

    python examples/answer.py                          # a generated sample clip, its questions, and the true answers
    python examples/answer.py VIDEO "question" [...]   # your own video
    python examples/answer.py --model PATH VIDEO "question"

With no video given, the script writes a synthetic clip (coloured shapes and sounds, see docs/synthetic.md) to an
mp4 file and asks the questions the generator made for it, so the answers can be checked.
"""

import argparse
import tempfile
from pathlib import Path

from transformers import pipeline

import mirasol_hf
from mirasol_hf.synthetic import generate_clip, write_mp4

SAMPLE_SEED = 2024


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", nargs="?", help="a video file; omit to use a generated sample clip")
    parser.add_argument("questions", nargs="*", help="questions about the video")
    parser.add_argument("--model", default=mirasol_hf.DEFAULT_MODEL, help="checkpoint folder or Hub id")
    args = parser.parse_args()

    answerer = pipeline("video-question-answering", model=args.model)
    if args.video:
        if not args.questions:
            parser.error("give at least one question about the video")
        for question, reply in zip(args.questions, answerer(args.video, args.questions)):
            print(f"Q: {question}\nA: {reply['answer']}\n")
        return

    clip = generate_clip(SAMPLE_SEED)
    with tempfile.TemporaryDirectory() as folder:
        video = write_mp4(clip, Path(folder) / "sample.mp4")
        replies = answerer(video, [question.question for question in clip.questions])
    correct = 0
    for question, reply in zip(clip.questions, replies):
        correct += reply["answer"] == question.answer
        mark = "right" if reply["answer"] == question.answer else f"wrong, the answer is {question.answer!r}"
        print(f"[{question.kind}] Q: {question.question}\n    A: {reply['answer']}  ({mark})")
    print(f"\n{correct}/{len(clip.questions)} answered correctly")


if __name__ == "__main__":
    main()
