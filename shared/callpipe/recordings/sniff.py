"""Recognising audio by its first bytes, and the content types a recording may carry.

The Content-Type header is the server's claim; the magic bytes are what the file is. Both
must agree that it is audio before anything is stored or sent to transcription.
"""

from __future__ import annotations

# Enough for the longest signature (RIFF....WAVE).
SNIFF_BYTES = 12

AUDIO_EXTENSIONS = ("mp3", "wav", "ogg", "flac", "m4a")

# Generic binary types object stores use when nobody set a better one (S3 says binary/...).
_GENERIC_BINARY = frozenset(
    {"application/octet-stream", "binary/octet-stream", "application/binary"}
)


def media_type(content_type: str | None) -> str:
    """The lower-case ``type/subtype`` of a Content-Type header, parameters dropped."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_audio_media_type(value: str) -> bool:
    return (value.startswith("audio/") and len(value) > len("audio/")) or value in _GENERIC_BINARY


def sniff_audio(head: bytes) -> str | None:
    """The file extension of the audio format ``head`` starts with, or None if unknown."""
    if head.startswith(b"ID3") or mpeg_audio_frame(head):
        return "mp3"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head.startswith(b"OggS"):
        return "ogg"
    if head.startswith(b"fLaC"):
        return "flac"
    if head[4:8] == b"ftyp":  # ISO base media (MP4/M4A): box size, then the ftyp box type
        return "m4a"
    return None


def mpeg_audio_frame(head: bytes) -> bool:
    """An MPEG audio layer I-III frame header: 11 sync bits and no reserved field values.

    The extra checks keep random bytes that happen to start with 0xFFE from passing, and
    reject layer "00", which is AAC ADTS rather than MP3.
    """
    if len(head) < 3 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    version = (head[1] >> 3) & 0b11
    layer = (head[1] >> 1) & 0b11
    bitrate = head[2] >> 4
    sample_rate = (head[2] >> 2) & 0b11
    return version != 0b01 and layer != 0b00 and bitrate != 0b1111 and sample_rate != 0b11
