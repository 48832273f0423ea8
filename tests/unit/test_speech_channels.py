"""callpipe.speech.channels: channel counts and the "same signal on both channels" check,
on real files (the demo calls, the MP3s in tests/data/audio) and WAVs written here."""

from __future__ import annotations

import math
import struct
import wave
from pathlib import Path
from typing import Any

import pytest

from callpipe.speech import channels
from callpipe.speech.channels import PROBE_SECONDS, audio_channel_count, channels_identical

REPO = Path(__file__).resolve().parents[2]
CALLS = REPO / "shared/callpipe/simulator/demo_calls/calls"
AUDIO = REPO / "tests/data/audio"
STEREO_MP3 = CALLS / "CAL3c513db4202bca90b5d19c704b30bf56.mp3"  # agent left, caller right
MONO_MP3 = CALLS / "CALbbbd31b6424c58868ce8e87b9e807300.mp3"
MONO_WAV = CALLS / "CAL7032e1b48b52fb7306a9cd882f654431.wav"  # 16-bit, 8 kHz


def mono_samples() -> list[int]:
    with wave.open(str(MONO_WAV)) as source:
        frames = source.readframes(source.getnframes())
    return list(struct.unpack(f"<{len(frames) // 2}h", frames))


def write_stereo(path: Path, left: list[int], right: list[int], rate: int = 8000) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(
            b"".join(struct.pack("<hh", a, b) for a, b in zip(left, right, strict=True))
        )
    return path


def write_wav(path: Path, tag: int, width: int, rate: int, interleaved: bytes) -> Path:
    """A two-channel WAV of any format tag (the wave module writes PCM only)."""
    fmt = struct.pack("<HHIIHH", tag, 2, rate, rate * 2 * width, 2 * width, 8 * width)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(interleaved)) + interleaved
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def test_mp3_copies_are_found_in_either_stereo_mode() -> None:
    assert channels_identical(AUDIO / "copied-mono-stereo-mode.mp3") is True
    assert channels_identical(AUDIO / "copied-mono-joint-stereo.mp3") is True
    assert channels_identical(AUDIO / "two-parties-joint-stereo.mp3") is False
    assert channels_identical(STEREO_MP3) is False  # plain stereo, two parties
    assert channels_identical(MONO_MP3) is None  # nothing to compare


