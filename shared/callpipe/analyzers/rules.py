"""The rule-based analyzer: lexicons and rules, no model, no network, deterministic.

It implements ``callpipe.analysis.Analyzer`` for local runs, tests and as a fallback. The
lexicon is data (``lexicon_v<N>.yaml``); the field rules live in small modules:

- ``spam``: spam likelihood and reasons (robocall signs, sales pitches, CallRail's flag);
- ``intent``: intent (a fixed order from non-leads to leads) and project type;
- ``qualifiers``: timeline, budget, sentiment, urgency;
- ``actions``: appointment requested, follow-up required;
- ``scoring``: the lead score formula (documented term by term there);
- ``report``: key details and the summary.

The caller's words count in full and the agent's at the lexicon's ``agent_weight`` (0.3):
the agent saying "we do roofing" does not make the caller's project a roof. A call without
a transcript is analyzed from its context alone (see ``_without_transcript``).
"""

from __future__ import annotations

from callpipe.analysis import AnalysisResult, CallAnalysis, CallContext, Intent
from callpipe.analyzers import actions, intent, qualifiers, report, scoring, spam
from callpipe.analyzers.evidence import Call
from callpipe.analyzers.lexicon import Lexicon, load_lexicon
from callpipe.analyzers.text import utterances
from callpipe.transcripts import Transcript

LEXICON_VERSION = 1
ENGINE = "rules"


def model_name(version: int = LEXICON_VERSION) -> str:
    return f"callpipe-rules-{version}"


class RuleBasedAnalyzer:
    """``Analyzer`` with lexicon ``lexicon_v<lexicon_version>.yaml``."""

    def __init__(self, lexicon_version: int = LEXICON_VERSION) -> None:
        self.lexicon: Lexicon = load_lexicon(lexicon_version)
        self.model = model_name(lexicon_version)

    def analyze(self, transcript: Transcript | None, context: CallContext) -> AnalysisResult:
        turns = utterances(transcript, context) if transcript is not None else []
        if transcript is None or not any(u.norm for u in turns):
            analysis = self._without_transcript(context)
        else:
            speakers = {s.speaker for s in transcript.segments if s.text.strip()}
            call = Call(
                turns=turns,
                context=context,
                lexicon=self.lexicon,
                speaker_count=len(speakers),
                voices_separated=transcript.diarization in ("channel", "provider"),
            )
            analysis = self._with_transcript(call)
        return AnalysisResult(analysis=analysis, engine=ENGINE, model=self.model)

    def _with_transcript(self, call: Call) -> CallAnalysis:
        verdict = spam.assess(call)
        evidence = intent.intent_evidence(call)
        the_intent = intent.classify_intent(
            call, verdict, evidence, intent.has_project_evidence(call)
        )
        about_a_project = the_intent in intent.PROJECT_INTENTS
        project = intent.classify_project(call) if about_a_project else "unknown"
        appointment = (
            actions.find_appointment(call)
            if about_a_project
            else actions.AppointmentFinding(False, None, False)
        )
        timeline = (
            qualifiers.find_timeline(call, appointment.turn, the_intent)
            if about_a_project
            else qualifiers.TimelineFinding("unknown", None)
        )
        budget = qualifiers.find_budget(call, the_intent)
        follow_up = actions.find_follow_up(call, the_intent)
        fields: dict[str, object] = {
            "intent": the_intent,
            "project_type": project,
            "timeline": timeline.timeline,
            "budget_indicator": budget.budget,
            "sentiment": qualifiers.find_sentiment(call, the_intent),
            "urgency": qualifiers.find_urgency(call, the_intent, timeline.timeline, project),
            "appointment_requested": appointment.requested,
            "follow_up_required": follow_up.required,
            "spam_likelihood": verdict.likelihood,
            "spam_reasons": verdict.reasons,
        }
        fields["lead_score"] = scoring.lead_score(
            scoring.ScoreInputs(
                intent=the_intent,
                project_type=project,
                budget=budget.budget,
                timeline=timeline.timeline,
                appointment_requested=appointment.requested,
                first_call=call.context.first_call is True,
                missed=False,
                spam_likelihood=verdict.likelihood,
            )
        )
        findings = report.Findings(verdict, timeline, budget, appointment, follow_up)
        fields["key_details"] = report.key_details(call, fields, findings)
        labels: dict[str, str] = {p: pc.label for p, pc in self.lexicon.projects.types.items()}
        fields["summary"] = report.summary(fields, labels, call.context)
        return CallAnalysis.model_validate(fields)

    def _without_transcript(self, context: CallContext) -> CallAnalysis:
        """No audio, or audio with no speech: only the context speaks. A missed call or an
        empty voicemail still needs a call back (someone tried to reach the business), unless
        CallRail says it is spam."""
        verdict = spam.flag_only(context.callrail_spam, self.lexicon)
        is_spam = verdict.is_spam(self.lexicon)
        the_intent: Intent = "spam" if is_spam else "other"
        missed = context.answered is False or bool(context.voicemail)
        follow_up = missed and not is_spam
        score = scoring.lead_score(
            scoring.ScoreInputs(
                intent=the_intent,
                project_type="unknown",
                budget="unknown",
                timeline="unknown",
                appointment_requested=False,
                first_call=context.first_call is True,
                missed=missed,
                spam_likelihood=verdict.likelihood,
            )
        )
        details = ["No recording"]
        if follow_up:
            details.append(
                "Missed call: call back" if not context.voicemail else "Empty voicemail: call back"
            )
        if context.first_call:
            details.append("First-time caller")
        return CallAnalysis(
            intent=the_intent,
            project_type="unknown",
            timeline="unknown",
            budget_indicator="unknown",
            sentiment="neutral",
            urgency="low",
            lead_score=score,
            appointment_requested=False,
            follow_up_required=follow_up,
            key_details=details,
            spam_likelihood=verdict.likelihood,
            spam_reasons=verdict.reasons,
            summary=report.no_transcript_summary(context, is_spam),
        )
