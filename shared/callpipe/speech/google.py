"""Google Speech-to-Text v2 (Chirp 3 by default) as a :class:`~callpipe.transcripts.Transcriber`.

Two ways in, because synchronous ``Recognize`` takes at most one minute (and 10 MB) of
audio: short recordings go inline to ``Recognize``; anything longer, or of unknown length,
goes to ``BatchRecognize``, which reads the recording straight from its ``gs://`` URI and
runs as a long-running operation that we poll, and that the next attempt resumes when this
one runs out of time (:mod:`callpipe.speech.google_batch`). Both return the same result
messages, so one mapping turns either into a :class:`~callpipe.transcripts.Transcript`.

Speakers: a stereo recording carries the agent and the caller on separate channels, and
without multi-channel mode the API transcribes only the first channel, losing the other
party. So stereo WAV/MP3 is recognised per channel (``SEPARATE_RECOGNITION_PER_CHANNEL``,
billed per channel) and each channel names its speaker, unless both channels carry the same
signal (mono saved as stereo, :mod:`callpipe.speech.channels`), which is recognised as mono.
Mono audio gets the provider's diarization (``diarization_config``) when it is enabled,
which labels words "1", "2"…
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from google.api_core import exceptions as api_exceptions
from google.rpc import code_pb2

from callpipe.speech.channels import audio_channel_count, channels_identical
from callpipe.speech.google_batch import Deadline, resume, start, wait
from callpipe.speech.google_client import build_speech_client, speech_api_endpoint
from callpipe.speech.google_errors import failure, is_transient_code
from callpipe.speech.google_operations import OperationStore, PendingOperation, request_key
from callpipe.transcripts import (
    AudioInput,
    Diarization,
    Transcript,
    TranscriptionFailed,
    TranscriptSegment,
    TranscriptWord,
)

if TYPE_CHECKING:
    from google.cloud.speech_v2 import SpeechClient

logger = logging.getLogger("callpipe.speech.google")

ENGINE = "google-speech-v2"
# Who speaks on which channel of a two-channel call recording (channel_tag 1, then 2).
STEREO_SPEAKERS = ("agent", "caller")
# A pause this long inside one speaker's words starts a new segment, so a mono transcript
# without diarization is not one wall of text.
SEGMENT_PAUSE_SECONDS = 2.0
# What one attempt of the transcribe step gives Speech-to-Text: under the function's timeout
# (the step's ack deadline, 600 s, the most a push subscription allows), leaving room
# for the download before and the transcript's write and publish after.
DEFAULT_BATCH_TIMEOUT_SECONDS = 480.0
# chirp_3's BatchRecognize gives word timestamps for up to 20 minutes of audio. Past that
# the words are not requested, and the segments take their times from the results.
WORD_TIMES_MAX_SECONDS = 20 * 60.0
# CallRail's durations are whole seconds, and a recording may run a little past its call:
# within this of the limit, a refusal may still be about the word times.
_DURATION_SLACK_SECONDS = 60.0


class GoogleSpeechTranscriber:
    """Transcribes with Speech-to-Text v2 through the implicit recognizer ``…/recognizers/_``
    in ``location`` (for Chirp 3: the ``us`` or ``eu`` multi-region)."""

    def __init__(
        self,
        project: str,
        location: str = "us",
        model: str = "chirp_3",
        language: str = "en-US",
        diarization: bool = True,
        min_speakers: int = 2,
        max_speakers: int = 2,
        client: SpeechClient | None = None,
        sync_limit_seconds: float = 60.0,
        sync_limit_bytes: int = 10_000_000,
        batch_timeout_seconds: float = DEFAULT_BATCH_TIMEOUT_SECONDS,
        poll_seconds: float = 5.0,
        separate_channels: bool = True,
        stereo_speakers: tuple[str, str] = STEREO_SPEAKERS,
        operations: OperationStore | None = None,
    ) -> None:
        if not project:
            raise ValueError("a Google Cloud project is required")
        speech_api_endpoint(location)  # validates the location id
        if not (1 <= min_speakers <= 6 and 1 <= max_speakers <= 6):  # what the API accepts
            raise ValueError(f"speaker counts must be 1-6, got {min_speakers}..{max_speakers}")
        self.project = project
        self.location = location
        self.model = model
        self.language = language
        self.diarization = diarization
        # Settings carry only a maximum (SPEECH_MAX_SPEAKERS); a maximum of 1 lowers the
        # default minimum of 2 rather than making an impossible range.
        self.min_speakers = min(min_speakers, max_speakers)
        self.max_speakers = max_speakers
        self.sync_limit_seconds = sync_limit_seconds
        self.sync_limit_bytes = sync_limit_bytes
        self.batch_timeout_seconds = batch_timeout_seconds
        self.poll_seconds = poll_seconds
        self.separate_channels = separate_channels
        self.stereo_speakers = stereo_speakers
        # Where a BatchRecognize left running by an attempt is remembered for the next one;
        # None: every attempt starts its own.
        self.operations = operations
        self._client = client

    @property
    def recognizer(self) -> str:
        # "_" is the implicit recognizer: no Recognizer resource to create or keep in sync;
        # the whole configuration travels with each request.
        return f"projects/{self.project}/locations/{self.location}/recognizers/_"

    def transcribe(
        self, audio: AudioInput, progress: Callable[[float], None] | None = None
    ) -> Transcript:
        # Every RPC and poll of this attempt ends by then (see callpipe.speech.google_batch).
        deadline = Deadline.after(self.batch_timeout_seconds)
        split = self._split_channels(audio)
        try:
            if self._use_recognize(audio):
                try:
                    results, billed = self._recognize(audio, self._config(split), deadline)
                except api_exceptions.InvalidArgument as exc:
                    # CallRail rounds durations, so a "60 s" call can be 60.4 s and be refused
                    # as too long; BatchRecognize takes it, and its verdict is final.
                    if not _is_gcs_uri(audio.gcs_uri):
                        raise
                    logger.warning(
                        "Recognize refused (%s); retrying with BatchRecognize", exc.message
                    )
                    results, billed = self._batch_recognize(audio, split, progress, deadline)
            else:
                results, billed = self._batch_recognize(audio, split, progress, deadline)
        except api_exceptions.GoogleAPICallError as exc:
            raise failure(exc) from exc
        except api_exceptions.RetryError as exc:
            raise TranscriptionFailed(f"Speech-to-Text did not answer: {exc}") from exc
        transcript = self._transcript(results, billed, audio, split)
        if progress is not None:
            progress(1.0)
        return transcript

    # --- requests ---------------------------------------------------------------------

    def _split_channels(self, audio: AudioInput) -> bool:
        """Whether to recognise each channel apart: two channels that are not one signal
        copied twice (that would transcribe, and bill, every utterance twice)."""
        if not self.separate_channels or audio_channel_count(audio.path) != 2:
            return False
        if channels_identical(audio.path):
            logger.info("both channels of %s carry the same signal: recognised as mono", audio.path)
            return False
        return True

    def _config(self, split: bool, word_times: bool = True) -> Any:
        from google.cloud.speech_v2.types import cloud_speech

        speakers: dict[str, Any] = {}
        if split:
            # The channels already separate the speakers; diarizing each one would only
            # invent extra speakers from line noise.
            mode = cloud_speech.RecognitionFeatures.MultiChannelMode
            speakers["multi_channel_mode"] = mode.SEPARATE_RECOGNITION_PER_CHANNEL
        elif self.diarization:
            speakers["diarization_config"] = cloud_speech.SpeakerDiarizationConfig(
                min_speaker_count=self.min_speakers, max_speaker_count=self.max_speakers
            )
        features = cloud_speech.RecognitionFeatures(
            enable_automatic_punctuation=True,
            enable_word_time_offsets=word_times,
            # No enable_word_confidence: chirp_3 has no word-level confidence.
            **speakers,
        )
        return cloud_speech.RecognitionConfig(
            # MP3, WAV (PCM, mu-law, A-law), FLAC, OGG/WebM Opus and M4A carry their own
            # headers; explicit decoding is only for headerless PCM, which we never get.
            auto_decoding_config=cloud_speech.AutoDetectDecodingConfig(),
            model=self.model,
            language_codes=[self.language],
            features=features,
        )

    def _use_recognize(self, audio: AudioInput) -> bool:
        size = _file_size(audio.path)
        has_uri = _is_gcs_uri(audio.gcs_uri)
        if audio.duration_seconds is None:
            # Unknown length: the batch path is safe for any length when the audio is in
            # Cloud Storage; otherwise Recognize is the only way, and it says if too long.
            if has_uri:
                return False
            short = size <= self.sync_limit_bytes
        else:
            short = (
                audio.duration_seconds <= self.sync_limit_seconds and size <= self.sync_limit_bytes
            )
        if not short and not has_uri:
            length = (
                "unknown length"
                if audio.duration_seconds is None
                else f"{audio.duration_seconds:g} s"
            )
            raise TranscriptionFailed(
                f"audio of {length} and {size} bytes is over the synchronous Recognize limit "
                f"({self.sync_limit_seconds:g} s, {self.sync_limit_bytes} bytes) and has no gs:// "
                f"URI for BatchRecognize (gcs_uri={audio.gcs_uri!r})",
                permanent=True,
            )
        return short

    def _recognize(
        self, audio: AudioInput, config: Any, deadline: Deadline
    ) -> tuple[Sequence[Any], Any]:
        from google.cloud.speech_v2.types import cloud_speech

        content = audio.path.read_bytes()
        request = cloud_speech.RecognizeRequest(
            recognizer=self.recognizer, config=config, content=content
        )
        # The client sets no timeout of its own on Recognize: a stalled call would hang until
        # the function is killed.
        response = self._speech().recognize(request=request, timeout=deadline.rpc_timeout())
        return response.results, response.metadata

    def _batch_recognize(
        self,
        audio: AudioInput,
        split: bool,
        progress: Callable[[float], None] | None,
        deadline: Deadline,
    ) -> tuple[Sequence[Any], Any]:
        uri = audio.gcs_uri
        if uri is None or not _is_gcs_uri(uri):
            raise TranscriptionFailed(
                f"BatchRecognize needs a gs:// URI, got {uri!r}", permanent=True
            )
        length = audio.duration_seconds
        if length is not None and length > WORD_TIMES_MAX_SECONDS:
            # Asking for word times the service cannot give risks the file's refusal.
            choices = [False]
        elif length is None or length > WORD_TIMES_MAX_SECONDS - _DURATION_SLACK_SECONDS:
            # Maybe over the limit: with word times first, without them if refused.
            choices = [True, False]
        else:
            choices = [True]
        requests = [self._batch_request(uri, self._config(split, times)) for times in choices]
        pending = self._pending(uri)
        if pending is not None and pending.request_key == request_key(requests[-1]):
            requests = requests[-1:]  # an earlier attempt already had to do without
        for request in requests:
            try:
                return self._run_batch(request, pending, progress, deadline)
            except _FileRefused as refused:
                # The file, not the request, was refused: maybe for the word times alone.
                asked_times = bool(request.config.features.enable_word_time_offsets)
                invalid = refused.code == code_pb2.INVALID_ARGUMENT
                if request is requests[-1] or not asked_times or not invalid:
                    raise
                logger.warning(
                    "BatchRecognize refused %s with word times (%s); retrying without them",
                    uri,
                    refused,
                )
                pending = None  # the refused operation's record is gone
        raise AssertionError("unreachable: the last request returns or raises")

    def _batch_request(self, uri: str, config: Any) -> Any:
        from google.cloud.speech_v2.types import cloud_speech

        return cloud_speech.BatchRecognizeRequest(
            recognizer=self.recognizer,
            config=config,
            files=[cloud_speech.BatchRecognizeFileMetadata(uri=uri)],
            # Inline: the transcript comes back in the operation; nothing to clean up in GCS.
            recognition_output_config=cloud_speech.RecognitionOutputConfig(
                inline_response_config=cloud_speech.InlineOutputConfig()
            ),
        )

    def _run_batch(
        self,
        request: Any,
        pending: PendingOperation | None,
        progress: Callable[[float], None] | None,
        deadline: Deadline,
    ) -> tuple[Sequence[Any], Any]:
        uri = request.files[0].uri
        client = self._speech()
        operation = resume(client, request, pending, deadline)
        if operation is None:
            self._claim(uri, request)
            operation = start(client, request, self.operations, deadline)
        try:
            wait(operation, uri, deadline, self.poll_seconds, self.batch_timeout_seconds, progress)
        except api_exceptions.NotFound as exc:
            # The operation itself is gone, not the audio: a new one can succeed.
            self._forget(uri)
            raise TranscriptionFailed(
                f"BatchRecognize operation {operation.operation.name} for {uri} is gone: "
                f"{exc.message}"
            ) from exc
        # Done, whatever the outcome: polling it again would only repeat it.
        self._forget(uri)
        response = operation.result()  # raises the operation's error, if it failed
        file_result = response.results.get(uri)
        if file_result is None:
            raise TranscriptionFailed(f"BatchRecognize finished without a result for {uri}")
        if file_result.error.code:
            raise _FileRefused(
                f"BatchRecognize could not transcribe {uri}: {file_result.error.message} "
                f"(code {file_result.error.code})",
                code=file_result.error.code,
            )
        batch = (
            file_result.inline_result.transcript
            if "inline_result" in file_result
            else file_result.transcript
        )
        billed = response if "total_billed_duration" in response else batch.metadata
        return batch.results, billed

    def _claim(self, uri: str, request: Any) -> None:
        """Make sure no other attempt is starting an operation for this recording (two
        deliveries at once would start, and pay for, two); the redelivery then resumes it."""
        if self.operations is None:
            return
        try:
            claimed = self.operations.claim(uri, request_key(request))
        except (api_exceptions.GoogleAPIError, OSError):
            # the bucket failing costs at most a second operation, not the transcript
            logger.warning(
                "could not claim the BatchRecognize of %s; starting it", uri, exc_info=True
            )
            return
        if not claimed:
            raise TranscriptionFailed(
                f"another delivery is starting a BatchRecognize for {uri}; "
                "this one is retried and will resume it"
            )

    def _pending(self, uri: str) -> PendingOperation | None:
        """The operation an earlier attempt left running; a bucket that cannot say is a
        retryable failure of ours, not a refusal by Speech-to-Text."""
        if self.operations is None:
            return None
        try:
            return self.operations.load(uri)
        except api_exceptions.GoogleAPIError as exc:
            raise TranscriptionFailed(
                f"could not read the BatchRecognize record of {uri}: {exc}"
            ) from exc

    def _forget(self, uri: str) -> None:
        if self.operations is not None:
            self.operations.forget(uri)

    def _speech(self) -> SpeechClient:
        # Built on first use so that constructing a transcriber needs no credentials.
        if self._client is None:
            self._client = build_speech_client(self.location)
        return self._client

    # --- responses --------------------------------------------------------------------

    def _transcript(
        self, results: Sequence[Any], billed: Any, audio: AudioInput, split: bool
    ) -> Transcript:
        pieces = list(self._pieces(results, split))
        if split:
            # Each channel's results come separately; interleave them into the conversation.
            pieces.sort(key=lambda p: p.start)
        segments = _segments(pieces)
        words = [
            TranscriptWord(
                word=p.text, start=p.start, end=p.end, speaker=p.speaker, confidence=p.confidence
            )
            for p in pieces
            if p.is_word
        ]
        ends = [_seconds(r.result_end_offset) for r in results] + [p.end for p in pieces]
        duration = max([*ends, audio.duration_seconds or 0.0])
        if split:
            diarization: Diarization = "channel"
        elif any(p.labelled for p in pieces):
            diarization = "provider"
        else:
            diarization = "none"
        languages = [r.language_code for r in results if r.language_code]
        return Transcript(
            segments=segments,
            text=Transcript.render_text(segments),
            language=_bcp47(languages[0]) if languages else self.language,
            audio_duration_seconds=duration,
            engine=ENGINE,
            model=self.model,
            billed_seconds=_seconds(billed.total_billed_duration)
            if billed is not None and "total_billed_duration" in billed
            else None,
            diarization=diarization,
            speaker_count=len({s.speaker for s in segments}),
            words=words,
        )

    def _pieces(self, results: Iterable[Any], split: bool) -> Iterable[_Piece]:
        """Each recognised word with its speaker and times, in the order they came."""
        labels: dict[str, str] = {}
        channel_end: dict[int, float] = {}  # where each channel's last result ended
        speaker = "speaker_1"
        for result in results:
            if not result.alternatives:
                continue
            best = result.alternatives[0]
            channel = result.channel_tag if split else None
            if channel is not None:
                speaker = self._channel_speaker(channel)
            result_start = channel_end.get(channel or 0, 0.0)
            result_end = max(result_start, _seconds(result.result_end_offset))
            channel_end[channel or 0] = result_end
            # (text, speaker label, times or None, confidence) per word; a result that came
            # without words counts as one.
            words = [
                (w.word, w.speaker_label, _times(w), w.confidence or None) for w in best.words
            ] or [(best.transcript.strip(), "", None, None)]
            for index, (text, label, times, confidence) in enumerate(words):
                if not text:
                    continue
                if channel is None and label:
                    speaker = labels.setdefault(label, f"speaker_{len(labels) + 1}")
                timed = times is not None
                if times is None:
                    # No offsets (chirp_3 batch gives word times only up to 20 min of audio):
                    # spread the words evenly over their result, a segment-level estimate.
                    step = (result_end - result_start) / len(words)
                    times = (result_start + index * step, result_start + (index + 1) * step)
                yield _Piece(
                    text=text,
                    start=times[0],
                    end=times[1],
                    speaker=speaker,
                    channel=channel,
                    confidence=confidence,
                    result_confidence=best.confidence or None,  # 0.0 means "not set"
                    is_word=timed,
                    labelled=bool(label),
                )

    def _channel_speaker(self, channel_tag: int) -> str:
        if 1 <= channel_tag <= len(self.stereo_speakers):
            return self.stereo_speakers[channel_tag - 1]
        return f"channel_{channel_tag}"


class _FileRefused(TranscriptionFailed):
    """A per-file error inside a finished BatchRecognize."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message, permanent=not is_transient_code(code))
        self.code = code


