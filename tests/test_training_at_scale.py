"""From annotation files to an evaluated checkpoint the way it runs at scale: `mirasol-hf preprocess` decodes the
clips once into a cache, examples/finetune.py trains on it with FSDP2 in 2 CPU processes (gloo) under `accelerate
launch`, resumes from a checkpoint, and examples/evaluate.py scores the result. One 2-process run serves several
checks: the loss curve equals a single-process run's, each process holds about half the parameters, and resuming
gives the loss of not stopping."""

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from conftest import REPO, load_example
from dataset_fixtures import write_msrvtt_qa
from mirasol_hf import MirasolForConditionalGeneration, MirasolProcessor
from mirasol_hf.cli import main as cli_main
from mirasol_hf.preprocess import build_processor, load_cache
from mirasol_hf.training import LOSS_COMPONENTS


NUM_VIDEOS, QUESTIONS_PER_VIDEO = 4, 3


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _saved_names(folder: Path) -> set[str]:
    """The names of the tensors in a saved model folder's model.safetensors."""
    with safe_open(folder / "model.safetensors", "pt") as weights:
        return set(weights.keys())


def _launch_fsdp(tmp_path, arguments: list[str]) -> str:
    """examples/finetune.py under `accelerate launch` with examples/accelerate/fsdp.yaml, 2 processes; its output."""
    accelerate = Path(sys.executable).with_name("accelerate")
    launcher = [str(accelerate), "launch"] if accelerate.exists() else [sys.executable, "-m", "accelerate.commands.launch"]
    command = launcher + [
        "--config_file", str(REPO / "examples" / "accelerate" / "fsdp.yaml"), "--num_processes", "2",
        "--mixed_precision", "no", "--main_process_port", str(_free_port()),
        str(REPO / "examples" / "finetune.py"), *arguments,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def _losses(output_dir: Path) -> dict[int, float]:
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return {entry["step"]: entry["loss"] for entry in state["log_history"] if "loss" in entry}


@pytest.fixture(scope="module")
def msrvtt(tmp_path_factory):
    """MSRVTT-QA-format files, one video of which is not a video: (root, annotation file, video folder)."""
    root = tmp_path_factory.mktemp("msrvtt_at_scale")
    annotation, videos = write_msrvtt_qa(root, NUM_VIDEOS, QUESTIONS_PER_VIDEO)
    records = json.loads(annotation.read_text())
    (root / "test_qa.json").write_text(json.dumps(records))  # evaluated on the readable clips
    (videos / f"video{NUM_VIDEOS}.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    records.append({"answer": "red", "category_id": 0, "id": len(records), "question": "what is it?",
                    "video_id": NUM_VIDEOS})
    annotation.write_text(json.dumps(records))
    return root, annotation, videos


def test_preprocess_caches_each_clip_once_and_counts_the_unreadable_video(msrvtt, capsys):
    root, annotation, videos = msrvtt
    status = cli_main([
        "preprocess", "--dataset-format", "msrvtt_qa", "--annotations", str(annotation), "--video-dir", str(videos),
        "--preset", "tiny", "--output", str(root / "cache"), "--num-proc", "2",
    ])
    printed = capsys.readouterr().out
    assert status == 0
    assert f"{NUM_VIDEOS} clips ({NUM_VIDEOS * QUESTIONS_PER_VIDEO} questions) cached" in printed
    assert "1 unreadable video(s) skipped" in printed and f"video{NUM_VIDEOS}.mp4" in printed
    cache = load_cache(root / "cache")
    assert len(cache) == NUM_VIDEOS and len(list((root / "cache").glob("*.arrow"))) >= 1
    # The cache holds what decoding the clip now gives, at the model's size, frames as uint8.
    processor = build_processor("tiny")
    clip = cache[2]
    decoded = processor.decode_videos([clip["video"]])
    assert clip["frames"].dtype == np.uint8 and clip["frames"].shape == decoded["frames"][0].shape
    np.testing.assert_array_equal(clip["frames"], decoded["frames"][0])
    np.testing.assert_allclose(clip["input_features"], decoded["input_features"][0])
    np.testing.assert_array_equal(clip["audio_chunk_mask"], decoded["audio_chunk_mask"][0])
    assert len(clip["question"]) == QUESTIONS_PER_VIDEO == len(clip["answer"])


