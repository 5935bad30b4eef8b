"""Answer questions about a video.

    python examples/answer.py                          # a generated sample clip, its questions, and the true answers
    python examples/answer.py VIDEO "question" [...]   # your own video
    python examples/answer.py --model PATH VIDEO "question"

With no video given, the script writes a synthetic clip (coloured shapes and sounds, see docs/synthetic.md) to an
mp4 file and asks the questions the generator made for it, so the answers can be checked.

No trained default model ships with the package yet (see docs/synthetic.md): without `--model`, the script builds
a tiny model with random weights, so the whole path (reading the mp4 and its audio, encoding, generating) runs,
but the answers are not meaningful.
"""

import argparse
import tempfile
from pathlib import Path

from transformers import pipeline

from mirasol_hf import MirasolConfig, MirasolForConditionalGeneration, MirasolProcessor, build_tokenizer
from mirasol_hf.synthetic import ANSWER_VOCABULARY, generate_dataset, write_mp4

SAMPLE_SEED = 2024
UNTRAINED_CHUNKS = 4
UNTRAINED_FRAMES_PER_CHUNK = 8


def untrained_model(folder: Path) -> str:
    """A tiny random Mirasol model with a tokenizer for the synthetic questions, saved to `folder`."""
    texts = [q.question for clip in generate_dataset(20, seed=SAMPLE_SEED) for q in clip.questions]
    texts += [answer for answers in ANSWER_VOCABULARY.values() for answer in answers]
    tokenizer = build_tokenizer(texts, vocab_size=300)
    config = MirasolConfig.from_preset(
        "tiny",
        num_chunks=UNTRAINED_CHUNKS,
        frames_per_chunk=UNTRAINED_FRAMES_PER_CHUNK,
        text_config={"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
                     "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id},
    )
    MirasolForConditionalGeneration(config).save_pretrained(folder)
    MirasolProcessor.from_model_config(config, tokenizer).save_pretrained(folder)
    return str(folder)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", nargs="?", help="a video file; omit to use a generated sample clip")
    parser.add_argument("questions", nargs="*", help="questions about the video")
    parser.add_argument("--model", help="checkpoint folder or Hub id (default: a tiny untrained model)")
    args = parser.parse_args()
    if args.video and not args.questions:
        parser.error("give at least one question about the video")

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        model = args.model
        if model is None:
            print("No trained default model ships yet: using a tiny model with random weights (answers are noise).\n")
            model = untrained_model(folder / "untrained")
        answerer = pipeline("video-question-answering", model=model)

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
