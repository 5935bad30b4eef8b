"""A corpus of containers as the world writes them, made with PyAV: odd stream layouts, codecs and timestamps.

Every file has frames whose content says their index (`media_utils.frame_image`) and, where it has audio, a tone
starting at a known time on the container clock, so a test can check frames against a decode-everything loop and
the audio against the frames' clock. `CORPUS` maps a file name to the function writing it.
"""

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from media_utils import TONE_AMPLITUDE, TONE_HZ, frame_image


WIDTH, HEIGHT, FPS = 64, 48, 25
AUDIO_RATE = 48000
MPEG4_VOP_START = b"\x00\x00\x01\xb6"
MPEG4_USER_DATA_START = b"\x00\x00\x01\xb2"
MPEG4_B_VOP = 2


@dataclass
class Video:
    codec: str = "libx264"
    frames: int = 30
    fps: int = FPS
    width: int = WIDTH
    height: int = HEIGHT
    pix_fmt: str = "yuv420p"
    start: float = 0.0  # first frame's time on the container clock
    frame_times: list | None = None  # variable frame rate: seconds from `start`
    rotation: int | None = None
    options: dict = field(default_factory=dict)
    max_b_frames: int | None = None
    gop_size: int = 12
    pts_equal_dts: bool = False  # drop the composition offsets (B-frames stored in decode order)
    content_offset: int = 0  # first frame_image index, to tell two video streams apart
    ticks_per_second: int = 1000  # codec time base (MPEG-1/2 only take their standard frame rates)


@dataclass
class Audio:
    codec: str = "aac"
    seconds: float = 1.2
    start: float = 0.0  # first sample's time on the container clock
    tone_start: float = 0.6  # on the container clock
    layout: str = "stereo"
    rate: int = AUDIO_RATE


@dataclass
class Expected:
    """What a reader must find: which streams, and when the tone starts on the clock of the first frame."""

    video_stream: int
    tone_on_frame_clock: float | None  # None: no audio track to check
    chooses_video: bool = False  # the file has several video streams: the reader must say which it read
    chooses_audio: bool = False
    warns: str | None = None  # a warning the reader must give, once
    # Video times are estimates (untrusted timestamps): the whole audio track is read, not only the frames' span.
    whole_audio: bool = False


def _encode_video(container, spec: Video):
    stream = container.add_stream(spec.codec, rate=spec.fps, options=spec.options)
    stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, spec.pix_fmt
    stream.codec_context.gop_size = spec.gop_size
    if spec.max_b_frames is not None:
        stream.codec_context.max_b_frames = spec.max_b_frames
    time_base = Fraction(1, spec.ticks_per_second)
    stream.codec_context.time_base = time_base
    if spec.rotation is not None:
        stream.set_display_rotation(spec.rotation)
    times = spec.frame_times if spec.frame_times is not None else [i / spec.fps for i in range(spec.frames)]
    packets = []
    for i, seconds in enumerate(times):
        image = frame_image(i + spec.content_offset, spec.width, spec.height)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = round((spec.start + seconds) * spec.ticks_per_second), time_base
        packets += stream.encode(frame)
    packets += stream.encode(None)
    return stream, packets


def _encode_audio(container, spec: Audio):
    stream = container.add_stream(spec.codec, rate=spec.rate)
    stream.layout = spec.layout
    channels = av.AudioLayout(spec.layout).nb_channels
    times = spec.start + np.arange(round(spec.seconds * spec.rate)) / spec.rate
    wave = TONE_AMPLITUDE * np.sin(2 * np.pi * TONE_HZ * times) * (times >= spec.tone_start)
    samples = np.repeat(wave[None].astype(np.float32), channels, axis=0)  # (C, S)
    frame_samples = stream.codec_context.frame_size or 1024
    packets = []
    for begin in range(0, samples.shape[1], frame_samples):
        block = np.ascontiguousarray(samples[:, begin : begin + frame_samples])
        frame = av.AudioFrame.from_ndarray(block, format="fltp", layout=spec.layout)
        frame.sample_rate = spec.rate
        frame.pts = round(spec.start * spec.rate) + begin
        frame.time_base = Fraction(1, spec.rate)
        packets += stream.encode(frame)
    packets += stream.encode(None)
    return stream, packets