@dataclass(frozen=True)
class _Piece:
    text: str
    start: float
    end: float
    speaker: str
    channel: int | None  # channel_tag, 1-based, when recognised per channel
    confidence: float | None
    result_confidence: float | None
    is_word: bool
    labelled: bool  # carried a provider speaker label


def _segments(pieces: Sequence[_Piece]) -> list[TranscriptSegment]:
    """Consecutive pieces of one speaker, split at long pauses."""
    groups: list[list[_Piece]] = []
    for piece in pieces:
        last = groups[-1][-1] if groups else None
        if (
            last is None
            or last.speaker != piece.speaker
            or piece.start - last.end > SEGMENT_PAUSE_SECONDS
        ):
            groups.append([piece])
        else:
            groups[-1].append(piece)
    return [_segment(group) for group in groups]


def _segment(group: list[_Piece]) -> TranscriptSegment:
    word_confidences = [p.confidence for p in group if p.confidence is not None]
    result_confidences = [p.result_confidence for p in group if p.result_confidence is not None]
    confidences = word_confidences or result_confidences
    channel = group[0].channel
    return TranscriptSegment(
        speaker=group[0].speaker,
        start=group[0].start,
        end=max(p.end for p in group),
        text=" ".join(p.text for p in group),
        confidence=sum(confidences) / len(confidences) if confidences else None,
        channel=channel - 1 if channel is not None else None,  # 0-based, like the WAV channels
    )


