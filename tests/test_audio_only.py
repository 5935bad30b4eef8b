"""Sound without pictures: audio-only files and waveforms give all-False video_chunk_mask, chunks that tile the
sound's duration, and a model that reads only the sound."""

import json

import av
import numpy as np
import pytest
import torch
from conftest import tiny_model_and_processor
from media_utils import AUDIO_RATE, TONE_HZ, tone, write_video

from mirasol_hf.cli import main
from mirasol_hf.media import read_media

SECONDS, TONE_START = 4.0, 2.5
SILENT_LOG_MEL, LOUD_LOG_MEL = -15.0, 0.0
# (file name, container format, codec): the kinds of audio-only files users have
AUDIO_FILES = [
    ("sound.wav", "wav", "pcm_s16le"),
    ("sound.m4a", "ipod", "aac"),
    ("sound.ogg", "ogg", "opus"),
    ("sound.mkv", "matroska", "flac"),
]


def write_sound(path, container_format: str, codec: str, waveform: np.ndarray, rate: int = AUDIO_RATE):
    """A file with one mono audio stream and nothing else, encoded as an audio tool would write it."""
    container = av.open(str(path), mode="w", format=container_format)
    encoder_rate = 48000 if codec == "opus" else rate  # Opus only encodes at 48 kHz
    stream = container.add_stream(codec, rate=encoder_rate)
    stream.layout = "mono"
    resampler = av.AudioResampler(format=stream.codec_context.format.name, layout="mono", rate=encoder_rate)
    frame = av.AudioFrame.from_ndarray(waveform[None].astype(np.float32), format="flt", layout="mono")
    frame.sample_rate, frame.pts = rate, 0
    for converted in resampler.resample(frame) + resampler.resample(None):
        for packet in stream.encode(converted):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


@pytest.fixture(scope="module")
def model_and_processor():
    return tiny_model_and_processor()


