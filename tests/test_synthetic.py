"""The synthetic audio-visual QA generator: deterministic clips whose questions follow from what is seen and heard."""

import collections
import dataclasses
import json
import re

import av
import numpy as np
import pytest

from mirasol_hf.synthetic import (
    ANSWER_VOCABULARY,
    BACKGROUND_RGB,
    COLORS,
    COUNT_WORDS,
    EVENT_LABELS,
    QUESTION_KINDS,
    SHAPES,
    SOUNDS,
    chance_accuracy,
    generate_clip,
    generate_dataset,
    main,
    write_mp4,
)


NUM_CLIPS = 120
DATASET_SEED = 3
TEMPLATES = {
    "visual": {"visual_color", "visual_shape"},
    "audio": {"audio_which", "audio_repeated"},
    "temporal": {"temporal_order", "temporal_after", "temporal_extreme"},
    "counting": {"count_sound"},
    "audio_visual": {"av_on_screen", "av_sound"},
}
# Where each sound class puts its strongest frequency (Hz). The bands are disjoint, so the classes are told apart.
DOMINANT_BANDS = {
    "buzz": (120, 180),
    "knock": (400, 620),
    "beep": (900, 1100),
    "whistle": (2400, 3200),
    "hiss": (4000, 7000),
}
MIN_EVENT_TO_FLOOR_RMS = 20  # a sound stands far above the noise floor around it
COLOR_TOLERANCE = 30  # per RGB channel: exact in arrays, loose enough for H.264's rounding
MAX_MEAN_PIXEL_ERROR = 4  # after H.264 and the RGB -> limited-range YUV -> RGB round trip
MIN_AUDIO_CORRELATION = 0.9  # AAC at its default bit rate keeps the waveform close
MAX_SHARE_ABOVE_UNIFORM = 0.12  # sampling noise allowed on an answer's share, over its uniform share
DURATION_TOLERANCE = 0.1  # seconds: AAC pads its last frame


@pytest.fixture(scope="module")
def dataset():
    return generate_dataset(NUM_CLIPS, seed=DATASET_SEED, questions_per_kind=3)


def visual_events(clip):
    return [event for event in clip.events if event.modality == "visual"]


def audio_events(clip):
    return [event for event in clip.events if event.modality == "audio"]


def overlapping(events, start, end):
    return [event for event in events if event.start < end and start < event.end]


def answer_from_events(clip, question: str) -> str:
    """Recompute a question's answer from the clip's events alone, by reading the question text."""
    shapes = sorted(visual_events(clip), key=lambda event: event.start)
    sounds = audio_events(clip)
    heard = collections.Counter(event.sound for event in sounds)
    if match := re.fullmatch(r"what color was the (\w+)\?", question):
        (event,) = [event for event in shapes if event.shape == match[1]]
        return event.color
    if match := re.fullmatch(r"which shape was (\w+)\?", question):
        (event,) = [event for event in shapes if event.color == match[1]]
        return event.shape
    if match := re.fullmatch(r"which sound was heard, the (\w+) or the (\w+)\?", question):
        (sound,) = [sound for sound in match.groups() if heard[sound]]
        return sound
    if question == "which sound was heard more than once?":
        (sound,) = [sound for sound, count in heard.items() if count > 1]
        return sound
    if match := re.fullmatch(r"which appeared first, the (\w+) or the (\w+)\?", question):
        return min((event for event in shapes if event.shape in match.groups()), key=lambda event: event.start).shape
    if match := re.fullmatch(r"what appeared after the (\w+ \w+)\?", question):
        labels = [event.label for event in shapes]
        return labels[labels.index(match[1]) + 1]
    if match := re.fullmatch(r"which shape appeared (first|last)\?", question):
        return shapes[0 if match[1] == "first" else -1].shape
    if match := re.fullmatch(r"how many times was the (\w+) heard\?", question):
        return COUNT_WORDS[heard[match[1]] - 1]
    if match := re.fullmatch(r"what was on screen when the (\w+) played\?", question):
        (sound,) = [event for event in sounds if event.sound == match[1]]
        (shape,) = overlapping(shapes, sound.start, sound.end)
        return shape.label
    if match := re.fullmatch(r"which sound played while the (\w+ \w+) was visible\?", question):
        (shape,) = [event for event in shapes if event.label == match[1]]
        (sound,) = overlapping(sounds, shape.start, shape.end)
        return sound.sound
    raise AssertionError(f"unknown question form: {question!r}")


def dominant_frequency(waveform: np.ndarray, sampling_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(waveform * np.hanning(len(waveform))))
    return float(np.fft.rfftfreq(len(waveform), d=1.0 / sampling_rate)[np.argmax(spectrum)])


def color_pixel_counts(frames: np.ndarray, rgb) -> np.ndarray:
    """`(F,)` number of pixels of each frame within `COLOR_TOLERANCE` of `rgb`."""
    close = np.abs(frames.astype(np.int16) - np.array(rgb, dtype=np.int16)) <= COLOR_TOLERANCE  # (F, H, W, 3)
    return close.all(axis=-1).sum(axis=(1, 2))


