"""Evaluate a Mirasol checkpoint on a benchmark: batched generation, open-ended exact match, per question type.

    python examples/evaluate.py --model runs/msrvtt --dataset-format msrvtt_qa \\
        --annotations test_qa.json --video-dir videos/ --output results.json

Answers are normalised before matching (lowercase, punctuation to spaces, articles dropped, whitespace collapsed;
see mirasol_hf.evaluation). The JSON holds the scores and every prediction; a table is printed.
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
    score_answers,
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
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
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

    predictions = generate_answers(
        model,
        processor,
        dataset,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        max_new_tokens=args.max_new_tokens,
        num_beams=args.num_beams,
    )
    # NExT-QA lists further accepted answers; a match with any counts.
    references = [[row["answer"], *row.get("additional_answers", [])] for row in dataset]
    question_types = dataset["question_type"] if "question_type" in dataset.column_names else None
    scores = score_answers(predictions, references, None if question_types is None else list(question_types))

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
                "correct": exact_match(prediction, reference),
            }
            for row, reference, prediction in zip(dataset, references, predictions)
        ],
    }
    if args.output is not None:
        with open(args.output, "w", encoding="utf-8") as file:
            json.dump(results, file, indent=2)
    return results


if __name__ == "__main__":
    main()
