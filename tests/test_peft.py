"""LoRA on the text decoder: which modules get adapters; train, save, reload, merge, generate; the script's --lora."""

import pytest
import torch
from peft import PeftModel, get_peft_model

from conftest import load_example, open_gates
from dataset_fixtures import training_arguments, write_msrvtt_qa
from mirasol_hf import MirasolConfig, MirasolForConditionalGeneration, MirasolProcessor, build_tokenizer
from mirasol_hf.data import load_msrvtt_qa
from mirasol_hf.training import LORA_PROJECTIONS, MirasolDataCollator, MirasolTrainer, lora_config, lora_target_modules


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory):
    annotation, videos = write_msrvtt_qa(tmp_path_factory.mktemp("msrvtt"), num_videos=3, questions_per_video=2)
    dataset = load_msrvtt_qa(annotation, videos)
    tokenizer = build_tokenizer(list(dataset["question"]) + list(dataset["answer"]), vocab_size=200)
    config = MirasolConfig.from_preset(
        "tiny",
        text_config={"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
                     "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id},
    )
    return annotation, videos, dataset, config, MirasolProcessor.from_model_config(config, tokenizer)


def base_model(config) -> MirasolForConditionalGeneration:
    """The same weights every call: a trained model stands for it (cross-attention gates open)."""
    torch.manual_seed(0)
    return open_gates(MirasolForConditionalGeneration(config)).eval()


def test_lora_targets_the_text_decoder_and_its_cross_attention_only(benchmark):
    *_, config, _ = benchmark
    adapted = get_peft_model(base_model(config), lora_config(r=4))
    names = {name.removeprefix("base_model.model.").removesuffix(".lora_A")
             for name, _ in adapted.named_modules() if name.endswith("lora_A")}
    layers = config.text_config.num_hidden_layers
    expected = {f"model.text_model.layers.{i}.self_attn.{p}" for i in range(layers) for p in LORA_PROJECTIONS[:4]}
    expected |= {f"model.text_model.layers.{i}.mlp.{p}" for i in range(layers) for p in LORA_PROJECTIONS[4:]}
    expected |= {f"model.text_model.cross_attention_blocks.0.cross_attn.{p}" for p in LORA_PROJECTIONS[:4]}
    expected |= {f"model.text_model.cross_attention_blocks.0.mlp.{p}" for p in LORA_PROJECTIONS[4:]}
    assert names == expected  # none in the encoders, combiner, latent model or reconstruction decoder
    assert all("lora_" in name for name, p in adapted.named_parameters() if p.requires_grad)

    without_cross = get_peft_model(base_model(config), lora_config(r=4, cross_attention=False))
    assert not any("cross_attention_blocks" in name and "lora_" in name for name, _ in without_cross.named_parameters())
    with pytest.raises(ValueError):
        lora_target_modules(cross_attention=False, self_attention_layers=False)


def test_lora_adapters_train_save_reload_merge_and_generate(tmp_path, benchmark):
    _, _, dataset, config, processor = benchmark
    adapted = get_peft_model(base_model(config), lora_config(r=4, lora_dropout=0.0))
    MirasolTrainer(
        model=adapted,
        args=training_arguments(tmp_path / "run", max_steps=3, learning_rate=5e-2),
        train_dataset=dataset,
        data_collator=MirasolDataCollator(processor),
    ).train()
    adapted.eval()
    adapter_dir = tmp_path / "adapter"
    adapted.save_pretrained(adapter_dir)
    assert (adapter_dir / "adapter_config.json").exists() and (adapter_dir / "adapter_model.safetensors").exists()
    assert not (adapter_dir / "model.safetensors").exists()  # only the adapters are saved

    batch = MirasolDataCollator(processor)([dataset[0], dataset[3]])
    prompts = MirasolDataCollator(processor, with_answers=False)([dataset[0], dataset[3]])
    with torch.no_grad():
        trained_logits = adapted(**batch).logits
        base_logits = base_model(config)(**batch).logits
    assert not torch.allclose(trained_logits, base_logits, atol=1e-4)  # the adapters changed the model

    reloaded = PeftModel.from_pretrained(base_model(config), adapter_dir).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, trained_logits, rtol=0, atol=0)
    generate = dict(max_new_tokens=5, do_sample=False)
    generated = adapted.generate(**prompts, **generate)
    assert torch.equal(reloaded.generate(**prompts, **generate), generated)

    # Merging folds W + s * B @ A into one weight: equal up to rounding. Compared in float64, where rounding is
    # ~1e-16 relative (float32 rounding, amplified by adapters trained at a high learning rate, reached ~1e-4).
    reloaded.double()
    with torch.no_grad():
        unmerged_logits = reloaded(**batch).logits
    unmerged_generated = reloaded.generate(**prompts, **generate)
    merged = reloaded.merge_and_unload()
    assert isinstance(merged, MirasolForConditionalGeneration)
    assert not any("lora_" in name for name, _ in merged.named_parameters())
    with torch.no_grad():
        merged_logits = merged(**batch).logits
    assert merged_logits.dtype == torch.float64
    torch.testing.assert_close(merged_logits, unmerged_logits, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(merged_logits.float(), trained_logits, rtol=1e-3, atol=1e-3)  # same model as trained
    assert torch.equal(merged.generate(**prompts, **generate), unmerged_generated)


def test_finetune_script_trains_lora_adapters_that_evaluate_py_applies(tmp_path, benchmark):
    annotation, videos, dataset, config, processor = benchmark
    checkpoint = tmp_path / "checkpoint"
    base_model(config).save_pretrained(checkpoint)
    processor.save_pretrained(checkpoint)
    output = tmp_path / "lora"
    load_example("finetune").main([
        "--model", str(checkpoint), "--lora", "--lora-rank", "4",
        "--dataset-format", "msrvtt_qa", "--annotations", str(annotation), "--video-dir", str(videos),
        "--output-dir", str(output), "--max-steps", "1", "--per-device-train-batch-size", "2",
        "--report-to", "none", "--use-cpu", "--save-strategy", "no", "--disable-tqdm", "true",
    ])
    assert (output / "adapter_model.safetensors").exists() and not (output / "model.safetensors").exists()

    results = load_example("evaluate").main([
        "--model", str(checkpoint), "--adapter", str(output), "--dataset-format", "msrvtt_qa",
        "--annotations", str(annotation), "--video-dir", str(videos), "--batch-size", "4", "--max-new-tokens", "3",
    ])
    assert results["scores"]["count"] == len(dataset)