@pytest.fixture(scope="module")
def sounds(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sounds")
    waveform = tone(SECONDS, TONE_START)
    return {name: write_sound(folder / name, fmt, codec, waveform) for name, fmt, codec in AUDIO_FILES}


def tone_band(feature_extractor) -> int:
    frequencies = np.linspace(0, feature_extractor.sampling_rate / 2, feature_extractor.mel_filters.shape[0])
    return int(feature_extractor.mel_filters[np.abs(frequencies - TONE_HZ).argmin()].argmax())


@pytest.mark.parametrize("name", [name for name, _, _ in AUDIO_FILES])
def test_audio_only_file_tiles_its_duration_and_has_no_video(model_and_processor, sounds, name):
    _, processor = model_and_processor
    clip = read_media(sounds[name], num_frames=8)
    assert not clip.has_video and clip.end_time == pytest.approx(SECONDS, abs=0.05)
    out = processor(videos=str(sounds[name]), text="which sound was heard?", return_tensors="np")
    num_chunks = processor.num_chunks
    assert out["video_chunk_mask"].tolist() == [[False] * num_chunks]
    assert out["audio_chunk_mask"].tolist() == [[True] * num_chunks]
    assert out["pixel_values_videos"].shape[1] == processor.num_frames
    # 4 chunks of 1 s: the tone (from 2.5 s) is silent in chunks 0-1, loud in chunk 3, starts mid-chunk 2
    band = out["input_features"][0, tone_band(processor.feature_extractor)]
    per_chunk = band.reshape(num_chunks, -1)  # (T, A)
    assert per_chunk[:2].max() < SILENT_LOG_MEL and per_chunk[3].min() > LOUD_LOG_MEL
    half = per_chunk.shape[1] // 2
    assert per_chunk[2, : half - 1].max() < SILENT_LOG_MEL and per_chunk[2, half + 1 :].min() > LOUD_LOG_MEL


def test_audio_argument_takes_files_and_waveforms_and_matches_the_files(model_and_processor, sounds):
    _, processor = model_and_processor
    from_file = processor(audio=str(sounds["sound.wav"]), return_tensors="np")
    as_video = processor(videos=str(sounds["sound.wav"]), return_tensors="np")
    waveform = tone(SECONDS, TONE_START)
    from_waveform = processor(audio=waveform, sampling_rate=AUDIO_RATE, return_tensors="np")
    as_dict = processor(videos={"audio": waveform, "sampling_rate": AUDIO_RATE}, return_tensors="np")
    for out in (as_video, from_waveform, as_dict):
        assert out["video_chunk_mask"].tolist() == from_file["video_chunk_mask"].tolist()
        assert out["audio_chunk_mask"].tolist() == from_file["audio_chunk_mask"].tolist()
        # the wav stores 16-bit samples: the same sound, up to quantization noise (far below SILENT_LOG_MEL)
        np.testing.assert_allclose(
            np.maximum(out["input_features"], SILENT_LOG_MEL),
            np.maximum(from_file["input_features"], SILENT_LOG_MEL),
            atol=0.05,
        )
    with pytest.raises(ValueError, match="sampling_rate"):
        processor(audio=waveform, sampling_rate=0)



def test_a_batch_mixes_videos_and_sound_alone(model_and_processor, tmp_path):
    _, processor = model_and_processor
    video = write_video(tmp_path / "clip.mp4", seconds=2.0, fps=10, width=32, height=32)
    out = processor(videos=[str(video), None], audio=[None, tone(2.0, 0.0)], sampling_rate=AUDIO_RATE,
                    text=["what color was the square?", "which sound was heard?"])
    assert out["video_chunk_mask"].tolist() == [[True] * processor.num_chunks, [False] * processor.num_chunks]
    assert out["audio_chunk_mask"].all()
    alone = processor(videos=str(video), text="what color was the square?")
    assert torch.equal(out["pixel_values_videos"][:1], alone["pixel_values_videos"])


def test_audio_beside_a_video_replaces_its_sound_track(model_and_processor, tmp_path):
    _, processor = model_and_processor
    silent = write_video(tmp_path / "silent.mp4", seconds=SECONDS, fps=4, width=32, height=32, audio=None)
    with_tone = write_video(tmp_path / "tone.mp4", seconds=SECONDS, fps=4, width=32, height=32, tone_start=TONE_START)
    dubbed = processor(videos=str(silent), audio=tone(SECONDS, TONE_START), sampling_rate=AUDIO_RATE)
    reference = processor(videos=str(with_tone))  # the same sound muxed into the file
    assert torch.equal(dubbed["pixel_values_videos"], processor(videos=str(silent))["pixel_values_videos"])
    assert dubbed["video_chunk_mask"].all() and torch.equal(dubbed["audio_chunk_mask"], reference["audio_chunk_mask"])
    floor = SILENT_LOG_MEL
    torch.testing.assert_close(dubbed["input_features"].clamp(min=floor), reference["input_features"].clamp(min=floor),
                               atol=0.3, rtol=0)


def test_model_reads_only_the_sound_when_there_is_no_video(model_and_processor):
    model, processor = model_and_processor
    quiet = processor(audio=tone(SECONDS, None), sampling_rate=AUDIO_RATE, text="which sound was heard?")
    loud = processor(audio=tone(SECONDS, 0.0), sampling_rate=AUDIO_RATE, text="which sound was heard?")
    with torch.no_grad():
        logits = model(**loud).logits
        # masked chunks take the learned no-video embedding: whatever the pixels hold does not matter
        noisy = dict(loud, pixel_values_videos=torch.randn_like(loud["pixel_values_videos"]))
        torch.testing.assert_close(model(**noisy).logits, logits)
        without_pixels = {key: value for key, value in loud.items() if key != "pixel_values_videos"}
        torch.testing.assert_close(model(**without_pixels).logits, logits)
        # and the sound does
        assert not torch.allclose(model(**quiet).logits, logits)
        generated = model.generate(**loud, max_new_tokens=3, do_sample=False)
    assert generated.shape[1] > loud["input_ids"].shape[1]


def test_pipeline_and_cli_answer_about_an_audio_file(tiny_checkpoint, sounds, capsys):
    from transformers import pipeline

    pipe = pipeline("video-question-answering", model=str(tiny_checkpoint))
    expected = pipe({"audio": str(sounds["sound.m4a"])}, "which sound was heard?", max_new_tokens=3)["answer"]
    assert pipe(str(sounds["sound.m4a"]), "which sound was heard?", max_new_tokens=3)["answer"] == expected
    code = main(["answer", str(sounds["sound.m4a"]), "which sound was heard?", "--model", str(tiny_checkpoint),
                 "--max-new-tokens", "3", "--json", "--quiet"])
    assert code == 0
    assert json.loads(capsys.readouterr().out)[0]["answer"] == expected


def test_a_file_without_video_or_audio_is_a_clear_error(tmp_path):
    path = tmp_path / "subtitles.mkv"
    container = av.open(str(path), mode="w", format="matroska")
    container.add_stream("ass")
    container.close()
    with pytest.raises(ValueError, match="subtitles.mkv"):
        read_media(path, num_frames=4)


def test_unreadable_media_gets_a_sentence_not_an_empty_answer(tiny_checkpoint, caplog):
    from transformers import pipeline

    from mirasol_hf.pipeline import UNREADABLE_ANSWER

    pipe = pipeline("video-question-answering", model=str(tiny_checkpoint))
    silence_of_nothing = {"frames": np.zeros((0, 8, 8, 3), np.uint8)}
    with pytest.raises(ValueError):
        pipe(silence_of_nothing, "what?")
    clip = pipe.processor.read_video({"audio": tone(1.0, 0.0), "sampling_rate": AUDIO_RATE})
    clip.waveform = None  # a sound track that decoded to nothing
    assert pipe(clip, "which sound was heard?", max_new_tokens=2) == {"answer": UNREADABLE_ANSWER}
    assert "<audio>: neither a frame nor any sound" in caplog.text  # the processor says so too


def test_chat_audio_block_is_read_as_sound_alone(model_and_processor, sounds):
    _, processor = model_and_processor
    content = [{"type": "audio", "path": str(sounds["sound.wav"])}, {"type": "text", "text": "which sound was heard?"}]
    out = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                        tokenize=True, return_dict=True)
    direct = processor(audio=str(sounds["sound.wav"]), text="which sound was heard?")
    assert set(out.keys()) == set(direct.keys())
    for key in direct:
        assert torch.equal(out[key], direct[key]), key
