"""The Google Speech-to-Text v2 transcriber against a local gRPC fake of the service.

The adapter uses the real ``SpeechClient`` over an insecure channel to ``SpeechV2Fake``
(tests/fakes/speech_v2.py), which checks each request as the service would and answers from
the demo calls' scripts, so what is asserted here is what goes over the wire: the method
chosen (Recognize up to a minute, BatchRecognize from gs:// beyond), the config (chirp_3,
language, punctuation, word offsets, diarization or per-channel recognition), the polling,
and how results, errors and timeouts become a Transcript or a TranscriptionFailed.
"""

from __future__ import annotations

import dataclasses
import json
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from callpipe.speech.google import GoogleSpeechTranscriber, audio_channel_count
from callpipe.speech.google_client import build_speech_client, speech_api_endpoint
from callpipe.speech.google_operations import CLAIM_SECONDS, GcsOperationStore, PendingOperation
from callpipe.transcripts import AudioInput, Transcript, TranscriptionFailed
from tests.fakes.speech_v2 import FakeAudio, FakeWord, SpeechV2Fake

pytestmark = pytest.mark.timeout(30)

CALLS = Path(__file__).resolve().parents[2] / "shared/callpipe/simulator/demo_calls/calls"
AUDIO = Path(__file__).resolve().parents[2] / "tests/data/audio"  # see its README.md
STEREO_72S = "CAL3c513db4202bca90b5d19c704b30bf56"  # mp3, agent left / caller right, 72 s
MONO_55S = "CALbbbd31b6424c58868ce8e87b9e807300"  # mp3, mono, 55.6 s
WAV_24S = "CAL7032e1b48b52fb7306a9cd882f654431"  # wav, mono, 24.4 s
RECOGNIZER = "projects/P/locations/us/recognizers/_"
SEPARATE = 1  # RecognitionFeatures.MultiChannelMode.SEPARATE_RECOGNITION_PER_CHANNEL


# --- the demo calls as the service would hear them ---------------------------------------


def script(call: str) -> list[dict[str, Any]]:
    turns: list[dict[str, Any]] = json.loads((CALLS / f"{call}.json").read_text())["_simulator"][
        "script"
    ]
    return turns


def audio_file(call: str) -> Path:
    return next(CALLS.glob(f"{call}.*[3v]"))  # the .mp3 or .wav next to the JSON


def spoken(call: str, *, stereo: bool) -> FakeAudio:
    """Each turn's words spread evenly over the turn. The agent is speaker label "1" and,
    in stereo, channel 1; the caller "2" and channel 2 (mono: everything on channel 1)."""
    words = []
    for turn in script(call):
        texts = turn["text"].split()
        step = (turn["end"] - turn["start"]) / len(texts)
        number = 1 if turn["speaker"] == "agent" else 2
        for i, text in enumerate(texts):
            start = turn["start"] + i * step
            words.append(
                FakeWord(
                    text,
                    round(start, 3),
                    round(start + step * 0.9, 3),
                    speaker=str(number),
                    channel=number if stereo else 1,
                )
            )
    return FakeAudio(words=words, channels=2 if stereo else 1)


def uri(call: str) -> str:
    return f"gs://callpipe-recordings/tenants/t1/{call}{audio_file(call).suffix}"


@pytest.fixture
def fake() -> Iterator[SpeechV2Fake]:
    with SpeechV2Fake(location="us", polls_to_finish=3) as service:
        yield service


def transcriber(fake: SpeechV2Fake, **options: Any) -> GoogleSpeechTranscriber:
    options.setdefault("poll_seconds", 0.01)
    return GoogleSpeechTranscriber(project="P", client=fake.client(), **options)


def turns_as_segments(call: str, names: dict[str, str]) -> list[tuple[str, str]]:
    return [(names[t["speaker"]], t["text"]) for t in script(call)]


# --- Recognize ---------------------------------------------------------------------------


def test_short_call_goes_to_recognize_with_chirp3_and_diarization(fake: SpeechV2Fake) -> None:
    path = audio_file(MONO_55S)
    fake.add_audio(path.read_bytes(), spoken(MONO_55S, stereo=False))
    progress: list[float] = []

    transcript = transcriber(fake).transcribe(
        AudioInput(
            path=path, content_type="audio/mpeg", gcs_uri=uri(MONO_55S), duration_seconds=55
        ),
        progress=progress.append,
    )

    assert [name for name, _ in fake.requests] == ["Recognize"]
    request = fake.calls("Recognize")[0]
    assert request.recognizer == RECOGNIZER
    assert request.content == path.read_bytes()
    assert not request.uri
    config = request.config
    assert config.model == "chirp_3"
    assert list(config.language_codes) == ["en-US"]
    assert "auto_decoding_config" in config
    assert config.features.enable_automatic_punctuation
    assert config.features.enable_word_time_offsets
    assert not config.features.enable_word_confidence
    assert config.features.diarization_config.min_speaker_count == 2
    assert config.features.diarization_config.max_speaker_count == 2
    assert config.features.multi_channel_mode == 0

    names = {"agent": "speaker_1", "caller": "speaker_2"}
    assert [(s.speaker, s.text) for s in transcript.segments] == turns_as_segments(MONO_55S, names)
    first_turn = script(MONO_55S)[0]
    assert transcript.segments[0].start == pytest.approx(first_turn["start"], abs=0.01)
    assert transcript.segments[0].end == pytest.approx(first_turn["end"], abs=0.2)
    assert all(s.channel is None and s.confidence is None for s in transcript.segments)
    assert transcript.text.splitlines()[0] == f"speaker_1: {first_turn['text']}"
    assert transcript.diarization == "provider"
    assert transcript.speaker_count == 2
    assert transcript.language == "en-US"  # the service says "en-us"
    assert transcript.engine == "google-speech-v2"
    assert transcript.model == "chirp_3"
    assert transcript.billed_seconds == 56  # whole seconds of 55.6 s
    assert transcript.audio_duration_seconds == pytest.approx(55.58, abs=0.01)  # the MP3's length
    assert len(transcript.words) == sum(len(t["text"].split()) for t in script(MONO_55S))
    assert transcript.words[0].speaker == "speaker_1" and transcript.words[0].confidence is None
    assert progress == [1.0]