# --- helpers ------------------------------------------------------------------------------


def _times(word: Any) -> tuple[float, float] | None:
    """A word's (start, end), or None when the service sent no offsets for it."""
    if "start_offset" not in word and "end_offset" not in word:
        return None
    start = _seconds(word.start_offset)
    return start, max(start, _seconds(word.end_offset))


def _seconds(value: Any) -> float:
    """Seconds of a Duration field: proto-plus gives a timedelta, raw protobuf a Duration."""
    if value is None:
        return 0.0
    if hasattr(value, "total_seconds"):
        return float(value.total_seconds())
    return float(value.seconds) + float(value.nanos) / 1e9


def _bcp47(code: str) -> str:
    """The API answers with lower-case tags ("en-us"); the project writes "en-US"."""
    parts = code.replace("_", "-").split("-")
    out = [parts[0].lower()]
    for part in parts[1:]:
        if len(part) == 4 and part.isalpha():
            out.append(part.title())  # script, e.g. Hans
        elif len(part) in (2, 3):
            out.append(part.upper())  # region, e.g. US or 419
        else:
            out.append(part)
    return "-".join(out)


def _is_gcs_uri(uri: str | None) -> bool:
    return bool(uri) and re.match(r"^gs://[^/]+/.+", uri or "") is not None


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as exc:
        raise TranscriptionFailed(f"cannot read the audio at {path}: {exc}") from exc
