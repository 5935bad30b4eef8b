"""Starting from pretrained backbones: tiny random Llama / Mistral / Qwen2 LMs and ViT / CLIP / SigLIP towers, saved
locally through transformers, must come out of `from_pretrained_backbones` computing what they computed."""

import copy
import json
import warnings

import pytest
import torch
import torch.nn.functional as F
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BertConfig,
    CLIPVisionConfig,
    CLIPVisionModel,
    GPT2Config,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    SiglipConfig,
    SiglipModel,
    SiglipVisionModel,
    ViTConfig,
    ViTModel,
)
from transformers.utils.constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from conftest import QA_TEXTS, open_gates, random_media
from mirasol_hf import MirasolForConditionalGeneration, MirasolProcessor, build_tokenizer
from mirasol_hf.training import apply_training_stage
from mirasol_hf.backbones import (
    config_from_backbones,
    from_pretrained_backbones,
    inflate_patch_kernel,
    resize_patch_kernel,
)

PRESET = "tiny"  # sizes the new parts; its video tubes use 8x8 patches on 32x32 frames
PATCH = 8
IMAGE_SIZE = 32
# Random weights are perturbed by this much, so that norms (initialised at 1) and biases (at 0) are not their
# defaults and a mix-up between two of them shows in the outputs.
PERTURBATION = 0.1
TOWER_MEAN, TOWER_STD = [0.1, 0.2, 0.3], [0.4, 0.5, 0.6]

_TEXT_SIZES = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    rms_norm_eps=1e-5,  # not Mirasol's default
    initializer_range=0.1,
    bos_token_id=1,
    eos_token_id=2,
)
# Each family with what sets it apart from plain Llama.
TEXT_FAMILIES = {
    # SmolLM / Llama 3.2 style: tied embeddings, llama3 rope scaling; biases on to check the q/k/v and o flags.
    "llama": lambda vocab: LlamaForCausalLM(
        LlamaConfig(
            vocab_size=vocab,
            tie_word_embeddings=True,
            attention_bias=True,
            mlp_bias=True,
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            },
            **_TEXT_SIZES,
        )
    ),
    # Untied LM head, a sliding window longer than the test sequences, a tokenizer without a pad token.
    "mistral": lambda vocab: MistralForCausalLM(
        MistralConfig(vocab_size=vocab, tie_word_embeddings=False, sliding_window=16, **_TEXT_SIZES)
    ),
    # Biases on q/k/v but not o, tied embeddings (Qwen2.5-0.5B / 1.5B), a large rope theta.
    "qwen2": lambda vocab: Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=vocab,
            tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6},
            pad_token_id=0,
            **_TEXT_SIZES,
        )
    ),
}

_VISION_SIZES = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=IMAGE_SIZE,
    patch_size=PATCH,
    initializer_range=0.1,
)
VISION_FAMILIES = {
    "vit": lambda: ViTModel(ViTConfig(hidden_act="gelu", layer_norm_eps=1e-12, **_VISION_SIZES)),
    "clip": lambda: CLIPVisionModel(CLIPVisionConfig(hidden_act="quick_gelu", **_VISION_SIZES)),
    # An image-text checkpoint, as SigLIP ships: the vision tower is taken out of it.
    "siglip": lambda: SiglipModel(
        SiglipConfig(
            vision_config={"hidden_act": "gelu_pytorch_tanh", **_VISION_SIZES},
            text_config={
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "vocab_size": 64,
                **{name: 0 for name in ("pad_token_id", "bos_token_id", "eos_token_id")},
            },
        )
    ),
}


# The towers' own patch embeddings (before CLS and positions), through their public modules: (N, 3, H, W) ->
# (N, tokens, hidden).
def _vit_patches(tower, frames):
    return tower.embeddings.patch_embeddings(frames)


def _conv_patches(tower, frames):
    return tower.embeddings.patch_embedding(frames).flatten(2).transpose(1, 2)


# The towers' transformer blocks and final norm on given tokens: (N, L, hidden) -> (N, L, hidden).
def _vit_blocks(tower, tokens):
    for layer in tower.layers:
        tokens = layer(tokens)
    return tower.layernorm(tokens)


def _encoder_blocks(tower, tokens):
    return tower.post_layernorm(tower.encoder(inputs_embeds=tokens).last_hidden_state)