def test_without_diarization_one_speaker_and_no_diarization_config(fake: SpeechV2Fake) -> None:
    path = audio_file(WAV_24S)
    fake.add_audio(path.read_bytes(), spoken(WAV_24S, stereo=False))

    transcript = transcriber(fake, diarization=False, language="en-GB").transcribe(
        AudioInput(path=path, content_type="audio/wav", duration_seconds=24)
    )

    config = fake.calls("Recognize")[0].config
    assert "diarization_config" not in config.features
    assert list(config.language_codes) == ["en-GB"]
    assert transcript.diarization == "none"
    assert transcript.speaker_count == 1
    assert {s.speaker for s in transcript.segments} == {"speaker_1"}
    assert {w.speaker for w in transcript.words} == {"speaker_1"}
    # One speaker throughout, but the text still reads as the conversation's words in order.
    assert " ".join(s.text for s in transcript.segments) == " ".join(
        t["text"] for t in script(WAV_24S)
    )


def test_speaker_range_follows_max_speakers(fake: SpeechV2Fake) -> None:
    path = audio_file(WAV_24S)
    transcriber(fake, max_speakers=1).transcribe(
        AudioInput(path=path, content_type="audio/wav", duration_seconds=24)
    )
    transcriber(fake, max_speakers=4).transcribe(
        AudioInput(path=path, content_type="audio/wav", duration_seconds=24)
    )

    ranges = [
        (
            r.config.features.diarization_config.min_speaker_count,
            r.config.features.diarization_config.max_speaker_count,
        )
        for r in fake.calls("Recognize")
    ]
    assert ranges == [(1, 1), (2, 4)]
    with pytest.raises(ValueError, match="1-6"):
        GoogleSpeechTranscriber(project="P", max_speakers=7)


def test_result_level_confidence_is_kept_when_words_have_none(fake: SpeechV2Fake) -> None:
    path = audio_file(WAV_24S)
    audio = spoken(WAV_24S, stereo=False)
    audio.result_confidence = 0.87
    fake.add_audio(path.read_bytes(), audio)

    transcript = transcriber(fake).transcribe(
        AudioInput(path=path, content_type="audio/wav", duration_seconds=24)
    )

    assert all(s.confidence == pytest.approx(0.87) for s in transcript.segments)
    assert all(w.confidence is None for w in transcript.words)  # chirp_3: none per word


# --- stereo files carrying one signal twice ----------------------------------------------


def copied_to_both_channels(audio: FakeAudio) -> FakeAudio:
    """What the service hears in mono audio saved as stereo: every word on both channels."""
    both = [*audio.words, *(dataclasses.replace(w, channel=2) for w in audio.words)]
    return dataclasses.replace(audio, words=both, channels=2)


def test_a_wav_with_the_same_signal_on_both_channels_is_recognised_once(
    fake: SpeechV2Fake, tmp_path: Path
) -> None:
    """Per channel, every utterance would come back twice, as agent and as caller, and be
    billed twice; the copy is recognised as mono, with the provider's diarization."""
    with wave.open(str(audio_file(WAV_24S))) as source:
        rate, frames = source.getframerate(), source.readframes(source.getnframes())
    path = tmp_path / "copied.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"".join(frames[i : i + 2] * 2 for i in range(0, len(frames), 2)))
    fake.add_audio(path.read_bytes(), copied_to_both_channels(spoken(WAV_24S, stereo=False)))

    transcript = transcriber(fake).transcribe(
        AudioInput(path=path, content_type="audio/wav", duration_seconds=24)
    )

    features = fake.calls("Recognize")[0].config.features
    assert features.multi_channel_mode == 0
    assert features.diarization_config.max_speaker_count == 2
    names = {"agent": "speaker_1", "caller": "speaker_2"}
    assert [(s.speaker, s.text) for s in transcript.segments] == turns_as_segments(WAV_24S, names)
    assert transcript.diarization == "provider"
    assert transcript.billed_seconds == 25  # 24.4 s once, not once per channel


def test_an_mp3_with_the_same_signal_on_both_channels_goes_to_batch_as_mono(
    fake: SpeechV2Fake,
) -> None:
    path = AUDIO / "copied-mono-joint-stereo.mp3"  # 10 s of MONO_55S on both channels
    recording = "gs://callpipe-recordings/tenants/t1/calls/CAL1/recording.mp3"
    heard = spoken(MONO_55S, stereo=False)
    heard.words = [w for w in heard.words if w.end <= 10]
    heard.duration = 10
    fake.add_audio(recording, copied_to_both_channels(heard))

    transcript = transcriber(fake).transcribe(
        AudioInput(path=path, content_type="audio/mpeg", gcs_uri=recording)
    )

    features = fake.calls("BatchRecognize")[0].config.features
    assert features.multi_channel_mode == 0
    assert "diarization_config" in features
    assert len(transcript.words) == len(heard.words)  # each word once
    assert transcript.billed_seconds == 10


