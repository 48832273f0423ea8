"""Safe fetching of call recordings: SSRF guard, pinned connections, capped audio download.

The download-recording step uses ``download_audio`` with a ``FetchPolicy`` built from its
configuration; the other names are exported for tests and for callers that keep a client.
"""

from callpipe.recordings.fetcher import (
    AudioRejected,
    DownloadedAudio,
    FetchFailed,
    RecordingGone,
    TooManyRedirects,
    download_audio,
)
from callpipe.recordings.guard import (
    HostUnresolved,
    ResolvedTarget,
    Resolver,
    UnsafeUrl,
    check_url,
    is_public_address,
    redact_url,
    system_resolve,
)
from callpipe.recordings.pinning import PinnedBackend, PinnedTransport, pinned_client
from callpipe.recordings.policy import DEFAULT_MAX_BYTES, FetchPolicy
from callpipe.recordings.sniff import AUDIO_EXTENSIONS, sniff_audio

__all__ = [
    "AUDIO_EXTENSIONS",
    "DEFAULT_MAX_BYTES",
    "AudioRejected",
    "DownloadedAudio",
    "FetchFailed",
    "FetchPolicy",
    "HostUnresolved",
    "PinnedBackend",
    "PinnedTransport",
    "RecordingGone",
    "ResolvedTarget",
    "Resolver",
    "TooManyRedirects",
    "UnsafeUrl",
    "check_url",
    "download_audio",
    "is_public_address",
    "pinned_client",
    "redact_url",
    "sniff_audio",
    "system_resolve",
]