TOWER_PATCHES = {"vit": _vit_patches, "clip": _conv_patches, "siglip": _conv_patches}
TOWER_BLOCKS = {"vit": _vit_blocks, "clip": _encoder_blocks, "siglip": _encoder_blocks}
TOWER_CLASSES = {"vit": ViTModel, "clip": CLIPVisionModel, "siglip": SiglipVisionModel}


def _perturb(model, seed):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * PERTURBATION)
    return model


@pytest.fixture(scope="module")
def text_checkpoints(tmp_path_factory):
    """family -> folder with a tiny random causal LM and its tokenizer."""
    folders = {}
    for seed, (family, build) in enumerate(TEXT_FAMILIES.items()):
        tokenizer = build_tokenizer(QA_TEXTS, vocab_size=200)
        if family == "mistral":
            tokenizer.pad_token = None  # as Mistral's own tokenizer
        torch.manual_seed(seed)
        model = _perturb(build(len(tokenizer)), seed)
        folders[family] = tmp_path_factory.mktemp(family)
        model.save_pretrained(folders[family])
        tokenizer.save_pretrained(folders[family])
    return folders


@pytest.fixture(scope="module")
def vision_checkpoints(tmp_path_factory):
    """family -> folder with a tiny random vision tower (the ViT one with an image processor config)."""
    folders = {}
    for seed, (family, build) in enumerate(VISION_FAMILIES.items()):
        torch.manual_seed(seed)
        folders[family] = tmp_path_factory.mktemp(family)
        _perturb(build(), seed).save_pretrained(folders[family])
    preprocessor = {"image_processor_type": "ViTImageProcessor", "image_mean": TOWER_MEAN, "image_std": TOWER_STD}
    (folders["vit"] / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return folders


@pytest.mark.parametrize("family", sorted(TEXT_FAMILIES))
def test_text_decoder_reproduces_the_language_model_logits_while_the_gates_are_closed(family, text_checkpoints):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Mistral's sliding window (tested below)
        model, processor = from_pretrained_backbones(text_checkpoints[family], preset=PRESET)
    source = AutoModelForCausalLM.from_pretrained(text_checkpoints[family]).eval()
    input_ids = torch.randint(3, model.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0))
    expected = source(input_ids=input_ids).logits
    torch.testing.assert_close(model(input_ids=input_ids).logits, expected)
    media = random_media(model.config)
    torch.testing.assert_close(model(input_ids=input_ids, **media).logits, expected)
    # ... and tokenization is the LM's own.
    assert processor.tokenizer.get_vocab() == AutoTokenizer.from_pretrained(text_checkpoints[family]).get_vocab()


def test_mistral_sliding_window_is_dropped_with_a_warning_naming_it():
    sizes = {**_TEXT_SIZES, "vocab_size": 100}
    with pytest.warns(UserWarning, match=r"sliding-window attention \(16 tokens\).*up to 16 tokens"):
        config_from_backbones(MistralConfig(sliding_window=16, **sizes), preset=PRESET)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config_from_backbones(MistralConfig(sliding_window=None, **sizes), preset=PRESET)
        config_from_backbones(Qwen2Config(**sizes), preset=PRESET)  # sliding window off (use_sliding_window=False)


def test_dtype_casts_the_whole_model(text_checkpoints, vision_checkpoints):
    model, _ = from_pretrained_backbones(
        text_checkpoints["qwen2"], vision_checkpoints["vit"], preset=PRESET, dtype=torch.bfloat16
    )
    assert {parameter.dtype for parameter in model.parameters()} == {torch.bfloat16}


def test_lm_without_pad_token_pads_with_eos_and_keeps_its_special_ids(text_checkpoints):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, processor = from_pretrained_backbones(text_checkpoints["mistral"], preset=PRESET)
    tokenizer = processor.tokenizer
    assert tokenizer.pad_token == tokenizer.eos_token
    assert model.config.pad_token_id == tokenizer.eos_token_id
    assert (model.config.bos_token_id, model.config.eos_token_id) == (1, 2)
    assert not model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() != model.model.text_model.embed_tokens.weight.data_ptr()


