"""The transcript model every transcriber produces, and the transcriber port.

Speakers are labelled ``agent`` and ``caller`` when the engine can tell them apart by
channel or by content, otherwise ``speaker_1``, ``speaker_2``…; times are seconds from the
start of the recording.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field


class TranscriptWord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    word: str
    start: float = Field(ge=0)
    end: float = Field(ge=0)
    speaker: str | None = None
    confidence: float | None = Field(default=None, ge=0, le=1)


class TranscriptSegment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    speaker: str
    start: float = Field(ge=0)
    end: float = Field(ge=0)
    text: str
    confidence: float | None = Field(default=None, ge=0, le=1)
    channel: int | None = None


Diarization = Literal["channel", "clustering", "provider", "none"]


class Transcript(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    segments: list[TranscriptSegment]
    text: str = Field(description="The whole transcript, one line per segment: 'speaker: text'.")
    language: str
    audio_duration_seconds: float = Field(ge=0)
    engine: str = Field(description="'google-speech-v2' or 'faster-whisper'.")
    model: str
    billed_seconds: float | None = None
    diarization: Diarization
    speaker_count: int = Field(ge=0)
    words: list[TranscriptWord] = Field(default_factory=list)

    @staticmethod
    def render_text(segments: list[TranscriptSegment]) -> str:
        return "\n".join(f"{s.speaker}: {s.text.strip()}" for s in segments if s.text.strip())


@dataclass(frozen=True)
class AudioInput:
    """What a transcriber gets: a local copy of the audio and, when it is in Cloud Storage,
    its gs:// URI (Speech-to-Text reads long audio from there directly)."""

    path: Path
    content_type: str
    gcs_uri: str | None = None
    duration_seconds: float | None = None


class TranscriptionFailed(RuntimeError):
    """The engine could not transcribe the audio. ``permanent``: retrying cannot help
    (undecodable audio, refused request); otherwise the step retries."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class Transcriber(Protocol):
    def transcribe(
        self, audio: AudioInput, progress: Callable[[float], None] | None = None
    ) -> Transcript:
        """Transcribe with speaker labels; ``progress`` gets the fraction done (0..1)."""
        ...
