"""``callpipe analyze FILE``: analyze a transcript on this machine (rule-based analyzer).

FILE is a Transcript as JSON (``callpipe transcribe --json``) or plain text, one turn a
line: ``speaker: text``, optionally with ``callpipe transcribe``'s ``[mm:ss]`` prefix. A line
without a speaker continues the previous turn. Speakers ``agent`` and ``caller`` are used as
they are; any other label (``speaker_1``, ``Speaker 2``…) is resolved by the analyzer.
"""

from __future__ import annotations

import json as jsonlib
import re
import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from callpipe.analysis import AnalysisResult, CallContext
from callpipe.cli.common import fail
from callpipe.transcripts import Transcript, TranscriptSegment

_LINE = re.compile(
    r"^\s*(?:\[(?:(?P<h>\d+):)?(?P<m>\d{1,2}):(?P<s>\d{2})\]\s*)?"
    r"(?P<speaker>[A-Za-z][\w ]{0,30}?)\s*:\s*(?P<text>.*)$"
)
# Text files carry no timing; turns get plausible times from their length.
WORDS_PER_SECOND = 2.6


def _speaker(label: str) -> str:
    return re.sub(r"\s+", "_", label.strip().lower())


def transcript_from_text(text: str) -> Transcript:
    """A Transcript from "speaker: text" lines."""
    turns: list[tuple[str, str, float | None]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        m = _LINE.match(line)
        if m:
            start: float | None = None
            if m["m"] is not None:
                start = float(int(m["h"] or 0) * 3600 + int(m["m"]) * 60 + int(m["s"]))
            turns.append((_speaker(m["speaker"]), m["text"].strip(), start))
        elif turns:
            speaker, previous, began = turns[-1]
            turns[-1] = (speaker, f"{previous} {line.strip()}", began)
        else:
            turns.append(("caller", line.strip(), None))
    segments: list[TranscriptSegment] = []
    clock = 0.0
    for speaker, said, at in turns:
        begin = at if at is not None else clock
        end = begin + max(1.0, len(said.split()) / WORDS_PER_SECOND)
        segments.append(TranscriptSegment(speaker=speaker, start=begin, end=end, text=said))
        clock = end + 0.5
    speakers = {s.speaker for s in segments}
    return Transcript(
        segments=segments,
        text=Transcript.render_text(segments),
        language="en-US",
        audio_duration_seconds=max((s.end for s in segments), default=0.0),
        engine="text-file",
        model="none",
        diarization="provider" if len(speakers) > 1 else "none",
        speaker_count=len(speakers),
    )


def read_transcript(path: Path) -> Transcript:
    try:
        content = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        # e.g. an audio file given by mistake, or a transcript saved as UTF-16
        fail(
            f"{path} is not UTF-8 text (byte {error.start}): give a Transcript JSON or a "
            "UTF-8 text file; audio goes to `callpipe transcribe` first"
        )
    if content.lstrip().startswith("{"):
        try:
            return Transcript.model_validate(jsonlib.loads(content))
        except (ValueError, ValidationError) as exc:
            fail(f"{path} is JSON but not a Transcript: {str(exc).splitlines()[0]}")
    return transcript_from_text(content)


def render_report(result: AnalysisResult) -> str:
    a = result.analysis
    rows = [
        ("intent", a.intent),
        ("project type", a.project_type),
        ("timeline", a.timeline),
        ("budget", a.budget_indicator),
        ("sentiment", a.sentiment),
        ("urgency", a.urgency),
        ("lead score", str(a.lead_score)),
        ("appointment requested", "yes" if a.appointment_requested else "no"),
        ("follow-up required", "yes" if a.follow_up_required else "no"),
        ("spam likelihood", f"{a.spam_likelihood:.2f}"),
    ]
    lines = [a.summary, ""]
    lines += [f"  {name:<22} {value}" for name, value in rows]
    if a.spam_reasons:
        lines += ["", "spam reasons:"] + [f"  - {r}" for r in a.spam_reasons]
    if a.key_details:
        lines += ["", "key details:"] + [f"  - {d}" for d in a.key_details]
    lines += ["", f"engine: {result.engine} ({result.model})"]
    return "\n".join(lines)


def analyze(
    transcript_file: Annotated[
        Path,
        typer.Argument(
            exists=True,
            dir_okay=False,
            readable=True,
            help='Transcript JSON (callpipe transcribe --json) or text, "speaker: text" lines.',
        ),
    ],
    json: Annotated[bool, typer.Option("--json", help="Print the AnalysisResult as JSON.")] = False,
) -> None:
    """Analyze a transcript: intent, project, timeline, budget, lead score, spam…"""
    from callpipe.analysis import AnalysisFailed
    from callpipe.cli.common import fail, settings
    from callpipe.engines import build_analyzer

    transcript = read_transcript(transcript_file)
    # A file is an answered call as far as we know; nothing else about it is.
    try:
        result = build_analyzer(settings()).analyze(transcript, CallContext(answered=True))
    except AnalysisFailed as error:
        fail(str(error))
    if json:
        sys.stdout.write(result.model_dump_json(indent=2) + "\n")
        return
    sys.stdout.write(render_report(result) + "\n")