def test_two_parties_in_joint_stereo_stay_on_their_channels(fake: SpeechV2Fake) -> None:
    path = AUDIO / "two-parties-joint-stereo.mp3"
    fake.add_audio(path.read_bytes(), FakeAudio(channels=2))

    transcriber(fake).transcribe(
        AudioInput(path=path, content_type="audio/mpeg", duration_seconds=10)
    )

    assert fake.calls("Recognize")[0].config.features.multi_channel_mode == SEPARATE


# --- BatchRecognize ----------------------------------------------------------------------


def test_long_stereo_call_goes_to_batch_recognize_per_channel_and_is_polled(
    fake: SpeechV2Fake,
) -> None:
    path = audio_file(STEREO_72S)
    audio = spoken(STEREO_72S, stereo=True)
    audio.duration = 72.3
    fake.add_audio(uri(STEREO_72S), audio)
    progress: list[float] = []

    transcript = transcriber(fake).transcribe(
        AudioInput(
            path=path, content_type="audio/mpeg", gcs_uri=uri(STEREO_72S), duration_seconds=72
        ),
        progress=progress.append,
    )

    assert [name for name, _ in fake.requests] == ["BatchRecognize"] + ["GetOperation"] * 3
    request = fake.calls("BatchRecognize")[0]
    assert request.recognizer == RECOGNIZER
    assert [f.uri for f in request.files] == [uri(STEREO_72S)]
    assert "inline_response_config" in request.recognition_output_config
    assert request.config.model == "chirp_3"
    assert request.config.features.multi_channel_mode == SEPARATE
    assert "diarization_config" not in request.config.features  # channels name the speakers
    assert fake.calls("GetOperation")[0].name == "projects/P/locations/us/operations/1"

    names = {"agent": "agent", "caller": "caller"}
    assert [(s.speaker, s.text) for s in transcript.segments] == turns_as_segments(
        STEREO_72S, names
    )
    assert {(s.speaker, s.channel) for s in transcript.segments} == {("agent", 0), ("caller", 1)}
    assert transcript.diarization == "channel"
    assert transcript.speaker_count == 2
    assert transcript.billed_seconds == 2 * 73  # each channel billed, whole seconds
    assert transcript.audio_duration_seconds == pytest.approx(72.3)
    assert progress == [pytest.approx(1 / 3, abs=0.01), pytest.approx(2 / 3, abs=0.01), 1.0]


def test_unknown_length_with_a_gcs_uri_goes_to_batch_with_diarization(fake: SpeechV2Fake) -> None:
    audio = spoken(MONO_55S, stereo=False)
    audio.duration = 55.6
    fake.add_audio(uri(MONO_55S), audio)

    transcript = transcriber(fake).transcribe(
        AudioInput(path=audio_file(MONO_55S), content_type="audio/mpeg", gcs_uri=uri(MONO_55S))
    )

    assert not fake.calls("Recognize")
    config = fake.calls("BatchRecognize")[0].config
    assert config.features.diarization_config.max_speaker_count == 2
    assert config.features.multi_channel_mode == 0
    assert transcript.diarization == "provider"
    assert [s.speaker for s in transcript.segments][:3] == ["speaker_1", "speaker_2", "speaker_1"]
    assert transcript.billed_seconds == 56


def past_20_minutes(
    service: SpeechV2Fake, call: str, *, stereo: bool, declared: bool = False
) -> AudioInput:
    """``call`` spoken in a 25-minute recording the service holds; its AudioInput, with the
    duration CallRail gave when ``declared`` (else of unknown length)."""
    audio = spoken(call, stereo=stereo)
    audio.duration = 25 * 60
    service.add_audio(uri(call), audio)
    return AudioInput(
        path=audio_file(call),
        content_type="audio/mpeg",
        gcs_uri=uri(call),
        duration_seconds=25 * 60 if declared else None,
    )


def test_batch_over_20_minutes_without_word_times_still_gives_speaker_segments(
    fake: SpeechV2Fake,
) -> None:
    """Past 20 minutes chirp_3 sends words without offsets: the segments keep the speakers
    and the results' times, spread evenly; no word is given a made-up time."""
    recording = past_20_minutes(fake, MONO_55S, stereo=False, declared=True)

    transcript = transcriber(fake).transcribe(recording)

    # Known to be past the limit: not asked for, rather than risking the file's refusal.
    assert not fake.calls("BatchRecognize")[0].config.features.enable_word_time_offsets
    names = {"agent": "speaker_1", "caller": "speaker_2"}
    assert [(s.speaker, s.text) for s in transcript.segments] == turns_as_segments(MONO_55S, names)
    starts = [s.start for s in transcript.segments]
    assert starts == sorted(starts)
    assert transcript.segments[-1].end == 25 * 60
    assert transcript.words == []
    assert transcript.diarization == "provider"


