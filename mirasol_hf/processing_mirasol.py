"""MirasolProcessor: videos (frames + their audio) and question/answer text -> the model's input tensors."""

import dataclasses
import json
import logging
import os
from typing import NamedTuple

import numpy as np
import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.utils import PaddingStrategy
from transformers.processing_utils import ProcessingKwargs, ProcessorMixin, Unpack, VideosKwargs

from .feature_extraction_mirasol import MirasolFeatureExtractor
from .media import (
    DEFAULT_MAX_FRAME_PIXELS,
    FRAME_SAMPLING_MODES,
    MediaClip,
    MediaError,
    chunk_time_windows,
    load_media,
    media_from_waveform,
    sample_frame_indices,
)


logger = logging.getLogger(__name__)

# Defaults follow MirasolConfig's; build from a model with `MirasolProcessor.from_model_config`.
DEFAULT_NUM_CHUNKS = 4
DEFAULT_FRAMES_PER_CHUNK = 8
DEFAULT_IMAGE_SIZE = 224
DEFAULT_IMAGE_MEAN = (0.5, 0.5, 0.5)
DEFAULT_IMAGE_STD = (0.5, 0.5, 0.5)
DEFAULT_PROMPT_TEMPLATE = "question: {question} answer:"
QUESTION_FIELD = "{question}"
# Between the prompt and the answer: the answer is tokenized as it reads in "... answer: dog".
ANSWER_SEPARATOR = " "
IGNORE_INDEX = -100
PIXEL_MAX = 255.0


class MirasolVideosKwargs(VideosKwargs, total=False):
    """Call-time video sampling: `num_frames` (a multiple of `frames_per_chunk`) or `fps`, and these."""

    start_time: float | None
    end_time: float | None
    frame_sampling: str | None


class MirasolProcessorKwargs(ProcessingKwargs, total=False):
    videos_kwargs: MirasolVideosKwargs
    format_prompt: bool


class AudioInput(NamedTuple):
    """Sound given without pictures: a waveform at `sampling_rate`, or a path / file object."""

    source: object
    sampling_rate: int | None = None


def _known_kwargs() -> set:
    """Every keyword `MirasolProcessor.__call__` takes: flat, per modality, or as a modality's dict."""
    keys = set(MirasolProcessorKwargs.__annotations__) | {"common_kwargs"}
    for name, typed_dict in MirasolProcessorKwargs.__annotations__.items():
        keys |= set(getattr(typed_dict, "__annotations__", {}))
    return keys


def _is_waveform_list(value) -> bool:
    """A plain list of samples (one waveform), not a list of waveforms or paths."""
    return bool(value) and all(isinstance(item, (int, float, np.floating)) for item in value)


def _is_rectangular(rows) -> bool:
    return not isinstance(rows, list) or len({len(row) if isinstance(row, list) else -1 for row in rows}) <= 1


def _select_frames(clip: MediaClip, indices) -> MediaClip:
    """The clip with only the frames at `indices` (positions in `clip.frames`)."""
    indices = np.asarray(indices)
    return dataclasses.replace(
        clip, frames=clip.frames[indices], frame_indices=clip.frame_indices[indices], frame_times=clip.frame_times[indices]
    )


