"""Choosing the transcription and analysis engines from settings.

Production defaults to Google (Speech-to-Text v2 chirp_3, Gemini on Vertex AI); local runs
and tests default to the offline engines (faster-whisper, the rule-based analyzer), which
do the real job without any cloud access. SPEECH_ENGINE and ANALYSIS_ENGINE override.
"""

from __future__ import annotations

from callpipe.analysis import Analyzer
from callpipe.config import Settings
from callpipe.transcripts import Transcriber

SPEECH_ENGINES = ("local", "google")
ANALYSIS_ENGINES = ("rules", "gemini")


class UnknownEngine(ValueError):
    pass


def speech_engine_name(settings: Settings) -> str:
    name = settings.speech_engine or ("google" if settings.is_production else "local")
    if name not in SPEECH_ENGINES:
        raise UnknownEngine(f"SPEECH_ENGINE={name!r}: choose one of {', '.join(SPEECH_ENGINES)}")
    return name


def analysis_engine_name(settings: Settings) -> str:
    name = settings.analysis_engine or ("gemini" if settings.is_production else "rules")
    if name not in ANALYSIS_ENGINES:
        raise UnknownEngine(
            f"ANALYSIS_ENGINE={name!r}: choose one of {', '.join(ANALYSIS_ENGINES)}"
        )
    return name


def build_transcriber(
    settings: Settings, model: str | None = None, diarization: bool | None = None
) -> Transcriber:
    diarize = settings.enable_diarization if diarization is None else diarization
    if speech_engine_name(settings) == "google":
        from callpipe.speech.google import GoogleSpeechTranscriber
        from callpipe.speech.google_client import build_speech_client
        from callpipe.speech.google_operations import GcsOperationStore

        return GoogleSpeechTranscriber(
            project=settings.google_cloud_project,
            location=settings.speech_location,
            model=model or settings.speech_to_text_model,
            language=settings.speech_language,
            diarization=diarize,
            max_speakers=settings.speech_max_speakers,
            client=build_speech_client(settings.speech_location),
            batch_timeout_seconds=settings.speech_batch_timeout_seconds,
            # Next to the recordings: a redelivery resumes its BatchRecognize.
            operations=GcsOperationStore(),
        )
    from callpipe.speech.local import LocalWhisperTranscriber

    return LocalWhisperTranscriber(
        model=model or settings.local_whisper_model,
        language=settings.speech_language,
        diarization=diarize,
        max_speakers=settings.speech_max_speakers,
    )


def build_analyzer(settings: Settings) -> Analyzer:
    if analysis_engine_name(settings) == "gemini":
        from callpipe.analyzers.gemini import GeminiAnalyzer

        return GeminiAnalyzer(
            project=settings.vertex_ai_project or settings.google_cloud_project,
            location=settings.vertex_ai_location,
            model=settings.vertex_ai_model,
            max_transcript_chars=settings.analysis_max_transcript_chars,
            thinking_budget=settings.vertex_ai_thinking_budget,
            time_budget_seconds=settings.analysis_time_budget_seconds,
        )
    from callpipe.analyzers.rules import RuleBasedAnalyzer

    return RuleBasedAnalyzer()
