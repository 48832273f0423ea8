"""The local engine: faster-whisper on this machine's CPU, with offline diarization.

No cloud account and no model hub needed (the default model comes from PyPI, see
:mod:`callpipe.speech.local_models`). The audio is decoded once as two channels: their mix
is transcribed, and the channels themselves say who spoke (see :mod:`callpipe.speech.diarize`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from callpipe.speech.diarize import TimedWord, build_segments, diarize
from callpipe.speech.local_models import (
    DEFAULT_MODEL,
    ModelUnavailable,
    ResolvedModel,
    default_cache_dir,
    resolve_model,
)
from callpipe.transcripts import (
    AudioInput,
    Transcript,
    TranscriptionFailed,
    TranscriptWord,
)

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

ENGINE = "faster-whisper"
SAMPLE_RATE = 16_000  # what Whisper and Silero VAD expect; decode_audio resamples to it
RECOGNITION_SHARE = 0.95  # of the progress bar; diarization takes the rest

Progress = Callable[[float], None]


class LocalWhisperTranscriber:
    """A :class:`callpipe.transcripts.Transcriber` running Whisper on the CPU."""

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        language: str = "en-US",
        diarization: bool = True,
        max_speakers: int = 2,
        compute_type: str = "int8",
        cpu_threads: int = 0,
        beam_size: int = 5,
        cache_dir: Path | None = None,
    ) -> None:
        self.model_name = model
        self.language = language
        self.diarization = diarization
        self.max_speakers = max_speakers
        self.compute_type = compute_type
        self.cpu_threads = cpu_threads or _usable_cores()
        self.beam_size = beam_size
        self.cache_dir = cache_dir
        self._lock = threading.Lock()
        self._loaded: tuple[WhisperModel, ResolvedModel] | None = None

    def load(self) -> None:
        """Load the model now (otherwise the first transcription does)."""
        self._model()

    def _model(self) -> tuple[WhisperModel, ResolvedModel]:
        # Loading takes seconds and ~150 MB: once per process, even with concurrent callers.
        with self._lock:
            if self._loaded is None:
                self._loaded = self._load()
            return self._loaded

    def _load(self) -> tuple[WhisperModel, ResolvedModel]:
        try:
            from faster_whisper import WhisperModel
        except ImportError as missing:
            raise ModelUnavailable(
                "the local engine needs faster-whisper: pip install 'faster-whisper==1.2.1'"
            ) from missing
        resolved = resolve_model(self.model_name, self.cache_dir)
        try:
            model = WhisperModel(
                resolved.location,
                device="cpu",
                compute_type=self.compute_type,
                cpu_threads=self.cpu_threads,
                download_root=None
                if resolved.local
                else str((self.cache_dir or default_cache_dir()) / "hub"),
            )
        except Exception as failed:
            if resolved.local:
                raise ModelUnavailable(
                    f"cannot load the Whisper model in {resolved.location}: {failed}"
                ) from failed
            # Most likely no internet access: a retry later can succeed.
            raise TranscriptionFailed(
                f"cannot download the faster-whisper model {resolved.location!r} ({failed}); "
                "this needs internet access to the model hub. Offline, set "
                "LOCAL_WHISPER_MODEL=base or tiny.en (installed from PyPI) or a model dir."
            ) from failed
        return model, resolved

    def transcribe(self, audio: AudioInput, progress: Progress | None = None) -> Transcript:
        report = _monotonic(progress)
        left, right = _decode(audio.path)
        mix = (left + right) / 2  # equal channels (mono) stay as they are
        duration = len(mix) / SAMPLE_RATE
        model, resolved = self._model()
        words: list[TimedWord] = []
        language = self.language
        if duration > 0:
            code, language = self._choose_language(model, mix)
            try:
                segments, _ = model.transcribe(
                    mix,
                    language=code,
                    beam_size=self.beam_size,
                    word_timestamps=True,
                    vad_filter=True,
                )
                for segment in segments:  # a generator: decoding happens while iterating
                    words.extend(
                        TimedWord(w.word, float(w.start), float(w.end), float(w.probability))
                        for w in segment.words or []
                    )
                    report(RECOGNITION_SHARE * segment.end / duration)
            except (RuntimeError, ValueError, MemoryError) as failed:
                raise TranscriptionFailed(f"faster-whisper failed: {failed}") from failed
        attribution = diarize(
            words,
            left,
            right,
            SAMPLE_RATE,
            enabled=self.diarization,
            max_speakers=self.max_speakers,
        )
        segments_out = build_segments(words, attribution.speakers, attribution.channels)
        report(1.0)
        return Transcript(
            segments=segments_out,
            text=Transcript.render_text(segments_out),
            language=language,
            audio_duration_seconds=round(duration, 3),
            engine=ENGINE,
            model=f"{resolved.label}, {self.compute_type}",
            billed_seconds=None,
            diarization=attribution.method,
            speaker_count=attribution.speaker_count,
            words=[
                TranscriptWord(
                    word=w.text.strip(),
                    start=round(max(w.start, 0.0), 3),
                    end=round(max(w.end, w.start, 0.0), 3),
                    speaker=speaker,
                    confidence=round(min(max(w.probability, 0.0), 1.0), 4),
                )
                for w, speaker in zip(words, attribution.speakers, strict=True)
            ],
        )

    def _choose_language(self, model: WhisperModel, audio: np.ndarray) -> tuple[str, str]:
        """(Whisper's code to decode with, the BCP-47 tag to report).

        The configured language is used as is: detecting costs one more encoder pass (about
        a tenth of the work on a one-minute call) and phone-band English is sometimes
        detected with little confidence. With ``auto`` (or a language Whisper does not
        know) the model detects it and the detected code is reported.
        """
        primary = self.language.split("-")[0].lower()
        if not model.model.is_multilingual:
            return "en", self.language if primary == "en" else "en"
        if primary == "auto" or primary not in _whisper_languages():
            detected, _, _ = model.detect_language(audio, vad_filter=True)
            return detected, detected
        return primary, self.language


def _usable_cores() -> int:
    """The cores this process may run on (a container's CPU set, not the host's count)."""
    if hasattr(os, "sched_getaffinity"):  # Linux; macOS has no affinity API
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _whisper_languages() -> set[str]:
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    return set(_LANGUAGE_CODES)


def _decode(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Both channels at 16 kHz (a mono file gives the same signal twice)."""
    from faster_whisper import decode_audio

    try:
        left, right = decode_audio(str(path), sampling_rate=SAMPLE_RATE, split_stereo=True)
    except Exception as failed:
        # PyAV raises several error types for files that are not audio; none is retryable.
        raise TranscriptionFailed(
            f"cannot decode the audio {path.name}: {failed}", permanent=True
        ) from failed
    return left, right


def _monotonic(progress: Progress | None) -> Progress:
    """Forward only increasing fractions in [0, 1]: callers draw bars from them."""
    last = -1.0

    def report(fraction: float) -> None:
        nonlocal last
        fraction = min(max(fraction, 0.0), 1.0)
        if progress is not None and fraction > last:
            last = fraction
            progress(fraction)

    return report
