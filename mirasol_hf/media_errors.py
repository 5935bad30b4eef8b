"""Errors of the media reader, and the logger its warnings go to."""

import logging


# Every media module logs under the name of the `media` module, so `logging.getLogger("mirasol_hf.media")`
# configures all of them.
logger = logging.getLogger(__name__.rsplit("_", 1)[0])


class MediaError(ValueError):
    """A media input that cannot be used; the message names the input and what is wrong with it."""
