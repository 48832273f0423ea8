"""Speech for the demo calls: espeak-ng voices, sox phone-band filtering, lame MP3.

Each turn is spoken by espeak-ng, band-limited to the telephone band (300-3400 Hz) and
resampled to 8 kHz by sox, trimmed of its own leading and trailing silence, then placed on
a timeline with pauses between turns, so the script's start/end seconds are exact. A faint
seeded noise floor keeps silences from being digital zero (as on a real line) while the
output stays byte-for-byte reproducible.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import tempfile
import wave
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from callpipe.simulator.demo_content import Speaker, Voice

RATE = 8000
NOISE_STD = 24.0  # about -63 dBFS: audible only as a line hiss
LEAD_IN_SECONDS = 0.5
TAIL_SECONDS = 0.8
GAP_SECONDS = (0.35, 0.9)
TOOL_TIMEOUT_SECONDS = 120


@dataclass(frozen=True)
class Tool:
    command: str
    package: str  # the Debian package that provides it
    purpose: str


TOOLS: tuple[Tool, ...] = (
    Tool("espeak-ng", "espeak-ng", "speech synthesis"),
    Tool("sox", "sox", "phone-band filtering and resampling"),
    Tool("lame", "lame", "MP3 encoding"),
)


class MissingTools(RuntimeError):
    pass


def check_tools(tools: Sequence[Tool] = TOOLS) -> None:
    missing = [tool for tool in tools if shutil.which(tool.command) is None]
    if missing:
        names = ", ".join(f"{tool.command} ({tool.purpose})" for tool in missing)
        packages = " ".join(tool.package for tool in missing)
        raise MissingTools(
            f"building the demo calls needs {names}, which is not installed. "
            f"Install the Debian package(s): sudo apt-get install -y {packages}"
        )


@dataclass(frozen=True)
class PlacedTurn:
    speaker: Speaker
    text: str
    start: float
    end: float


@dataclass(frozen=True)
class Rendered:
    channels: tuple[array[int], ...]  # one per channel, 16-bit samples at RATE
    turns: tuple[PlacedTurn, ...]

    @property
    def seconds(self) -> float:
        return len(self.channels[0]) / RATE


def render_conversation(
    turns: Sequence[tuple[Speaker, str]],
    voices: dict[Speaker, Voice],
    stereo: bool,
    seed: str,
) -> Rendered:
    """Speak every turn and lay them out; stereo puts the agent left and the caller right."""
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="callpipe-demo-") as tmp:
        spoken = [
            (speaker, text, speak(text, voices[speaker], Path(tmp))) for speaker, text in turns
        ]
    cursor = round(LEAD_IN_SECONDS * RATE)
    placed: list[tuple[Speaker, str, int, array[int]]] = []
    for index, (speaker, text, pcm) in enumerate(spoken):
        if index:
            cursor += round(rng.uniform(*GAP_SECONDS) * RATE)
        placed.append((speaker, text, cursor, pcm))
        cursor += len(pcm)
    total = cursor + round(TAIL_SECONDS * RATE)
    tracks: dict[Speaker, array[int]] = {
        "agent": array("h", bytes(2 * total)),
        "caller": array("h", bytes(2 * total)),
    }
    for speaker, _text, start, pcm in placed:
        tracks[speaker][start : start + len(pcm)] = pcm
    channels: tuple[array[int], ...]
    if stereo:
        channels = (_with_noise(tracks["agent"], rng), _with_noise(tracks["caller"], rng))
    else:
        mixed = array("h", (a + c for a, c in zip(tracks["agent"], tracks["caller"], strict=True)))
        channels = (_with_noise(mixed, rng),)
    return Rendered(
        channels=channels,
        turns=tuple(
            PlacedTurn(speaker, text, round(start / RATE, 3), round((start + len(pcm)) / RATE, 3))
            for speaker, text, start, pcm in placed
        ),
    )


def speak(text: str, voice: Voice, workdir: Path) -> array[int]:
    raw, band = workdir / "raw.wav", workdir / "band.wav"
    _run(
        ["espeak-ng", "-v", voice.espeak, "-s", str(voice.speed), "-p", str(voice.pitch),
         "-w", str(raw), "--stdin"],
        stdin=text,
    )  # fmt: skip
    _run(
        [
            "sox", "-R", "-D", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(band),
            "highpass", "300", "lowpass", "3400",
            # Trim the synthesizer's own silence so that start/end bound the speech.
            "silence", "1", "0.02", "0.5%", "reverse", "silence", "1", "0.02", "0.5%", "reverse",
            "gain", "-n", "-4",
        ]
    )  # fmt: skip
    return read_pcm(band)


def read_pcm(path: Path) -> array[int]:
    with wave.open(str(path), "rb") as reader:
        if reader.getsampwidth() != 2 or reader.getnchannels() != 1:
            raise ValueError(f"{path}: expected 16-bit mono")
        samples = array("h", reader.readframes(reader.getnframes()))
    if sys.byteorder == "big":
        samples.byteswap()  # WAV is little-endian
    return samples


def write_wav(path: Path, channels: Sequence[array[int]]) -> None:
    if len(channels) == 1:
        frames = array("h", channels[0])
    else:
        frames = array("h", bytes(2 * len(channels[0]) * len(channels)))
        for index, channel in enumerate(channels):
            frames[index :: len(channels)] = channel
    if sys.byteorder == "big":
        frames.byteswap()
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(len(channels))
        writer.setsampwidth(2)
        writer.setframerate(RATE)
        writer.writeframes(frames.tobytes())


def encode_mp3(wav: Path, mp3: Path, stereo: bool) -> None:
    # 8 kHz is MPEG-2.5: 32 kbit/s stereo (16 a channel) or 24 mono keeps speech clear and
    # files small.
    bitrate = "32" if stereo else "24"
    _run(["lame", "--quiet", "--noreplaygain", "-b", bitrate, "-m", "s" if stereo else "m",
          str(wav), str(mp3)])  # fmt: skip


def _with_noise(samples: array[int], rng: random.Random) -> array[int]:
    gauss = rng.gauss
    return array("h", (max(-32768, min(32767, s + round(gauss(0.0, NOISE_STD)))) for s in samples))


def _run(argv: list[str], stdin: str | None = None) -> None:
    try:
        subprocess.run(
            argv,
            input=stdin.encode("utf-8") if stdin is not None else None,
            check=True,
            capture_output=True,
            timeout=TOOL_TIMEOUT_SECONDS,
        )
    except subprocess.CalledProcessError as failed:
        detail = failed.stderr.decode("utf-8", "replace").strip()[-500:]
        raise RuntimeError(f"{argv[0]} failed ({failed.returncode}): {detail}") from failed
