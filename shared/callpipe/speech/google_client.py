"""Building a Speech-to-Text v2 client that talks to the right regional endpoint.

A v2 recognizer lives in a location, and requests for it must go to that location's own
endpoint: the default ``speech.googleapis.com`` serves only ``global``; ``us`` and ``eu``
(the multi-regions Chirp 3 runs in) and single regions are served by
``{location}-speech.googleapis.com``. Sending a ``locations/us`` recognizer to the global
endpoint is refused.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from google.cloud.speech_v2 import SpeechClient

# Location ids are lower-case words joined by hyphens ("us", "eu", "us-central1"); anything
# else would end up inside a host name.
_LOCATION = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


def speech_api_endpoint(location: str) -> str | None:
    """The API endpoint for ``location``, or None for the library's default (global)."""
    if not _LOCATION.match(location):
        raise ValueError(f"not a Speech-to-Text location: {location!r}")
    if location == "global":
        return None
    return f"{location}-speech.googleapis.com"


def build_speech_client(location: str) -> SpeechClient:
    """A SpeechClient with Application Default Credentials for recognizers in ``location``."""
    from google.api_core.client_options import ClientOptions
    from google.cloud.speech_v2 import SpeechClient

    endpoint = speech_api_endpoint(location)
    options = ClientOptions(api_endpoint=endpoint) if endpoint else None
    return SpeechClient(client_options=options)