@pytest.mark.parametrize("family", sorted(VISION_FAMILIES))
def test_2d_patch_tube_reproduces_the_tower_patch_embeddings_on_a_frame(family, text_checkpoints, vision_checkpoints):
    model, _ = from_pretrained_backbones(text_checkpoints["llama"], vision_checkpoints[family], preset=PRESET)
    tower = TOWER_CLASSES[family].from_pretrained(vision_checkpoints[family]).eval()
    encoder = model.model.video_encoder
    assert encoder.config.tubes[0]["kernel"] == [1, PATCH, PATCH]
    generator = torch.Generator().manual_seed(0)
    chunks = torch.randn(2, model.config.frames_per_chunk, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    frame_stride = encoder.config.tubes[0]["stride"][0]
    frames = chunks[:, ::frame_stride]  # the frames the 2D tube sees, (N, f / stride, 3, H, W)
    expected = TOWER_PATCHES[family](tower, frames.flatten(0, 1))  # (N * frames, tokens, hidden)
    with torch.no_grad():
        features = encoder.tubes[0](chunks.transpose(1, 2))  # (N, hidden, frames, rows, columns)
    torch.testing.assert_close(features.flatten(3).permute(0, 2, 3, 1).flatten(0, 1), expected)
    # Through embed(): the 2D tube's tokens differ between two videos as the tower's patches do (positions cancel).
    with torch.no_grad():
        embedded = encoder.embed(chunks)[:, : expected.shape[0] // 2 * expected.shape[1]]
    per_video = expected.reshape(2, -1, expected.shape[-1])
    torch.testing.assert_close(embedded[0] - embedded[1], per_video[0] - per_video[1])


@pytest.mark.parametrize("family", sorted(VISION_FAMILIES))
def test_encoder_blocks_reproduce_the_tower_on_the_same_tokens(family, text_checkpoints, vision_checkpoints):
    model, _ = from_pretrained_backbones(text_checkpoints["llama"], vision_checkpoints[family], preset=PRESET)
    tower = TOWER_CLASSES[family].from_pretrained(vision_checkpoints[family]).eval()
    tokens = torch.randn(2, 11, tower.config.hidden_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model.model.video_encoder.encoder(tokens), TOWER_BLOCKS[family](tower, tokens))


def test_inflated_tubes_respond_to_a_static_video_as_the_2d_patch_does(text_checkpoints, vision_checkpoints):
    model, _ = from_pretrained_backbones(text_checkpoints["llama"], vision_checkpoints["vit"], preset=PRESET)
    encoder = model.model.video_encoder
    tube = encoder.config.tubes[1]
    assert tube["kernel"][0] > 1 and tube["kernel"][1:] == [PATCH, PATCH] and tube["offset"] == [0, 0, 0]
    frame = torch.randn(1, 1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0))
    static = frame.expand(-1, model.config.frames_per_chunk, -1, -1, -1).transpose(1, 2)  # (1, 3, f, H, W)
    with torch.no_grad():
        flat = encoder.tubes[0](static)[:, :, 0]  # (1, hidden, rows, columns) every PATCH pixels
        inflated = encoder.tubes[1](static)[:, :, 0]  # every tube stride pixels
    step = tube["stride"][1] // PATCH
    torch.testing.assert_close(inflated, flat[:, :, ::step, ::step])


def test_resized_patch_kernel_gives_an_enlarged_patch_the_original_response():
    generator = torch.Generator().manual_seed(0)
    kernel = torch.randn(5, 3, 4, 4, generator=generator, dtype=torch.float64)
    patch = torch.randn(2, 3, 4, 4, generator=generator, dtype=torch.float64)
    enlarged = F.interpolate(patch, size=(8, 6), mode="bilinear", antialias=True, align_corners=False)
    torch.testing.assert_close(F.conv2d(enlarged, resize_patch_kernel(kernel, (8, 6))), F.conv2d(patch, kernel))
    # Spread over time and divided by it: a static clip of 3 frames gets the 2D response.
    static = patch[:, :, None].expand(-1, -1, 3, -1, -1)
    inflated = inflate_patch_kernel(kernel, (3, 4, 4))
    torch.testing.assert_close(F.conv3d(static, inflated), F.conv2d(patch, kernel)[:, :, None])


def test_audio_encoder_from_a_tower_reads_a_spectrogram_as_a_grey_image(text_checkpoints, vision_checkpoints):
    tower_path = vision_checkpoints["vit"]
    model, _ = from_pretrained_backbones(text_checkpoints["llama"], tower_path, tower_path, preset=PRESET)
    tower = ViTModel.from_pretrained(tower_path).eval()
    audio = model.model.audio_encoder
    assert audio.config.patch_size == [PATCH, PATCH]
    spectrogram = torch.randn(2, 1, audio.config.num_mel_bins, 2 * PATCH, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = audio.patch_embedding(spectrogram)
        theirs = tower.embeddings.patch_embeddings.projection(spectrogram.expand(-1, 3, -1, -1))
        torch.testing.assert_close(ours, theirs)
        tokens = torch.randn(1, 5, audio.config.hidden_size)
        torch.testing.assert_close(audio.encoder(tokens), _vit_blocks(tower, tokens))


def test_processor_takes_the_tower_normalization_and_size(text_checkpoints, vision_checkpoints):
    _, processor = from_pretrained_backbones(text_checkpoints["llama"], vision_checkpoints["vit"], preset=PRESET)
    assert (processor.image_mean, processor.image_std) == (TOWER_MEAN, TOWER_STD)  # its preprocessor_config.json
    assert processor.image_size == IMAGE_SIZE
    # Without an image processor config: the family's normalization (CLIP's own statistics).
    _, processor = from_pretrained_backbones(
        text_checkpoints["llama"], vision_checkpoints["clip"], preset=PRESET, video_config={"image_size": 48}
    )
    torch.testing.assert_close(torch.tensor(processor.image_mean), torch.tensor(OPENAI_CLIP_MEAN))
    torch.testing.assert_close(torch.tensor(processor.image_std), torch.tensor(OPENAI_CLIP_STD))
    assert processor.image_size == 48  # sin-cos positions let the encoder take other sizes


def test_config_takes_sizes_from_the_backbones_and_the_rest_from_the_preset():
    text = LlamaConfig(vocab_size=100, **{**_TEXT_SIZES, "num_hidden_layers": 18})
    tower = CLIPVisionConfig(**{**_VISION_SIZES, "patch_size": 4, "image_size": 24, "hidden_size": 48})
    config = config_from_backbones(text, tower, preset=PRESET, num_chunks=2, combiner_config={"num_output_tokens": 2})
    assert config.text_config.cross_attention_layers == [2, 5, 8, 11, 14, 17]  # the paper's 3B layout for 18 layers
    assert (config.text_config.hidden_size, config.text_config.num_hidden_layers) == (32, 18)
    assert config.video_config.hidden_size == 48 and config.video_config.image_size == 24
    assert config.video_config.tubes[0]["kernel"] == [1, 4, 4] and config.video_config.tubes[0]["stride"][1:] == [4, 4]
    assert config.video_config.tubes[1:] == MirasolForConditionalGeneration.config_class.from_preset(
        PRESET
    ).video_config.tubes[1:]
    assert (config.num_chunks, config.combiner_config.num_output_tokens) == (2, 2)
    assert config.combiner_config.hidden_size == 32  # the preset's


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"text_config": {"hidden_size": 64}}, r"text_config.hidden_size=64 contradicts the text backbone"),
        ({"video_config": {"num_hidden_layers": 3}}, r"video_config.num_hidden_layers=3 contradicts the vision"),
        ({"video_config": {"tubes": [{"kernel": [2, 8, 8], "stride": [2, 8, 8], "offset": [0, 0, 0]}]}}, "1 x 8 x 8"),
        ({"text_config": LlamaConfig()}, "as a dict"),
    ],
)
def test_overrides_that_contradict_a_backbone_raise(overrides, message):
    text = LlamaConfig(vocab_size=100, **_TEXT_SIZES)
    tower = ViTConfig(**_VISION_SIZES)
    with pytest.raises(ValueError, match=message):
        config_from_backbones(text, tower, preset=PRESET, **overrides)