def test_stereo_over_20_minutes_takes_its_speakers_from_the_channels(fake: SpeechV2Fake) -> None:
    """Per channel and without word times, each result is one channel's utterance: its
    channel names the speaker, its end places it, and no word gets a made-up time."""
    recording = past_20_minutes(fake, STEREO_72S, stereo=True, declared=True)

    transcript = transcriber(fake).transcribe(recording)

    features = fake.calls("BatchRecognize")[0].config.features
    assert not features.enable_word_time_offsets
    assert features.multi_channel_mode == SEPARATE
    names = {"agent": "agent", "caller": "caller"}
    assert [(s.speaker, s.text) for s in transcript.segments] == turns_as_segments(
        STEREO_72S, names
    )
    assert {(s.speaker, s.channel) for s in transcript.segments} == {("agent", 0), ("caller", 1)}
    for segment, turn in zip(transcript.segments[:-2], script(STEREO_72S), strict=False):
        # The result's own end: its last word's (scripted a little before the turn's end).
        assert segment.end == pytest.approx(turn["end"], abs=0.05)
    assert transcript.words == []
    assert transcript.diarization == "channel"
    assert transcript.billed_seconds == 2 * 25 * 60


def test_a_file_refused_for_word_times_is_sent_again_without_them() -> None:
    """Of unknown length, a call asks for word times; if the service refuses the file for
    them (a per-file INVALID_ARGUMENT), it is sent once more without."""
    with SpeechV2Fake(polls_to_finish=1, long_word_times="refuse") as service:
        recording = past_20_minutes(service, MONO_55S, stereo=False)

        transcript = transcriber(service).transcribe(recording)

        asked = [
            r.config.features.enable_word_time_offsets for r in service.calls("BatchRecognize")
        ]
    assert asked == [True, False]
    names = {"agent": "speaker_1", "caller": "speaker_2"}
    assert [(s.speaker, s.text) for s in transcript.segments] == turns_as_segments(MONO_55S, names)
    assert transcript.words == []


def test_a_short_file_refused_is_not_sent_again() -> None:
    """Under 20 minutes the word times cannot be the reason: the refusal is final."""
    with SpeechV2Fake(polls_to_finish=1) as service:
        service.add_audio(
            uri(STEREO_72S),
            FakeAudio(duration=72, error=(grpc.StatusCode.INVALID_ARGUMENT, "Bad audio.")),
        )
        with pytest.raises(TranscriptionFailed, match="Bad audio") as failure:
            transcriber(service).transcribe(
                AudioInput(
                    path=audio_file(STEREO_72S),
                    content_type="audio/mpeg",
                    gcs_uri=uri(STEREO_72S),
                    duration_seconds=72,
                )
            )
        assert failure.value.permanent
        assert len(service.calls("BatchRecognize")) == 1


def test_the_next_attempt_resumes_the_request_without_word_times() -> None:
    """An attempt that had to drop the word times and then ran out of time: the next one
    resumes that operation rather than asking with word times again."""
    store = MemoryOperations()
    with SpeechV2Fake(polls_to_finish=1, long_word_times="refuse") as service:
        recording = past_20_minutes(service, MONO_55S, stereo=False)
        service.hold(2)  # the second operation, without word times, outlasts the attempt
        with pytest.raises(TranscriptionFailed, match="still running"):
            transcriber(
                service, operations=store, batch_timeout_seconds=0.3, poll_seconds=0.05
            ).transcribe(recording)

        service.release()
        transcript = transcriber(service, operations=store).transcribe(recording)

        assert len(service.calls("BatchRecognize")) == 2  # the refused one, and the resumed one
    assert transcript.segments[0].speaker == "speaker_1"
    assert store.records == {}


def test_diarization_without_words_falls_back_to_one_speaker() -> None:
    """If the service sends no words when there are no word times, the speaker labels
    (which are on the words) are lost: one speaker, said so, the text intact."""
    with SpeechV2Fake(polls_to_finish=1, labels_without_times=False) as service:
        recording = past_20_minutes(service, MONO_55S, stereo=False, declared=True)

        transcript = transcriber(service).transcribe(recording)

    assert transcript.diarization == "none"
    assert transcript.speaker_count == 1
    assert " ".join(s.text for s in transcript.segments) == " ".join(
        t["text"] for t in script(MONO_55S)
    )
    assert transcript.words == []


def test_recognize_refusing_audio_over_a_minute_falls_back_to_batch(fake: SpeechV2Fake) -> None:
    """CallRail's durations are rounded: a call said to be 59 s can be longer. The fake
    measures the MP3 (72 s) and refuses it, as the service does; the gs:// copy then goes
    to BatchRecognize."""
    audio = spoken(STEREO_72S, stereo=True)
    audio.duration = 72.3
    fake.add_audio(uri(STEREO_72S), audio)

    transcript = transcriber(fake).transcribe(
        AudioInput(
            path=audio_file(STEREO_72S),
            content_type="audio/mpeg",
            gcs_uri=uri(STEREO_72S),
            duration_seconds=59,
        )
    )

    assert [name for name, _ in fake.requests][:2] == ["Recognize", "BatchRecognize"]
    assert transcript.segments[0].speaker == "agent"


def test_long_audio_without_a_gcs_uri_fails_permanently_without_calling(fake: SpeechV2Fake) -> None:
    with pytest.raises(TranscriptionFailed, match="gs://") as failure:
        transcriber(fake).transcribe(
            AudioInput(path=audio_file(STEREO_72S), content_type="audio/mpeg", duration_seconds=72)
        )
    assert failure.value.permanent
    assert fake.requests == []


