"""Live sources read with PyAV as data arrives: a growing file, a pipe, HTTP on 127.0.0.1; how each one ends."""

import http.server
import io
import os
import threading

import numpy as np
import pytest

from mirasol_hf.streaming import LiveReader, LiveSourceError
from mirasol_hf.streaming.live import write_transport_stream

FPS = 16
RATE = 16000
SECONDS = 3.0
LEVEL_STEP = 8  # frame i is a flat grey of level 8 * i (mod 256): its index can be read back after coding
TONE_SPAN = (1.0, 1.5)  # seconds with a 440 Hz tone: chunk 2 of 0.5 s chunks
CHUNK = dict(chunk_seconds=0.5, frames_per_chunk=4, size=16)
# chunk k samples the frames on screen at k * 0.5 + j * 0.125 s: frames 8k, 8k + 2, 8k + 4, 8k + 6
EXPECTED_FRAMES = [[8 * k + 2 * j for j in range(4)] for k in range(6)]


def _stream_bytes(seconds: float = SECONDS, tone_span: tuple[float, float] = TONE_SPAN) -> bytes:
    count = int(seconds * FPS)
    frames = np.stack([np.full((32, 32, 3), (LEVEL_STEP * i) % 256, np.uint8) for i in range(count)])
    times = np.arange(int(seconds * RATE)) / RATE
    tone = 0.5 * np.sin(2 * np.pi * 440 * times) * ((times >= tone_span[0]) & (times < tone_span[1]))
    output = io.BytesIO()
    write_transport_stream(output, frames, FPS, tone.astype(np.float32), RATE)
    return output.getvalue()


@pytest.fixture(scope="module")
def stream_bytes():
    return _stream_bytes()


