"""Synthetic audio-visual question answering: short clips of moving shapes and sounds, with questions about them.

A clip is cut into `num_segments` equal time segments (make it the model's `num_chunks`, or a divisor of it, so the
segments line up with the chunks). The three shapes (circle, square, triangle, each in a different colour) appear in
three different segments, one shape per segment, moving over a dark background. Sounds of five classes with clearly
different spectra play in the middle of some segments, at most one per segment; which segments hold sounds and which
sounds they are is drawn independently of the shapes, so hearing tells nothing about seeing. Every event stays inside
its segment, so a question about order always compares events in different chunks.

Each clip carries questions of five kinds (`QUESTION_KINDS`), each answered with one or two words from a closed set
(`ANSWER_VOCABULARY`); each question also lists the answers a model that reads only the question could choose from,
which gives the chance level (`chance_accuracy`). Generation is deterministic: the same seed gives the same arrays.
See docs/synthetic.md.
"""

import argparse
import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np


# Vocabulary.
COLORS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 100, 240), "yellow": (230, 210, 40)}
SHAPES = ("circle", "square", "triangle")
SOUNDS = ("buzz", "knock", "beep", "whistle", "hiss")
COUNT_WORDS = ("one", "two", "three")
QUESTION_KINDS = ("visual", "audio", "temporal", "counting", "audio_visual")
# The kinds the sound alone answers (asked of clips without video; the others need the frames).
SOUND_QUESTION_KINDS = ("audio", "counting")
SHAPE_LABELS = tuple(f"{color} {shape}" for color in COLORS for shape in SHAPES)
# What can happen in a stretch of a clip: a shape of a colour on screen, a sound heard (`SyntheticClip.event_labels`).
EVENT_LABELS = (*SHAPE_LABELS, *SOUNDS)
ANSWER_VOCABULARY = {
    "visual": (*COLORS, *SHAPES),
    "audio": SOUNDS,
    "temporal": (*SHAPES, *SHAPE_LABELS),
    "counting": COUNT_WORDS,
    "audio_visual": (*SHAPE_LABELS, *SOUNDS),
}

# Clip defaults: 4 segments of 1 s, 8 frames each, so 16 frames sampled for 4 chunks of 4 frames line up exactly.
DEFAULT_DURATION = 4.0
DEFAULT_FPS = 8.0
DEFAULT_SIZE = 64
DEFAULT_SAMPLING_RATE = 16000
DEFAULT_NUM_SEGMENTS = 4
DEFAULT_QUESTIONS_PER_KIND = 1
# Every shape appears once; a sound is counted up to three times, each time in its own segment.
MAX_SOUND_COUNT = len(COUNT_WORDS)
MIN_NUM_SEGMENTS = MAX_SOUND_COUNT + 1  # the counted sound three times plus one other sound
MIN_FRAMES_PER_SEGMENT = 4  # so a shape is on screen in at least two frames
MIN_SIZE = 16

# Layout inside a segment, as fractions of its length. A shape is on screen from the first margin to the second; a
# sound starts after the latest possible appearance and ends before the earliest possible disappearance, so a sound
# always plays entirely while its segment's shape (if any) is on screen, and "what was on screen" has one answer.
VISIBLE_MARGIN_RANGE = (0.05, 0.2)
SOUND_ONSET_RANGE = (0.25, 0.4)
SOUND_LENGTH_RANGE = (0.2, 0.35)

# Drawing.
BACKGROUND_RGB = (12, 12, 20)
SHAPE_RADIUS_FRACTION = 0.25  # of the frame side: at 32x32 a shape spans about 16 pixels, two 8x8 patches
SQUARE_HALF_SIDE = 0.85  # of the radius: a square of about a circle's area
SQRT3_HALF = np.sqrt(3.0) / 2.0

