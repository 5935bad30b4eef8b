"""The "video-question-answering" pipeline: videos + questions in, answers out.

    pipe = pipeline("video-question-answering", model="path/to/checkpoint")
    pipe("clip.mp4", "what color was the square?")             -> {"answer": "red"}
    pipe("clip.mp4", ["what color ...?", "which sound ...?"])   -> [{"answer": ...}, {"answer": ...}]
    pipe(["a.mp4", "b.mp4"], "which sound was heard?")          -> [{"answer": ...}, {"answer": ...}]
    pipe([{"video": "a.mp4", "question": "..."}, ...])           -> one answer per dict
    pipe({"audio": "sound.wav"}, "which sound was heard?")      -> {"answer": ...} (sound alone; or a waveform with
                                                                   "sampling_rate")
    pipe([{"role": "user", "content": [{"type": "video", "path": "a.mp4"}, {"type": "text", "text": "..."}]}])
                                                                -> {"answer": ...} (chat messages)

Each video is read and encoded once, however many questions it gets: its latents are shared by all of them.
"""

from __future__ import annotations

import torch
from transformers import GenerationConfig, Pipeline

MAX_NEW_TOKENS = 32
# Pipeline-level keyword arguments; everything else goes to `generate()`.
PREPROCESS_PARAMS = ("frame_sampling", "num_frames", "progress")
# Answers in place of "" (which a user cannot tell from a bug).
UNREADABLE_ANSWER = "(the video could not be read: no frame and no sound of it could be used)"
EMPTY_ANSWER = "(no answer: the model ended its answer at once; the question may be of a form it was not trained on)"


class _Item:
    """One video and the questions asked about it."""

    def __init__(self, video, questions, single_question: bool):
        self.video = video
        self.questions = questions
        self.single_question = single_question


def _is_video_dict(value) -> bool:
    # Decoded arrays are given as {"frames": ..., "waveform": ..., ...}; a QA dict has "question".
    return isinstance(value, dict) and "question" not in value


def _is_chat(value) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(
        isinstance(message, dict) and "role" in message for message in value
    )


def _from_chat(messages) -> dict:
    """The video and question of a chat: the video block and the text of the user's turns."""
    videos, texts = [], []
    for message in messages:
        if message["role"] != "user":
            continue
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        for block in blocks:
            if block.get("type") == "video":
                videos.extend(block[key] for key in ("video", "path", "url") if key in block)
            elif block.get("type") == "audio":
                videos.extend({"audio": block[key]} for key in ("audio", "path", "url") if key in block)
            elif block.get("type") == "text":
                texts.append(block["text"])
    if len(videos) != 1 or not texts:
        raise ValueError(
            f"a chat needs exactly one video (or audio) block and a text block from the user, got {messages!r}"
        )
    return {"video": videos[0], "question": " ".join(texts)}


def _normalize(videos, question) -> tuple[list[_Item], bool]:
    """Inputs -> items, and whether the caller gave a list of videos (so a list of results comes back)."""
    if _is_chat(videos):
        videos = _from_chat(videos)
    elif isinstance(videos, (list, tuple)) and videos and all(_is_chat(chat) for chat in videos):
        videos = [_from_chat(chat) for chat in videos]
    if isinstance(videos, dict) and "question" in videos:
        sound = {key: videos[key] for key in ("audio", "sampling_rate") if key in videos}
        videos, question = videos.get("video", sound if "audio" in sound else None), videos["question"]
    if isinstance(videos, (list, tuple)) and videos and all(isinstance(v, dict) and "question" in v for v in videos):
        items = [_normalize(entry, None)[0][0] for entry in videos]
        return items, True
    if question is None:
        raise ValueError("give a question: pipe(video, question) or pipe({'video': ..., 'question': ...})")
    single_question = isinstance(question, str)
    questions = [question] if single_question else list(question)
    if not questions or not all(isinstance(q, str) and q.strip() for q in questions):
        raise ValueError(f"questions must be non-empty strings, got {question!r}")
    many_videos = isinstance(videos, (list, tuple)) and not _is_video_dict(videos)
    video_list = list(videos) if many_videos else [videos]
    if not video_list or any(video is None for video in video_list):
        raise ValueError("give a video: a path, a file object, an array of frames or a dict of frames + waveform")
    return [_Item(video, questions, single_question) for video in video_list], many_videos