def test_wav_copies_are_found_by_correlation(tmp_path: Path) -> None:
    voice = mono_samples()
    assert channels_identical(write_stereo(tmp_path / "copy.wav", voice, voice)) is True
    quieter = [v // 2 for v in voice]  # same signal, other gain: still one signal
    assert channels_identical(write_stereo(tmp_path / "gain.wav", voice, quieter)) is True
    other = voice[::-1]  # the same voice, not the same signal
    assert channels_identical(write_stereo(tmp_path / "two.wav", voice, other)) is False
    silent = [0] * len(voice)
    assert channels_identical(write_stereo(tmp_path / "dead.wav", voice, silent)) is False
    assert channels_identical(write_stereo(tmp_path / "none.wav", silent, silent)) is None
    assert channels_identical(MONO_WAV) is None


@pytest.mark.parametrize(("tag", "width"), [(7, 1), (6, 1), (1, 1), (3, 4)])
def test_wav_codings_are_decoded(tmp_path: Path, tag: int, width: int) -> None:
    """mu-law, A-law, 8-bit PCM and float: a copy is a copy, a tone against another is not."""
    rate = 8000
    tone = [math.sin(2 * math.pi * 440 * i / rate) for i in range(rate)]
    other = [math.sin(2 * math.pi * 97 * i / rate + 1.0) for i in range(rate)]

    def encode(value: float) -> bytes:
        if tag == 3:
            return struct.pack("<f", value)
        if tag == 1:
            return bytes([int(128 + 100 * value)])
        # Any byte sequence that follows the signal will do for the companded codings.
        return bytes([int(128 + 100 * value) & 0xFF])

    same = b"".join(encode(v) * 2 for v in tone)
    mixed = b"".join(encode(a) + encode(b) for a, b in zip(tone, other, strict=True))
    assert channels_identical(write_wav(tmp_path / "same.wav", tag, width, rate, same)) is True
    assert channels_identical(write_wav(tmp_path / "mixed.wav", tag, width, rate, mixed)) is False


def test_companded_codings_decode_like_g711() -> None:
    # Reference values of ITU-T G.711, as the standard library's audioop decoded them.
    assert (channels._ULAW[0x00], channels._ULAW[0x7F], channels._ULAW[0xFF]) == (-32124, 0, 0)
    assert (channels._ULAW[0x80], channels._ULAW[0xF0]) == (32124, 120)
    assert (channels._ALAW[0x55], channels._ALAW[0xD5], channels._ALAW[0x2A]) == (-8, 8, -32256)
    assert channels._ALAW[0xAA] == 32256


def test_only_the_start_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A long recording costs no more than PROBE_SECONDS of it."""
    voice = mono_samples()
    path = write_stereo(tmp_path / "long.wav", voice * 4, voice * 4)  # ~98 s
    read: list[int] = []
    original = channels._read

    def counting(path: Path, offset: int, size: int) -> bytes:
        data = original(path, offset, size)
        read.append(len(data))
        return data

    monkeypatch.setattr(channels, "_read", counting)
    assert channels_identical(path) is True
    assert read == [int(PROBE_SECONDS * 8000) * 4]


def test_channel_count_is_read_from_wav_and_mp3_headers(tmp_path: Path) -> None:
    assert audio_channel_count(STEREO_MP3) == 2
    assert audio_channel_count(MONO_MP3) == 1
    assert audio_channel_count(MONO_WAV) == 1
    assert audio_channel_count(AUDIO / "copied-mono-joint-stereo.mp3") == 2
    unknown = tmp_path / "call.ogg"
    unknown.write_bytes(b"OggS" + bytes(100))
    assert audio_channel_count(unknown) is None
    assert channels_identical(unknown) is None
    assert channels_identical(tmp_path / "missing.wav") is None


@pytest.mark.parametrize(
    ("rate", "width", "expected"),
    # a rate that lies changes no sample: the two copied channels are still found alike
    [(0xFFFFFFFF, 2, True), (8000, 0xFFFF // 2, None), (8000, 0, None), (0, 2, None)],
)
def test_a_wav_header_that_lies_is_answered_not_known(
    tmp_path: Path, rate: int, width: int, expected: bool | None
) -> None:
    """Sizes come from the header: a corrupt one must not ask for gigabytes (MemoryError)
    or fail the call; Speech may still decode the audio."""
    voice = mono_samples()[:800]
    interleaved = b"".join(struct.pack("<hh", v, v) for v in voice)
    fmt = struct.pack("<HHIIHH", 1, 2, rate, 0, 2 * width & 0xFFFF, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(interleaved)) + interleaved
    path = tmp_path / "lying.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)

    assert channels_identical(path) is expected


def test_a_probe_never_asks_for_more_than_the_file_holds(tmp_path: Path) -> None:
    """read(n) allocates n bytes before reading: a size from a lying header must be cut to
    what the file holds, not left to fail (and be caught) as MemoryError."""
    path = tmp_path / "short.wav"
    path.write_bytes(b"x" * 1000)
    asked: list[int] = []

    class Recording:
        def __init__(self, source: Any) -> None:
            self._source = source

        def __enter__(self) -> Recording:
            return self

        def __exit__(self, *exc: object) -> None:
            self._source.close()

        def seek(self, *args: int) -> int:
            return int(self._source.seek(*args))

        def read(self, size: int) -> bytes:
            asked.append(size)
            return bytes(self._source.read(size))

    class RecordingPath:
        def open(self, mode: str) -> Recording:
            return Recording(path.open(mode))

    assert channels._read(RecordingPath(), 100, 30 * 0xFFFFFFFF * 4) == b"x" * 900  # type: ignore[arg-type]
    assert asked == [900]
