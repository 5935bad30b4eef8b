"""A live MPEG-TS over UDP on 127.0.0.1, sent as FFmpeg's udp output sends it (datagrams of 7 TS packets, paced),
read with `LiveReader("udp://127.0.0.1:PORT")`: a clean stream, a sender that stops, lost datagrams, a reader
waiting for its sender, a port nobody sends to. UDP has no end marker: every stream ends by going silent."""

import errno
import logging
import shutil
import socket
import subprocess
import threading
import time

import numpy as np
import pytest

from mirasol_hf.streaming import LiveReader, LiveSourceError
from test_streaming_live import CHUNK, FPS, _check_chunks, _frame_indices, _stream_bytes, _tone_level

pytestmark = pytest.mark.timeout(60)

DATAGRAM = 7 * 188  # FFmpeg's udp output: pkt_size 1316, 7 TS packets per datagram
SPEED = 3.0  # datagrams go out at 3 times the stream's rate (FFmpeg's -re sends at 1x)
STALL = 1.0


@pytest.fixture(scope="module")
def stream_bytes():
    return _stream_bytes()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return True
            raise
        return False


class _UdpSender(threading.Thread):
    """Sends `data` (a stream of `seconds`) to 127.0.0.1:`port` in datagrams of `DATAGRAM` bytes, evenly paced at
    `SPEED` times its rate, once the reader has bound the port and `start_delay` seconds more (a camera that starts
    later). Datagrams numbered in `drop` are lost; `stop_after` datagrams, the sender stops (no end marker: UDP has
    none). At `pause_at` of the datagrams, waits until the reader has handed out a chunk (`chunk_seen`), so the
    reader provably reads while the stream arrives."""

    def __init__(self, port, data, seconds, drop=(), stop_after=None, start_delay=0.0, pause_at=0.6):
        super().__init__(daemon=True)
        self.port, self.seconds, self.drop, self.start_delay = port, seconds, set(drop), start_delay
        self.datagrams = [data[i : i + DATAGRAM] for i in range(0, len(data), DATAGRAM)]
        self.stop_after = len(self.datagrams) if stop_after is None else stop_after
        self.pause_at = int(pause_at * len(self.datagrams))
        self.chunk_seen = threading.Event()
        self.paused_for_chunk = None  # True once the reader handed out a chunk before the sender went on

    def run(self):
        deadline = time.monotonic() + 20
        while not _port_taken(self.port) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(self.start_delay)
        interval = self.seconds / len(self.datagrams) / SPEED
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            start = time.monotonic()
            for number, datagram in enumerate(self.datagrams[: self.stop_after]):
                if number == self.pause_at:
                    self.paused_for_chunk = self.chunk_seen.wait(20)
                    start = time.monotonic() - number * interval
                time.sleep(max(0.0, start + number * interval - time.monotonic()))
                if number not in self.drop:
                    sender.sendto(datagram, ("127.0.0.1", self.port))


def _read_udp(sender: _UdpSender, stall_timeout: float = STALL, query: str = ""):
    """(chunks, the error that ended the stream or None, the reader) of `LiveReader` on the sender's port."""
    chunks, failure = [], None
    reader = LiveReader(f"udp://127.0.0.1:{sender.port}{query}", stall_timeout=stall_timeout, **CHUNK)
    sender.start()
    try:
        for chunk in reader:
            chunks.append(chunk)
            sender.chunk_seen.set()
    except LiveSourceError as error:
        failure = error
    finally:
        sender.chunk_seen.set()
        sender.join()
    return chunks, failure, reader


def test_a_udp_stream_is_read_as_it_arrives_as_from_a_file(tmp_path, stream_bytes):
    port = _free_port()
    chunks, failure, _ = _read_udp(_UdpSender(port, stream_bytes, 3.0))
    # UDP has no end marker: the stream ends by going silent, the documented stall
    assert isinstance(failure, LiveSourceError) and f"udp://127.0.0.1:{port}: stalled" in str(failure)
    _check_chunks(chunks)
    # the same bytes from a file: the same chunks, sample for sample
    path = tmp_path / "stream.ts"
    path.write_bytes(stream_bytes)
    from_file = list(LiveReader(path, stall_timeout=0.2, **CHUNK))
    assert [chunk.complete for chunk in chunks] == [chunk.complete for chunk in from_file] == [True] * 5 + [False]
    for received, reference in zip(chunks, from_file, strict=True):
        np.testing.assert_array_equal(received.frames, reference.frames)
        np.testing.assert_array_equal(received.waveform, reference.waveform)
        assert received.waveform_start_time == reference.waveform_start_time


# Without FFmpeg's udp timeout the reader would wait for ever: the per-test timeout fails it instead.
@pytest.mark.timeout(STALL + 20)
def test_a_sender_that_stops_ends_the_stream_within_the_stall_timeout(stream_bytes):
    sender = _UdpSender(_free_port(), stream_bytes, 3.0, stop_after=40, pause_at=0.3)  # 40 of 63: inside chunk 3
    chunks, failure, _ = _read_udp(sender)
    assert sender.paused_for_chunk
    # the chunk in progress handed out as incomplete, then the documented LiveSourceError, naming the time reached
    assert isinstance(failure, LiveSourceError) and "stalled, no data for 1 s at 1.8" in str(failure)
    assert [chunk.complete for chunk in chunks] == [True, True, True, False]
    _check_chunks(chunks[:3], 3)
    assert _frame_indices(chunks[3])[0] == 24