def write(path, streams: list, container_format: str | None = None, options: dict | None = None, extra=None) -> Path:
    """Write `streams` (`Video` / `Audio` specs, in stream order); `extra(container)` adds more before muxing."""
    path = Path(path)
    container = av.open(str(path), mode="w", format=container_format, options=options or {})
    encoded = []
    for spec in streams:
        encode = _encode_video if isinstance(spec, Video) else _encode_audio
        encoded.append((spec, *encode(container, spec)))
    late = extra(container) if extra is not None else []
    for spec, _, packets in encoded:
        for packet in packets:
            if isinstance(spec, Video) and spec.pts_equal_dts:
                packet.pts = packet.dts
            container.mux(packet)
    for packet in late:
        container.mux(packet)
    container.close()
    return path


def _subtitle_stream(container):
    """A text subtitle stream with one cue."""
    stream = container.add_mux_stream("subrip")
    stream.time_base = Fraction(1, 1000)
    packet = av.Packet(b"hello")
    packet.stream, packet.pts, packet.dts, packet.duration = stream, 100, 100, 500
    packet.time_base = stream.time_base
    return [packet]


def _data_stream(container):
    """A data stream (KLV metadata, as drones and cameras write) with two packets."""
    stream = container.add_data_stream("klv")
    stream.time_base = Fraction(1, 90000)
    packets = []
    for i in range(2):
        packet = av.Packet(bytes([6, 14, 43, 52, 2, 11, 1, 1, 14, 1, 3, 1, 1, 0, 0, 0, 0]))
        packet.stream, packet.pts, packet.dts = stream, i * 45000, i * 45000
        packet.time_base = stream.time_base
        packets.append(packet)
    return packets


def _cover_art(container):
    """A one-picture MJPEG stream flagged attached_pic (cover art), written before the video."""
    stream = container.add_stream("mjpeg", rate=1)
    stream.width, stream.height, stream.pix_fmt = 32, 32, "yuvj420p"
    stream.disposition = av.stream.Disposition.attached_pic
    image = np.full((32, 32, 3), 90, np.uint8)
    packets = stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")) + stream.encode(None)
    for packet in packets:
        packet.pts = packet.dts = 0
    return packets


def write_packed_bframes_avi(path, frames: int = 30) -> Path:
    """MPEG-4 ASP in AVI with "packed B-frames", as DivX 5 wrote it: each B-frame rides in the packet of the P-frame
    decoded before it, the next packet is a not-coded placeholder (N-VOP), and user data "DivX503b1393p" says so."""
    codec = av.CodecContext.create("mpeg4", "w")
    codec.width, codec.height, codec.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    codec.time_base, codec.framerate = Fraction(1, FPS), FPS
    codec.max_b_frames, codec.gop_size = 1, 12
    codec.open()
    coded = []
    for i in range(frames):
        frame = av.VideoFrame.from_ndarray(frame_image(i, WIDTH, HEIGHT), format="rgb24").reformat(format="yuv420p")
        frame.pts, frame.time_base = i, codec.time_base
        coded += [bytes(packet) for packet in codec.encode(frame)]
    coded += [bytes(packet) for packet in codec.encode(None)]

    def coding_type(data: bytes) -> int:
        return data[data.index(MPEG4_VOP_START) + 4] >> 6

    # A not-coded P-VOP: coding type 01, modulo_time_base 0, marker, 5-bit time increment (resolution 25), marker,
    # vop_coded 0, then stuffing to the byte.
    not_coded = MPEG4_VOP_START + int("01" + "0" + "1" + "00000" + "1" + "0" + "01111", 2).to_bytes(2, "big")
    start = coded[0].index(MPEG4_VOP_START)
    packed = [coded[0][:start] + MPEG4_USER_DATA_START + b"DivX503b1393p" + coded[0][start:]]
    k = 1
    while k < len(coded):
        if k + 1 < len(coded) and coding_type(coded[k + 1]) == MPEG4_B_VOP:
            packed += [coded[k] + coded[k + 1], not_coded]
            k += 2
        else:
            packed.append(coded[k])
            k += 1
    path = Path(path)
    container = av.open(str(path), mode="w", format="avi")
    stream = container.add_stream("mpeg4", rate=FPS)
    stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    for d, data in enumerate(packed):
        packet = av.Packet(data)
        packet.stream, packet.pts, packet.dts, packet.time_base = stream, d, d, Fraction(1, FPS)
        packet.is_keyframe = MPEG4_VOP_START in data and coding_type(data) == 0
        container.mux(packet)
    container.close()
    return path


def _case(streams, expected: Expected, container_format=None, options=None, extra=None):
    def make(path):
        return write(path, streams, container_format, options, extra), expected

    return make