def test_fsdp_on_two_cpu_processes_shards_matches_one_process_resumes_and_evaluates(tmp_path, msrvtt):
    root, _, videos = msrvtt
    if not (root / "cache").exists():
        pytest.fail("needs the cache of test_preprocess_caches_each_clip_once_and_counts_the_unreadable_video")
    common = [
        "--preset", "tiny", "--vocab-size", "200", "--cache", str(root / "cache"), "--max-steps", "3",
        "--logging-steps", "1", "--save-steps", "2", "--report-to", "none", "--disable-tqdm", "true", "--seed", "0",
        "--dataloader-num-workers", "1",
    ]
    sharded = tmp_path / "fsdp"
    output = _launch_fsdp(tmp_path, common + ["--output-dir", str(sharded), "--per-device-train-batch-size", "1"])

    # Each process holds its half of the parameters (FSDP2 shards every tensor along its first dimension).
    held = {int(rank): (int(own.replace(",", "")), int(total.replace(",", ""))) for rank, own, total in
            re.findall(r"FSDP process (\d): holds ([\d,]+) of ([\d,]+) parameter values", output)}
    assert sorted(held) == [0, 1], output[-2000:]
    total = held[0][1]
    for own, _ in held.values():
        assert 0.45 * total < own < 0.55 * total
    assert held[0][0] + held[1][0] >= total

    # The same training in one process, 2 clips a step: the loss curve of the 2 x 1 clips sharded run.
    single = tmp_path / "single"
    load_example("finetune").main(common + ["--output-dir", str(single), "--per-device-train-batch-size", "2",
                                            "--use-cpu"])
    sharded_losses, single_losses = _losses(sharded), _losses(single)
    assert sorted(sharded_losses) == [1, 2, 3]
    for step in (1, 2, 3):
        assert sharded_losses[step] == pytest.approx(single_losses[step], rel=1e-5), step
    assert sharded_losses[3] != pytest.approx(sharded_losses[1], rel=1e-3)  # it trains: the comparison is not vacuous
    state = json.loads((sharded / "trainer_state.json").read_text())
    assert set(LOSS_COMPONENTS) <= set(state["log_history"][0])

    # Stopped after step 2 and resumed from its checkpoint: step 3 as if it had not stopped.
    resumed = tmp_path / "resumed"
    _launch_fsdp(tmp_path, common + ["--output-dir", str(resumed), "--per-device-train-batch-size", "1",
                                     "--resume-from-checkpoint", str(sharded / "checkpoint-2")])
    assert _losses(resumed)[3] == pytest.approx(sharded_losses[3], rel=1e-5)

    # The checkpoint is an ordinary model folder under the model's own class, and it evaluates. It holds the tensors
    # of the single-process save: the state dict gathered from the shards holds a copy of the tied LM head, which
    # save_pretrained (that knows ties by shared storage) would write as a tensor of its own.
    assert _saved_names(sharded) == _saved_names(single)
    config = json.loads((sharded / "config.json").read_text())
    assert config["auto_map"]["AutoModelForMultimodalLM"] == "modeling_mirasol.MirasolForConditionalGeneration"
    assert not list(sharded.glob("_fsdp*.py"))
    MirasolForConditionalGeneration.from_pretrained(sharded)
    MirasolProcessor.from_pretrained(sharded)
    results_file = tmp_path / "results.json"
    load_example("evaluate").main([
        "--model", str(sharded), "--dataset-format", "msrvtt_qa", "--annotations", str(root / "test_qa.json"),
        "--video-dir", str(videos), "--batch-size", "2", "--max-new-tokens", "3", "--output", str(results_file),
    ])
    results = json.loads(results_file.read_text())
    assert results["scores"]["count"] == NUM_VIDEOS * QUESTIONS_PER_VIDEO
    assert {entry["question_type"] for entry in results["predictions"]} <= {"what", "who", "how", "when", "where",
                                                                             "other"}


def test_a_launch_that_asked_for_two_processes_and_started_one_is_refused(monkeypatch, tmp_path):
    # The environment accelerate's own single-process launcher gives `accelerate launch --num_processes 2` (no
    # --multi_gpu, no multi-process config) on a machine without GPUs.
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_simple_launcher_cmd_env

    arguments = launch_command_parser().parse_args(["--num_processes", "2", "finetune.py"])
    arguments, _, _ = _validate_launch_command(arguments)
    _, environment = prepare_simple_launcher_cmd_env(arguments)
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    finetune = load_example("finetune")
    with pytest.raises(SystemExit, match="started one"):
        finetune.parse_arguments(["--preset", "tiny", "--cache", str(tmp_path), "--output-dir", str(tmp_path)])


def test_dataloader_workers_on_cpus_start_from_a_forkserver(monkeypatch, tmp_path):
    # Workers forked from a process training on the CPU keep copies of every page the optimizer writes
    # (benchmarks/worker_memory.py: about the whole training state again); the user's own choice stands.
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    finetune = load_example("finetune")
    common = ["--preset", "tiny", "--cache", str(tmp_path), "--output-dir", str(tmp_path)]
    _, training = finetune.parse_arguments(common + ["--dataloader-num-workers", "2"])
    assert training.dataloader_multiprocessing_context == "forkserver"
    _, training = finetune.parse_arguments(common)  # no workers: DataLoader refuses a start method then
    assert training.dataloader_multiprocessing_context is None
    _, training = finetune.parse_arguments(
        common + ["--dataloader-num-workers", "2", "--dataloader-multiprocessing-context", "spawn"]
    )
    assert training.dataloader_multiprocessing_context == "spawn"
    # --use-cpu on a machine with a GPU trains on the CPU too
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    _, training = finetune.parse_arguments(common + ["--dataloader-num-workers", "2", "--use-cpu"])
    assert training.dataloader_multiprocessing_context == "forkserver"
    _, training = finetune.parse_arguments(common + ["--dataloader-num-workers", "2"])  # on the GPU: fork is fine
    assert training.dataloader_multiprocessing_context is None