def test_batch_file_error_is_permanent_with_its_message(fake: SpeechV2Fake) -> None:
    fake.add_audio(
        uri(STEREO_72S),
        FakeAudio(
            duration=72,
            error=(grpc.StatusCode.INVALID_ARGUMENT, "Audio data could not be decoded."),
        ),
    )

    with pytest.raises(TranscriptionFailed, match="could not be decoded") as failure:
        transcriber(fake).transcribe(
            AudioInput(
                path=audio_file(STEREO_72S), content_type="audio/mpeg", gcs_uri=uri(STEREO_72S)
            )
        )
    assert failure.value.permanent


def test_failed_operation_is_mapped_by_its_code(fake: SpeechV2Fake) -> None:
    fake.add_audio(uri(STEREO_72S), FakeAudio(duration=72))
    fake.fail_next_operation(grpc.StatusCode.UNAVAILABLE, "The service is currently unavailable.")

    with pytest.raises(TranscriptionFailed, match="currently unavailable") as failure:
        transcriber(fake).transcribe(
            AudioInput(
                path=audio_file(STEREO_72S), content_type="audio/mpeg", gcs_uri=uri(STEREO_72S)
            )
        )
    assert not failure.value.permanent


def test_batch_running_past_the_timeout_is_transient() -> None:
    with SpeechV2Fake(polls_to_finish=None) as never_done:
        never_done.add_audio(uri(STEREO_72S), FakeAudio(duration=72))
        with pytest.raises(TranscriptionFailed, match="still running") as failure:
            transcriber(never_done, batch_timeout_seconds=0.2, poll_seconds=0.02).transcribe(
                AudioInput(
                    path=audio_file(STEREO_72S), content_type="audio/mpeg", gcs_uri=uri(STEREO_72S)
                )
            )
    assert not failure.value.permanent
    assert len(never_done.calls("GetOperation")) >= 2


def test_a_stalled_recognize_ends_within_the_attempts_time(fake: SpeechV2Fake) -> None:
    """The client sets no timeout on Recognize: without one a hung call outlives the function."""
    fake.stall_next("Recognize", 10.0)

    # DEADLINE_EXCEEDED comes from the client's own deadline: without one, the call would
    # wait out the stall and succeed
    with pytest.raises(TranscriptionFailed, match="DEADLINE_EXCEEDED") as failure:
        transcriber(fake, batch_timeout_seconds=0.5).transcribe(
            AudioInput(path=audio_file(WAV_24S), content_type="audio/wav", duration_seconds=24)
        )

    assert not failure.value.permanent


def test_failing_polls_are_retried_only_within_the_attempts_time(fake: SpeechV2Fake) -> None:
    """google-api-core's default GetOperation retry keeps at UNAVAILABLE for up to 600 s,
    past the function's timeout; the attempt's deadline bounds it."""
    fake.add_audio(uri(STEREO_72S), FakeAudio(duration=72))
    for _ in range(1000):
        fake.fail_next("GetOperation", grpc.StatusCode.UNAVAILABLE, "try later")

    with pytest.raises(TranscriptionFailed) as failure:
        transcriber(fake, batch_timeout_seconds=1.0).transcribe(
            AudioInput(
                path=audio_file(STEREO_72S), content_type="audio/mpeg", gcs_uri=uri(STEREO_72S)
            )
        )

    assert not failure.value.permanent
    # retried, but not forever (unbounded, the retries would outlast the test's timeout)
    assert 2 <= len(fake.calls("GetOperation")) < 1000


def test_a_stalled_poll_ends_within_the_attempts_time() -> None:
    with SpeechV2Fake(polls_to_finish=None) as never_done:
        never_done.add_audio(uri(STEREO_72S), FakeAudio(duration=72))
        never_done.stall_next("GetOperation", 10.0)
        # the poll's own deadline ends it (unbounded, it would wait out the stall and the
        # attempt would end later with "still running")
        with pytest.raises(TranscriptionFailed, match="Deadline Exceeded") as failure:
            transcriber(never_done, batch_timeout_seconds=0.5).transcribe(
                AudioInput(
                    path=audio_file(STEREO_72S), content_type="audio/mpeg", gcs_uri=uri(STEREO_72S)
                )
            )
        assert not failure.value.permanent
        assert len(never_done.calls("GetOperation")) == 1


def test_batch_timeout_comes_from_settings_and_fits_the_function_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import google.auth
    from google.auth.credentials import AnonymousCredentials

    from callpipe.config import Settings
    from callpipe.engines import build_transcriber
    from callpipe.topology import REPO_ROOT, load_topology

    monkeypatch.setattr(google.auth, "default", lambda *a, **k: (AnonymousCredentials(), "P"))
    default = Settings(SPEECH_ENGINE="google").speech_batch_timeout_seconds
    # The function's timeout is the step's ack deadline (at most 600 s; 540 s would be the
    # limit were the step given an event trigger); the download before and the write and
    # publish after need time too.
    topology = load_topology(REPO_ROOT / "schemas" / "pipeline.yaml")
    ack = topology.steps["transcribe"].ack_deadline_seconds
    assert default <= min(ack or topology.defaults.ack_deadline_seconds, 540) - 60

    built = build_transcriber(Settings(SPEECH_ENGINE="google", SPEECH_BATCH_TIMEOUT_SECONDS=123))
    assert isinstance(built, GoogleSpeechTranscriber)
    assert built.batch_timeout_seconds == 123
    assert isinstance(built.operations, GcsOperationStore)  # redeliveries resume
    assert GoogleSpeechTranscriber(project="P").batch_timeout_seconds == default


# --- resuming a BatchRecognize -----------------------------------------------------------


