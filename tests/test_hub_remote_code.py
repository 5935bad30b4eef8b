"""A saved checkpoint answers through transformers' pipeline() without this package: `custom_pipelines` in its
config, the pipeline's code next to the weights, and a model card whose pipeline_tag is a transformers task."""

import json
import os
import subprocess
import sys
import textwrap

import yaml
from transformers import pipeline
from transformers.pipelines import SUPPORTED_TASKS

from mirasol_hf.hub import CUSTOM_PIPELINES, PIPELINE_TASK
from mirasol_hf.pipeline import VideoQuestionAnsweringPipeline

QUESTIONS = ["what color was the square?", "which sound was heard?"]


def test_saved_config_names_the_pipeline_and_its_code_is_saved(tiny_checkpoint):
    saved = json.loads((tiny_checkpoint / "config.json").read_text())
    assert saved["custom_pipelines"] == CUSTOM_PIPELINES
    module = CUSTOM_PIPELINES[PIPELINE_TASK]["impl"].split(".")[0]
    assert (tiny_checkpoint / f"{module}.py").is_file()
    card = (tiny_checkpoint / "README.md").read_text()
    front_matter = yaml.safe_load(card.split("---")[1])
    assert front_matter["pipeline_tag"] in SUPPORTED_TASKS  # a tag transformers' pipeline() knows
    assert "trust_remote_code=True" in card and PIPELINE_TASK in card


def test_with_the_package_the_registered_pipeline_needs_no_trust_remote_code(tiny_checkpoint, sample_clip):
    pipe = pipeline(PIPELINE_TASK, model=str(tiny_checkpoint))
    assert type(pipe) is VideoQuestionAnsweringPipeline
    assert not getattr(pipe.model.config, "custom_pipelines", None)


def test_pipeline_without_the_package_gives_the_packages_answers(tiny_checkpoint, sample_clip, tmp_path):
    expected = pipeline(PIPELINE_TASK, model=str(tiny_checkpoint))(str(sample_clip), QUESTIONS, max_new_tokens=4)
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.modules["mirasol_hf"] = None  # the package cannot be imported: everything comes from the folder
        from transformers import pipeline
        folder = {str(tiny_checkpoint)!r}
        named = pipeline({PIPELINE_TASK!r}, model=folder, trust_remote_code=True)
        inferred = pipeline(model=folder, trust_remote_code=True)  # the task read from custom_pipelines
        assert type(inferred).__name__ == type(named).__name__ == "VideoQuestionAnsweringPipeline"
        assert type(named).__module__.startswith("transformers_modules"), type(named).__module__
        answers = named({str(sample_clip)!r}, {QUESTIONS!r}, max_new_tokens=4)
        assert inferred({str(sample_clip)!r}, {QUESTIONS!r}, max_new_tokens=4) == answers
        print(json.dumps(answers))
        """
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == expected
