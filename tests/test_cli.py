"""The `mirasol-hf` command line, run as a user would, in a subprocess."""

import json
import subprocess
import sys

from mirasol_hf.cli import main

CLI = [sys.executable, "-m", "mirasol_hf.cli"]


def _run(*args):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=300)


def test_cli_answers_and_prints_json(tiny_checkpoint, sample_clip):
    result = _run("answer", sample_clip, "what color was the square?", "how many times?", "--model", tiny_checkpoint,
                  "--json", "--max-new-tokens", "3", "--quiet")
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout)
    assert [entry["question"] for entry in answers] == ["what color was the square?", "how many times?"]
    assert all(isinstance(entry["answer"], str) for entry in answers)
    plain = _run("answer", sample_clip, "what color was the square?", "--model", tiny_checkpoint,
                 "--max-new-tokens", "3")
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.strip() == answers[0]["answer"]
    assert "decoding frames" in plain.stderr and "16/16" in plain.stderr  # the progress bar, one step per frame


def test_cli_bad_inputs_give_clear_messages(tiny_checkpoint, sample_clip, tmp_path, capsys):
    def run(*args):
        code = main([str(arg) for arg in args])
        return code, capsys.readouterr().err

    code, err = run("answer", tmp_path / "missing.mp4", "what?", "--model", tiny_checkpoint)
    assert code == 2 and "no such video file" in err
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("not a video")
    code, err = run("answer", not_video, "what?", "--model", tiny_checkpoint, "--quiet")
    assert code == 2 and "notes.mp4" in err
    code, err = run("answer", sample_clip, "what?", "--model", tiny_checkpoint, "--frames", "6", "--quiet")
    assert code == 2 and "multiple" in err
    code, err = run("answer", sample_clip, "what?", "--model", tmp_path / "nothing-here", "--quiet")
    assert code == 2 and "no such folder" in err
