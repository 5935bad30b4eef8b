"""Errors of the media reader, and the logger its warnings go to."""

import logging


# Every media module logs under the name of the `media` module, so `logging.getLogger("mirasol_hf.media")`
# configures all of them.
logger = logging.getLogger(__name__.rsplit("_", 1)[0])


class MediaError(ValueError):
    """A media input that cannot be used; the message names the input and what is wrong with it."""


class _OncePerFile(logging.Filter):
    """Lets each message about one file through once, for the duration of one read (which may decode twice)."""

    def __init__(self, name: str):
        super().__init__()
        self.source, self.seen = name, set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.source not in message:
            return True  # another read's message
        if message in self.seen:
            return False
        self.seen.add(message)
        return True