# Sounds. Each class has its energy in its own band (dominant frequencies about 150, 500, 1000, 2800 and 4000-7000 Hz),
# well apart on the mel scale; pitch and loudness vary a little per event so a class is a timbre, not one waveform.
SOUND_AMPLITUDE_RANGE = (0.2, 0.4)
PITCH_JITTER = 0.05  # relative
NOISE_FLOOR_STD = 0.002  # a faint hiss everywhere, so silence is not digital zero
RAMP_SECONDS = 0.01  # raised-cosine fade in and out: hard edges would splatter energy over all frequencies
BUZZ_FREQUENCY = 150.0
BUZZ_HARMONICS = 8
KNOCK_FREQUENCY = 500.0
KNOCK_INTERVAL = 0.1  # seconds between taps
KNOCK_DECAY = 0.02  # seconds, time constant of each tap
BEEP_FREQUENCY = 1000.0
WHISTLE_FREQUENCY = 2800.0
WHISTLE_VIBRATO_DEPTH = 150.0  # Hz
WHISTLE_VIBRATO_RATE = 7.0  # Hz
HISS_BAND = (4000.0, 7000.0)

# mp4 writing.
DEFAULT_CRF = 18  # near-transparent H.264: colours survive the round trip
MAX_FPS_DENOMINATOR = 1001


@dataclass(frozen=True)
class SyntheticEvent:
    """One shape on screen or one sound, over `[start, end)` seconds, inside time segment `segment`.

    `label` is what questions call it ("red square", "beep"). Shapes move in a straight line from `start_position` to
    `end_position`, `(x, y)` centres in pixels.
    """

    modality: str  # "visual" or "audio"
    label: str
    start: float
    end: float
    segment: int
    color: str | None = None
    shape: str | None = None
    sound: str | None = None
    start_position: tuple[float, float] | None = None
    end_position: tuple[float, float] | None = None


@dataclass(frozen=True)
class SyntheticQuestion:
    """A question, its answer, and the answers a model that reads only the question could choose from.

    `template` names the question form (e.g. "temporal_after"); `choices` always holds `answer`, and
    `1 / len(choices)` is the chance of guessing it (the answers are spread evenly over `choices`).
    """

    kind: str
    question: str
    answer: str
    template: str = ""
    choices: tuple[str, ...] = ()