def _save_config(config, folder):
    config.save_pretrained(folder)
    return folder


def test_unsupported_backbones_raise_a_value_error_naming_what_is_missing(tmp_path, text_checkpoints):
    gpt2 = _save_config(GPT2Config(n_layer=1, n_embd=32, n_head=2), tmp_path / "gpt2")
    bert = _save_config(BertConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=2), tmp_path / "bert")
    wide_patch = _save_config(ViTConfig(**{**_VISION_SIZES, "patch_size": [8, 4]}), tmp_path / "vit-8x4")
    grey = _save_config(ViTConfig(**{**_VISION_SIZES, "num_channels": 1}), tmp_path / "vit-grey")
    llama = text_checkpoints["llama"]
    cases = [
        ({"text_model": gpt2}, r"'gpt2' model; the Mirasol text decoder needs a Llama-style decoder \(RMSNorm, rotary"),
        ({"text_model": bert}, r"'bert' model; the Mirasol text decoder needs"),
        ({"text_model": llama, "vision_model": bert}, r"'bert' model; Mirasol's encoders need a ViT-style tower"),
        ({"text_model": llama, "vision_model": wide_patch}, r"non-square patch \[8, 4\]"),
        ({"text_model": llama, "vision_model": grey}, "1-channel images; Mirasol's video frames are RGB"),
        ({"text_model": llama, "audio_model": bert}, r"audio_model is a 'bert' model"),
    ]
    for arguments, message in cases:
        with pytest.raises(ValueError, match=message):
            from_pretrained_backbones(**arguments, preset=PRESET)


