"""Memory bounded by what is sampled (issue 13): a path's audio demuxed again from a seek to the window needed
against the same read from a file object, whose packets are kept from the demux pass (same samples, same start);
the video index's array lookups in the sequential fallback."""

import numpy as np
import pytest
from media_corpus import Audio, Video, write

import mirasol_hf.media_audio as media_audio
from mirasol_hf.media import read_media


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    directory = tmp_path_factory.mktemp("redemux")
    streams = [Video(frames=100, fps=25, width=64, height=48), Audio(seconds=4.0, tone_start=1.5)]
    clips = {suffix: write(directory / f"clip.{suffix}", streams) for suffix in ("mp4", "mkv")}
    # Audio ending before the video: its decode runs to the end of the packets and drains the decoder.
    clips["short_audio"] = write(directory / "short_audio.mp4", [streams[0], Audio(seconds=3.0, tone_start=1.5)])
    return clips


def read_both(path, **read):
    from_path = read_media(str(path), 8, **read)
    with open(path, "rb") as file:
        from_file = read_media(file, 8, **read)
    return from_path, from_file


@pytest.fixture
def redemuxes(monkeypatch):
    """Each `_Redemux` made during the test, with its packets' kept data at the time."""
    made = []
    original = media_audio._Redemux.__init__

    def spy(self, packets, first):
        original(self, packets, first)
        made.append((self, first, len(packets.data)))

    monkeypatch.setattr(media_audio._Redemux, "__init__", spy)
    return made


def assert_same_audio(from_path, from_file):
    assert from_path.waveform is not None and len(from_path.waveform) > 0
    np.testing.assert_array_equal(from_path.waveform, from_file.waveform)
    assert from_path.waveform_start_time == from_file.waveform_start_time
    np.testing.assert_array_equal(from_path.frames, from_file.frames)


@pytest.mark.parametrize("suffix", ["mp4", "mkv"])
def test_path_audio_is_demuxed_again_from_a_seek(clips, redemuxes, suffix):
    from_path, from_file = read_both(clips[suffix], start_time=2.0)
    assert_same_audio(from_path, from_file)
    assert from_path.waveform_start_time >= 2.0  # only the window from the first sampled frame is read
    assert len(redemuxes) == 1
    redemux, first, kept_bytes = redemuxes[0]
    assert first > 0 and not redemux.counted  # found after a seek, not by counting from the start
    assert kept_bytes == 0  # the demux pass kept timestamps only


def test_whole_clip_counts_from_the_start(clips, redemuxes):
    assert_same_audio(*read_both(clips["mp4"]))
    assert [(first, redemux.counted) for redemux, first, _ in redemuxes] == [(0, True)]


def test_failed_seek_counts_from_the_start(clips, redemuxes, monkeypatch):
    monkeypatch.setattr(media_audio._Redemux, "_seek", lambda self, first: False)
    assert_same_audio(*read_both(clips["mp4"], start_time=2.0))
    assert redemuxes[0][0].counted


def test_unexpected_packet_after_the_seek_counts_from_the_start(clips, redemuxes, monkeypatch):
    calls = []
    original = media_audio._times

    def second_packet_differs(packet):
        calls.append(packet)
        return (-1, -1, -1) if len(calls) == 2 else original(packet)  # 1: the packet found by the seek

    monkeypatch.setattr(media_audio, "_times", second_packet_differs)
    assert_same_audio(*read_both(clips["mp4"], start_time=2.0))
    redemux, first, _ = redemuxes[0]
    assert first > 0 and redemux.counted


def test_frames_found_by_pts_when_no_seek_lands(clips, monkeypatch):
    """The video index's pts -> rank lookup, used by the sequential decode when the demuxer cannot seek."""
    import mirasol_hf.media_exact as media_exact

    expected = read_media(str(clips["mkv"]), 8, start_time=1.0, read_audio=False, num_threads=1)
    monkeypatch.setattr(media_exact, "_seek_to", lambda *args: (None, None))
    clip = read_media(str(clips["mkv"]), 8, start_time=1.0, read_audio=False, num_threads=1)
    np.testing.assert_array_equal(clip.frame_indices, expected.frame_indices)
    np.testing.assert_array_equal(clip.frames, expected.frames)
    assert len(np.unique(clip.frames.reshape(8, -1), axis=0)) == 8  # distinct frames: a wrong lookup would show


@pytest.mark.parametrize("as_file", [False, True])
def test_audio_decoded_again_when_a_stand_in_frame_moves_the_windows(clips, monkeypatch, as_file):
    """A sampled frame that cannot be decoded is replaced by a neighbour: the sink made for the new times gets the
    same audio as a read without the stand-in (the decoder, drained by the first decode, is reset)."""
    import mirasol_hf.media_reader as media_reader

    class Sink:
        def __init__(self):
            self.blocks = []

        def feed(self, samples, start_time):
            self.blocks.append((samples.copy(), start_time))

    sinks = []

    def make_sink(frame_times, end_time):
        sinks.append(Sink())
        return sinks[-1]

    def read():
        if not as_file:
            return read_media(str(clips["short_audio"]), 8, start_time=1.0, audio_sink=make_sink)
        with open(clips["short_audio"], "rb") as file:
            return read_media(file, 8, start_time=1.0, audio_sink=make_sink)

    read()
    expected = np.concatenate([samples for samples, _ in sinks[0].blocks])
    original = media_reader._gather

    def first_frame_lost(decoded, ranks, name):
        return original({rank: frame for rank, frame in decoded.items() if rank != min(ranks)}, ranks, name)

    monkeypatch.setattr(media_reader, "_gather", first_frame_lost)
    sinks.clear()
    read()
    assert len(sinks) == 2  # made again for the new frame times
    np.testing.assert_array_equal(np.concatenate([samples for samples, _ in sinks[1].blocks]), expected)
