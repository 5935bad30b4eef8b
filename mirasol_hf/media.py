"""Reading a clip's sampled video frames and its audio track with PyAV.

A first pass demuxes every packet of the file without decoding video: it indexes the video packets (presentation
timestamps, keyframes) and collects the audio packets. The sampled frames are then decoded exactly (the frames a
decode-everything loop picks: same index, same pixels) from the keyframe before them, skipping frames that nothing
references, seeking only when that skips packets, with independent stretches decoded in parallel next to the
audio. FFmpeg's scaler resizes while converting to RGB. See docs/media.md.

Its parts are flat modules beside it (`trust_remote_code` copies only flat files): `media_streams` (opening,
stream choice, the demux pass), `media_timeline` (packet index, presentation order), `media_sampling` (which
frames), `media_exact` and `media_sequential` (decoding them), `media_frames` (to RGB), `media_audio`,
`media_arrays` (clips from decoded arrays), `media_clip` (the result), `media_errors`, and `media_reader`
(`read_media`, `load_media`). Import from here.
"""

from .media_arrays import MAX_AUDIO_CHANNELS, media_from_arrays, media_from_waveform
from .media_audio import AUDIO_JITTER_SECONDS, RESAMPLE_BLOCK_SAMPLES
from .media_clip import DEFAULT_SAMPLING_RATE, MediaClip, chunk_time_windows
from .media_errors import MediaError
from .media_frames import DEFAULT_INTERPOLATION, DEFAULT_MAX_FRAME_PIXELS, RIGHT_ANGLE
from .media_reader import DEFAULT_MAX_THREADS, DEFAULT_THREAD_TYPE, FRAME_SAMPLING_MODES, load_media, read_media
from .media_sampling import TIME_TOLERANCE, sample_frame_indices


__all__ = [
    "AUDIO_JITTER_SECONDS",
    "DEFAULT_INTERPOLATION",
    "DEFAULT_MAX_FRAME_PIXELS",
    "DEFAULT_MAX_THREADS",
    "DEFAULT_SAMPLING_RATE",
    "DEFAULT_THREAD_TYPE",
    "FRAME_SAMPLING_MODES",
    "MAX_AUDIO_CHANNELS",
    "RESAMPLE_BLOCK_SAMPLES",
    "RIGHT_ANGLE",
    "TIME_TOLERANCE",
    "MediaClip",
    "MediaError",
    "chunk_time_windows",
    "load_media",
    "media_from_arrays",
    "media_from_waveform",
    "read_media",
    "sample_frame_indices",
]