def _training_batch(model, processor):
    batch = processor(text=["what color was the square?", "which sound was heard?"], answers=["red", "beep"])
    return {**batch, **random_media(model.config)}


@pytest.mark.parametrize("family", ["qwen2", "mistral"])  # LM head tied to the embedding, and not
def test_freezing_the_text_backbone_trains_everything_else_and_leaves_the_lm_unchanged(
    family, text_checkpoints, vision_checkpoints
):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, processor = from_pretrained_backbones(
            text_checkpoints[family], vision_checkpoints["siglip"], preset=PRESET
        )
    names = {name for name, _ in model.named_parameters()}  # a tied LM head is listed once, as the embedding
    frozen = names - set(apply_training_stage(model, "pretrain"))
    backbone = {
        name
        for name in names
        if name.startswith(("model.text_model.", "lm_head.")) and ".cross_attention_blocks." not in name
    }
    assert frozen == backbone
    assert ("lm_head.weight" in frozen) == (family == "mistral")
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert trainable == names - backbone
    assert any(".cross_attention_blocks." in name for name in trainable)

    before = copy.deepcopy(model.state_dict())
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    model(**_training_batch(model, processor)).loss.backward()
    optimizer.step()
    after = model.state_dict()
    for name in backbone:
        assert torch.equal(after[name], before[name]), name
    for part in ("model.video_encoder.", "model.combiner.", "model.latent_model.", "model.text_model.cross_attention"):
        assert any(not torch.equal(after[name], before[name]) for name in after if name.startswith(part)), part


def test_model_from_backbones_saves_reloads_and_generates_the_same(tmp_path, text_checkpoints, vision_checkpoints):
    torch.manual_seed(0)  # the new parts' initialisation
    model, processor = from_pretrained_backbones(
        text_checkpoints["qwen2"], vision_checkpoints["clip"], vision_checkpoints["clip"], preset=PRESET
    )
    open_gates(model, 0.5)  # the media and the cross-attention weights must matter
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    reloaded = MirasolForConditionalGeneration.from_pretrained(tmp_path).eval()
    reloaded_processor = MirasolProcessor.from_pretrained(tmp_path)
    reloaded_text, text = reloaded.config.text_config.to_dict(), model.config.text_config.to_dict()
    assert {**reloaded_text, "dtype": None} == {**text, "dtype": None}  # dtype is recorded at saving
    assert reloaded_processor.image_mean == processor.image_mean

    inputs = reloaded_processor(text=["what color was the square?", "which sound was heard?"])
    media = random_media(model.config)
    settings = {"max_new_tokens": 5, "do_sample": False, **inputs, **media}
    expected = model.generate(**settings)
    assert expected.shape[1] > inputs["input_ids"].shape[1]
    torch.testing.assert_close(reloaded.generate(**settings), expected, rtol=0, atol=0)
    with torch.no_grad():  # gates open: the media reach the logits, so the reload was checked with them in play
        with_media = reloaded(**inputs, **media).logits
        assert not torch.allclose(with_media, reloaded(**inputs).logits)