@dataclass
class SyntheticClip:
    """One generated clip: frames, audio, the events drawn in them, and questions about them.

    Attributes:
        frames: `(F, H, W, 3)` uint8 RGB; frame `i` is shown at `i / fps` seconds.
        fps: frame rate.
        waveform: `(S,)` float32 mono audio in [-1, 1], starting with frame 0.
        sampling_rate: rate of `waveform` in Hz.
        events: shapes and sounds, in order of start time.
        questions: questions of every kind in `QUESTION_KINDS`.
        num_segments: number of equal time segments the events were placed in.
        seed: the seed the clip was generated from.
    """

    frames: np.ndarray
    fps: float
    waveform: np.ndarray
    sampling_rate: int
    events: list[SyntheticEvent]
    questions: list[SyntheticQuestion]
    num_segments: int
    seed: int | tuple[int, ...] = 0

    @property
    def duration(self) -> float:
        return len(self.frames) / self.fps

    @property
    def frame_times(self) -> np.ndarray:
        """`(F,)` presentation time of each frame in seconds."""
        return np.arange(len(self.frames)) / self.fps

    def event_labels(self, num_chunks: int) -> np.ndarray:
        """`(num_chunks, len(EVENT_LABELS))` float32 multi-hot: which shapes and sounds occur in each of `num_chunks`
        equal time windows (an event counts in every window it overlaps).

        These are the per-chunk targets of a media encoder pre-trained to tell what is in a chunk (see
        examples/train_synthetic.py): with as many chunks as segments each window holds at most one shape and one
        sound; with one chunk, the window is the whole clip and holds every event.
        """
        if num_chunks < 1:
            raise ValueError(f"num_chunks must be >= 1, got {num_chunks}")
        labels = np.zeros((num_chunks, len(EVENT_LABELS)), dtype=np.float32)
        window = self.duration / num_chunks
        for event in self.events:
            first = int(event.start // window)
            last = min(num_chunks - 1, int(np.ceil(event.end / window)) - 1)  # the window holding the end, exclusive
            labels[first : last + 1, EVENT_LABELS.index(event.label)] = 1.0
        return labels

    def as_video_input(self) -> dict:
        """The clip as arrays for the processor: `{"frames", "waveform", "sampling_rate", "fps"}`, no file needed."""
        return {"frames": self.frames, "waveform": self.waveform, "sampling_rate": self.sampling_rate, "fps": self.fps}


def generate_clip(
    seed: int | Sequence[int],
    duration: float = DEFAULT_DURATION,
    fps: float = DEFAULT_FPS,
    size: int = DEFAULT_SIZE,
    sampling_rate: int = DEFAULT_SAMPLING_RATE,
    num_segments: int = DEFAULT_NUM_SEGMENTS,
    questions_per_kind: int = DEFAULT_QUESTIONS_PER_KIND,
) -> SyntheticClip:
    """Generate one clip of `duration` seconds (rounded to whole frames) of `size` x `size` frames.

    The same arguments give the same clip. `seed` is an int or a sequence of ints (`generate_dataset` uses
    `(dataset_seed, index)`). Up to `questions_per_kind` distinct questions of each kind are asked (fewer where the
    clip allows fewer).
    """
    num_frames = round(duration * fps) if fps > 0 else 0
    _check_clip_arguments(duration, fps, num_frames, size, sampling_rate, num_segments, questions_per_kind)
    duration = num_frames / fps  # whole frames, so the audio ends with the last frame
    rng = np.random.default_rng(seed)
    segment_duration = duration / num_segments
    visual_events = _draw_visual_events(rng, num_segments, segment_duration, size)
    visual_segments = {event.segment for event in visual_events}
    audio_events, counted_sound = _draw_audio_events(rng, num_segments, segment_duration, visual_segments)
    frames = _render_frames(visual_events, num_frames, fps, size)
    waveform = _synthesize_waveform(rng, audio_events, round(duration * sampling_rate), sampling_rate)
    questions = _ask_questions(rng, visual_events, audio_events, counted_sound, questions_per_kind)
    events = sorted(visual_events + audio_events, key=lambda event: (event.start, event.modality))
    seed = int(seed) if isinstance(seed, (int, np.integer)) else tuple(int(part) for part in seed)
    return SyntheticClip(frames, float(fps), waveform, sampling_rate, events, questions, num_segments, seed)


def generate_dataset(num_clips: int, seed: int, **clip_kwargs) -> list[SyntheticClip]:
    """`num_clips` clips; clip `i` is `generate_clip((seed, i), **clip_kwargs)`, so different seeds share no clip."""
    return [generate_clip((seed, index), **clip_kwargs) for index in range(num_clips)]


def chance_accuracy(questions: Sequence[SyntheticQuestion]) -> float:
    """Expected exact match of guessing uniformly among each question's `choices` (the best a blind model can do)."""
    if not questions:
        raise ValueError("chance_accuracy needs at least one question")
    return float(np.mean([1.0 / len(question.choices) for question in questions]))


def _check_clip_arguments(duration, fps, num_frames, size, sampling_rate, num_segments, questions_per_kind):
    if duration <= 0 or fps <= 0:
        raise ValueError(f"duration and fps must be > 0, got duration={duration}, fps={fps}")
    if num_segments < MIN_NUM_SEGMENTS:
        raise ValueError(f"num_segments must be at least {MIN_NUM_SEGMENTS}, got {num_segments}")
    if num_frames < num_segments * MIN_FRAMES_PER_SEGMENT:
        raise ValueError(
            f"{num_frames} frames ({duration} s at {fps} fps) are too few for {num_segments} segments: "
            f"each needs at least {MIN_FRAMES_PER_SEGMENT} frames"
        )
    if size < MIN_SIZE:
        raise ValueError(f"size must be at least {MIN_SIZE} pixels, got {size}")
    if sampling_rate / 2 <= HISS_BAND[1]:
        raise ValueError(f"sampling_rate must exceed {2 * HISS_BAND[1]:.0f} Hz to carry the hiss, got {sampling_rate}")
    if questions_per_kind < 1:
        raise ValueError(f"questions_per_kind must be >= 1, got {questions_per_kind}")


def _draw_visual_events(rng, num_segments: int, segment_duration: float, size: int) -> list[SyntheticEvent]:
    """Each shape once, in distinct colours and distinct segments, in time order."""
    segments = np.sort(rng.choice(num_segments, size=len(SHAPES), replace=False))
    shapes = rng.permutation(SHAPES)
    colors = rng.choice(list(COLORS), size=len(SHAPES), replace=False)
    margin = SHAPE_RADIUS_FRACTION * size + 1  # keeps the whole shape inside the frame
    events = []
    for segment, shape, color in zip(segments, shapes, colors):
        segment_start = segment * segment_duration
        appear, disappear = rng.uniform(*VISIBLE_MARGIN_RANGE, size=2) * segment_duration
        start_position, end_position = rng.uniform(margin, size - margin, size=(2, 2))  # (2 ends, (x, y))
        events.append(
            SyntheticEvent(
                modality="visual",
                label=f"{color} {shape}",
                start=float(segment_start + appear),
                end=float(segment_start + segment_duration - disappear),
                segment=int(segment),
                color=str(color),
                shape=str(shape),
                start_position=tuple(float(value) for value in start_position),
                end_position=tuple(float(value) for value in end_position),
            )
        )
    return events


def _draw_audio_events(rng, num_segments: int, segment_duration: float, visual_segments: set):
    """The counted sound 1-3 times plus at least one other sound, one sound per segment, in time order.

    Returns the events and the counted sound (the only one heard more than once, when one is).

    The draw ignores the shapes, except that some segment must hold both a shape and a sound (an audio-visual
    question needs one); with the default four segments that always holds (3 shapes + 2 sounds > 4 segments), with
    more it is redrawn until it does.
    """
    counted = rng.choice(SOUNDS)
    count = int(rng.integers(1, MAX_SOUND_COUNT + 1))
    others_count = int(rng.integers(1, min(num_segments - count, len(SOUNDS) - 1) + 1))
    others = rng.choice([sound for sound in SOUNDS if sound != counted], size=others_count, replace=False)
    sounds = rng.permutation([counted] * count + list(others))
    segments = rng.choice(num_segments, size=len(sounds), replace=False)
    while not visual_segments & set(segments.tolist()):
        segments = rng.choice(num_segments, size=len(sounds), replace=False)
    events = []
    for segment, sound in sorted(zip(segments.tolist(), sounds)):
        onset = rng.uniform(*SOUND_ONSET_RANGE) * segment_duration
        length = rng.uniform(*SOUND_LENGTH_RANGE) * segment_duration
        start = segment * segment_duration + onset
        events.append(
            SyntheticEvent("audio", str(sound), float(start), float(start + length), int(segment), sound=str(sound))
        )
    return events, str(counted)


def _render_frames(visual_events: list[SyntheticEvent], num_frames: int, fps: float, size: int) -> np.ndarray:
    """`(F, size, size, 3)` uint8 frames: the background, and each shape while `start <= i / fps < end`."""
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    frames[:] = BACKGROUND_RGB
    pixel_centres = np.arange(size) + 0.5
    xs, ys = np.meshgrid(pixel_centres, pixel_centres)  # (size, size) each, indexed [y, x]
    radius = SHAPE_RADIUS_FRACTION * size
    times = np.arange(num_frames) / fps
    for event in visual_events:
        for index in np.flatnonzero((times >= event.start) & (times < event.end)):
            progress = (times[index] - event.start) / (event.end - event.start)
            cx, cy = np.add(event.start_position, progress * np.subtract(event.end_position, event.start_position))
            frames[index][_shape_mask(event.shape, cx, cy, radius, xs, ys)] = COLORS[event.color]
    return frames


def _shape_mask(shape: str, cx: float, cy: float, radius: float, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """`(H, W)` bool mask of a shape centred at `(cx, cy)`."""
    if shape == "circle":
        return (xs - cx) ** 2 + (ys - cy) ** 2 <= radius**2
    if shape == "square":
        half_side = SQUARE_HALF_SIDE * radius
        return (np.abs(xs - cx) <= half_side) & (np.abs(ys - cy) <= half_side)
    if shape == "triangle":  # equilateral, pointing up, centroid at the centre
        half_base, base_y = SQRT3_HALF * radius, cy + radius / 2
        vertices = [(cx, cy - radius), (cx + half_base, base_y), (cx - half_base, base_y)]
        inside = np.ones_like(xs, dtype=bool)
        for (x0, y0), (x1, y1) in zip(vertices, vertices[1:] + vertices[:1]):
            # clockwise on screen (y down): the inside is where every edge's cross product is >= 0
            inside &= (x1 - x0) * (ys - y0) - (y1 - y0) * (xs - x0) >= 0
        return inside
    raise ValueError(f"unknown shape {shape!r}")


def _synthesize_waveform(rng, audio_events: list[SyntheticEvent], num_samples: int, sampling_rate: int) -> np.ndarray:
    """`(num_samples,)` float32: a faint noise floor plus each sound over its `[start, end)`."""
    waveform = rng.normal(0.0, NOISE_FLOOR_STD, size=num_samples)
    for event in audio_events:
        first, last = round(event.start * sampling_rate), min(round(event.end * sampling_rate), num_samples)
        times = np.arange(last - first) / sampling_rate  # seconds since the sound's onset
        pitch = 1.0 + rng.uniform(-PITCH_JITTER, PITCH_JITTER)
        sound = _SYNTHESIZERS[event.sound](times, pitch, rng, sampling_rate)
        sound = sound / np.max(np.abs(sound)) * rng.uniform(*SOUND_AMPLITUDE_RANGE)
        waveform[first:last] += sound * _fade_envelope(len(times), sampling_rate)
    return np.clip(waveform, -1.0, 1.0).astype(np.float32)


def _fade_envelope(num_samples: int, sampling_rate: int) -> np.ndarray:
    ramp_samples = min(round(RAMP_SECONDS * sampling_rate), num_samples // 2)
    envelope = np.ones(num_samples)
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp_samples) / ramp_samples)
    envelope[:ramp_samples] = ramp
    envelope[num_samples - ramp_samples :] = ramp[::-1]
    return envelope


def _buzz(times, pitch, rng, sampling_rate):
    # sawtooth-like: harmonics at 1/k, so the fundamental dominates but the timbre is rough
    frequency = BUZZ_FREQUENCY * pitch
    return sum(np.sin(2 * np.pi * k * frequency * times) / k for k in range(1, BUZZ_HARMONICS + 1))


def _knock(times, pitch, rng, sampling_rate):
    # a train of damped taps: impulsive in time, centred on one low-mid frequency
    since_tap = np.mod(times, KNOCK_INTERVAL)
    return np.sin(2 * np.pi * KNOCK_FREQUENCY * pitch * since_tap) * np.exp(-since_tap / KNOCK_DECAY)


def _beep(times, pitch, rng, sampling_rate):
    return np.sin(2 * np.pi * BEEP_FREQUENCY * pitch * times)


def _whistle(times, pitch, rng, sampling_rate):
    # vibrato: the phase is the integral of WHISTLE_FREQUENCY + depth * sin(2 pi rate t)
    vibrato = WHISTLE_VIBRATO_DEPTH / WHISTLE_VIBRATO_RATE * (1 - np.cos(2 * np.pi * WHISTLE_VIBRATO_RATE * times))
    return np.sin(2 * np.pi * WHISTLE_FREQUENCY * pitch * times + vibrato)


def _hiss(times, pitch, rng, sampling_rate):
    # white noise with every frequency outside the band removed
    spectrum = np.fft.rfft(rng.normal(size=len(times)))
    frequencies = np.fft.rfftfreq(len(times), d=1.0 / sampling_rate)
    spectrum[(frequencies < HISS_BAND[0]) | (frequencies > HISS_BAND[1])] = 0
    return np.fft.irfft(spectrum, n=len(times))


_SYNTHESIZERS = {"buzz": _buzz, "knock": _knock, "beep": _beep, "whistle": _whistle, "hiss": _hiss}


def _ask_questions(rng, visual_events, audio_events, counted_sound: str, questions_per_kind: int):
    """Up to `questions_per_kind` distinct questions per kind: a template drawn uniformly, then one of its questions."""
    candidates = _candidate_questions(rng, visual_events, audio_events, counted_sound)
    questions = []
    for kind in QUESTION_KINDS:
        by_template = {}
        for question in candidates:
            if question.kind == kind:
                by_template.setdefault(question.template, []).append(question)
        for _ in range(questions_per_kind):
            if not by_template:
                break
            template = list(by_template)[rng.integers(len(by_template))]
            pool = by_template[template]
            questions.append(pool.pop(rng.integers(len(pool))))
            if not pool:
                del by_template[template]
    return questions


def _candidate_questions(rng, visual_events, audio_events, counted_sound: str) -> list[SyntheticQuestion]:
    """Every question the clip supports. Each one's answer is spread evenly over its `choices` across clips."""
    candidates = []

    def ask(kind, template, question, answer, choices):
        candidates.append(SyntheticQuestion(kind, question, answer, template, tuple(choices)))

    def either(first, second):
        # "the X or the Y" in random order, so the position of the answer tells nothing
        return (first, second) if rng.random() < 0.5 else (second, first)

    for event in visual_events:
        ask("visual", "visual_color", f"what color was the {event.shape}?", event.color, COLORS)
        ask("visual", "visual_shape", f"which shape was {event.color}?", event.shape, SHAPES)

    heard = [event.sound for event in audio_events]
    for present in dict.fromkeys(heard):
        for absent in SOUNDS:
            if absent not in heard:
                pair = either(present, absent)
                ask("audio", "audio_which", f"which sound was heard, the {pair[0]} or the {pair[1]}?", present, pair)
    if heard.count(counted_sound) > 1:
        ask("audio", "audio_repeated", "which sound was heard more than once?", counted_sound, SOUNDS)

    for i, earlier in enumerate(visual_events):
        for later in visual_events[i + 1 :]:
            pair = either(earlier.shape, later.shape)
            question = f"which appeared first, the {pair[0]} or the {pair[1]}?"
            ask("temporal", "temporal_order", question, earlier.shape, pair)
    for event, following in zip(visual_events, visual_events[1:]):
        # the answer shares neither colour nor shape with the question (each appears once per clip)
        choices = [f"{c} {s}" for c in COLORS if c != event.color for s in SHAPES if s != event.shape]
        ask("temporal", "temporal_after", f"what appeared after the {event.label}?", following.label, choices)
    ask("temporal", "temporal_extreme", "which shape appeared first?", visual_events[0].shape, SHAPES)
    ask("temporal", "temporal_extreme", "which shape appeared last?", visual_events[-1].shape, SHAPES)

    # only the counted sound is asked about: its count is uniform over one to three, any other sound's is one
    count_word = COUNT_WORDS[heard.count(counted_sound) - 1]
    ask("counting", "count_sound", f"how many times was the {counted_sound} heard?", count_word, COUNT_WORDS)

    shape_in_segment = {event.segment: event for event in visual_events}
    for event in audio_events:
        if heard.count(event.sound) == 1 and event.segment in shape_in_segment:
            question = f"what was on screen when the {event.sound} played?"
            ask("audio_visual", "av_on_screen", question, shape_in_segment[event.segment].label, SHAPE_LABELS)
        if event.segment in shape_in_segment:
            question = f"which sound played while the {shape_in_segment[event.segment].label} was visible?"
            ask("audio_visual", "av_sound", question, event.sound, SOUNDS)
    return candidates


def write_mp4(clip: SyntheticClip, path: str | os.PathLike, crf: int = DEFAULT_CRF) -> str:
    """Write `clip` as an mp4 with H.264 video and mono AAC audio through PyAV; returns the path."""
    height, width = clip.frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"H.264 with 4:2:0 chroma needs even frame sides, got {width}x{height}")
    path = os.fspath(path)
    frame_rate = Fraction(clip.fps).limit_denominator(MAX_FPS_DENOMINATOR)
    with av.open(path, mode="w") as container:
        video = container.add_stream("libx264", rate=frame_rate)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"crf": str(crf)}
        audio = container.add_stream("aac", rate=clip.sampling_rate, layout="mono")
        samples_written = 0
        for index, pixels in enumerate(clip.frames):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = index, 1 / frame_rate
            container.mux(video.encode(frame))
            # encode the audio up to this frame's end as we go, so packets of both streams interleave in time
            is_last_frame = index == len(clip.frames) - 1
            last = len(clip.waveform) if is_last_frame else round((index + 1) / clip.fps * clip.sampling_rate)
            if last > samples_written:
                block = clip.waveform[None, samples_written:last]  # (1 channel, samples)
                sound = av.AudioFrame.from_ndarray(np.ascontiguousarray(block), format="flt", layout="mono")
                sound.sample_rate, sound.pts = clip.sampling_rate, samples_written
                sound.time_base = Fraction(1, clip.sampling_rate)
                container.mux(audio.encode(sound))
                samples_written = last
        container.mux(video.encode(None))
        container.mux(audio.encode(None))
    return path


