"""Sharing checkpoints: remote code, auto_map, model card."""

import json
import os
import subprocess
import sys
import textwrap

import torch
from transformers.utils.hub import PushToHubMixin

from mirasol_hf.hub import AUTO_MAP, GENERIC_CARD_MARKER


def test_saved_folder_has_everything_a_hub_user_needs(tiny_checkpoint):
    files = {path.name for path in tiny_checkpoint.iterdir()}
    assert {"model.safetensors", "config.json", "processor_config.json", "tokenizer.json", "README.md"} <= files
    auto_map = json.loads((tiny_checkpoint / "config.json").read_text())["auto_map"]
    assert auto_map == AUTO_MAP
    for target in auto_map.values():
        assert f"{target.split('.')[0]}.py" in files
    card = (tiny_checkpoint / "README.md").read_text()
    assert "trust_remote_code=True" in card and "parameters" in card


def test_remote_code_loads_without_the_package_and_gives_the_same_outputs(tiny_checkpoint, sample_clip, tmp_path):
    from mirasol_hf import MirasolForConditionalGeneration, MirasolProcessor

    model = MirasolForConditionalGeneration.from_pretrained(tiny_checkpoint).eval()
    processor = MirasolProcessor.from_pretrained(tiny_checkpoint)
    inputs = processor(videos=str(sample_clip), text="what color was the square?", return_tensors="pt")
    expected = {"logits": model(**inputs).logits, "generated": model.generate(**inputs, max_new_tokens=4)}
    torch.save({"inputs": dict(inputs), **expected}, tmp_path / "expected.pt")
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["mirasol_hf"] = None  # make the package impossible to import
        import torch
        from transformers import (AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForMultimodalLM,
                                  AutoProcessor)
        folder = {str(tiny_checkpoint)!r}
        data = torch.load({str(tmp_path / "expected.pt")!r})
        assert "configuration_mirasol" in type(AutoConfig.from_pretrained(folder, trust_remote_code=True)).__module__
        model = AutoModelForMultimodalLM.from_pretrained(folder, trust_remote_code=True).eval()
        assert type(AutoModel.from_pretrained(folder, trust_remote_code=True)).__name__ == "MirasolModel"
        assert type(AutoFeatureExtractor.from_pretrained(folder, trust_remote_code=True)).__name__ == "MirasolFeatureExtractor"
        processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
        inputs = processor(videos={str(sample_clip)!r}, text="what color was the square?", return_tensors="pt")
        for key, value in data["inputs"].items():
            assert torch.equal(inputs[key], value), key
        assert torch.equal(model(**inputs).logits, data["logits"])
        assert torch.equal(model.generate(**inputs, max_new_tokens=4), data["generated"])
        print("remote code ok")
        """
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "remote code ok" in result.stdout


def test_push_to_hub_uploads_our_model_card_instead_of_the_generic_one(tiny_checkpoint, tmp_path, monkeypatch):
    from mirasol_hf import MirasolForConditionalGeneration

    model = MirasolForConditionalGeneration.from_pretrained(tiny_checkpoint)
    model.config.model_card = {"training_data": "synthetic clips", "metrics": {"exact match": "91.0"}}
    uploaded = {}
    monkeypatch.setattr(
        PushToHubMixin, "_upload_modified_files",
        lambda self, working_dir, *args, **kwargs: uploaded.setdefault("card", (working_dir / "README.md").read_text()),
    )
    model.save_pretrained(tmp_path)
    (tmp_path / "README.md").write_text(f"generic. {GENERIC_CARD_MARKER}.")  # what push_to_hub puts there
    model._upload_modified_files(tmp_path, "user/repo")
    assert "synthetic clips" in uploaded["card"] and "| exact match | 91.0 |" in uploaded["card"]
    # a card the repository had already is kept
    (tmp_path / "README.md").write_text("my own card")
    uploaded.clear()
    model._upload_modified_files(tmp_path, "user/repo")
    assert uploaded["card"] == "my own card"


def test_a_gathered_state_dict_is_saved_without_a_copy_of_the_tied_lm_head(tmp_path):
    # `unwrapped.save_pretrained(dir, state_dict=accelerator.get_state_dict(model))`: a gathered state dict holds
    # clones, so the tie is no longer shared storage and transformers alone would write lm_head.weight too.
    from safetensors import safe_open

    from mirasol_hf import MirasolConfig, MirasolForConditionalGeneration

    model = MirasolForConditionalGeneration(MirasolConfig.from_preset("tiny"))
    gathered = {name: value.clone() for name, value in model.state_dict().items()}
    assert "lm_head.weight" in gathered
    model.save_pretrained(tmp_path, state_dict=gathered)
    with safe_open(tmp_path / "model.safetensors", "pt") as weights:
        assert "lm_head.weight" not in weights.keys()
    reloaded = MirasolForConditionalGeneration.from_pretrained(tmp_path)
    assert torch.equal(reloaded.lm_head.weight, model.lm_head.weight)