@pytest.mark.timeout(STALL + 20)
def test_a_timeout_given_in_the_url_wins_and_the_end_is_still_a_stall(stream_bytes):
    # FFmpeg's udp option in the URL (microseconds) is what it waits: the end is told as a stall of that length,
    # not as a broken stream or an overflowing buffer
    sender = _UdpSender(_free_port(), stream_bytes, 3.0, stop_after=40)
    chunks, failure, _ = _read_udp(sender, stall_timeout=30.0, query=f"?timeout={int(STALL * 1_000_000)}")
    assert isinstance(failure, LiveSourceError) and "stalled, no data for 1 s at 1.8" in str(failure)
    assert [chunk.complete for chunk in chunks] == [True, True, True, False]


def test_lost_datagrams_are_skipped_counted_and_the_stream_recovers(caplog):
    seconds = 6.0
    data = _stream_bytes(seconds, tone_span=(4.0, 4.5))  # 126 datagrams, ~21 a second
    # every 20th datagram and a burst of 4 (about 1.9 to 2.2 s): audio and video packets lost up to ~2.4 s
    lost = {10, 30, 50, 40, 41, 42, 43}
    sender = _UdpSender(_free_port(), data, seconds, drop=lost)
    with caplog.at_level(logging.WARNING, logger="mirasol_hf.media"):
        chunks, failure, reader = _read_udp(sender)
    assert sender.paused_for_chunk
    assert isinstance(failure, LiveSourceError) and "stalled" in str(failure)
    assert [chunk.index for chunk in chunks] == list(range(12))
    assert [chunk.start_time for chunk in chunks] == [0.5 * k for k in range(12)]
    for chunk in chunks:
        assert chunk.frames.shape == (4, 16, 16, 3) and chunk.frames.dtype == np.uint8
        assert chunk.waveform.ndim == 1 and chunk.waveform.dtype == np.float32
    assert np.all(np.diff([chunk.waveform_start_time for chunk in chunks]) > 0)
    # the loss is said: a warning through the media logger, naming the source; the count on the reader
    assert any(f"udp://127.0.0.1:{sender.port}" in message and "lost or damaged" in message
               for message in caplog.messages)
    assert reader.damaged_packets >= 2
    # from the first keyframe after the loss (frame 48, 3 s) on, frames and audio are the stream's own: the audio
    # after lost packets keeps its time (the tone lies in chunk 8 alone), frames show the right indices
    later = chunks[6:]
    assert [_frame_indices(chunk) for chunk in later] == [
        [(8 * k + 2 * j) % 32 for j in range(4)] for k in range(6, 12)
    ]
    levels = [_tone_level(chunk) for chunk in later[:-1]]  # the last chunk stops at the video's end
    assert levels[2] > 0.3 and all(level < 0.01 for index, level in enumerate(levels) if index != 2)
    assert FPS * chunks[-1].end_time == 96  # all 6 s arrived


def test_a_reader_started_before_its_sender_waits_for_it(stream_bytes):
    sender = _UdpSender(_free_port(), stream_bytes, 3.0, start_delay=1.0)  # the camera starts 1 s later
    chunks, failure, _ = _read_udp(sender, stall_timeout=2.0)
    assert "stalled" in str(failure)
    _check_chunks(chunks)


@pytest.mark.timeout(STALL + 20)  # a hang fails here
def test_a_port_nobody_sends_to_is_a_clear_error_within_the_stall_timeout():
    port = _free_port()
    with pytest.raises(LiveSourceError, match=f"udp://127.0.0.1:{port}: .*no data for 1 s"):
        next(iter(LiveReader(f"udp://127.0.0.1:{port}", stall_timeout=STALL, **CHUNK)))


def test_a_reader_falling_behind_its_sender_is_told_why(stream_bytes):
    """FFmpeg's udp input holds what arrives in a buffer (`fifo_size` TS packets); a reader that falls behind (a
    watcher encoding slower than the stream plays) overflows it: a LiveSourceError saying so, after the chunks read."""
    sender = _UdpSender(_free_port(), stream_bytes, 3.0, pause_at=0)
    sender.chunk_seen.set()
    url = f"udp://127.0.0.1:{sender.port}?fifo_size=20"  # 20 TS packets: under 3 datagrams
    chunks = []
    sender.start()
    try:
        with pytest.raises(LiveSourceError, match=r"connection lost .* falling behind .*fifo_size.*overrun_nonfatal"):
            for chunk in LiveReader(url, stall_timeout=STALL, **CHUNK):
                chunks.append(chunk)
                time.sleep(0.6)  # encoding a chunk of 0.5 s
    finally:
        sender.join()
    # what was read before the overflow is handed out, the chunk in progress as incomplete
    assert len(chunks) >= 2 and chunks[0].complete and not chunks[-1].complete
    assert _frame_indices(chunks[0]) == [0, 2, 4, 6]


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg program (Debian: ffmpeg; .ci/run installs it)")
def test_ffmpeg_itself_as_the_sender(tmp_path, stream_bytes):
    """The sender of docs/usage.md: FFmpeg's udp output (its own datagrams, 1316 bytes and shorter ones where it
    flushes; paced by -readrate), the stream copied as it is, so the chunks are those of the bytes read from a file."""
    source = tmp_path / "camera.ts"
    source.write_bytes(stream_bytes)
    port = _free_port()
    command = ["ffmpeg", "-loglevel", "error", "-nostdin", "-readrate", str(SPEED), "-i", str(source), "-c", "copy",
               "-f", "mpegts", f"udp://127.0.0.1:{port}?pkt_size=1316"]

    def send():
        deadline = time.monotonic() + 20
        while not _port_taken(port) and time.monotonic() < deadline:
            time.sleep(0.01)
        subprocess.run(command, check=True, timeout=30)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    chunks = []
    try:
        with pytest.raises(LiveSourceError, match="stalled"):
            for chunk in LiveReader(f"udp://127.0.0.1:{port}", stall_timeout=STALL, **CHUNK):
                chunks.append(chunk)
    finally:
        sender.join()
    _check_chunks(chunks)