class VideoQuestionAnsweringPipeline(Pipeline):
    """Answers questions about videos with a Mirasol model and the processor saved with it.

    Generation settings (`max_new_tokens`, `num_beams`, `do_sample`, ...) are passed through to `generate()`;
    `batch_size` sets how many videos are read and encoded together.
    """

    _load_processor = True
    _load_tokenizer = False
    _load_feature_extractor = False
    _load_image_processor = False
    _load_video_processor = False
    _pipeline_calls_generate = True
    _default_generation_config = GenerationConfig(max_new_tokens=MAX_NEW_TOKENS)

    def _sanitize_parameters(self, **kwargs):
        if kwargs.get("num_return_sequences", 1) != 1:
            raise ValueError("the video-question-answering pipeline gives one answer per question: num_return_sequences=1")
        preprocess_params = {key: kwargs.pop(key) for key in PREPROCESS_PARAMS if key in kwargs}
        forward_params = {"generate_kwargs": kwargs}
        return preprocess_params, forward_params, {}

    def __call__(self, videos, question=None, batch_size: int | None = None, **kwargs):
        """Answer `question` (a string or a list) about `videos` (one or a list); see the module docstring."""
        items, many_videos = _normalize(videos, question)
        batch_size = batch_size or self._batch_size or 1
        preprocess_params, forward_params, postprocess_params = self._sanitize_parameters(**kwargs)
        answers = []
        for start in range(0, len(items), batch_size):
            group = items[start : start + batch_size]
            model_inputs = self.preprocess(group, **preprocess_params)
            model_outputs = self.forward(model_inputs, **forward_params)
            answers.extend(self.postprocess(model_outputs, **postprocess_params))
        results = []
        for item in items:
            item_answers = [{"answer": answers.pop(0)} for _ in item.questions]
            results.append(item_answers[0] if item.single_question else item_answers)
        return results if many_videos else results[0]

    def preprocess(self, group: list[_Item], frame_sampling=None, num_frames: int | None = None, progress=None):
        """Reads the videos (`num_frames` overrides the model's frame count, a multiple of its chunk length;
        `progress()` is called per decoded frame) and tokenizes every question."""
        processor = self.processor
        read_options = {} if progress is None else {"progress": progress}
        clips = [
            processor.read_video(item.video, num_frames=num_frames, frame_sampling=frame_sampling, **read_options)
            for item in group
        ]
        media = processor(videos=clips, return_tensors="pt", num_frames=num_frames)
        questions = [question for item in group for question in item.questions]
        text = processor(text=questions, return_tensors="pt")
        # which video each question is about: (num_questions,)
        owner = torch.tensor([index for index, item in enumerate(group) for _ in item.questions])
        # a video of which neither a frame nor a sound could be used: (num_videos,)
        unreadable = ~(media["video_chunk_mask"] | media["audio_chunk_mask"]).any(dim=1)
        return {"media": dict(media), "input_ids": text["input_ids"], "attention_mask": text["attention_mask"],
                "owner": owner, "unreadable": unreadable[owner]}

    def _forward(self, model_inputs, generate_kwargs=None):
        # The user's settings (from this call and from pipeline()), over the pipeline's defaults.
        generate_kwargs = self._prepare_generate_kwargs(dict(generate_kwargs or {}))
        # Each video is encoded once; `media_index` points every question at its video's encoding.
        generated = self.model.generate(
            input_ids=model_inputs["input_ids"],
            attention_mask=model_inputs["attention_mask"],
            media_index=model_inputs["owner"],
            **model_inputs["media"],
            **generate_kwargs,
        )
        return {"generated": generated, "input_ids": model_inputs["input_ids"], "unreadable": model_inputs["unreadable"]}

    def postprocess(self, model_outputs):
        """The decoded answers; where there is nothing to show, a sentence saying why instead of ""."""
        answers = self.processor.post_process_answer(model_outputs["generated"], model_outputs["input_ids"])
        return [
            UNREADABLE_ANSWER if unreadable else answer or EMPTY_ANSWER
            for answer, unreadable in zip(answers, model_outputs["unreadable"].tolist())
        ]