class MemoryOperations:
    """The transcriber's OperationStore port, in memory (GcsOperationStore is tested against
    fake-gcs-server in test_speech_operations.py)."""

    def __init__(self) -> None:
        self.records: dict[str, PendingOperation] = {}

    def load(self, recording_uri: str) -> PendingOperation | None:
        return self.records.get(recording_uri)

    def save(self, pending: PendingOperation) -> None:
        self.records[pending.recording_uri] = pending

    def forget(self, recording_uri: str) -> None:
        self.records.pop(recording_uri, None)

    def claim(self, recording_uri: str, request_key: str) -> bool:
        current = self.records.get(recording_uri)
        if current is not None and current.blocks():
            return False
        self.records[recording_uri] = PendingOperation(
            name="", recording_uri=recording_uri, request_key=request_key, started_at=time.time()
        )
        return True


def long_call() -> AudioInput:
    return AudioInput(
        path=audio_file(STEREO_72S), content_type="audio/mpeg", gcs_uri=uri(STEREO_72S)
    )


def time_out(service: SpeechV2Fake, store: MemoryOperations, **options: Any) -> None:
    """One attempt that gives up while its operation is still running."""
    with pytest.raises(TranscriptionFailed, match="still running") as failure:
        transcriber(
            service, operations=store, batch_timeout_seconds=0.3, poll_seconds=0.05, **options
        ).transcribe(long_call())
    assert not failure.value.permanent


def test_a_batch_left_running_is_resumed_by_the_next_attempt() -> None:
    store = MemoryOperations()
    with SpeechV2Fake(polls_to_finish=None) as service:
        audio = spoken(STEREO_72S, stereo=True)
        audio.duration = 72.3
        service.add_audio(uri(STEREO_72S), audio)
        time_out(service, store)
        (pending,) = store.records.values()
        assert pending.name == "projects/P/locations/us/operations/1"
        assert pending.recording_uri == uri(STEREO_72S)

        service.polls_to_finish = 1  # the operation finishes meanwhile
        transcript = transcriber(service, operations=store).transcribe(long_call())

        # One operation, started once and billed once; the second attempt only polled it.
        assert len(service.calls("BatchRecognize")) == 1
        assert {r.name for r in service.calls("GetOperation")} == {pending.name}
    assert transcript.diarization == "channel"
    assert [s.speaker for s in transcript.segments][:2] == ["agent", "caller"]
    assert store.records == {}  # done: nothing left to resume


def test_a_delivery_that_finds_another_starting_the_batch_waits_for_it() -> None:
    store = MemoryOperations()
    starting = PendingOperation(
        name="", recording_uri=uri(STEREO_72S), request_key="k", started_at=time.time()
    )
    store.records[uri(STEREO_72S)] = starting  # another delivery's claim, just made
    with SpeechV2Fake(polls_to_finish=1) as service:
        service.add_audio(uri(STEREO_72S), FakeAudio(duration=72))
        with pytest.raises(TranscriptionFailed, match="another delivery is starting") as raised:
            transcriber(service, operations=store).transcribe(long_call())
        assert not raised.value.permanent  # retried: it then resumes the other's operation
        assert service.calls("BatchRecognize") == []  # not started and paid for twice

        # a claim whose attempt died before starting anything is taken over
        store.records[uri(STEREO_72S)] = dataclasses.replace(
            starting, started_at=time.time() - CLAIM_SECONDS - 1
        )
        transcriber(service, operations=store).transcribe(long_call())
        assert len(service.calls("BatchRecognize")) == 1
    assert store.records == {}


def test_a_bucket_that_cannot_give_the_record_is_retried_not_blamed_on_speech() -> None:
    from google.api_core.exceptions import Forbidden

    class Unreadable(MemoryOperations):
        def load(self, recording_uri: str) -> PendingOperation | None:
            raise Forbidden("storage.objects.get denied")

    with SpeechV2Fake(polls_to_finish=1) as service:
        service.add_audio(uri(STEREO_72S), FakeAudio(duration=72))
        with pytest.raises(TranscriptionFailed, match="BatchRecognize record") as raised:
            transcriber(service, operations=Unreadable()).transcribe(long_call())
        assert not raised.value.permanent  # was "Speech-to-Text refused": dead-lettered
        assert service.calls("BatchRecognize") == []


def test_an_operation_that_is_gone_is_replaced_by_a_new_one() -> None:
    store = MemoryOperations()
    with SpeechV2Fake(polls_to_finish=None) as first:
        first.add_audio(uri(STEREO_72S), FakeAudio(duration=72))
        time_out(first, store)
    with SpeechV2Fake(polls_to_finish=1) as second:  # knows nothing of the first operation
        second.add_audio(uri(STEREO_72S), FakeAudio(duration=72))
        transcriber(second, operations=store).transcribe(long_call())
        assert [name for name, _ in second.requests] == [
            "GetOperation",  # NOT_FOUND
            "BatchRecognize",
            "GetOperation",
        ]
    assert store.records == {}


@pytest.mark.parametrize("change", ["too_old", "other_request"])
def test_an_old_record_or_one_for_another_request_is_not_resumed(change: str) -> None:
    store = MemoryOperations()
    with SpeechV2Fake(polls_to_finish=None) as service:
        service.add_audio(uri(STEREO_72S), FakeAudio(duration=72))
        time_out(service, store)
        (pending,) = store.records.values()
        options: dict[str, Any] = {}
        if change == "too_old":
            store.save(dataclasses.replace(pending, started_at=pending.started_at - 2 * 86400))
        else:
            options["language"] = "en-GB"
        time_out(service, store, **options)

        assert len(service.calls("BatchRecognize")) == 2
        assert pending.name not in {r.name for r in service.calls("GetOperation")[-2:]}
        (newer,) = store.records.values()
        assert newer.name != pending.name


