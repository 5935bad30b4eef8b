"""Answer questions about a video.

    python examples/answer.py                          # a generated sample clip, its questions, and the true answers
    python examples/answer.py VIDEO "question" [...]   # your own video
    python examples/answer.py --model PATH VIDEO "question"

Without `--model`, the model is `mirasol_hf.DEFAULT_MODEL`: a small Mirasol shipped inside the package, trained by
examples/train_synthetic.py on synthetic clips (coloured shapes and sounds, see docs/synthetic.md), so it answers
questions about such clips only. With no video given, the script writes a synthetic clip it never saw to an mp4 file
and asks the questions the generator made for it, so the answers can be checked.
"""

import argparse
import tempfile
from pathlib import Path

from transformers import pipeline

from mirasol_hf import DEFAULT_MODEL
from mirasol_hf.synthetic import generate_dataset, write_mp4

SAMPLE_SEED = 2024  # the training script uses seeds 0 (training) and 1 (evaluation)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", nargs="?", help="a video file; omit to use a generated sample clip")
    parser.add_argument("questions", nargs="*", help="questions about the video")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="checkpoint folder or Hub id (default: the shipped model)")
    args = parser.parse_args()
    if args.video and not args.questions:
        parser.error("give at least one question about the video")

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        answerer = pipeline("video-question-answering", model=args.model)

        if args.video:
            for question, reply in zip(args.questions, answerer(args.video, args.questions, max_new_tokens=4)):
                print(f"Q: {question}\nA: {reply['answer']}\n")
            return

        clip = generate_dataset(1, seed=SAMPLE_SEED)[0]
        video = write_mp4(clip, folder / "sample.mp4")
        print(f"Wrote a {clip.duration:.0f} s sample clip with audio; asking its {len(clip.questions)} questions.\n")
        replies = answerer(video, [question.question for question in clip.questions], max_new_tokens=4)
    correct = 0
    for question, reply in zip(clip.questions, replies):
        right = reply["answer"] == question.answer
        correct += right
        mark = "right" if right else f"wrong, the answer is {question.answer!r}"
        print(f"[{question.kind}] Q: {question.question}\n    A: {reply['answer']!r}  ({mark})")
    print(f"\n{correct}/{len(clip.questions)} answered correctly")


if __name__ == "__main__":
    main()
