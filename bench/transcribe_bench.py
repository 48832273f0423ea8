"""Local transcription benchmark: faster-whisper + offline diarization on the demo calls.

Run: ``.venv/bin/python bench/transcribe_bench.py [--model base] [--calls DIR]``.

Every call JSON in the directory whose ``_simulator`` block names an audio file and a
script (the exact words per turn, speaker "agent"/"caller") is transcribed with
:class:`callpipe.speech.local.LocalWhisperTranscriber`, then scored:

- WER over normalised words (see :mod:`callpipe.speech.local_eval`);
- speaker attribution: the share of aligned reference words whose hypothesis speaker is the
  reference speaker under the best renaming of hypothesis speakers (two-voice calls only);
  "roles" is the same without renaming, when the engine labelled agent/caller itself;
- RTF = wall-clock processing seconds / audio seconds (model loading excluded, reported
  apart); CPU seconds per audio second are printed too, as the wall clock depends on what
  else the machine runs.

Targets (issue "Local: faster-whisper…"): WER <= 30 % over the two-voice calls' words and
RTF <= 0.3 on 2 cores over all audio; each call is also marked PASS/FAIL against the same
limits. Prints a table, writes bench/results/transcribe-<model>-<time>.json, exits 1 when
an overall target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from callpipe.speech.local import LocalWhisperTranscriber
from callpipe.speech.local_eval import score
from callpipe.transcripts import AudioInput

REPO = Path(__file__).resolve().parents[1]
DEMO_CALLS = REPO / "shared" / "callpipe" / "simulator" / "demo_calls" / "calls"
RESULTS = Path(__file__).resolve().parent / "results"
MAX_WER = 0.30
MAX_RTF = 0.30


@dataclass
class CallResult:
    call: str
    title: str
    channels: int | None
    voices: dict[str, str]
    audio_seconds: float
    processing_seconds: float
    cpu_seconds: float
    rtf: float
    wer: float
    reference_words: int
    errors: int
    reference_speakers: int
    hypothesis_speakers: int
    speaker_accuracy: float | None
    label_accuracy: float | None
    diarization: str
    language: str
    passed: bool
    transcript: str


def load_calls(directory: Path) -> list[tuple[Path, dict[str, Any]]]:
    calls = []
    for path in sorted(directory.glob("*.json")):
        simulator = json.loads(path.read_text(encoding="utf-8")).get("_simulator") or {}
        if simulator.get("audio") and simulator.get("script"):
            calls.append((path, simulator))
    return calls


def run_call(
    transcriber: LocalWhisperTranscriber, path: Path, simulator: dict[str, Any]
) -> CallResult:
    audio_path = path.parent / simulator["audio"]
    wall, cpu = time.perf_counter(), time.process_time()
    transcript = transcriber.transcribe(AudioInput(path=audio_path, content_type="audio/mpeg"))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    turns = [(turn["speaker"], turn["text"]) for turn in simulator["script"]]
    result = score(turns, transcript)
    seconds = transcript.audio_duration_seconds or 1e-9
    rtf = wall / seconds
    two_voices = result.reference_speakers > 1
    audio_format = simulator.get("audio_format") or {}
    return CallResult(
        call=path.stem,
        title=simulator.get("title", path.stem),
        channels=audio_format.get("channels"),
        voices=audio_format.get("voices") or {},
        audio_seconds=seconds,
        processing_seconds=round(wall, 3),
        cpu_seconds=round(cpu, 3),
        rtf=round(rtf, 4),
        wer=round(result.wer, 4),
        reference_words=result.reference_words,
        errors=result.errors,
        reference_speakers=result.reference_speakers,
        hypothesis_speakers=result.hypothesis_speakers,
        speaker_accuracy=result.speaker_accuracy,
        label_accuracy=result.label_accuracy,
        diarization=transcript.diarization,
        language=transcript.language,
        passed=rtf <= MAX_RTF and (not two_voices or result.wer <= MAX_WER),
        transcript=transcript.text,
    )


def _pct(value: float | None) -> str:
    return "   -  " if value is None else f"{100 * value:5.1f}%"


def summarise(results: list[CallResult]) -> dict[str, Any]:
    duo = [r for r in results if r.reference_speakers > 1]
    solo = [r for r in results if r.reference_speakers == 1]

    def wer(rows: list[CallResult]) -> float | None:
        words = sum(r.reference_words for r in rows)
        return sum(r.errors for r in rows) / words if words else None

    def weighted(rows: list[CallResult], field: str) -> float | None:
        pairs = [(getattr(r, field), r.reference_words) for r in rows]
        pairs = [(v, w) for v, w in pairs if v is not None]
        total = sum(w for _, w in pairs)
        return sum(v * w for v, w in pairs) / total if total else None

    audio = sum(r.audio_seconds for r in results)
    overall_rtf = sum(r.processing_seconds for r in results) / audio if audio else 0.0
    duo_wer = wer(duo)
    return {
        "wer_two_voice": duo_wer,
        "wer_one_voice": wer(solo),
        "wer_all": wer(results),
        "speaker_accuracy_two_voice": weighted(duo, "speaker_accuracy"),
        "one_voice_calls_with_one_speaker": sum(r.hypothesis_speakers == 1 for r in solo),
        "one_voice_calls": len(solo),
        "rtf": overall_rtf,
        "cpu_seconds_per_audio_second": sum(r.cpu_seconds for r in results) / audio
        if audio
        else 0.0,
        # The targets hold for the set: WER over all two-voice words, RTF over all audio.
        # Per-call PASS/FAIL is printed too, to show where it falls short.
        "passed": overall_rtf <= MAX_RTF and (duo_wer is None or duo_wer <= MAX_WER),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="base", help="LOCAL_WHISPER_MODEL value")
    parser.add_argument("--calls", type=Path, default=DEMO_CALLS, help="dir of call JSONs")
    parser.add_argument("--compute-type", default="int8")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="0 = all cores")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--show-text", action="store_true", help="print each transcript")
    args = parser.parse_args(argv)

    calls = load_calls(args.calls)
    if not calls:
        print(f"no call with audio and script in {args.calls}", file=sys.stderr)
        return 2
    transcriber = LocalWhisperTranscriber(
        model=args.model,
        compute_type=args.compute_type,
        beam_size=args.beam_size,
        cpu_threads=args.threads,
    )
    started = time.perf_counter()
    transcriber.load()
    load_seconds = time.perf_counter() - started
    print(
        f"model {args.model} ({args.compute_type}, beam {args.beam_size}, "
        f"{transcriber.cpu_threads} threads) loaded in {load_seconds:.1f} s; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    results = [run_call(transcriber, path, simulator) for path, simulator in calls]

    header = f"{'call':44} {'ch':>2} {'sec':>5} {'WER':>6} {'spk':>6} {'roles':>6} "
    print(header + f"{'n':>3} {'RTF':>6} {'cpu/s':>6}  result")
    for r in results:
        print(
            f"{r.title[:44]:44} {r.channels or 0:>2} {r.audio_seconds:5.1f} {_pct(r.wer)} "
            f"{_pct(r.speaker_accuracy)} {_pct(r.label_accuracy)} "
            f"{r.hypothesis_speakers}/{r.reference_speakers} {r.rtf:6.3f} "
            f"{r.cpu_seconds / r.audio_seconds:6.3f}  {'PASS' if r.passed else 'FAIL'}"
        )
        if args.show_text:
            print("    " + r.transcript.replace("\n", "\n    "))
    summary = summarise(results)
    print(
        f"overall: WER two-voice {_pct(summary['wer_two_voice'])}, one-voice "
        f"{_pct(summary['wer_one_voice'])}; speaker attribution two-voice "
        f"{_pct(summary['speaker_accuracy_two_voice'])}; one-voice calls with one speaker "
        f"{summary['one_voice_calls_with_one_speaker']}/{summary['one_voice_calls']}; "
        f"RTF {summary['rtf']:.3f} (cpu {summary['cpu_seconds_per_audio_second']:.3f} s/s) "
        f"-> {'PASS' if summary['passed'] else 'FAIL'} "
        f"(targets: WER <= {MAX_WER:.0%} on two-voice calls, RTF <= {MAX_RTF})"
    )

    args.results.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.results / f"transcribe-{args.model.replace('/', '_')}-{stamp}.json"
    report = {
        "model": args.model,
        "compute_type": args.compute_type,
        "beam_size": args.beam_size,
        "threads": transcriber.cpu_threads,
        "load_seconds": round(load_seconds, 2),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_1m": os.getloadavg()[0],
            "python": platform.python_version(),
        },
        "targets": {"max_wer_two_voice": MAX_WER, "max_rtf": MAX_RTF},
        "summary": summary,
        "calls": [asdict(r) for r in results],
    }
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"results: {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