@pytest.mark.parametrize(
    ("code", "permanent"),
    [(grpc.StatusCode.UNAVAILABLE, False), (grpc.StatusCode.INVALID_ARGUMENT, True)],
)
def test_a_finished_operation_is_forgotten_whatever_its_outcome(
    fake: SpeechV2Fake, code: grpc.StatusCode, permanent: bool
) -> None:
    """Polling a failed operation again would only repeat its error: the next attempt
    starts a new one."""
    store = MemoryOperations()
    fake.add_audio(uri(STEREO_72S), FakeAudio(duration=72))
    fake.fail_next_operation(code, "scripted failure")

    with pytest.raises(TranscriptionFailed, match="scripted failure") as failure:
        transcriber(fake, operations=store).transcribe(long_call())

    assert failure.value.permanent is permanent
    assert store.records == {}
    transcriber(fake, operations=store).transcribe(long_call())
    assert len(fake.calls("BatchRecognize")) == 2


def test_an_operation_that_disappears_while_polled_is_retryable(fake: SpeechV2Fake) -> None:
    store = MemoryOperations()
    fake.add_audio(uri(STEREO_72S), FakeAudio(duration=72))
    fake.fail_next("GetOperation", grpc.StatusCode.NOT_FOUND, "Operation not found.")

    with pytest.raises(TranscriptionFailed, match="is gone") as failure:
        transcriber(fake, operations=store).transcribe(long_call())

    assert not failure.value.permanent  # the audio is fine; a new operation can succeed
    assert store.records == {}


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "permanent"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, True),
        (grpc.StatusCode.FAILED_PRECONDITION, True),
        (grpc.StatusCode.PERMISSION_DENIED, True),
        (grpc.StatusCode.NOT_FOUND, True),
        (grpc.StatusCode.UNAVAILABLE, False),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, False),
        (grpc.StatusCode.DEADLINE_EXCEEDED, False),
        (grpc.StatusCode.INTERNAL, False),
        (grpc.StatusCode.ABORTED, False),
        (grpc.StatusCode.CANCELLED, False),
        (grpc.StatusCode.UNKNOWN, False),
        # A retry cannot clear these either; they were taken as retryable.
        (grpc.StatusCode.ALREADY_EXISTS, True),
        (grpc.StatusCode.DATA_LOSS, True),
        (grpc.StatusCode.UNAUTHENTICATED, True),
        (grpc.StatusCode.OUT_OF_RANGE, True),
        (grpc.StatusCode.UNIMPLEMENTED, True),
    ],
)
def test_recognize_errors_are_permanent_or_transient(
    fake: SpeechV2Fake, code: grpc.StatusCode, permanent: bool
) -> None:
    fake.fail_next("Recognize", code, "scripted failure")

    with pytest.raises(TranscriptionFailed, match="scripted failure") as failure:
        transcriber(fake).transcribe(
            AudioInput(path=audio_file(WAV_24S), content_type="audio/wav", duration_seconds=24)
        )
    assert failure.value.permanent is permanent
    assert len(fake.requests) == 1  # no retries hidden in the client


@pytest.mark.parametrize(
    ("code", "permanent"),
    [(grpc.StatusCode.INVALID_ARGUMENT, True), (grpc.StatusCode.UNAVAILABLE, False)],
)
def test_batch_recognize_errors_are_mapped(
    fake: SpeechV2Fake, code: grpc.StatusCode, permanent: bool
) -> None:
    fake.fail_next("BatchRecognize", code, "scripted failure")

    with pytest.raises(TranscriptionFailed) as failure:
        transcriber(fake).transcribe(
            AudioInput(
                path=audio_file(STEREO_72S), content_type="audio/mpeg", gcs_uri=uri(STEREO_72S)
            )
        )
    assert failure.value.permanent is permanent


@pytest.mark.parametrize("code", list(grpc.StatusCode))
def test_an_operation_error_and_a_file_error_of_one_code_get_one_verdict(
    fake: SpeechV2Fake, code: grpc.StatusCode
) -> None:
    """The same status, whether the whole operation failed or only the file inside it."""
    if code is grpc.StatusCode.OK:
        return
    verdicts = []
    for fail_file in (False, True):
        fake.add_audio(
            uri(STEREO_72S),
            FakeAudio(duration=72, error=(code, "scripted failure") if fail_file else None),
        )
        if not fail_file:
            fake.fail_next_operation(code, "scripted failure")
        with pytest.raises(TranscriptionFailed, match="scripted failure") as failure:
            transcriber(fake).transcribe(
                AudioInput(
                    path=audio_file(STEREO_72S), content_type="audio/mpeg", gcs_uri=uri(STEREO_72S)
                )
            )
        verdicts.append(failure.value.permanent)
    assert verdicts[0] == verdicts[1]


@pytest.mark.parametrize(
    ("status", "permanent"),
    [
        *[(status, True) for status in (400, 401, 403, 404, 412, 501)],
        *[(status, False) for status in (408, 409, 429, 500, 503, 504)],
    ],
)
def test_http_only_errors_are_judged_by_their_status(status: int, permanent: bool) -> None:
    """Over the REST transport the errors are built from the HTTP status alone (BadRequest,
    Forbidden...), without a gRPC code: a 400 must not be retried as if it were a 503."""
    from google.api_core import exceptions

    from callpipe.speech.google_errors import failure

    assert failure(exceptions.from_http_status(status, "scripted")).permanent is permanent