def _spread_over_chunks(num_frames: int, frames_per_chunk: int) -> np.ndarray:
    """Positions of `num_frames` frames spread evenly over whole chunks (repeating some when they do not fill the
    last one)."""
    num_chunks = -(-num_frames // frames_per_chunk)
    return np.arange(num_chunks * frames_per_chunk) * num_frames // (num_chunks * frames_per_chunk)


def default_chat_template(prompt_template: str = DEFAULT_PROMPT_TEMPLATE) -> str:
    """A chat template that renders a user turn + generation prompt exactly as `prompt_template` does.

    User text fills `{question}`; the text after `{question}` (e.g. " answer:") opens the assistant turn, which
    ends with the eos token (inside `{% generation %}`, for `return_assistant_tokens_mask`); video blocks render as nothing (the model reads them through cross-attention).
    """
    if prompt_template.count(QUESTION_FIELD) != 1:
        raise ValueError(f"prompt_template must contain {QUESTION_FIELD} once, got {prompt_template!r}")
    before, after = (json.dumps(part) for part in prompt_template.split(QUESTION_FIELD))
    separator = json.dumps(ANSWER_SEPARATOR)
    return (
        "{%- for message in messages -%}"
        "{%- if message['content'] is string -%}{%- set text = message['content'] -%}"
        "{%- else -%}{%- set text = message['content'] | selectattr('type', 'equalto', 'text')"
        " | map(attribute='text') | join(' ') -%}{%- endif -%}"
        "{%- if message['role'] == 'assistant' -%}"
        f"{{{{ {after} }}}}{{{{ {separator} }}}}"
        "{%- generation -%}{{ text }}{{ eos_token }}{%- endgeneration -%}"
        "{%- else -%}"
        f"{{%- if not loop.first -%}}{{{{ {separator} }}}}{{%- endif -%}}"
        "{%- if message['role'] == 'user' -%}"
        f"{{{{ {before} }}}}{{{{ text }}}}"
        "{%- else -%}{{ text }}{%- endif -%}"
        "{%- endif -%}"
        "{%- endfor -%}"
        f"{{%- if add_generation_prompt -%}}{{{{ {after} }}}}{{%- endif -%}}"
    )


class MirasolProcessor(ProcessorMixin):
    """Turns videos (paths, file objects, arrays, or dicts of frames + waveform) and questions into model inputs.

    Each video gives `num_chunks * frames_per_chunk` frames sampled uniformly over the clip, resized to
    `image_size` x `image_size` and normalized, and the log-mel of its audio track cut into the same chunk time
    windows (see `mirasol_hf.media` and `MirasolFeatureExtractor`). Questions are wrapped in `prompt_template`;
    with `answers`, the answer and eos follow the prompt and `labels` supervise only them. Text is left-padded.

    Args:
        feature_extractor: a `MirasolFeatureExtractor` (mel bins, audio frames per chunk).
        tokenizer: any fast tokenizer with pad and eos tokens.
        num_chunks, frames_per_chunk, image_size: the model's chunking and frame size.
        audio_frames_per_chunk: when given, replaces the feature extractor's value.
        image_mean, image_std: per-channel normalization of pixels scaled to [0, 1].
        prompt_template: how a question becomes a prompt; must contain `{question}`.
        frame_sampling: "exact" or "nearest_keyframe" (see `mirasol_hf.media.read_media`).
        max_frame_pixels: videos with larger frames are refused.
        chat_template: Jinja template; by default one matching `prompt_template`.
    """

    valid_processor_kwargs = MirasolProcessorKwargs
    # Defaults of the per-modality kwargs (transformers' ProcessingKwargs convention): left padding for generation.
    text_kwargs = {"padding": True, "return_tensors": "pt"}
    videos_kwargs = {"return_tensors": "pt"}
    audio_kwargs = {"return_tensors": "pt"}

    def __init__(
        self,
        feature_extractor=None,
        tokenizer=None,
        num_chunks: int = DEFAULT_NUM_CHUNKS,
        frames_per_chunk: int = DEFAULT_FRAMES_PER_CHUNK,
        image_size: int = DEFAULT_IMAGE_SIZE,
        audio_frames_per_chunk: int | None = None,
        image_mean=DEFAULT_IMAGE_MEAN,
        image_std=DEFAULT_IMAGE_STD,
        prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
        frame_sampling: str = "exact",
        max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS,
        chat_template: str | None = None,
    ):
        if frame_sampling not in FRAME_SAMPLING_MODES:
            raise ValueError(f"frame_sampling must be one of {FRAME_SAMPLING_MODES}, got {frame_sampling!r}")
        sizes = {"num_chunks": num_chunks, "frames_per_chunk": frames_per_chunk, "image_size": image_size}
        for name, value in sizes.items():
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if len(image_mean) != 3 or len(image_std) != 3:
            raise ValueError("image_mean and image_std need one value per RGB channel")
        self.num_chunks = int(num_chunks)
        self.frames_per_chunk = int(frames_per_chunk)
        self.image_size = int(image_size)
        self.image_mean = [float(value) for value in image_mean]
        self.image_std = [float(value) for value in image_std]
        self.prompt_template = prompt_template
        self.frame_sampling = frame_sampling
        self.max_frame_pixels = int(max_frame_pixels)
        if chat_template is None:
            chat_template = default_chat_template(prompt_template)
        super().__init__(feature_extractor, tokenizer, chat_template=chat_template)
        if audio_frames_per_chunk is not None:
            self.feature_extractor.audio_frames_per_chunk = int(audio_frames_per_chunk)
        if self.tokenizer.pad_token_id is None or self.tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer needs pad and eos tokens")
        # Text is padded on the left here, and so must be any batch of this processor's outputs that others collate:
        # transformers' pipelines (e.g. "any-to-any" with batch_size > 1) pad by these two attributes and refuse
        # to batch when they disagree. The feature extractor pads nothing itself.
        self.tokenizer.padding_side = "left"
        self.feature_extractor.padding_side = "left"

    def save_pretrained(self, save_directory, *args, **kwargs):
        # transformers sets `auto_map` on the processor itself while writing it to the saved file: keep this object
        # as it was, so that it still equals a copy loaded from that folder.
        had_auto_map = "auto_map" in self.__dict__
        try:
            return super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            if not had_auto_map:
                self.__dict__.pop("auto_map", None)

    @classmethod
    def from_model_config(cls, config, tokenizer, **kwargs) -> "MirasolProcessor":
        """A processor matching a `MirasolConfig` (read by attribute name: no import of the config class)."""
        feature_extractor = MirasolFeatureExtractor(
            num_mel_bins=config.audio_config.num_mel_bins, audio_frames_per_chunk=config.audio_frames_per_chunk
        )
        return cls(
            feature_extractor,
            tokenizer,
            num_chunks=config.num_chunks,
            frames_per_chunk=config.frames_per_chunk,
            image_size=config.video_config.image_size,
            **kwargs,
        )

    @classmethod
    def _get_arguments_from_pretrained(cls, pretrained_model_name_or_path, processor_dict=None, **kwargs):
        # The feature extractor class is known: load it directly, so loading needs no Auto-class registration.
        subfolder = kwargs.pop("subfolder", "")
        feature_extractor = MirasolFeatureExtractor.from_pretrained(
            pretrained_model_name_or_path, subfolder=subfolder, **kwargs
        )
        tokenizer = cls._load_tokenizer_from_pretrained(
            "tokenizer", pretrained_model_name_or_path, subfolder=subfolder, **kwargs
        )
        return [feature_extractor, tokenizer]

    @property
    def num_frames(self) -> int:
        return self.num_chunks * self.frames_per_chunk

    @property
    def audio_frames_per_chunk(self) -> int:
        return self.feature_extractor.audio_frames_per_chunk

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values_videos", "video_chunk_mask"] + list(
            self.feature_extractor.model_input_names
        )

    def __call__(
        self,
        videos=None,
        text=None,
        audio=None,
        images=None,
        answers=None,
        **kwargs: Unpack[MirasolProcessorKwargs],
    ) -> BatchFeature:
        """Model inputs for one clip or a batch.

        Args:
            videos: a video or a list of them: path, file object, `(F, H, W, 3)` uint8 array, `MediaClip`, or a dict
                (`{"path", "start_time", "end_time"}`, `{"frames", "waveform", "sampling_rate", "fps"}`, or
                `{"audio", "sampling_rate"}` for sound alone, as `audio=` below).
            text: a question or a list of them (one per video).
            audio: sound, as Qwen2.5-Omni's processor takes it: a `(samples,)` float waveform (at `sampling_rate`,
                default the feature extractor's) or an audio file, or a list with one per batch item (None: the
                video's own track). Alone, an item gets all-False `video_chunk_mask` and chunks tiling the sound's
                duration; beside a video it replaces the video's track, starting with its first frame.
            answers: answers for training; adds `labels`.
            kwargs: transformers' processor kwargs, flat or per modality (`text_kwargs`, `videos_kwargs`,
                `audio_kwargs`): the tokenizer's (`padding`, `truncation`, `max_length`, `return_offsets_mapping`,
                ...; padding is on the left), video sampling (`num_frames`, a multiple of `frames_per_chunk`; `fps`;
                `start_time` / `end_time` in seconds; `frame_sampling`), `sampling_rate` of `audio`,
                `return_tensors` (default "pt"), and `format_prompt=False` when `text` is a prompt already (as from
                the chat template).

        Returns:
            `BatchFeature` with `pixel_values_videos` `(B, F, 3, S, S)`, `video_chunk_mask` `(B, T)`,
            `input_features` `(B, mels, T * A)`, `audio_chunk_mask` `(B, T)` when videos or audio are given, and
            `input_ids`, `attention_mask` `(B, L)` (+ `labels` with answers) when text is given.
        """
        if images is not None:
            raise ValueError("Mirasol takes videos, not images: pass frames as a (F, H, W, 3) video")
        if videos is None and audio is None and text is None:
            raise ValueError("give videos, audio, text, or a combination")
        unknown = sorted(set(kwargs) - _known_kwargs())
        if unknown:
            # transformers only warns here; a misspelt option silently ignored costs users more than an error.
            raise TypeError(f"MirasolProcessor got unexpected arguments {unknown}")
        options = self._merge_kwargs(
            MirasolProcessorKwargs, tokenizer_init_kwargs=self.tokenizer.init_kwargs, **kwargs
        )
        text_kwargs, videos_kwargs, audio_kwargs = (
            options["text_kwargs"], options["videos_kwargs"], options["audio_kwargs"]
        )
        return_tensors = text_kwargs.pop("return_tensors", None) or videos_kwargs.get("return_tensors")
        data = {}
        batch_size = None
        if videos is not None or audio is not None:
            media = self._media_list(videos, audio, audio_kwargs.get("sampling_rate"))
            batch_size = len(media)
            data.update(self._process_media(media, videos_kwargs))
        if text is not None:
            texts = [text] if isinstance(text, str) else list(text)
            if batch_size is not None and len(texts) != batch_size:
                raise ValueError(f"got {batch_size} videos but {len(texts)} texts")
            if answers is not None:
                answers = [answers] if isinstance(answers, str) else list(answers)
                if len(answers) != len(texts):
                    raise ValueError(f"got {len(texts)} texts but {len(answers)} answers")
            prompts = texts
            if options.get("format_prompt", True):
                prompts = [self.prompt_template.format(question=question) for question in texts]
            data.update(self._tokenize(prompts, answers, text_kwargs))
        elif answers is not None:
            raise ValueError("answers need questions in `text`")
        return BatchFeature(data, tensor_type=return_tensors)

    def _media_list(self, videos, audio, sampling_rate) -> list:
        """One input per batch item: a video, `AudioInput` for sound alone, or (video, `AudioInput`) for a video
        whose sound comes from elsewhere."""
        video_list = None if videos is None else self._video_list(videos)
        if audio is None:
            return video_list
        if isinstance(audio, (list, tuple)) and not _is_waveform_list(audio):
            audio_list = list(audio)
        else:
            audio_list = [audio]
        if video_list is None:
            video_list = [None] * len(audio_list)
        if len(audio_list) != len(video_list):
            raise ValueError(f"got {len(video_list)} videos but {len(audio_list)} audio inputs")
        media = []
        for video, sound in zip(video_list, audio_list):
            if video is None and sound is None:
                raise ValueError("a batch item has neither a video nor audio")
            sound = None if sound is None else AudioInput(sound, sampling_rate)
            media.append(sound if video is None else video if sound is None else (video, sound))
        return media

    @staticmethod
    def _video_list(videos) -> list:
        if not isinstance(videos, (list, tuple)):
            return [videos]
        videos = list(videos)
        # apply_chat_template passes one list of videos per conversation.
        if videos and all(isinstance(item, (list, tuple)) for item in videos):
            if any(len(item) != 1 for item in videos):
                raise ValueError("each conversation (batch item) needs exactly one video")
            videos = [item[0] for item in videos]
        if not videos:
            raise ValueError("videos is an empty list")
        return videos

    def read_video(self, video, num_frames=None, fps=None, start_time=None, end_time=None, frame_sampling=None,
                   **read_options) -> MediaClip:
        """One video read with this processor's settings (frame count, size, audio rate, sampling mode) as a
        `MediaClip`, which `__call__` also accepts.

        `num_frames` (a multiple of `frames_per_chunk`) or `fps`, `start_time` / `end_time` (seconds) and
        `frame_sampling` override the processor's sampling for this call; with `fps`, the frames it gives are
        spread over whole chunks. `read_options` go to `read_media` (e.g. `progress=bar.update`).
        """
        per_chunk = self.frames_per_chunk
        if num_frames is not None and fps is not None:
            raise ValueError("num_frames and fps are mutually exclusive")
        if num_frames is not None and (num_frames < per_chunk or num_frames % per_chunk):
            raise ValueError(f"num_frames must be a positive multiple of frames_per_chunk={per_chunk}, got {num_frames}")
        if isinstance(video, dict) and "audio" in video:
            extra = set(video) - {"audio", "sampling_rate"}
            if extra:
                raise MediaError(f"unknown keys {sorted(extra)} in an audio dict (keys: 'audio', 'sampling_rate')")
            video = AudioInput(video["audio"], video.get("sampling_rate"))
        if isinstance(video, AudioInput):
            return self._read_audio(video)
        if isinstance(video, MediaClip):
            return video
        sampling = {"fps": fps, "start_time": start_time, "end_time": end_time}
        if isinstance(video, dict) and ("path" in video or "video" in video):
            sampling.update({key: video[key] for key in ("start_time", "end_time") if video.get(key) is not None})
            video = video["path" if "path" in video else "video"]
        is_file = isinstance(video, (str, os.PathLike)) or hasattr(video, "read")
        frame_count = None if fps is not None else num_frames or self.num_frames
        size = {"width": self.image_size, "height": self.image_size}
        if any(value is not None for value in sampling.values()) and not is_file:
            # Decoded arrays: take every frame, then sample them on their own clock as the reader samples files.
            clip = load_media(video, sampling_rate=self.feature_extractor.sampling_rate, **size)
            clip = _select_frames(clip, sample_frame_indices(
                clip.frame_times, clip.end_time, num_frames=frame_count, fps=fps,
                start_time=sampling["start_time"], range_end_time=sampling["end_time"],
            ))
        else:
            read = {key: value for key, value in sampling.items() if value is not None}
            clip = load_media(
                video,
                num_frames=frame_count,
                sampling_rate=self.feature_extractor.sampling_rate,
                frame_sampling=frame_sampling or self.frame_sampling,
                max_frame_pixels=self.max_frame_pixels,
                **size,
                **read,
                **read_options,
            )
        if fps is not None and clip.has_video:
            clip = _select_frames(clip, _spread_over_chunks(clip.num_frames, per_chunk))
        if clip.has_video and (
            clip.num_frames % per_chunk or clip.frames.shape[1:3] != (self.image_size, self.image_size)
        ):
            raise MediaError(
                f"{clip.source}: got frames of shape {clip.frames.shape}, expected "
                f"(a multiple of {per_chunk}, {self.image_size}, {self.image_size}, 3)"
            )
        return clip

    def _chunk_audio_sink(self, fps: float | None, made: list):
        """`read_media`'s `audio_sink`: a log-mel accumulator of the chunk windows of the frames `read_video` keeps
        (appended to `made`), so that a video file's waveform is never held whole; None when the frames do not
        fill whole chunks (`read_video` then raises)."""
        per_chunk = self.frames_per_chunk

        def make(frame_times: np.ndarray, end_time: float):
            if fps is not None and len(frame_times):
                frame_times = frame_times[_spread_over_chunks(len(frame_times), per_chunk)]
            if not len(frame_times) or len(frame_times) % per_chunk:
                return None
            windows = chunk_time_windows(frame_times, end_time, len(frame_times) // per_chunk)  # (T, 2)
            made.append(self.feature_extractor.accumulator(windows))
            return made[-1]

        return make

    def _read_audio(self, audio: "AudioInput") -> MediaClip:
        """Sound without pictures as a `MediaClip` with no frames, its waveform at the feature extractor's rate."""
        target_rate = self.feature_extractor.sampling_rate
        if isinstance(audio.source, (str, os.PathLike)) or hasattr(audio.source, "read"):
            clip = load_media(audio.source, num_frames=1, sampling_rate=target_rate, max_frame_pixels=self.max_frame_pixels)
            if clip.waveform is None:
                raise MediaError(f"{clip.source}: the file has no audio stream")
            # A video file given as `audio`: its sound only.
            return clip if not clip.has_video else media_from_waveform(clip.waveform, target_rate, target_rate, clip.source)
        rate = target_rate if audio.sampling_rate is None else audio.sampling_rate
        return media_from_waveform(audio.source, rate, target_rate)

    def _process_media(self, media: list, videos_kwargs: dict) -> dict:
        read = {key: videos_kwargs.get(key) for key in ("num_frames", "fps", "start_time", "end_time", "frame_sampling")}
        decoded = self.decode_videos(media, **read)
        return {"pixel_values_videos": self.normalize_frames(decoded.pop("frames")), **decoded}

    def decode_videos(self, video_list: list, **read_options) -> dict:
        """Videos (and sound, see `_media_list`) -> `frames` (B, F, S, S, 3) uint8, `video_chunk_mask`,
        `input_features`, `audio_chunk_mask`: the media inputs before frame normalisation. `read_options` are
        `read_video`'s (num_frames, fps, start_time, end_time, frame_sampling)."""
        clips, accumulators = [], {}  # clip number -> its audio's log-mel accumulator (video files)
        for item in video_list:
            if isinstance(item, tuple) and not isinstance(item, AudioInput):
                # A video with a sound track of its own: the given audio replaces the video's, from its first frame.
                video, sound = item
                track = self._read_audio(sound)
                clip = self.read_video(video, read_audio=False, **read_options)  # its own sound is not used
                clip = dataclasses.replace(clip, waveform=track.waveform, waveform_start_time=track.waveform_start_time)
            else:
                made = []  # accumulators the reader asked for; its last one holds the clip's audio
                sink = self._chunk_audio_sink(read_options.get("fps"), made)
                clip = self.read_video(item, audio_sink=sink, **read_options)
                if made and clip.waveform is None:
                    accumulators[len(clips)] = made[-1]
            clips.append(clip)
        per_chunk = self.frames_per_chunk
        # Sound alone is cut into as many chunks as a video read with the same settings.
        audio_only_chunks = (read_options.get("num_frames") or self.num_frames) // per_chunk
        clip_chunks = [clip.num_frames // per_chunk or audio_only_chunks for clip in clips]
        num_chunks = max(clip_chunks)
        size = self.image_size
        # Clips with fewer chunks (fps sampling of shorter videos, audio alone) are padded with empty chunks, which
        # the model replaces with its learned "no video" embedding whatever their pixels.
        frames = np.zeros((len(clips), num_chunks * per_chunk, size, size, 3), np.uint8)  # (B, F, S, S, 3)
        video_chunk_mask = np.zeros((len(clips), num_chunks), dtype=bool)
        windows = []
        for i, (clip, count) in enumerate(zip(clips, clip_chunks)):
            if clip.has_video:
                frames[i, : clip.num_frames] = clip.frames
                video_chunk_mask[i, :count] = True
            clip_windows = clip.chunk_windows(count)  # (T_i, 2); sound alone: equal windows tiling it
            # Padded chunks get empty windows at the clip's end: no audio falls in them.
            padding = np.full((num_chunks - count, 2), clip_windows[-1, 1])
            windows.append(np.concatenate([clip_windows, padding]))
        audio = self.feature_extractor(
            [clip.waveform for clip in clips],
            chunk_windows=windows,
            waveform_start_times=[clip.waveform_start_time for clip in clips],
        )
        for i, accumulator in accumulators.items():
            # The same features, made while the audio was decoded; the padded chunks stay empty as above.
            features, mask = accumulator.finish()
            audio["input_features"][i, :, : features.shape[1]] = features
            audio["audio_chunk_mask"][i, : len(mask)] = mask
        for clip, has_video, has_audio in zip(clips, video_chunk_mask.any(1), audio["audio_chunk_mask"].any(1)):
            if not has_video and not has_audio:
                logger.warning("%s: neither a frame nor any sound of it could be used: the model sees nothing", clip.source)
        return {
            "frames": frames,
            # A video fills every chunk it has: short clips repeat frames evenly instead of leaving chunks empty.
            "video_chunk_mask": video_chunk_mask,
            "input_features": audio["input_features"],
            "audio_chunk_mask": audio["audio_chunk_mask"],
        }

    def normalize_frames(self, frames: np.ndarray) -> np.ndarray:
        """uint8 frames (B, F, S, S, 3) -> the model's `pixel_values_videos` (B, F, 3, S, S) float32."""
        # (x / PIXEL_MAX - mean) / std as one in-place multiply-add, after the copy that moves channels first.
        scale = torch.tensor([1.0 / (PIXEL_MAX * std) for std in self.image_std])[:, None, None]  # (3, 1, 1)
        shift = torch.tensor([-mean / std for mean, std in zip(self.image_mean, self.image_std)])[:, None, None]
        pixels = torch.from_numpy(np.require(frames, requirements="W")).permute(0, 1, 4, 2, 3)  # -> (B, F, 3, S, S)
        pixels = pixels.to(torch.float32, memory_format=torch.contiguous_format)
        return pixels.mul_(scale).add_(shift).numpy()

    def _tokenize(self, prompts, answers, text_kwargs: dict) -> dict:
        """Token ids of the prompts (+ answers and their labels), through the tokenizer with `text_kwargs`."""
        # Mirasol has no media placeholder tokens: nothing to report about replacing them.
        for key in ("return_mm_token_type_ids", "return_text_replacement_offsets"):
            text_kwargs.pop(key, None)
        text_kwargs["padding_side"] = "left"
        if answers is None:
            encoded = self.tokenizer(prompts, **text_kwargs)
            return {key: np.array(value) if _is_rectangular(value) else value for key, value in encoded.items()}
        add_special_tokens = text_kwargs.get("add_special_tokens", True)
        unsupported = sorted(key for key, value in text_kwargs.items() if value and key.startswith("return_")
                             and key not in ("return_attention_mask",))
        if unsupported:
            raise ValueError(f"{unsupported} cannot be combined with `answers`")
        prompt_ids = self.tokenizer(prompts, add_special_tokens=add_special_tokens)["input_ids"]
        input_ids, labels = [], []
        max_length = text_kwargs.get("max_length")
        for i, prompt in enumerate(prompts):
            ids = list(prompt_ids[i])
            answer_ids = self._answer_ids(prompt, ids, answers[i], add_special_tokens)
            row_ids, row_labels = ids + answer_ids, [IGNORE_INDEX] * len(ids) + answer_ids
            if text_kwargs.get("truncation") not in (None, False, "do_not_truncate") and max_length is not None:
                # Cut as the tokenizer would (its truncation side), keeping ids and labels aligned.
                cut = slice(-max_length, None) if self.tokenizer.truncation_side == "left" else slice(0, max_length)
                row_ids, row_labels = row_ids[cut], row_labels[cut]
            input_ids.append(row_ids)
            labels.append(row_labels)
        padding = text_kwargs.get("padding", True)
        padded = self.tokenizer.pad(
            {"input_ids": input_ids},
            padding=padding,
            max_length=max_length if padding in ("max_length", PaddingStrategy.MAX_LENGTH) else None,
            pad_to_multiple_of=text_kwargs.get("pad_to_multiple_of"),
            padding_side="left",
            return_attention_mask=True,
        )
        lengths = {len(ids) for ids in padded["input_ids"]}
        if len(lengths) != 1:
            raise ValueError("texts of different lengths need padding=True to form a batch")
        length = lengths.pop()
        return {
            "input_ids": np.array(padded["input_ids"]),
            "attention_mask": np.array(padded["attention_mask"]),
            "labels": np.array([[IGNORE_INDEX] * (length - len(row)) + row for row in labels]),
        }

    def _answer_ids(self, prompt: str, prompt_ids: list, answer: str, add_special_tokens: bool) -> list:
        """Token ids of the answer as it reads after the prompt, ending with eos."""
        # Tokenizing prompt + answer together gives the answer the tokens it has in running text (a leading-space
        # token for byte-level BPE, for example); the prompt's own tokens must come out unchanged as the prefix.
        full_text = prompt + ANSWER_SEPARATOR + answer
        full_ids = self.tokenizer(full_text, add_special_tokens=add_special_tokens)["input_ids"]
        if full_ids[: len(prompt_ids)] == prompt_ids:
            answer_ids = list(full_ids[len(prompt_ids) :])
        else:
            answer_ids = self.tokenizer(answer, add_special_tokens=False)["input_ids"]
        eos = self.tokenizer.eos_token_id
        return answer_ids if answer_ids[-1:] == [eos] else answer_ids + [eos]

    def post_process_answer(self, generated_ids, input_ids=None, skip_special_tokens: bool = True) -> list[str]:
        """Answers from `generate()` output `(B, L_prompt + new)`: drop the prompt columns (`input_ids`' length)
        and everything from the first eos, then decode."""
        generated = torch.as_tensor(generated_ids).cpu().numpy()
        if generated.ndim == 1:
            generated = generated[None]  # (L,) -> (1, L)
        prompt_length = 0 if input_ids is None else torch.as_tensor(input_ids).shape[-1]
        if generated.shape[1] < prompt_length:
            raise ValueError(f"generate() output has {generated.shape[1]} tokens, fewer than the prompt's {prompt_length}")
        answers = []
        for row in generated[:, prompt_length:].tolist():
            if self.tokenizer.eos_token_id in row:
                row = row[: row.index(self.tokenizer.eos_token_id)]
            answers.append(self.tokenizer.decode(row, skip_special_tokens=skip_special_tokens).strip())
        return answers

    def _multimodal_inputs_from_conversations(self, conversations, audio_loading_params, load_audio_from_video=False):
        # Videos are read by __call__ with this package's PyAV reader, audio included; transformers' loaders (which
        # want torchvision or torchcodec) are never involved.
        batch_videos = []
        for conversation in conversations:
            videos = []
            for message in conversation:
                content = message.get("content")
                if isinstance(content, str) or content is None:
                    continue
                for block in content:
                    kind = block.get("type")
                    if kind in ("video", "audio"):
                        sources = [block[key] for key in (kind, "path", "url") if key in block]
                        if len(sources) != 1:
                            raise ValueError(f"a {kind} block needs one of '{kind}', 'path', 'url': {block}")
                        videos.append(sources[0] if kind == "video" else {"audio": sources[0]})
                    elif kind == "image":
                        raise ValueError("Mirasol takes video or audio blocks (a video's sound comes with it), not image")
            batch_videos.append(videos)
        # The rendered chat text is already the prompt: __call__ must not wrap it in prompt_template again.
        return [[] for _ in conversations], batch_videos, [], {"format_prompt": False}
