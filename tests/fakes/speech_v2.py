"""A local gRPC fake of Google Speech-to-Text v2, for testing the Google adapter with the real
``google-cloud-speech`` client over the real wire protocol.

It serves ``google.cloud.speech.v2.Speech/Recognize`` and ``/BatchRecognize`` and the
``google.longrunning.Operations/GetOperation`` the client polls, on 127.0.0.1 (a free port).
The installed package ships no ``*_pb2_grpc`` servicer for Speech v2, so the methods are
registered with a generic handler that (de)serializes with the proto-plus message classes.

Every request is recorded (``fake.requests``) and checked the way the service checks it,
answering INVALID_ARGUMENT / NOT_FOUND as it would: the recognizer path format and its
location (the endpoint is regional), the implicit recognizer ``_`` only, a known model, at
least one language, a decoding config, no word-level confidence with chirp models, sane
diarization speaker counts; for Recognize exactly one of content / gs:// uri, content at
most 10 MiB and audio at most 60 s (measured from the WAV or MP3 bytes themselves); for
BatchRecognize 1-15 gs:// files and an output config, inline only for a single file.

Answers are scripted per test (``add_audio``: a gs:// URI or the audio bytes → the words
spoken, with speaker and channel) and shaped like the service's: results split into
utterances, words with offsets only when ``enable_word_time_offsets`` is on and speaker
labels only when diarization is on (and no offsets in a batch over 20 minutes, as with
chirp_3: ``long_word_times`` says whether such a file then comes back without them, "omit",
or is refused with a per-file INVALID_ARGUMENT, "refuse"; which one the service does is not
documented; ``labels_without_times`` whether diarization still sends its labelled words
when there are no offsets), only the first channel unless
``SEPARATE_RECOGNITION_PER_CHANNEL``, lower-case ``language_code``, no word confidence,
``total_billed_duration`` in whole seconds per channel recognised, the last result ending
at the end of the audio. A BatchRecognize operation
finishes after ``polls_to_finish`` GetOperation calls (never, if None), reporting
``progress_percent`` on the way; a file that cannot be transcribed gets a per-file error.

Usage::

    with SpeechV2Fake() as fake:
        fake.add_audio("gs://b/call.mp3", FakeAudio(duration=95, words=[FakeWord("Hi", 0.4, 0.7, "1")]))
        fake.fail_next("Recognize", grpc.StatusCode.UNAVAILABLE, "try later")
        fake.stall_next("GetOperation", 5.0)
        client = fake.client()      # SpeechClient over an insecure channel to the fake
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
import threading
import uuid
from collections import defaultdict, deque
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.cloud.speech_v2 import SpeechClient  # type: ignore[attr-defined]
from google.cloud.speech_v2.services.speech.transports import SpeechGrpcTransport
from google.cloud.speech_v2.types import cloud_speech
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import status_pb2

MAX_CONTENT_BYTES = 10 * 1024 * 1024  # Recognize's inline content limit
MAX_SYNC_SECONDS = 60.0  # Recognize's audio length limit
MAX_BATCH_FILES = 15
MAX_TIMESTAMPED_SECONDS = 20 * 60  # BatchRecognize's word timestamps stop beyond this
UTTERANCE_PAUSE = 0.8  # a pause this long between words ends a result, as the service splits
MODELS = frozenset({"chirp_3", "chirp_2", "chirp", "long", "short", "telephony"})

_RECOGNIZER = re.compile(r"^projects/([^/]+)/locations/([^/]+)/recognizers/([^/]+)$")
_SEPARATE = cloud_speech.RecognitionFeatures.MultiChannelMode.SEPARATE_RECOGNITION_PER_CHANNEL


@dataclass(frozen=True)
class FakeWord:
    text: str
    start: float
    end: float
    speaker: str = "1"  # the provider's label when diarizing
    channel: int = 1  # 1-based, like channel_tag


@dataclass
class FakeAudio:
    words: list[FakeWord] = field(default_factory=list)
    duration: float | None = None  # for a URI; content is measured from its bytes
    channels: int = 1
    language: str = "en-us"  # the service answers with lower-case tags
    result_confidence: float = 0.0  # 0.0 is the API's "not set"
    error: tuple[grpc.StatusCode, str] | None = None  # a per-file error in BatchRecognize


@dataclass
class _Operation:
    name: str
    request: Any
    polls: int = 0
    error: tuple[grpc.StatusCode, str] | None = None


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class SpeechV2Fake:
    def __init__(
        self,
        location: str = "us",
        polls_to_finish: int | None = 3,
        long_word_times: str = "omit",
        labels_without_times: bool = True,
    ) -> None:
        if long_word_times not in ("omit", "refuse"):
            raise ValueError(f"long_word_times: 'omit' or 'refuse', not {long_word_times!r}")
        self.location = location
        self.polls_to_finish = polls_to_finish
        self.long_word_times = long_word_times
        self.labels_without_times = labels_without_times
        self.held: set[int] = set()  # operation numbers that do not finish (hold())
        self.requests: list[tuple[str, Any]] = []  # (method, request message)
        self.audio: dict[str, FakeAudio] = {}  # gs:// URI or "sha256:<hex>" of content
        self._failures: dict[str, deque[tuple[grpc.StatusCode, str]]] = defaultdict(deque)
        self._stalls: dict[str, deque[float]] = defaultdict(deque)
        self._stopping = threading.Event()
        self._operation_errors: deque[tuple[grpc.StatusCode, str]] = deque()
        self._operations: dict[str, _Operation] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._server: grpc.Server | None = None
        self._channels: list[grpc.Channel] = []
        self.address = ""

    # --- scripting -----------------------------------------------------------------------

    def add_audio(self, key: str | bytes, audio: FakeAudio) -> None:
        self.audio[_key(key)] = audio

    def fail_next(self, method: str, code: grpc.StatusCode, message: str) -> None:
        """The next call of ``method`` (Recognize, BatchRecognize, GetOperation) fails."""
        self._failures[method].append((code, message))

    def stall_next(self, method: str, seconds: float) -> None:
        """The next call of ``method`` answers only after ``seconds`` (a hung backend); a
        caller whose deadline passes first gets DEADLINE_EXCEEDED from its own gRPC stack."""
        self._stalls[method].append(seconds)

    def hold(self, number: int) -> None:
        """The ``number``-th BatchRecognize operation (1-based) keeps running until release()."""
        self.held.add(number)

    def release(self) -> None:
        self.held.clear()

    def fail_next_operation(self, code: grpc.StatusCode, message: str) -> None:
        """The next BatchRecognize operation ends with this error instead of a response."""
        self._operation_errors.append((code, message))

    def calls(self, method: str) -> list[Any]:
        with self._lock:
            return [request for name, request in self.requests if name == method]

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> SpeechV2Fake:
        # Above gRPC's 4 MiB default so that the fake itself judges content sizes, as the
        # service does, instead of the transport refusing them first.
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=8),
            options=[("grpc.max_receive_message_length", 2 * MAX_CONTENT_BYTES)],
        )
        speech = grpc.method_handlers_generic_handler(
            "google.cloud.speech.v2.Speech",
            {
                "Recognize": _unary(
                    self._recognize,
                    cloud_speech.RecognizeRequest.deserialize,
                    cloud_speech.RecognizeResponse.serialize,
                ),
                "BatchRecognize": _unary(
                    self._batch_recognize,
                    cloud_speech.BatchRecognizeRequest.deserialize,
                    operations_pb2.Operation.SerializeToString,
                ),
            },
        )
        server.add_generic_rpc_handlers((speech,))
        operations_pb2_grpc.add_OperationsServicer_to_server(_Operations(self), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._server = server
        self.address = f"127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        self._stopping.set()  # releases stalled handlers
        for channel in self._channels:
            channel.close()
        if self._server is not None:
            self._server.stop(grace=None)
            self._server = None

    def __enter__(self) -> SpeechV2Fake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def client(self) -> Any:
        """The real SpeechClient, over an insecure channel to this fake (no credentials)."""
        channel = grpc.insecure_channel(self.address)
        self._channels.append(channel)
        return SpeechClient(transport=SpeechGrpcTransport(channel=channel))

    # --- the service ---------------------------------------------------------------------

    def _record(self, method: str, request: Any) -> None:
        with self._lock:
            self.requests.append((method, request))
            failures = self._failures[method]
            failure = failures.popleft() if failures else None
            stalls = self._stalls[method]
            stall = stalls.popleft() if stalls else 0.0
        if stall:
            self._stopping.wait(stall)
        if failure:
            raise _Abort(*failure)

    def _recognize(self, request: Any) -> Any:
        self._record("Recognize", request)
        self._check_recognizer(request.recognizer)
        self._check_config(request.config)
        source = cloud_speech.RecognizeRequest.pb(request).WhichOneof("audio_source")
        if source is None:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "Either content or uri must be set.")
        if source == "content":
            content = request.content
            if len(content) > MAX_CONTENT_BYTES:
                raise _Abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Audio content is {len(content)} bytes; the maximum for Recognize is {MAX_CONTENT_BYTES}.",
                )
            measured = measure_audio(content)
            if measured is None:
                raise _Abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "Audio data does not appear to be in a supported encoding.",
                )
            duration, channels = measured
            audio = self.audio.get(_key(content)) or FakeAudio(channels=channels)
        else:
            audio = self._audio_at(request.uri)
            duration = audio.duration or 0.0
        if duration > MAX_SYNC_SECONDS:
            raise _Abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Audio can be of a maximum of 60 seconds; this audio is {duration:.1f} seconds. "
                "Use BatchRecognize for longer audio.",
            )
        results, billed = _recognition(audio, duration, request.config)
        metadata = cloud_speech.RecognitionResponseMetadata(
            request_id=str(uuid.uuid4()), total_billed_duration=billed
        )
        return cloud_speech.RecognizeResponse(results=results, metadata=metadata)

    def _batch_recognize(self, request: Any) -> operations_pb2.Operation:
        self._record("BatchRecognize", request)
        project, location, _ = self._check_recognizer(request.recognizer)
        self._check_config(request.config)
        if not 1 <= len(request.files) <= MAX_BATCH_FILES:
            raise _Abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Between 1 and {MAX_BATCH_FILES} files are required.",
            )
        for file in request.files:
            if not file.uri.startswith("gs://"):
                raise _Abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Invalid audio URI {file.uri!r}: only gs:// URIs.",
                )
        output = request.recognition_output_config
        kind = cloud_speech.RecognitionOutputConfig.pb(output).WhichOneof("output")
        if kind is None:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "recognition_output_config is required.")
        if kind == "inline_response_config" and len(request.files) != 1:
            raise _Abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "Inline response is only supported for a single file.",
            )
        name = f"projects/{project}/locations/{location}/operations/{next(self._ids)}"
        with self._lock:
            error = self._operation_errors.popleft() if self._operation_errors else None
            self._operations[name] = _Operation(name, request, error=error)
        return operations_pb2.Operation(
            name=name, done=False, metadata=_pack(self._metadata(request, 0))
        )

    def _get_operation(
        self, request: operations_pb2.GetOperationRequest
    ) -> operations_pb2.Operation:
        self._record("GetOperation", request)
        with self._lock:
            operation = self._operations.get(request.name)
            if operation is None:
                raise _Abort(grpc.StatusCode.NOT_FOUND, f"Operation {request.name} not found.")
            operation.polls += 1
            polls = operation.polls
        held = int(request.name.rsplit("/", 1)[-1]) in self.held
        finished = not held and self.polls_to_finish is not None and polls >= self.polls_to_finish
        if not finished:
            percent = 0 if self.polls_to_finish is None else 100 * polls // self.polls_to_finish
            return operations_pb2.Operation(
                name=operation.name,
                done=False,
                metadata=_pack(self._metadata(operation.request, percent)),
            )
        done = operations_pb2.Operation(
            name=operation.name, done=True, metadata=_pack(self._metadata(operation.request, 100))
        )
        if operation.error:
            done.error.CopyFrom(
                status_pb2.Status(code=operation.error[0].value[0], message=operation.error[1])
            )
        else:
            done.response.CopyFrom(_pack(self._batch_response(operation.request)))
        return done

    def _batch_response(self, request: Any) -> Any:
        results: dict[str, Any] = {}
        total = 0.0
        for file in request.files:
            audio = self.audio.get(file.uri)
            if audio is None:
                results[file.uri] = _file_error(
                    grpc.StatusCode.NOT_FOUND, f"Unable to open {file.uri}: not found."
                )
            elif audio.error:
                results[file.uri] = _file_error(*audio.error)
            elif (
                self.long_word_times == "refuse"
                and request.config.features.enable_word_time_offsets
                and (audio.duration or 0.0) > MAX_TIMESTAMPED_SECONDS
            ):
                results[file.uri] = _file_error(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "Word time offsets are only supported for audio up to 20 minutes.",
                )
            else:
                recognised, billed = _recognition(
                    audio,
                    audio.duration or 0.0,
                    request.config,
                    batch=True,
                    labels_without_times=self.labels_without_times,
                )
                total += billed.ToNanoseconds() / 1e9
                metadata = cloud_speech.RecognitionResponseMetadata(total_billed_duration=billed)
                transcript = cloud_speech.BatchRecognizeResults(
                    results=recognised, metadata=metadata
                )
                results[file.uri] = cloud_speech.BatchRecognizeFileResult(
                    metadata=metadata,
                    inline_result=cloud_speech.InlineResult(transcript=transcript),
                )
        return cloud_speech.BatchRecognizeResponse(
            results=results, total_billed_duration=_duration(total)
        )

    def _metadata(self, request: Any, percent: int) -> Any:
        per_file = {
            file.uri: cloud_speech.BatchRecognizeTranscriptionMetadata(progress_percent=percent)
            for file in request.files
        }
        return cloud_speech.OperationMetadata(
            resource=request.recognizer,
            method="google.cloud.speech.v2.Speech.BatchRecognize",
            batch_recognize_request=request,
            progress_percent=percent,
            batch_recognize_metadata=cloud_speech.BatchRecognizeMetadata(
                transcription_metadata=per_file
            ),
        )

    # --- checks --------------------------------------------------------------------------

    def _check_recognizer(self, recognizer: str) -> tuple[str, str, str]:
        match = _RECOGNIZER.match(recognizer)
        if not match:
            raise _Abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Invalid recognizer {recognizer!r}: expected projects/*/locations/*/recognizers/*.",
            )
        project, location, name = match.groups()
        if location != self.location:
            # Each regional endpoint serves its own location only.
            raise _Abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Expected resource location to be {self.location}, but found {location}.",
            )
        if name != "_":
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"Unable to find Recognizer {recognizer}.")
        return project, location, name

    def _check_config(self, config: Any) -> None:
        pb = cloud_speech.RecognitionConfig.pb(config)
        if not config.model:
            raise _Abort(
                grpc.StatusCode.INVALID_ARGUMENT, "The implicit recognizer needs config.model."
            )
        if config.model not in MODELS:
            raise _Abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f'The model "{config.model}" does not exist in the location named "{self.location}".',
            )
        if not config.language_codes:
            raise _Abort(
                grpc.StatusCode.INVALID_ARGUMENT, "At least one language code is required."
            )
        if pb.WhichOneof("decoding_config") is None:
            raise _Abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "A decoding config (auto or explicit) is required.",
            )
        features = config.features
        if features.enable_word_confidence and config.model.startswith("chirp"):
            raise _Abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "Recognizer does not support feature: word_level_confidence",
            )
        if "diarization_config" in features:
            low, high = (
                features.diarization_config.min_speaker_count,
                features.diarization_config.max_speaker_count,
            )
            if high > 6 or (low and high and low > high):
                raise _Abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Invalid speaker counts min={low} max={high}: 1 <= min <= max <= 6.",
                )

    def _audio_at(self, uri: str) -> FakeAudio:
        if not uri.startswith("gs://"):
            raise _Abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"Invalid audio URI {uri!r}: only gs:// URIs."
            )
        audio = self.audio.get(uri)
        if audio is None:
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"Unable to open {uri}: not found.")
        return audio


class _Operations(operations_pb2_grpc.OperationsServicer):  # type: ignore[misc]
    def __init__(self, fake: SpeechV2Fake) -> None:
        self._fake = fake

    def GetOperation(self, request: Any, context: grpc.ServicerContext) -> Any:
        return _serve(self._fake._get_operation, request, context)


# --- responses ---------------------------------------------------------------------------


def _recognition(
    audio: FakeAudio,
    duration: float,
    config: Any,
    *,
    batch: bool = False,
    labels_without_times: bool = True,
) -> tuple[list[Any], Any]:
    """The results the service would return for ``audio`` under ``config``, and the billing."""
    features = config.features
    # chirp_3's BatchRecognize gives word timestamps only up to 20 minutes of audio.
    offsets = features.enable_word_time_offsets and not (
        batch and duration > MAX_TIMESTAMPED_SECONDS
    )
    per_channel = features.multi_channel_mode == _SEPARATE
    diarize = "diarization_config" in features
    channels = range(1, audio.channels + 1) if per_channel else range(1, 2)  # else channel 1 only
    results = []
    for channel in channels:
        words = sorted((w for w in audio.words if w.channel == channel), key=lambda w: w.start)
        utterances = _utterances(words)
        for index, utterance in enumerate(utterances):
            # The last result runs to the end of the audio the service consumed.
            end = (
                max(duration, utterance[-1].end)
                if index == len(utterances) - 1
                else utterance[-1].end
            )
            infos = [
                cloud_speech.WordInfo(
                    word=w.text,
                    start_offset=_duration(w.start) if offsets else None,
                    end_offset=_duration(w.end) if offsets else None,
                    speaker_label=w.speaker if diarize else "",
                )
                for w in utterance
            ]
            alternative = cloud_speech.SpeechRecognitionAlternative(
                transcript=" ".join(w.text for w in utterance),
                confidence=audio.result_confidence,
                words=infos if offsets or (diarize and labels_without_times) else [],
            )
            results.append(
                cloud_speech.SpeechRecognitionResult(
                    alternatives=[alternative],
                    channel_tag=channel,
                    result_end_offset=_duration(end),
                    language_code=audio.language,
                )
            )
    billed_channels = audio.channels if per_channel else 1
    return results, _duration(math.ceil(duration) * billed_channels)


def _utterances(words: list[FakeWord]) -> list[list[FakeWord]]:
    groups: list[list[FakeWord]] = []
    for word in words:
        if groups and word.start - groups[-1][-1].end < UTTERANCE_PAUSE:
            groups[-1].append(word)
        else:
            groups.append([word])
    return groups


def _file_error(code: grpc.StatusCode, message: str) -> Any:
    return cloud_speech.BatchRecognizeFileResult(
        error=status_pb2.Status(code=code.value[0], message=message)
    )


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(type(message).pb(message))
    return packed


def _duration(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromNanoseconds(round(seconds * 1e9))
    return value


def _key(key: str | bytes) -> str:
    return "sha256:" + hashlib.sha256(key).hexdigest() if isinstance(key, bytes) else key


def _serve(handler: Callable[[Any], Any], request: Any, context: grpc.ServicerContext) -> Any:
    try:
        return handler(request)
    except _Abort as abort:
        context.abort(abort.code, abort.message)


def _unary(
    handler: Callable[[Any], Any],
    deserialize: Callable[[bytes], Any],
    serialize: Callable[[Any], bytes],
) -> Any:
    return grpc.unary_unary_rpc_method_handler(
        lambda request, context: _serve(handler, request, context),
        request_deserializer=deserialize,
        response_serializer=serialize,
    )


# --- measuring audio, as the service decodes it ------------------------------------------

# MPEG audio layer III: kbit/s by bitrate index, for MPEG-1 and for MPEG-2/2.5.
_MP3_BITRATES = {
    1: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MP3_RATES = {0b11: (44100, 48000, 32000), 0b10: (22050, 24000, 16000), 0b00: (11025, 12000, 8000)}


def measure_audio(data: bytes) -> tuple[float, int] | None:
    """(seconds, channels) of WAV or MP3 (layer III) bytes, or None if neither."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return _measure_wav(data)
    return _measure_mp3(data)


