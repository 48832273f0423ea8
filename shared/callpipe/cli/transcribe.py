"""``callpipe transcribe FILE``: transcribe a recording on this machine (local engine).

Uses faster-whisper with the model named by LOCAL_WHISPER_MODEL (default ``base``, installed
from PyPI: no cloud account, no model download) and the SPEECH_LANGUAGE,
ENABLE_DIARIZATION and SPEECH_MAX_SPEAKERS settings.
"""

from __future__ import annotations

import mimetypes
import sys
import time
from pathlib import Path
from typing import Annotated, TextIO

import typer

from callpipe.cli.common import fail, info, settings
from callpipe.transcripts import AudioInput, Transcript, TranscriptionFailed

# Only runs longer than this get a progress bar: a short file would just flicker.
PROGRESS_AFTER_SECONDS = 1.0
BAR_WIDTH = 30


class ProgressBar:
    """A one-line bar with percent on a terminal's stderr; nothing when not a terminal."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.started = time.monotonic()
        self.drawn = False

    def __call__(self, fraction: float) -> None:
        if not self.enabled or time.monotonic() - self.started < PROGRESS_AFTER_SECONDS:
            return
        filled = round(BAR_WIDTH * fraction)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        self.stream.write(f"\r{self.label} [{bar}] {100 * fraction:3.0f}%")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\r\033[K")  # clear the bar's line
            self.stream.flush()


def timestamp(seconds: float) -> str:
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    return (
        f"{hours}:{rest // 60:02d}:{rest % 60:02d}"
        if hours
        else f"{rest // 60:02d}:{rest % 60:02d}"
    )


def render_lines(transcript: Transcript) -> list[str]:
    return [f"[{timestamp(s.start)}] {s.speaker}: {s.text}" for s in transcript.segments]


def transcribe(
    file: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, readable=True, help="MP3 or WAV recording"),
    ],
    json: Annotated[bool, typer.Option("--json", help="Print the Transcript as JSON.")] = False,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Whisper model: base, tiny.en, a model dir, or an official faster-whisper "
            "name such as small.en (downloaded; needs internet). Default: LOCAL_WHISPER_MODEL.",
        ),
    ] = None,
    no_diarization: Annotated[
        bool, typer.Option("--no-diarization", help="Do not tell the speakers apart.")
    ] = False,
) -> None:
    """Transcribe a recording on this machine: a line per segment (time, speaker), or JSON.

    Each line gives the segment's start time and speaker; --json prints the whole
    Transcript."""
    from callpipe.engines import build_transcriber, speech_engine_name
    from callpipe.speech.local import LocalWhisperTranscriber

    config = settings()
    content_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    bar = ProgressBar(f"transcribing {file.name}")
    try:
        if speech_engine_name(config) == "google":
            # Recognize takes up to a minute of audio inline; longer files need gs:// (say so).
            engine = build_transcriber(
                config, model=model, diarization=config.enable_diarization and not no_diarization
            )
            result = engine.transcribe(AudioInput(path=file, content_type=content_type), bar)
        else:
            transcriber = LocalWhisperTranscriber(
                model=model or config.local_whisper_model,
                language=config.speech_language,
                diarization=config.enable_diarization and not no_diarization,
                max_speakers=config.speech_max_speakers,
            )
            if bar.enabled:
                info(f"loading the Whisper model {transcriber.model_name}…")
            transcriber.load()
            result = transcriber.transcribe(AudioInput(path=file, content_type=content_type), bar)
    except TranscriptionFailed as failed:
        bar.close()
        fail(str(failed))
    bar.close()
    if json:
        sys.stdout.write(result.model_dump_json(indent=2) + "\n")
        return
    lines = render_lines(result)
    sys.stdout.write("\n".join(lines) + "\n" if lines else "")
    if not lines:
        info("no speech found")