def test_same_seed_gives_the_same_clip():
    first, second, other = generate_clip(7), generate_clip(7), generate_clip(8)
    assert np.array_equal(first.frames, second.frames) and np.array_equal(first.waveform, second.waveform)
    assert first.events == second.events and first.questions == second.questions
    assert not np.array_equal(first.frames, other.frames) and not np.array_equal(first.waveform, other.waveform)
    # clip i of a data set is the clip of seed (dataset seed, i), so data sets of different seeds share no clip
    assert np.array_equal(generate_dataset(2, seed=5)[1].waveform, generate_clip((5, 1)).waveform)


def test_clip_arrays_have_the_documented_shapes_and_types():
    clip = generate_clip(0, duration=3.0, fps=10, size=48, num_segments=5)
    assert clip.frames.shape == (30, 48, 48, 3) and clip.frames.dtype == np.uint8
    assert clip.waveform.shape == (48000,) and clip.waveform.dtype == np.float32
    assert np.abs(clip.waveform).max() <= 1.0
    assert clip.duration == pytest.approx(3.0)
    video_input = clip.as_video_input()
    assert video_input["frames"] is clip.frames and video_input["waveform"] is clip.waveform
    assert (video_input["sampling_rate"], video_input["fps"]) == (16000, 10.0)


def test_every_kind_is_asked_in_every_clip_and_every_template_occurs(dataset):
    for clip in dataset:
        assert {question.kind for question in clip.questions} == set(QUESTION_KINDS)
        assert len(set(question.question for question in clip.questions)) == len(clip.questions)
    for kind in QUESTION_KINDS:
        used = {question.template for clip in dataset for question in clip.questions if question.kind == kind}
        assert used == TEMPLATES[kind]


def test_answers_come_from_the_vocabulary_and_the_questions_choices(dataset):
    for clip in dataset:
        for question in clip.questions:
            assert question.answer in ANSWER_VOCABULARY[question.kind]
            assert question.answer in question.choices
            assert set(question.choices) <= set(ANSWER_VOCABULARY[question.kind])
            assert 1 <= len(question.answer.split()) <= 2


def test_answers_follow_from_the_events(dataset):
    for clip in dataset:
        for question in clip.questions:
            assert answer_from_events(clip, question.question) == question.answer, question


def test_answers_are_spread_over_the_choices_so_chance_is_one_over_choices(dataset):
    # a model that reads only the question must not beat chance: within each template neither an answer nor a
    # position among the choices ("the beep or the hiss") comes up much more often than the others
    by_template = collections.defaultdict(list)
    for clip in dataset:
        for question in clip.questions:
            by_template[question.template].append(question)
    for template, questions in by_template.items():
        answers = collections.Counter(question.answer for question in questions)
        positions = collections.Counter(question.choices.index(question.answer) for question in questions)
        num_answers = len({choice for question in questions for choice in question.choices})
        num_choices = len(questions[0].choices)
        assert answers.most_common(1)[0][1] / len(questions) < 1 / num_answers + MAX_SHARE_ABOVE_UNIFORM, template
        assert positions.most_common(1)[0][1] / len(questions) < 1 / num_choices + MAX_SHARE_ABOVE_UNIFORM, template
    assert chance_accuracy(by_template["count_sound"]) == pytest.approx(1 / 3)


def test_each_shape_and_colour_appears_once_and_the_sounds_ignore_the_shapes(dataset):
    pairs = collections.Counter()
    for clip in dataset:
        shapes = visual_events(clip)
        assert sorted(event.shape for event in shapes) == sorted(SHAPES)
        assert len({event.color for event in shapes}) == len(shapes)
        shape_in_segment = {event.segment: event.shape for event in shapes}
        pairs.update((shape_in_segment[event.segment], event.sound) for event in audio_events(clip)
                     if event.segment in shape_in_segment)
    # every shape meets every sound: which sound plays does not depend on what is on screen
    assert set(pairs) == {(shape, sound) for shape in SHAPES for sound in SOUNDS}


def test_events_stay_inside_their_segment_one_of_each_modality_per_segment(dataset):
    for clip in dataset:
        segment_duration = clip.duration / clip.num_segments
        for modality in ("visual", "audio"):
            events = [event for event in clip.events if event.modality == modality]
            assert len({event.segment for event in events}) == len(events)
            for event in events:
                segment_start = event.segment * segment_duration
                assert segment_start < event.start < event.end < segment_start + segment_duration
        # a sound in a segment with a shape plays entirely while the shape is on screen
        shape_in_segment = {event.segment: event for event in visual_events(clip)}
        for sound in audio_events(clip):
            if sound.segment in shape_in_segment:
                shape = shape_in_segment[sound.segment]
                assert shape.start < sound.start and sound.end < shape.end


def test_shape_colour_is_on_screen_only_while_the_shape_is_visible(dataset):
    for clip in dataset[:20]:
        colored = np.any(clip.frames != np.array(BACKGROUND_RGB, dtype=np.uint8), axis=-1)  # (F, H, W)
        visible_any = np.zeros(len(clip.frames), dtype=bool)
        for event in visual_events(clip):
            visible = (clip.frame_times >= event.start) & (clip.frame_times < event.end)
            assert visible.sum() >= 2
            counts = color_pixel_counts(clip.frames, COLORS[event.color])
            assert np.all(counts[visible] > 0) and np.all(counts[~visible] == 0), event
            visible_any |= visible
        assert not colored[~visible_any].any()  # nothing but background between shapes