def _measure_wav(data: bytes) -> tuple[float, int] | None:
    position, channels, byte_rate = 12, 0, 0
    while position + 8 <= len(data):
        chunk, size = (
            data[position : position + 4],
            int.from_bytes(data[position + 4 : position + 8], "little"),
        )
        body = data[position + 8 : position + 8 + size]
        if chunk == b"fmt " and len(body) >= 16:
            channels = int.from_bytes(body[2:4], "little")
            byte_rate = int.from_bytes(body[8:12], "little")
        elif chunk == b"data" and byte_rate:
            return len(body) / byte_rate, channels
        position += 8 + size + (size & 1)
    return None


def _measure_mp3(data: bytes) -> tuple[float, int] | None:
    position = 0
    if data.startswith(b"ID3") and len(data) >= 10:
        size = 0
        for byte in data[6:10]:
            size = (size << 7) | (byte & 0x7F)
        position = 10 + size
    seconds, frames, channels = 0.0, 0, 0
    while position + 4 <= len(data):
        header = data[position : position + 4]
        version, layer = (header[1] >> 3) & 0b11, (header[1] >> 1) & 0b11
        bitrate_index, rate_index = header[2] >> 4, (header[2] >> 2) & 0b11
        if header[0] != 0xFF or header[1] & 0xE0 != 0xE0 or version == 0b01 or layer != 0b01:
            break  # not a layer III frame: trailing tag or garbage
        if bitrate_index in (0, 0b1111) or rate_index == 0b11:
            break
        mpeg1 = version == 0b11
        bitrate = _MP3_BITRATES[1 if mpeg1 else 2][bitrate_index] * 1000
        rate = _MP3_RATES[version][rate_index]
        samples = 1152 if mpeg1 else 576
        size = samples // 8 * bitrate // rate + ((header[2] >> 1) & 1)
        channels = 1 if header[3] >> 6 == 0b11 else 2
        seconds += samples / rate
        frames += 1
        position += size
    return (seconds, channels) if frames else None