def _frame_indices(chunk) -> list[int]:
    levels = chunk.frames[..., 0].astype(float).mean(axis=(1, 2))
    return [int(round(level / LEVEL_STEP)) % (256 // LEVEL_STEP) for level in levels]


def _tone_level(chunk) -> float:
    """RMS of the audio inside the chunk's window (its context on either side left out)."""
    first = round((chunk.start_time - chunk.waveform_start_time) * RATE)
    return float(np.sqrt(np.mean(chunk.waveform[first : first + round(0.5 * RATE)] ** 2)))


def _check_chunks(chunks, count: int = 6):
    assert [chunk.index for chunk in chunks] == list(range(count))
    assert [_frame_indices(chunk) for chunk in chunks] == [
        [index % 32 for index in expected] for expected in EXPECTED_FRAMES[:count]
    ]
    for chunk in chunks:
        assert chunk.frames.shape == (4, 16, 16, 3)
        assert chunk.end_time - chunk.start_time == pytest.approx(0.5)
        # the window with 50 ms of audio context on each side (as far as the audio goes back, for the first chunk)
        if chunk.index == 0:
            assert chunk.start_time - 0.05 - 1e-3 < chunk.waveform_start_time <= chunk.start_time
        else:
            assert abs(chunk.waveform_start_time - (chunk.start_time - 0.05)) < 1e-3
    # the tone lies in chunk 2 alone: audio is cut by the same presentation times as the frames
    levels = [_tone_level(chunk) for chunk in chunks] + [1.0] * (3 - count)  # (a short list has no tone chunk)
    assert levels[2] > 0.3 and all(level < 0.01 for index, level in enumerate(levels) if index != 2)


def _write_in_pieces(write, data: bytes, first_part: float, chunk_seen: threading.Event | None):
    """Writes `first_part` of `data`, waits until the reader has handed out a chunk (so it provably read before the
    source was complete), then the rest."""
    split = int(len(data) * first_part)
    write(data[:split])
    if chunk_seen is not None:
        assert chunk_seen.wait(20), "the reader handed out no chunk from the data written so far"
    write(data[split:])


def _read_while_writing(reader, writer):
    chunks, seen = [], threading.Event()
    thread = threading.Thread(target=writer, args=(seen,))
    thread.start()
    try:
        for chunk in reader:
            chunks.append(chunk)
            seen.set()
    finally:
        seen.set()
        thread.join()
    return chunks


def test_a_growing_file_is_read_as_it_is_written(tmp_path, stream_bytes):
    path = tmp_path / "recording.ts"
    path.write_bytes(b"")

    def writer(seen):
        with open(path, "ab") as file:
            def write(data):
                file.write(data)
                file.flush()

            _write_in_pieces(write, stream_bytes, 0.6, seen)

    chunks = _read_while_writing(LiveReader(path, stall_timeout=1.0, **CHUNK), writer)
    _check_chunks(chunks)
    # the file stops growing inside the last chunk: handed out as incomplete, then the stream ends
    assert [chunk.complete for chunk in chunks] == [True] * 5 + [False]


def test_a_pipe_is_read_as_data_arrives(stream_bytes):
    read_end, write_end = os.pipe()

    def writer(seen):
        with os.fdopen(write_end, "wb") as pipe:
            def write(data):
                pipe.write(data)
                pipe.flush()

            _write_in_pieces(write, stream_bytes, 0.6, seen)

    with os.fdopen(read_end, "rb") as pipe:
        chunks = _read_while_writing(LiveReader(pipe, stall_timeout=10.0, **CHUNK), writer)
    _check_chunks(chunks)


class _StreamHandler(http.server.BaseHTTPRequestHandler):
    """Serves `server.data` as a live stream in HTTP/1.1 chunked transfer encoding, as live servers do, ending with
    the terminating chunk. With `server.cut_at`, promises the whole length instead and drops the connection after
    that many bytes."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        data, cut_at = self.server.data, self.server.cut_at
        self.send_response(200)
        self.send_header("Content-Type", "video/mp2t")
        if cut_at is None:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()

        def send(piece: bytes):
            if piece:
                self.wfile.write(piece if cut_at is not None else b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.flush()

        _write_in_pieces(send, data[:cut_at], 0.6, self.server.chunk_seen)
        if cut_at is None:
            self.wfile.write(b"0\r\n\r\n")  # the end of the stream
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


def _serve(data: bytes, cut_at=None):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StreamHandler)
    server.data, server.cut_at, server.chunk_seen = data, cut_at, threading.Event()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _read_served(server, chunks: list) -> None:
    """`server`'s stream read with `LiveReader` into `chunks`, the server told of each chunk; then shut down."""
    try:
        for chunk in LiveReader(f"http://127.0.0.1:{server.server_port}/live.ts", stall_timeout=10.0, **CHUNK):
            chunks.append(chunk)
            server.chunk_seen.set()
    finally:
        server.chunk_seen.set()
        server.shutdown()


def test_an_http_stream_on_localhost_is_read_as_it_arrives(stream_bytes):
    chunks = []
    _read_served(_serve(stream_bytes), chunks)
    _check_chunks(chunks)


def test_a_dropped_connection_hands_out_the_chunk_in_progress_then_raises(stream_bytes):
    chunks = []
    with pytest.raises(LiveSourceError, match="127.0.0.1"):
        _read_served(_serve(stream_bytes, cut_at=len(stream_bytes) // 2), chunks)
    assert len(chunks) >= 2 and not chunks[-1].complete and all(chunk.complete for chunk in chunks[:-1])
    _check_chunks(chunks[:-1], len(chunks) - 1)


def test_a_stalled_pipe_hands_out_the_chunk_in_progress_then_raises(stream_bytes):
    read_end, write_end = os.pipe()
    pipe_out = os.fdopen(write_end, "wb")
    pipe_out.write(stream_bytes[: len(stream_bytes) // 2])  # then nothing, and the pipe stays open
    pipe_out.flush()
    chunks = []
    try:
        with os.fdopen(read_end, "rb") as pipe, pytest.raises(LiveSourceError, match="stalled"):
            for chunk in LiveReader(pipe, stall_timeout=0.3, **CHUNK):
                chunks.append(chunk)
    finally:
        pipe_out.close()
    assert len(chunks) >= 2 and not chunks[-1].complete
    _check_chunks(chunks[:-1], len(chunks) - 1)


def test_a_source_ending_inside_a_chunk_repeats_its_last_frame(tmp_path):
    path = tmp_path / "short.ts"
    path.write_bytes(_stream_bytes(seconds=1.25))  # frames 0..19: chunk 2 holds frames 16..19 only
    chunks = list(LiveReader(path, stall_timeout=0.2, **CHUNK))
    assert [chunk.complete for chunk in chunks] == [True, True, False]
    assert _frame_indices(chunks[2]) == [16, 18, 19, 19]
    _check_chunks(chunks[:2], 2)


def test_what_cannot_be_read_as_a_live_video_is_a_clear_error(tmp_path):
    with pytest.raises(LiveSourceError, match="no such file"):
        next(iter(LiveReader(tmp_path / "missing.ts", **CHUNK)))
    garbage = tmp_path / "garbage.ts"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(LiveSourceError, match="garbage.ts") as raised:
        next(iter(LiveReader(garbage, stall_timeout=0.2, **CHUNK)))
    # FFmpeg's reason, not a stall: a file is waited on at its end, which is no network timeout
    assert "Invalid data" in str(raised.value) and "no data for" not in str(raised.value)
    with pytest.raises(ValueError, match="chunk_seconds"):
        LiveReader(garbage, chunk_seconds=0, frames_per_chunk=4, size=16)


def test_a_finished_mp4_is_read_too(tmp_path):
    from media_utils import write_video

    path = write_video(tmp_path / "clip.mp4", seconds=1.0, fps=16, width=32, height=32)  # index at the end
    chunks = list(LiveReader(path, stall_timeout=0.2, **CHUNK))
    assert [chunk.index for chunk in chunks] == [0, 1]
    assert all(chunk.frames.shape == (4, 16, 16, 3) and chunk.waveform is not None for chunk in chunks)


def test_a_live_chunk_has_the_audio_features_of_its_window_in_the_whole_file(tmp_path):
    """Chunks cut by presentation time, audio aligned to them as in files: a chunk's log-mel computed alone (as the
    watcher does) equals that window's in the file read whole, chunk 0 and the last, partial one included (the audio
    from the first frame to the video's end, on the same clock, STFT frames on the same hop grid). The stream's audio
    starts 30 ms before its first frame and runs past its last (MP2 frames)."""
    from mirasol_hf.feature_extraction_mirasol import MirasolFeatureExtractor
    from mirasol_hf.media_reader import read_media

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (int(SECONDS * FPS), 16, 16, 3), dtype=np.uint8)
    times = np.arange(int(SECONDS * RATE)) / RATE
    sound = 0.3 * np.sin(2 * np.pi * (200 + 800 * times) * times) + 0.05 * rng.standard_normal(len(times))
    path = tmp_path / "noise.ts"
    write_transport_stream(path, frames, FPS, sound.astype(np.float32), RATE)
    reader = LiveReader(path, stall_timeout=0.3, **{**CHUNK, "chunk_seconds": 0.45})  # the finished file: no wait
    chunks = list(reader)
    windows = np.array([[chunk.start_time, chunk.end_time] for chunk in chunks])  # (7, 2), from 0: off the hop grid
    extractor = MirasolFeatureExtractor(num_mel_bins=32, audio_frames_per_chunk=16)
    clip = read_media(path, num_frames=8)
    whole = extractor(clip.waveform, chunk_windows=windows, waveform_start_times=clip.waveform_start_time)
    assert [chunk.complete for chunk in chunks] == [True] * 6 + [False] and whole["audio_chunk_mask"].all()
    for index, chunk in enumerate(chunks):
        alone = extractor(chunk.waveform, chunk_windows=windows[index : index + 1],
                          waveform_start_times=chunk.waveform_start_time)
        # the same samples and the same frames: measured equal; float32 rounding allowed
        expected = whole["input_features"][0, :, index * 16 : (index + 1) * 16]
        np.testing.assert_allclose(alone["input_features"][0], expected, atol=1e-5, rtol=0)