TONE = 0.6  # tone start of the default Audio(), container clock
CORPUS = {
    "audio_first.mp4": _case([Audio(), Video()], Expected(1, TONE)),
    "data_track.ts": _case([Video(), Audio(codec="mp2")], Expected(0, TONE), "mpegts", extra=_data_stream),
    "subtitles.mkv": _case([Video(), Audio(codec="libopus")], Expected(0, TONE), extra=_subtitle_stream),
    "two_videos.mkv": _case(
        [Video(width=32, height=24, content_offset=100), Video(), Audio()], Expected(1, TONE, chooses_video=True)
    ),
    "cover_art.mp4": _case([Video(), Audio()], Expected(0, TONE), extra=_cover_art),
    "several_audio.mkv": _case(
        [Video(), Audio(tone_start=0.6), Audio(layout="5.1", tone_start=0.7)], Expected(0, 0.7, chooses_audio=True)
    ),
    "surround_5_1.mp4": _case([Video(), Audio(layout="5.1")], Expected(0, TONE)),
    "late_start_edit_list.mp4": _case([Video(start=1.0), Audio(start=1.0, tone_start=1.6)], Expected(0, TONE)),
    "audio_before_video.mp4": _case([Video(start=0.4), Audio(start=0.0, seconds=1.8)], Expected(0, TONE - 0.4)),
    "audio_after_video.mkv": _case([Video(), Audio(start=0.3, tone_start=0.8)], Expected(0, 0.8)),
    "variable_frame_rate.mp4": _case(
        [Video(frame_times=[0.0, 0.04, 0.2, 0.24, 0.5, 0.52, 0.54, 0.9, 1.0, 1.1]), Audio()], Expected(0, TONE)
    ),
    "rotated_90.mp4": _case([Video(rotation=90), Audio()], Expected(0, TONE)),
    "rotated_270.mp4": _case([Video(rotation=-90), Audio()], Expected(0, TONE)),
    "rotated_180.mp4": _case([Video(rotation=180)], Expected(0, None)),
    "rotated_45.mp4": _case([Video(rotation=45)], Expected(0, None, warns="not a multiple of 90")),
    "ten_bit.mp4": _case([Video(pix_fmt="yuv420p10le"), Audio()], Expected(0, TONE)),
    "yuv444.mp4": _case([Video(pix_fmt="yuv444p")], Expected(0, None)),
    "interlaced.mkv": _case([Video(options={"x264-params": "interlaced=1:tff=1"}), Audio()], Expected(0, TONE)),
    "bframes_offsets.mp4": _case([Video(options={"bframes": "3"}), Audio()], Expected(0, TONE)),
    "bframes_pts_equal_dts.mp4": _case(
        [Video(options={"bframes": "3"}, pts_equal_dts=True)], Expected(0, None, warns="pts == dts")
    ),
    "mpeg1.m1v": _case(
        [Video(codec="mpeg1video", max_b_frames=2, ticks_per_second=FPS)],
        Expected(0, None, warns="raw elementary stream"),
        "mpeg1video",
    ),
    "mpeg2.m2v": _case(
        [Video(codec="mpeg2video", max_b_frames=2, ticks_per_second=FPS)],
        Expected(0, None, warns="raw elementary stream"),
        "mpeg2video",
    ),
    "program_stream.mpg": _case(
        [Video(codec="mpeg2video", max_b_frames=2, ticks_per_second=FPS), Audio(codec="mp2")],
        Expected(0, TONE),
        "vob",
    ),
    # H.264 in MPEG-PS: the muxer stores a timestamp on the first video packet only.
    "h264_program_stream.mpg": _case(
        [Video(), Audio(codec="mp2")], Expected(0, TONE, warns="lack distinct timestamps", whole_audio=True), "vob"
    ),
    "vp8.webm": _case([Video(codec="libvpx"), Audio(codec="libopus")], Expected(0, TONE)),
    "vp9.webm": _case([Video(codec="libvpx-vp9"), Audio(codec="libopus")], Expected(0, TONE)),
    "mjpeg.avi": _case([Video(codec="mjpeg", pix_fmt="yuvj420p"), Audio(codec="pcm_s16le")], Expected(0, TONE)),
    "one_frame.mp4": _case([Video(frames=1), Audio(seconds=0.04, tone_start=0.0)], Expected(0, 0.0)),
    "audio_longer.mp4": _case([Video(frames=10), Audio(seconds=2.0, tone_start=0.2)], Expected(0, 0.2)),
    "video_longer.mp4": _case([Video(frames=40), Audio(seconds=0.8, tone_start=0.3)], Expected(0, 0.3)),
    "packed_bframes.avi": lambda path: (write_packed_bframes_avi(path), Expected(0, None, warns="packed")),
}
