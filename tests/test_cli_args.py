"""The command line's arguments: one clear line and exit code 2 for each bad one, --quiet, URLs kept intact, and
`import mirasol_hf` / `--help` importing only what they need."""

import json
import subprocess
import sys
import textwrap

import pytest

from mirasol_hf.cli import USAGE_ERROR, main


def run(capsys, *args):
    code = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--num-beams", "0"], "--num-beams: must be 1 or more, got 0"),
        (["--num-beams", "-1"], "--num-beams: must be 1 or more, got -1"),
        (["--frames", "0"], "--frames: must be 1 or more"),
        (["--max-new-tokens", "many"], "--max-new-tokens: expected a whole number, got 'many'"),
        (["--model", "/missing/folder"], "--model /missing/folder: no such folder"),
        (["--model", "./relative/missing"], "--model ./relative/missing: no such folder"),
    ],
)
def test_each_bad_option_is_one_line_and_exit_code_2(capsys, sample_clip, args, message):
    code, out, err = run(capsys, "answer", sample_clip, "what?", *args)
    assert code == USAGE_ERROR and out == ""
    assert err.count("\n") == 1 and err.startswith("mirasol-hf: error: ") and message in err, err


def test_bad_files_folders_and_commands_are_one_line_and_exit_code_2(capsys, sample_clip, tmp_path):
    (tmp_path / "not-a-checkpoint").mkdir()
    cases = [
        (["answer", tmp_path / "missing.mp4", "what?"], "no such video file: "),
        (["answer", sample_clip, "what?", "--model", tmp_path / "not-a-checkpoint"], "no config.json"),
        (["answer", sample_clip], "required: questions"),
        (["transcode", sample_clip], "invalid choice: 'transcode'"),
        ([], "required: command"),
    ]
    for args, message in cases:
        code, out, err = run(capsys, *args)
        assert code == USAGE_ERROR and out == "", args
        assert err.count("\n") == 1 and message in err, (args, err)


def test_a_url_is_printed_as_given(capsys, tiny_checkpoint):
    url = "https://example.com/videos//clip.mp4?t=1"
    code, _, err = run(capsys, "answer", url, "what?", "--model", tiny_checkpoint, "--quiet")
    assert code == USAGE_ERROR and url in err and err.count("\n") == 1


def test_quiet_hides_the_progress_bars(capsys, sample_clip, tiny_checkpoint):
    args = ["answer", sample_clip, "what color was the square?", "--model", tiny_checkpoint, "--max-new-tokens", "2"]
    code, loud_out, loud_err = run(capsys, *args)
    assert code == 0 and "Loading weights" in loud_err and "decoding frames" in loud_err
    code, quiet_out, quiet_err = run(capsys, *args, "--quiet")
    assert code == 0 and quiet_err == "" and quiet_out == loud_out


def test_import_and_help_load_only_what_they_need():
    script = textwrap.dedent(
        """
        import json, sys
        import mirasol_hf
        from transformers import AutoConfig
        from transformers.pipelines import PIPELINE_REGISTRY
        heavy = ["datasets", "peft", "transformers.trainer", "mirasol_hf.training", "mirasol_hf.backbones",
                 "mirasol_hf.streaming", "mirasol_hf.data", "mirasol_hf.synthetic"]
        report = {"after_import": sorted(name for name in heavy if name in sys.modules),
                  "registered": type(AutoConfig.for_model("mirasol")).__name__,
                  "pipeline": "video-question-answering" in PIPELINE_REGISTRY.get_supported_tasks()}
        from mirasol_hf.cli import main
        try:
            main(["answer", "--help"])
        except SystemExit as exit:
            report["help_exit"] = exit.code
        report["after_help"] = sorted(name for name in heavy if name in sys.modules)
        report["lazy_name"] = mirasol_hf.MirasolTrainer.__module__  # names still resolve, on first use
        print(json.dumps(report))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["after_import"] == [] and report["after_help"] == []
    assert report["registered"] == "MirasolConfig" and report["pipeline"]
    assert report["help_exit"] == 0 and report["lazy_name"] == "mirasol_hf.training"