def test_each_sound_has_its_energy_at_its_time_in_its_own_band(dataset):
    bands = sorted(DOMINANT_BANDS.values())
    assert all(high < next_low for (_, high), (next_low, _) in zip(bands, bands[1:]))
    seen = set()
    for clip in dataset[:40]:
        rate = clip.sampling_rate
        silent = np.ones(len(clip.waveform), dtype=bool)
        for event in audio_events(clip):
            silent[round(event.start * rate) : round(event.end * rate)] = False
        floor_rms = np.sqrt(np.mean(clip.waveform[silent] ** 2))
        for event in audio_events(clip):
            sound = clip.waveform[round(event.start * rate) : round(event.end * rate)]
            assert np.sqrt(np.mean(sound**2)) > MIN_EVENT_TO_FLOOR_RMS * floor_rms
            low, high = DOMINANT_BANDS[event.sound]
            assert low <= dominant_frequency(sound, rate) <= high, event
            seen.add(event.sound)
    assert seen == set(SOUNDS)


def test_event_labels_mark_each_event_in_the_chunks_it_overlaps(dataset):
    for clip in dataset[:20]:
        by_segment = clip.event_labels(clip.num_segments)  # one chunk per segment
        assert by_segment.shape == (clip.num_segments, len(EVENT_LABELS)) and by_segment.dtype == np.float32
        expected = np.zeros_like(by_segment)
        for event in clip.events:
            expected[event.segment, EVENT_LABELS.index(event.label)] = 1.0
        np.testing.assert_array_equal(by_segment, expected)
        # one chunk holds every event once; twice as many chunks as segments split each segment in two halves
        np.testing.assert_array_equal(clip.event_labels(1), by_segment.max(axis=0, keepdims=True))
        halves = clip.event_labels(2 * clip.num_segments)
        window = clip.duration / (2 * clip.num_segments)
        for half in range(2 * clip.num_segments):
            for column, label in enumerate(EVENT_LABELS):
                overlaps = any(
                    event.label == label and event.start < (half + 1) * window and event.end > half * window
                    for event in clip.events
                )
                assert halves[half, column] == overlaps, (clip.seed, half, label)
    with pytest.raises(ValueError, match="num_chunks"):
        dataset[0].event_labels(0)


def test_mp4_has_h264_video_and_aac_audio_that_pyav_reads_back(tmp_path):
    clip = generate_clip(11)
    path = write_mp4(clip, tmp_path / "clip.mp4")
    with av.open(path) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert (video.codec_context.name, audio.codec_context.name) == ("h264", "aac")
        assert audio.sample_rate == clip.sampling_rate and audio.channels == 1
        assert float(container.duration / av.time_base) == pytest.approx(clip.duration, abs=DURATION_TOLERANCE)
        frames = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
        container.seek(0)
        decoded = np.concatenate([frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)])
    assert frames.shape == clip.frames.shape
    assert np.abs(frames.astype(np.int16) - clip.frames).mean() < MAX_MEAN_PIXEL_ERROR
    for event in visual_events(clip):
        visible = (clip.frame_times >= event.start) & (clip.frame_times < event.end)
        assert np.all(color_pixel_counts(frames[visible], COLORS[event.color]) > 0)
    assert len(decoded) / clip.sampling_rate == pytest.approx(clip.duration, abs=DURATION_TOLERANCE)
    overlap = min(len(decoded), len(clip.waveform))
    assert np.corrcoef(decoded[:overlap], clip.waveform[:overlap])[0, 1] > MIN_AUDIO_CORRELATION


def test_chance_accuracy_averages_one_over_the_number_of_choices():
    clip = generate_clip(0)
    two_way, four_way = (dataclasses.replace(question, choices=choices) for question, choices in
                         zip(clip.questions, [("a", "b"), ("a", "b", "c", "d")]))
    assert chance_accuracy([two_way, four_way]) == pytest.approx((1 / 2 + 1 / 4) / 2)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_segments": 3},
        {"duration": 1.0},
        {"size": 8},
        {"sampling_rate": 8000},
        {"fps": 0},
        {"questions_per_kind": 0},
    ],
)
def test_unusable_arguments_are_refused(kwargs):
    with pytest.raises(ValueError):
        generate_clip(0, **kwargs)


def test_command_line_writes_clips_and_their_questions(tmp_path):
    main([str(tmp_path), "--num-clips", "2", "--seed", "4"])
    lines = (tmp_path / "questions.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [record["video"] for record in records] == ["clip_00000.mp4", "clip_00001.mp4"]
    assert all((tmp_path / record["video"]).stat().st_size > 0 for record in records)
    expected = generate_clip((4, 1))
    assert [question["answer"] for question in records[1]["questions"]] == [q.answer for q in expected.questions]
