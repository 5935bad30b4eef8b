"""DeepSpeed ZeRO-2 and ZeRO-3 for real on CPU: examples/finetune.py under `accelerate launch` with the project's
configs (examples/accelerate/deepspeed_zero{2,3}.yaml), 2 processes on gloo, on an MSRVTT-QA-format cache. Each run is
checked against one process training on the same clips in one batch of the same size (ZeRO-2 also accumulates 2
micro-batches): the loss and gradient-norm curves are equal, the saved folder is an ordinary model folder holding the
same weights, and each process holds what its stage shards. ZeRO-3 also resumes with the loss of not stopping."""

import json
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

from conftest import REPO, load_example
from dataset_fixtures import write_msrvtt_qa
from mirasol_hf import MirasolForConditionalGeneration, MirasolProcessor
from mirasol_hf.cli import main as cli_main
from test_training_at_scale import _free_port, _losses, _saved_names


NUM_VIDEOS, QUESTIONS_PER_VIDEO = 4, 3
COMMON = [
    "--preset", "tiny", "--vocab-size", "200", "--max-steps", "3", "--logging-steps", "1", "--report-to", "none",
    "--disable-tqdm", "true", "--seed", "0", "--dataloader-num-workers", "1",
]


@pytest.fixture(scope="module")
def deepspeed_on_cpu():
    """Skips, saying why, where DeepSpeed cannot run on CPU here."""
    pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (the `test` extra installs it)")
    # DeepSpeed's CPU accelerator compiles its shared-memory communication op at first use (.ci/run installs these).
    if shutil.which("c++") is None or not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        pytest.skip("DeepSpeed on CPU compiles an op at first use: needs a C++ compiler (g++) and Python's headers "
                    "(python3-dev)")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A `mirasol-hf preprocess` cache of MSRVTT-QA-format files."""
    root = tmp_path_factory.mktemp("msrvtt_deepspeed")
    annotation, videos = write_msrvtt_qa(root, NUM_VIDEOS, QUESTIONS_PER_VIDEO)
    status = cli_main(["preprocess", "--dataset-format", "msrvtt_qa", "--annotations", str(annotation),
                       "--video-dir", str(videos), "--preset", "tiny", "--output", str(root / "cache")])
    assert status == 0
    return root / "cache"


def _train_in_one_process(output: Path, cache: Path, clips_per_step: int) -> Path:
    """The reference: one process, `clips_per_step` clips a step in one batch; its output folder."""
    load_example("finetune").main(COMMON + ["--cache", str(cache), "--output-dir", str(output),
                                            "--per-device-train-batch-size", str(clips_per_step), "--use-cpu"])
    return output


def _launch_deepspeed(tmp_path, stage: int, arguments: list[str]) -> dict[int, tuple[int, int, int]]:
    """examples/finetune.py under `accelerate launch` with deepspeed_zero{stage}.yaml, 2 CPU processes, 1 clip each
    a micro-batch; what each process reports holding: {rank: (parameter values held, of all, optimizer state's
    values)}."""
    accelerate = Path(sys.executable).with_name("accelerate")
    launcher = [str(accelerate), "launch"] if accelerate.exists() else [sys.executable, "-m", "accelerate.commands.launch"]
    command = launcher + [
        "--config_file", str(REPO / "examples" / "accelerate" / f"deepspeed_zero{stage}.yaml"), "--num_processes", "2",
        "--mixed_precision", "no", "--main_process_port", str(_free_port()),
        str(REPO / "examples" / "finetune.py"), *COMMON, "--per-device-train-batch-size", "1", *arguments,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    pattern = rf"DeepSpeed ZeRO-{stage} process (\d): holds ([\d,]+) of ([\d,]+) parameter values and optimizer state " \
              r"for ([\d,]+)"
    held = {int(rank): tuple(int(count.replace(",", "")) for count in counts)
            for rank, *counts in re.findall(pattern, output)}
    assert sorted(held) == [0, 1], output[-2000:]
    return held


def _log(output_dir: Path, key: str) -> dict[int, float]:
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return {entry["step"]: entry[key] for entry in state["log_history"] if key in entry}


def _assert_trains_as_one_process(sharded: Path, single: Path) -> None:
    """The loss and gradient-norm curves of the sharded run are the single-process run's, and so are its saved
    weights, in an ordinary model folder."""
    sharded_losses, single_losses = _losses(sharded), _losses(single)
    assert sorted(sharded_losses) == [1, 2, 3]
    # The tolerance of the FSDP test: the runs differ only in the order float32 sums are taken in.
    for step in (1, 2, 3):
        assert sharded_losses[step] == pytest.approx(single_losses[step], rel=1e-5), step
    assert sharded_losses[3] != pytest.approx(sharded_losses[1], rel=1e-3)  # it trains: the comparison is not vacuous
    # Adam's step hardly depends on the gradient's scale: the gradient norm checks the gradient itself.
    sharded_norms, single_norms = _log(sharded, "grad_norm"), _log(single, "grad_norm")
    for step in (1, 2, 3):
        assert sharded_norms[step] == pytest.approx(single_norms[step], rel=1e-5), step

    # The same tensors are written: a state dict gathered from the shards holds a copy of the tied LM head, which
    # save_pretrained (that knows ties by shared storage) would write as a tensor of its own.
    assert _saved_names(sharded) == _saved_names(single)
    config = json.loads((sharded / "config.json").read_text())
    assert config["auto_map"]["AutoModelForMultimodalLM"] == "modeling_mirasol.MirasolForConditionalGeneration"
    MirasolProcessor.from_pretrained(sharded)
    trained = MirasolForConditionalGeneration.from_pretrained(sharded).state_dict()
    reference = MirasolForConditionalGeneration.from_pretrained(single).state_dict()
    assert trained.keys() == reference.keys()
    # 3 steps move the weights by about 1e-4 (learning rate 5e-5): far beyond this tolerance.
    for name, value in reference.items():
        torch.testing.assert_close(trained[name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_zero2_on_two_cpu_processes_with_accumulation_trains_as_one_process_and_shards_the_optimizer(
    deepspeed_on_cpu, cache, tmp_path
):
    # 2 processes x 2 accumulated micro-batches of 1 clip: one batch of 4 clips.
    sharded = tmp_path / "zero2"
    held = _launch_deepspeed(tmp_path, 2, ["--cache", str(cache), "--output-dir", str(sharded),
                                           "--gradient-accumulation-steps", "2", "--save-strategy", "no"])
    total = held[0][1]
    for own, _, optimized in held.values():
        assert own == total  # every process holds all the weights
        assert 0.45 * total < optimized < 0.55 * total  # and Adam's state for its half of them
    assert held[0][2] + held[1][2] >= total
    _assert_trains_as_one_process(sharded, _train_in_one_process(tmp_path / "single", cache, 4))


def test_zero3_on_two_cpu_processes_shards_the_weights_trains_as_one_process_and_resumes(
    deepspeed_on_cpu, cache, tmp_path
):
    # 2 processes x 1 clip: one batch of 2 clips.
    sharded = tmp_path / "zero3"
    held = _launch_deepspeed(tmp_path, 3, ["--cache", str(cache), "--output-dir", str(sharded), "--save-steps", "2"])
    total = held[0][1]
    for own, _, optimized in held.values():
        assert 0.45 * total < own < 0.55 * total  # each process holds about half of every weight
        assert 0.45 * total < optimized < 0.55 * total
    assert held[0][0] + held[1][0] >= total
    _assert_trains_as_one_process(sharded, _train_in_one_process(tmp_path / "single", cache, 2))
    # A checkpoint is a model folder too (DeepSpeed's shards beside it, for resuming).
    assert (sharded / "checkpoint-2" / "model.safetensors").exists()
    assert list((sharded / "checkpoint-2").glob("global_step2/*optim_states.pt"))

    # Stopped after step 2 and resumed from its checkpoint: step 3 as if it had not stopped.
    resumed = tmp_path / "resumed"
    _launch_deepspeed(tmp_path, 3, ["--cache", str(cache), "--output-dir", str(resumed), "--save-strategy", "no",
                                    "--resume-from-checkpoint", str(sharded / "checkpoint-2")])
    assert _losses(resumed)[3] == pytest.approx(_losses(sharded)[3], rel=1e-5)


def test_a_deepspeed_launch_told_to_use_the_cpu_is_refused(monkeypatch, tmp_path, capsys):
    # --use-cpu makes Accelerate train the processes with DDP whatever the DeepSpeed config says.
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(SystemExit):
        load_example("finetune").parse_arguments(
            ["--preset", "tiny", "--cache", str(tmp_path), "--output-dir", str(tmp_path), "--use-cpu"]
        )
    assert "--use-cpu turns DeepSpeed off" in capsys.readouterr().err


def test_a_deepspeed_launch_without_deepspeed_installed_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    finetune = load_example("finetune")
    monkeypatch.setattr(finetune, "is_deepspeed_available", lambda: False)
    with pytest.raises(SystemExit, match="asks for DeepSpeed, which is not installed: pip install deepspeed"):
        finetune.parse_arguments(["--preset", "tiny", "--cache", str(tmp_path), "--output-dir", str(tmp_path)])


def test_a_deepspeed_launch_in_bf16_without_gpus_is_refused(monkeypatch, tmp_path):
    # Trainer allows bf16 on CPUs only with --use-cpu, which turns DeepSpeed off.
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="DeepSpeed on CPUs trains in fp32: give accelerate launch --mixed_precision no"):
        load_example("finetune").parse_arguments(
            ["--preset", "tiny", "--cache", str(tmp_path), "--output-dir", str(tmp_path)]
        )


def test_a_deepspeed_launch_in_bf16_trains_in_bf16(monkeypatch, tmp_path):
    # DeepSpeed's config takes the launch's precision (`mixed_precision: bf16`, as in the GPU configs), and Trainer
    # refuses to train unless its own flag agrees: the launch's precision is the script's default.
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    import transformers.training_args

    monkeypatch.setattr(transformers.training_args, "is_torch_bf16_gpu_available", lambda: True)  # as on a GPU
    _, training = load_example("finetune").parse_arguments(
        ["--preset", "tiny", "--cache", str(tmp_path), "--output-dir", str(tmp_path)]
    )
    assert training.bf16 and not training.fp16
    # Trainer's check of DeepSpeed's config against its arguments finds nothing to refuse.
    pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (the `test` extra installs it)")
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    checked = HfTrainerDeepSpeedConfig(training.deepspeed_plugin.deepspeed_config)
    checked.trainer_config_process(training)
    assert checked.is_true("bf16.enabled") and checked.mismatches == []
