"""MirasolProcessor: videos (frames + their audio) and question/answer text -> the model's input tensors."""

import json

import numpy as np
import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .feature_extraction_mirasol import MirasolFeatureExtractor
from .media import DEFAULT_MAX_FRAME_PIXELS, FRAME_SAMPLING_MODES, MediaClip, MediaError, load_media


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


def default_chat_template(prompt_template: str = DEFAULT_PROMPT_TEMPLATE) -> str:
    """A chat template that renders a user turn + generation prompt exactly as `prompt_template` does.

    User text fills `{question}`; the text after `{question}` (e.g. " answer:") opens the assistant turn, which
    ends with the eos token; video blocks render as nothing (the model reads them through cross-attention).
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
        f"{{{{ {after} }}}}{{{{ {separator} }}}}{{{{ text }}}}{{{{ eos_token }}}}"
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
        answers=None,
        return_tensors="pt",
        format_prompt: bool = True,
        add_special_tokens: bool = True,
        padding: bool | str = True,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        images=None,
        audio=None,
        **kwargs,
    ) -> BatchFeature:
        """Model inputs for one clip or a batch.

        Args:
            videos: a video or a list of them: path, file object, `(F, H, W, 3)` uint8 array, `MediaClip`, or a dict
                (`{"path", "start_time", "end_time"}` or `{"frames", "waveform", "sampling_rate", "fps"}`).
            text: a question or a list of them (one per video).
            answers: answers for training; adds `labels`.
            format_prompt: wrap `text` in `prompt_template` (False: `text` is the prompt already, as from a chat
                template).
            add_special_tokens, padding, max_length, pad_to_multiple_of: as for the tokenizer; padding is on the left.

        Returns:
            `BatchFeature` with `pixel_values_videos` `(B, F, 3, S, S)`, `video_chunk_mask` `(B, T)`,
            `input_features` `(B, mels, T * A)`, `audio_chunk_mask` `(B, T)` when videos are given, and
            `input_ids`, `attention_mask` `(B, L)` (+ `labels` with answers) when text is given.
        """
        # Keys apply_chat_template may add that have no meaning here: there are no placeholder tokens to expand.
        for key in ("return_text_replacement_offsets", "return_mm_token_type_ids"):
            kwargs.pop(key, None)
        if kwargs:
            raise TypeError(f"MirasolProcessor got unexpected arguments {sorted(kwargs)}")
        if images is not None:
            raise ValueError("Mirasol takes videos, not images: pass frames as a (F, H, W, 3) video")
        if audio is not None:
            raise ValueError("Mirasol reads audio from each video: pass {'frames': ..., 'waveform': ...} as the video")
        if videos is None and text is None:
            raise ValueError("give videos, text, or both")
        data = {}
        batch_size = None
        if videos is not None:
            video_list = self._video_list(videos)
            batch_size = len(video_list)
            data.update(self._process_videos(video_list))
        if text is not None:
            texts = [text] if isinstance(text, str) else list(text)
            if batch_size is not None and len(texts) != batch_size:
                raise ValueError(f"got {batch_size} videos but {len(texts)} texts")
            if answers is not None:
                answers = [answers] if isinstance(answers, str) else list(answers)
                if len(answers) != len(texts):
                    raise ValueError(f"got {len(texts)} texts but {len(answers)} answers")
            prompts = texts
            if format_prompt:
                prompts = [self.prompt_template.format(question=question) for question in texts]
            data.update(self._tokenize(prompts, answers, add_special_tokens, padding, max_length, pad_to_multiple_of))
        elif answers is not None:
            raise ValueError("answers need questions in `text`")
        return BatchFeature(data, tensor_type=return_tensors)

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

    def read_video(self, video, **read_options) -> MediaClip:
        """One video read with this processor's settings (frame count, size, audio rate, sampling mode) as a
        `MediaClip`, which `__call__` also accepts; `read_options` go to `read_media` (e.g. `progress=bar.update`)."""
        clip = load_media(
            video,
            num_frames=self.num_frames,
            width=self.image_size,
            height=self.image_size,
            sampling_rate=self.feature_extractor.sampling_rate,
            frame_sampling=self.frame_sampling,
            max_frame_pixels=self.max_frame_pixels,
            **read_options,
        )
        if clip.num_frames != self.num_frames or clip.frames.shape[1:3] != (self.image_size, self.image_size):
            raise MediaError(
                f"{clip.source}: got frames of shape {clip.frames.shape}, expected "
                f"({self.num_frames}, {self.image_size}, {self.image_size}, 3)"
            )
        return clip

    def _process_videos(self, video_list: list) -> dict:
        media = self.decode_videos(video_list)
        return {"pixel_values_videos": self.normalize_frames(media.pop("frames")), **media}

    def decode_videos(self, video_list: list) -> dict:
        """Videos -> `frames` (B, F, S, S, 3) uint8, `input_features`, `video_chunk_mask`, `audio_chunk_mask`: the
        media inputs before frame normalisation (what a preprocessed cache stores; see mirasol_hf.preprocess)."""
        clips = [self.read_video(video) for video in video_list]
        audio = self.feature_extractor(
            [clip.waveform for clip in clips],
            chunk_windows=[clip.chunk_windows(self.num_chunks) for clip in clips],
            waveform_start_times=[clip.waveform_start_time for clip in clips],
        )
        return {
            "frames": np.stack([clip.frames for clip in clips]),  # (B, F, S, S, 3) uint8
            # Every clip fills every chunk: short clips repeat frames evenly instead of leaving chunks empty.
            "video_chunk_mask": np.ones((len(clips), self.num_chunks), dtype=bool),
            "input_features": audio["input_features"],
            "audio_chunk_mask": audio["audio_chunk_mask"],
        }

    def normalize_frames(self, frames: np.ndarray) -> np.ndarray:
        """uint8 frames (B, F, S, S, 3) -> the model's `pixel_values_videos` (B, F, 3, S, S) float32."""
        mean = np.asarray(self.image_mean, np.float32)
        std = np.asarray(self.image_std, np.float32)
        pixels = (np.asarray(frames).astype(np.float32) / PIXEL_MAX - mean) / std
        return np.ascontiguousarray(pixels.transpose(0, 1, 4, 2, 3))  # (B, F, S, S, 3) -> (B, F, 3, S, S)

    def _tokenize(self, prompts, answers, add_special_tokens, padding, max_length, pad_to_multiple_of) -> dict:
        prompt_ids = self.tokenizer(prompts, add_special_tokens=add_special_tokens)["input_ids"]
        input_ids, labels = [], []
        for i, prompt in enumerate(prompts):
            ids = list(prompt_ids[i])
            if answers is None:
                input_ids.append(ids)
                continue
            answer_ids = self._answer_ids(prompt, ids, answers[i], add_special_tokens)
            input_ids.append(ids + answer_ids)
            labels.append([IGNORE_INDEX] * len(ids) + answer_ids)
        padded = self.tokenizer.pad(
            {"input_ids": input_ids},
            padding=padding,
            max_length=max_length,
            pad_to_multiple_of=pad_to_multiple_of,
            padding_side="left",
            return_attention_mask=True,
        )
        lengths = {len(ids) for ids in padded["input_ids"]}
        if len(lengths) != 1:
            raise ValueError("texts of different lengths need padding=True to form a batch")
        result = {"input_ids": np.array(padded["input_ids"]), "attention_mask": np.array(padded["attention_mask"])}
        if answers is not None:
            length = lengths.pop()
            result["labels"] = np.array([[IGNORE_INDEX] * (length - len(row)) + row for row in labels])
        return result

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
                    if kind == "video":
                        sources = [block[key] for key in ("video", "path", "url") if key in block]
                        if len(sources) != 1:
                            raise ValueError(f"a video block needs one of 'video', 'path', 'url': {block}")
                        videos.append(sources[0])
                    elif kind in ("image", "audio"):
                        raise ValueError(f"Mirasol takes video blocks (the audio comes from the video), not {kind}")
            batch_videos.append(videos)
        # The rendered chat text is already the prompt: __call__ must not wrap it in prompt_template again.
        return [[] for _ in conversations], batch_videos, [], {"format_prompt": False}
