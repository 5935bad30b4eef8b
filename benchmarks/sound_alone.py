"""How well a model answers sound questions from the sound alone, against the same clips with their pictures.

    python benchmarks/sound_alone.py [--model PATH] [--clips 10] [--seed 1]

Generates synthetic clips (`mirasol_hf.synthetic.generate_dataset(clips, seed)`; the default model trained on seed 0,
so seed 1 gives clips it never saw), asks each clip's "audio" and "counting"
questions through the "video-question-answering" pipeline twice: with the clip's frames and waveform, and with the
waveform alone (`{"audio": waveform, "sampling_rate": rate}`, all-False video_chunk_mask). Prints exact match for each,
per question kind, and how often the sound-alone answer is empty.
"""

import argparse
from collections import Counter

from transformers import pipeline

import mirasol_hf
from mirasol_hf.pipeline import EMPTY_ANSWER
from mirasol_hf.synthetic import SOUND_QUESTION_KINDS as SOUND_KINDS, generate_dataset


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=mirasol_hf.DEFAULT_MODEL)
    parser.add_argument("--clips", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1, help="data set seed (the default model trained on seed 0)")
    args = parser.parse_args()
    pipe = pipeline("video-question-answering", model=args.model)
    with_video, sound_alone, empty, total = Counter(), Counter(), Counter(), Counter()
    for clip in generate_dataset(args.clips, args.seed):
        sound = {"audio": clip.waveform, "sampling_rate": clip.sampling_rate}
        for question in (q for q in clip.questions if q.kind in SOUND_KINDS):
            answer_alone = pipe(sound, question.question)["answer"]
            with_video[question.kind] += pipe(clip.as_video_input(), question.question)["answer"] == question.answer
            sound_alone[question.kind] += answer_alone == question.answer
            empty[question.kind] += answer_alone == EMPTY_ANSWER
            total[question.kind] += 1
    print(f"{total.total()} questions ({', '.join(SOUND_KINDS)}) on {args.clips} clips, model {args.model}")
    print("| input | " + " | ".join(SOUND_KINDS) + " | all |\n|---|" + "---|" * (len(SOUND_KINDS) + 1))
    for name, counts in (("frames + sound", with_video), ("sound alone", sound_alone)):
        cells = [f"{counts[kind]}/{total[kind]}" for kind in SOUND_KINDS] + [f"{counts.total()}/{total.total()}"]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"empty sound-alone answers: {empty.total()}")


if __name__ == "__main__":
    main()
