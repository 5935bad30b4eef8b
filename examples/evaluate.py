"""Evaluate a Mirasol checkpoint on a benchmark: batched generation, open-ended exact match, per question type.

    python examples/evaluate.py --model runs/msrvtt --dataset-format msrvtt_qa \\
        --annotations test_qa.json --video-dir videos/ --output results.json

Answers are normalised before matching (lowercase, punctuation to spaces, articles dropped, whitespace collapsed;
see mirasol_hf.evaluation); `--number-words` and `--contractions` add the VQA evaluation script's steps. NExT-QA's
multiple-choice CSV (columns a0..a4) is scored by ranking the five choices by the model's likelihood, accuracy per
question type. Batches are `--batch-size` clips with all their questions (each clip decoded and encoded once);
`--no-group-by-clip` makes them `--batch-size` questions. The JSON holds the scores and every prediction; a table is
printed.
"""

import argparse
import json

import torch

from mirasol_hf import MirasolForConditionalGeneration, MirasolProcessor
from mirasol_hf.data import DATASET_FORMATS, ON_MISSING_VIDEO, load_video_qa_dataset
from mirasol_hf.evaluation import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_NEW_TOKENS,
    exact_match,
    format_results_table,
    generate_answers,
    rank_choices,
    score_answers,
    score_choices,
)


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="checkpoint folder (model + processor) or Hub id")
    parser.add_argument("--adapter", default=None, help="a LoRA adapter folder to apply to --model")
    parser.add_argument("--dataset-format", required=True, choices=sorted(DATASET_FORMATS))
    parser.add_argument("--annotations", required=True, nargs="+", help="annotation file(s), as for finetune.py")
    parser.add_argument("--video-dir", required=True)
    parser.add_argument("--split", default=None, help="VGG-Sound / Kinetics-Sound: rows of this split")
    parser.add_argument("--video-map", default=None, help="NExT-QA: map_vid_vidorID.json")
    parser.add_argument("--on-missing-video", default="error", choices=ON_MISSING_VIDEO)
    parser.add_argument("--max-samples", type=int, default=None, help="evaluate the first N rows only")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="clips (questions with "
                        "--no-group-by-clip) per batch")
    parser.add_argument("--no-group-by-clip", dest="group_by_clip", action="store_false",
                        help="one copy of the clip per question (decoded and encoded once per question)")
    parser.add_argument("--number-words", action="store_true", help="number words zero..ten as digits (VQA)")
    parser.add_argument("--contractions", action="store_true", help="drop apostrophes inside words (VQA)")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers decoding videos")
    parser.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    parser.add_argument("--num-beams", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", default=None, help="write scores and predictions to this JSON file")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_arguments(argv)
    dataset = load_video_qa_dataset(
        args.dataset_format,
        args.annotations,
        args.video_dir,
        split=args.split,
        video_map_file=args.video_map,
        on_missing_video=args.on_missing_video,
    )
    if args.max_samples is not None:
        dataset = dataset.select(range(min(args.max_samples, len(dataset))))

    processor = MirasolProcessor.from_pretrained(args.model)
    model = MirasolForConditionalGeneration.from_pretrained(args.model)
    if args.adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, args.adapter).merge_and_unload()
    model.to(args.device)

    question_types = list(dataset["question_type"]) if "question_type" in dataset.column_names else None
    if "choices" in dataset.column_names:
        chosen = rank_choices(model, processor, dataset, batch_size=args.batch_size, num_workers=args.num_workers)
        scores = score_choices(chosen, dataset["answer_index"], question_types)
        predictions = [row["choices"][index] for row, index in zip(dataset, chosen)]
        correct = [index == row["answer_index"] for row, index in zip(dataset, chosen)]
        references = [[row["answer"]] for row in dataset]
    else:
        predictions = generate_answers(
            model,
            processor,
            dataset,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            group_by_clip=args.group_by_clip,
            max_new_tokens=args.max_new_tokens,
            num_beams=args.num_beams,
        )
        # NExT-QA lists further accepted answers; a match with any counts.
        references = [[row["answer"], *row.get("additional_answers", [])] for row in dataset]
        normalization = {"number_words": args.number_words, "contractions": args.contractions}
        scores = score_answers(predictions, references, question_types, **normalization)
        correct = [exact_match(prediction, reference, **normalization) for prediction, reference in
                   zip(predictions, references)]

    print(format_results_table(scores, title=args.dataset_format))
    results = {
        "model": args.model,
        "dataset_format": args.dataset_format,
        "annotations": args.annotations,
        "scores": scores,
        "predictions": [
            {
                "id": row["id"],
                "video": row["video"],
                "question": row["question"],
                "answers": reference,
                "prediction": prediction,
                "question_type": row.get("question_type"),
                "correct": hit,
            }
            for row, reference, prediction, hit in zip(dataset, references, predictions, correct)
        ],
    }
    if args.output is not None:
        with open(args.output, "w", encoding="utf-8") as file:
            json.dump(results, file, indent=2)
    return results


if __name__ == "__main__":
    main()
