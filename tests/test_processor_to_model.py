"""The processor's output is the model's input: a clip written with PyAV, with audio, through forward and generate."""

import torch

from conftest import tiny_model_and_processor
from media_utils import write_video


def test_processor_output_feeds_forward_and_generate(tmp_path):
    model, processor = tiny_model_and_processor()
    clips = [
        write_video(tmp_path / "a.mp4", seconds=2.0, fps=10, width=48, height=40, tone_start=0.5),
        write_video(tmp_path / "b.mp4", seconds=3.0, fps=12, width=64, height=48, audio=None),
    ]
    batch = processor(videos=[str(c) for c in clips], text=["which sound was heard?", "what color was the square?"],
                      answers=["beep", "red"], return_tensors="pt")
    assert batch["audio_chunk_mask"][0].any() and not batch["audio_chunk_mask"][1].any()  # b has no audio track
    out = model(**batch)
    assert torch.isfinite(out.loss) and out.latent_loss is not None and out.reconstruction_loss is not None

    prompts = processor(videos=[str(c) for c in clips], text=["which sound was heard?", "what color?"],
                        return_tensors="pt")
    generated = model.generate(**prompts, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert generated.shape == (2, prompts["input_ids"].shape[1] + 4)
    answers = processor.post_process_answer(generated, prompts["input_ids"])
    assert len(answers) == 2 and all(isinstance(answer, str) for answer in answers)
    # the audio reaches the answer: the same clip with its audio masked out is answered from different logits
    muted = {**prompts, "audio_chunk_mask": torch.zeros_like(prompts["audio_chunk_mask"])}
    assert not torch.allclose(model(**prompts).logits[0], model(**muted).logits[0])
