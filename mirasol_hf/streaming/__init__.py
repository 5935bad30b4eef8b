"""Streams: encode a video chunk by chunk as it arrives and answer questions at any time.

* `MirasolStreamingState` (defined in `encoded_media`, which the model builds on): what a stream carries.
* `live`: chunks cut by presentation time from a growing file, a pipe or a network URL, read with PyAV.
* `watch`: `MirasolWatcher`, encoding in a background thread and answering from the state so far.

Imports point one way: this package builds on the model, the processor and the media reader; none of them imports it.
"""

from ..encoded_media import MirasolStreamingState
from .live import LiveChunk, LiveReader, LiveSourceError
from .watch import MirasolWatchAnswer, MirasolWatcher, chunk_inputs

__all__ = [
    "LiveChunk",
    "LiveReader",
    "LiveSourceError",
    "MirasolStreamingState",
    "MirasolWatchAnswer",
    "MirasolWatcher",
    "chunk_inputs",
]
