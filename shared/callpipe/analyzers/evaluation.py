"""Scoring an analyzer against labelled calls (the benchmark and the tests share this).

A labelled call has a transcript (or none), a ``CallContext`` and expected values for the
fields that can be judged objectively: the ``CallAnalysis`` enums and booleans, plus
``spam`` (intent is ``spam`` or ``solicitation``) and ``lead_band`` (``scoring.lead_band``).
A field missing from ``expected`` is not scored for that call.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from callpipe.analysis import Analyzer, CallAnalysis, CallContext
from callpipe.analyzers.scoring import lead_band
from callpipe.transcripts import Transcript

FIELDS = (
    "intent",
    "project_type",
    "timeline",
    "budget_indicator",
    "sentiment",
    "urgency",
    "appointment_requested",
    "follow_up_required",
    "spam",
    "lead_band",
)


@dataclass(frozen=True)
class LabelledCall:
    id: str
    split: str
    title: str
    context: CallContext
    transcript: Transcript | None
    expected: dict[str, Any]


def load_labelled(path: Path) -> list[LabelledCall]:
    calls = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        d = json.loads(line)
        unknown = set(d["expected"]) - set(FIELDS)
        if unknown:
            raise ValueError(f"{path}:{n}: unknown expected fields {sorted(unknown)}")
        calls.append(
            LabelledCall(
                id=d["id"],
                split=d["split"],
                title=d.get("title", ""),
                context=CallContext.model_validate(d["context"]),
                transcript=Transcript.model_validate(d["transcript"]) if d["transcript"] else None,
                expected=d["expected"],
            )
        )
    return calls


def predicted_fields(a: CallAnalysis) -> dict[str, Any]:
    return {
        "intent": a.intent,
        "project_type": a.project_type,
        "timeline": a.timeline,
        "budget_indicator": a.budget_indicator,
        "sentiment": a.sentiment,
        "urgency": a.urgency,
        "appointment_requested": a.appointment_requested,
        "follow_up_required": a.follow_up_required,
        "spam": a.intent in ("spam", "solicitation"),
        "lead_band": lead_band(a.lead_score),
    }


@dataclass
class Report:
    """Accuracy per field over the calls that label it, spam precision and recall."""

    correct: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    total: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    spam_tp: int = 0
    spam_fp: int = 0
    spam_fn: int = 0
    calls: list[dict[str, Any]] = field(default_factory=list)

    def accuracy(self, name: str) -> float | None:
        return self.correct[name] / self.total[name] if self.total[name] else None

    @property
    def spam_precision(self) -> float | None:
        flagged = self.spam_tp + self.spam_fp
        return self.spam_tp / flagged if flagged else None

    @property
    def spam_recall(self) -> float | None:
        actual = self.spam_tp + self.spam_fn
        return self.spam_tp / actual if actual else None

    @property
    def overall(self) -> float | None:
        total = sum(self.total.values())
        return sum(self.correct.values()) / total if total else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": len(self.calls),
            "accuracy": {f: self.accuracy(f) for f in FIELDS if self.total[f]},
            "scored": {f: self.total[f] for f in FIELDS if self.total[f]},
            "overall_accuracy": self.overall,
            "spam_precision": self.spam_precision,
            "spam_recall": self.spam_recall,
            "results": self.calls,
        }


def evaluate(analyzer: Analyzer, calls: Iterable[LabelledCall]) -> Report:
    report = Report()
    for call in calls:
        analysis = analyzer.analyze(call.transcript, call.context).analysis
        got = predicted_fields(analysis)
        misses = {}
        for name, want in call.expected.items():
            report.total[name] += 1
            if got[name] == want:
                report.correct[name] += 1
            else:
                misses[name] = {"expected": want, "got": got[name]}
        if "spam" in call.expected:
            want_spam, got_spam = bool(call.expected["spam"]), bool(got["spam"])
            report.spam_tp += want_spam and got_spam
            report.spam_fp += got_spam and not want_spam
            report.spam_fn += want_spam and not got_spam
        report.calls.append(
            {
                "id": call.id,
                "split": call.split,
                "lead_score": analysis.lead_score,
                "spam_likelihood": analysis.spam_likelihood,
                "predicted": got,
                "misses": misses,
                "summary": analysis.summary,
                "key_details": analysis.key_details,
            }
        )
    return report
