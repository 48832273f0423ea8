"""Analysis benchmark: per-field accuracy of an analyzer on labelled calls.

Two sources:

1. tests/data/analysis/labelled_calls.jsonl, reported per split. ``test`` is held out: it
   was written before the rules and never used to tune them, so its figures are the honest
   ones; ``train`` is what the lexicon was tuned on.
2. The simulator's demo calls (shared/callpipe/simulator/demo_calls/calls/*.json): the
   transcript is ``_simulator.script``, the context comes from the call object, and the
   expected values are ``_simulator.labels``, mapped onto CallAnalysis's vocabulary
   (``DEMO_MAP`` below; the demo labels predate the model and use other names).

Prints a table (accuracy per field, lead-score band accuracy, spam precision and recall,
and with ``--show-misses`` every wrong field), and writes the full results as JSON to
bench/results/analysis-<engine>-<timestamp>.json.

    .venv/bin/python bench/analysis_bench.py [--engine rules] [--split train|test|all]
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from callpipe.analysis import Analyzer, CallContext
from callpipe.analyzers.evaluation import FIELDS, LabelledCall, Report, evaluate, load_labelled
from callpipe.analyzers.rules import RuleBasedAnalyzer
from callpipe.transcripts import Transcript, TranscriptSegment

ROOT = Path(__file__).resolve().parents[1]
LABELLED = ROOT / "tests/data/analysis/labelled_calls.jsonl"
DEMO_CALLS = ROOT / "shared/callpipe/simulator/demo_calls/calls"
RESULTS = ROOT / "bench/results"

# Demo label vocabulary → CallAnalysis vocabulary. Values not listed are kept as they are.
DEMO_MAP: dict[str, dict[Any, Any]] = {
    "intent": {
        "warranty_service": "existing_customer",
        "appointment_booking": "appointment_request",
        # A voicemail about a new project asking to be called back is a quote request.
        "callback_request": "quote_request",
        "unknown": "other",
    },
    "project_type": {
        "kitchen_remodel": "kitchen",
        "bathroom_remodel": "bathroom",
        "countertops": "cabinets_countertops",
        "cabinet_repair": "cabinets_countertops",
        None: "unknown",
    },
    "timeline": {"1_3_months": "1-3_months", "within_1_week": "immediate", "asap": "immediate"},
    "budget_indicator": {"none": "unknown"},
}
DEMO_FIELDS = (
    "intent",
    "project_type",
    "timeline",
    "budget_indicator",
    "sentiment",
    "urgency",
    "appointment_requested",
    "spam",
)


def demo_calls(folder: Path = DEMO_CALLS) -> list[LabelledCall]:
    calls = []
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        sim = data.get("_simulator") or {}
        labels = sim.get("labels")
        if not labels:
            continue
        script = sim.get("script") or []
        transcript = None
        if script:
            segments = [
                TranscriptSegment(
                    speaker=t["speaker"], start=t["start"], end=t["end"], text=t["text"]
                )
                for t in script
            ]
            transcript = Transcript(
                segments=segments,
                text=Transcript.render_text(segments),
                language="en-US",
                audio_duration_seconds=max(s.end for s in segments),
                engine="script",
                model="demo-script",
                diarization="channel",
                speaker_count=len({s.speaker for s in segments}),
            )
        context = CallContext(
            direction=data.get("direction"),
            answered=data.get("answered"),
            voicemail=data.get("voicemail"),
            duration_seconds=data.get("duration"),
            first_call=data.get("first_call"),
            callrail_spam=data.get("spam"),
            source=data.get("source"),
            customer_state=data.get("customer_state") or None,
            business_name=data.get("company_name"),
        )
        expected = {
            f: DEMO_MAP.get(f, {}).get(labels.get(f), labels.get(f))
            for f in DEMO_FIELDS
            if f in labels
        }
        calls.append(
            LabelledCall(
                id=path.stem,
                split="demo",
                title=sim.get("title", ""),
                context=context,
                transcript=transcript,
                expected=expected,
            )
        )
    return calls


def build_analyzer(engine: str) -> Analyzer:
    if engine == "rules":
        return RuleBasedAnalyzer()
    # Reserved: the configured engine (Gemini) will be wired here by the engine factory.
    raise SystemExit(f"engine {engine!r} is not wired into the benchmark yet; use --engine rules")


def _pct(x: float | None) -> str:
    return "   -" if x is None else f"{x * 100:4.0f}%"


def print_table(reports: dict[str, Report]) -> None:
    names = list(reports)
    print(f"{'field':<22}" + "".join(f"{n:>14}" for n in names))
    for f in (*FIELDS, "overall"):
        row = f"{f:<22}"
        for n in names:
            r = reports[n]
            acc = r.overall if f == "overall" else r.accuracy(f)
            scored = sum(r.total.values()) if f == "overall" else r.total[f]
            row += f"{_pct(acc):>8} ({scored:>3})" if scored else f"{'-':>14}"
        print(row)
    for label, attr in (("spam precision", "spam_precision"), ("spam recall", "spam_recall")):
        print(f"{label:<22}" + "".join(f"{_pct(getattr(reports[n], attr)):>14}" for n in names))
    print(f"{'calls':<22}" + "".join(f"{len(reports[n].calls):>14}" for n in names))


def print_misses(reports: dict[str, Report]) -> None:
    for name, r in reports.items():
        for c in r.calls:
            for f, m in c["misses"].items():
                print(
                    f"  [{name}] {c['id']:<32} {f:<22} expected {m['expected']!s:<18} got {m['got']}"
                )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", default="rules", help="analyzer: rules (gemini reserved)")
    parser.add_argument("--split", choices=["train", "test", "all"], default="all")
    parser.add_argument("--labelled", type=Path, default=LABELLED)
    parser.add_argument("--show-misses", action="store_true", help="list every wrong field")
    parser.add_argument("--no-write", action="store_true", help="do not write bench/results")
    args = parser.parse_args(argv)

    analyzer = build_analyzer(args.engine)
    labelled = load_labelled(args.labelled)
    splits = ["train", "test"] if args.split == "all" else [args.split]
    reports = {s: evaluate(analyzer, [c for c in labelled if c.split == s]) for s in splits}
    if args.split == "all":
        reports["demo"] = evaluate(analyzer, demo_calls())

    model = getattr(analyzer, "model", args.engine)
    print(f"analysis benchmark: engine={args.engine} model={model}")
    print_table(reports)
    if args.show_misses:
        print("\nmisses:")
        print_misses(reports)
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        out = RESULTS / f"analysis-{args.engine}-{stamp}.json"
        payload = {
            "engine": args.engine,
            "model": model,
            "labelled_set": str(
                args.labelled.relative_to(ROOT)
                if args.labelled.is_relative_to(ROOT)
                else args.labelled
            ),
            "created": stamp,
            "splits": {n: r.as_dict() for n, r in reports.items()},
        }
        out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        print(f"\nresults: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