def test_recognizer_in_another_location_is_refused_permanently(fake: SpeechV2Fake) -> None:
    with pytest.raises(TranscriptionFailed, match="location") as failure:
        transcriber(fake, location="eu").transcribe(
            AudioInput(path=audio_file(WAV_24S), content_type="audio/wav", duration_seconds=24)
        )
    assert failure.value.permanent
    assert fake.calls("Recognize")[0].recognizer == "projects/P/locations/eu/recognizers/_"


def test_unknown_model_is_refused_permanently(fake: SpeechV2Fake) -> None:
    with pytest.raises(TranscriptionFailed, match="does not exist") as failure:
        transcriber(fake, model="chirp_9").transcribe(
            AudioInput(path=audio_file(WAV_24S), content_type="audio/wav", duration_seconds=24)
        )
    assert failure.value.permanent


# --- the fake refuses what the service refuses -------------------------------------------


def test_fake_checks_requests_like_the_service(fake: SpeechV2Fake) -> None:
    from google.api_core import exceptions
    from google.cloud.speech_v2.types import cloud_speech

    client = fake.client()
    config = cloud_speech.RecognitionConfig(
        auto_decoding_config=cloud_speech.AutoDetectDecodingConfig(),
        model="chirp_3",
        language_codes=["en-US"],
    )
    wav = audio_file(WAV_24S).read_bytes()

    def recognize(**fields: Any) -> None:
        client.recognize(
            request=cloud_speech.RecognizeRequest(
                **{"recognizer": RECOGNIZER, "config": config, **fields}
            )
        )

    recognize(content=wav)  # a valid request passes
    with pytest.raises(exceptions.InvalidArgument, match="maximum of 60 seconds"):
        recognize(content=audio_file(STEREO_72S).read_bytes())
    with pytest.raises(exceptions.InvalidArgument, match="maximum for Recognize"):
        recognize(content=wav + bytes(11 * 1024 * 1024))
    with pytest.raises(exceptions.InvalidArgument, match="content or uri"):
        recognize()
    with pytest.raises(exceptions.InvalidArgument, match="recognizer"):
        recognize(recognizer="projects/P/recognizers/_", content=wav)
    no_model = cloud_speech.RecognitionConfig(config)
    no_model.model = ""
    with pytest.raises(exceptions.InvalidArgument, match=r"config\.model"):
        recognize(config=no_model, content=wav)
    word_confidence = cloud_speech.RecognitionConfig(config)
    word_confidence.features.enable_word_confidence = True
    with pytest.raises(exceptions.InvalidArgument, match="word_level_confidence"):
        recognize(config=word_confidence, content=wav)
    with pytest.raises(exceptions.InvalidArgument, match="output_config"):
        client.batch_recognize(
            request=cloud_speech.BatchRecognizeRequest(
                recognizer=RECOGNIZER,
                config=config,
                files=[cloud_speech.BatchRecognizeFileMetadata(uri=uri(MONO_55S))],
            )
        )


# --- helpers -----------------------------------------------------------------------------


def test_channel_count_is_read_from_wav_and_mp3_headers(tmp_path: Path) -> None:
    assert audio_channel_count(audio_file(STEREO_72S)) == 2
    assert audio_channel_count(audio_file(MONO_55S)) == 1
    assert audio_channel_count(audio_file(WAV_24S)) == 1
    tagged = tmp_path / "tagged.mp3"  # an ID3v2 tag in front of the first frame
    tagged.write_bytes(
        b"ID3\x04\x00\x00\x00\x00\x01\x00" + bytes(128) + audio_file(STEREO_72S).read_bytes()
    )
    assert audio_channel_count(tagged) == 2
    unknown = tmp_path / "call.ogg"
    unknown.write_bytes(b"OggS" + bytes(100))
    assert audio_channel_count(unknown) is None


def test_speech_endpoint_follows_the_location(monkeypatch: pytest.MonkeyPatch) -> None:
    import google.auth
    from google.auth.credentials import AnonymousCredentials

    assert speech_api_endpoint("us") == "us-speech.googleapis.com"
    assert speech_api_endpoint("eu") == "eu-speech.googleapis.com"
    assert speech_api_endpoint("us-central1") == "us-central1-speech.googleapis.com"
    assert speech_api_endpoint("global") is None
    with pytest.raises(ValueError, match="location"):
        speech_api_endpoint("us.evil.example/")

    # No Application Default Credentials here: hand the client anonymous ones.
    monkeypatch.setattr(google.auth, "default", lambda *a, **k: (AnonymousCredentials(), "P"))
    assert build_speech_client("us").api_endpoint == "us-speech.googleapis.com"
    assert build_speech_client("global").api_endpoint == "speech.googleapis.com"


def test_transcript_round_trips_as_json(fake: SpeechV2Fake) -> None:
    path = audio_file(WAV_24S)
    fake.add_audio(path.read_bytes(), spoken(WAV_24S, stereo=False))
    transcript = transcriber(fake).transcribe(
        AudioInput(path=path, content_type="audio/wav", duration_seconds=24)
    )
    assert Transcript.model_validate_json(transcript.model_dump_json()) == transcript