def main(argv: Sequence[str] | None = None) -> None:
    """Write clips as mp4 files plus `questions.jsonl` (one line per clip: file, seed, events, questions)."""
    parser = argparse.ArgumentParser(prog="python -m mirasol_hf.synthetic", description=main.__doc__)
    parser.add_argument("output_dir")
    parser.add_argument("--num-clips", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--duration", type=float, default=DEFAULT_DURATION)
    parser.add_argument("--fps", type=float, default=DEFAULT_FPS)
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE)
    parser.add_argument("--num-segments", type=int, default=DEFAULT_NUM_SEGMENTS)
    parser.add_argument("--questions-per-kind", type=int, default=DEFAULT_QUESTIONS_PER_KIND)
    args = parser.parse_args(argv)
    os.makedirs(args.output_dir, exist_ok=True)
    clip_kwargs = {
        "duration": args.duration,
        "fps": args.fps,
        "size": args.size,
        "num_segments": args.num_segments,
        "questions_per_kind": args.questions_per_kind,
    }
    with open(os.path.join(args.output_dir, "questions.jsonl"), "w") as index_file:
        for index, clip in enumerate(generate_dataset(args.num_clips, args.seed, **clip_kwargs)):
            name = f"clip_{index:05d}.mp4"
            write_mp4(clip, os.path.join(args.output_dir, name))
            record = {
                "video": name,
                "seed": list(clip.seed),
                "events": [dataclasses.asdict(event) for event in clip.events],
                "questions": [dataclasses.asdict(question) for question in clip.questions],
            }
            index_file.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
