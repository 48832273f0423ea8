"""Key details and the summary, built from the fields and lexicon labels only.

Nothing here copies free text from the transcript except short lexicon matches (a timeline
phrase, a budget phrase) and a place name after "in"/"near": so no names, phone numbers or
street addresses reach the stored analysis.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from callpipe.analysis import CallContext
from callpipe.analyzers.actions import AppointmentFinding, FollowUpFinding
from callpipe.analyzers.evidence import Call
from callpipe.analyzers.money import format_amount
from callpipe.analyzers.qualifiers import BudgetFinding, TimelineFinding
from callpipe.analyzers.spam import SpamVerdict

MAX_DETAILS = 10

INTENT_PHRASES = {
    "quote_request": "asking for a quote",
    "appointment_request": "booking a visit",
    "service_request": "needing a repair or service visit",
    "existing_customer": "existing customer calling about their job",
    "complaint": "unhappy customer with a complaint",
    "information_request": "asking for information",
    "spam": "likely spam or a robocall",
    "solicitation": "a sales pitch to the business",
    "wrong_number": "wrong number",
    "job_inquiry": "job applicant",
    "other": "call with no sales content",
}
TIMELINE_PHRASES = {
    "immediate": "right away",
    "within_1_month": "within a month",
    "1-3_months": "in 1-3 months",
    "3-6_months": "in 3-6 months",
    "6_plus_months": "6+ months out",
}
# A capitalized place after a preposition, in the original text ("a house in Pasadena",
# "do you work in Castle Rock"). Words that follow "in" but are not places are skipped. A
# possessive is a person's ("out to Maria Gonzalez's house"), and so is a name that runs
# on: the match takes all the capitalized words or none.
_PLACE = re.compile(
    r"\b(?:in|near|around|out to|out in)\s+((?:[A-Z][a-z]+)(?: [A-Z][a-z]+){0,2})"
    r"(?![\w'\u2019]| [A-Z])"
)
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")  # fmt: skip
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_NOT_PLACES = frozenset(
    (*_MONTHS, *_DAYS, "I", "Google", "Indeed", "Facebook", "Yelp", "Spring", "Summer",
     "Fall", "Winter", "The", "A", "An", "Our", "My", "Your", "Doctor", "Dr")
)  # fmt: skip
_WHEN = re.compile(
    r"\b(?:today|tomorrow|tonight|this (?:morning|afternoon|evening|week)|next week|"
    r"(?:next )?(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
    r"(?: (?:morning|afternoon|evening))?|(?:at|between) \d+(?: (?:and|to) \d+)?)\b"
    r"(?![ ,]*\d)"  # not the start of a spoken phone number ("at 5 5 5, 0 1 4 3")
)


@dataclass(frozen=True)
class Findings:
    spam: SpamVerdict
    timeline: TimelineFinding
    budget: BudgetFinding
    appointment: AppointmentFinding
    follow_up: FollowUpFinding


def key_details(call: Call, fields: dict[str, object], f: Findings) -> list[str]:
    details: list[str] = []
    intent, project = fields["intent"], fields["project_type"]
    if intent in ("spam", "solicitation"):
        details += [f"Spam sign: {r}" for r in f.spam.reasons[:3]]
        return _dedupe(details)
    labels = call.lexicon.projects.types
    if project in labels and project not in ("unknown",):
        label = labels[project].label  # type: ignore[index]
        details.append(f"Existing customer: {label}" if intent == "existing_customer" else label)
    if f.timeline.phrase:
        details.append(f'Timeline: "{f.timeline.phrase}"')
    if f.budget.amount is not None:
        details.append(f"Budget: about {format_amount(f.budget.amount)}")
    elif f.budget.phrase:
        details.append(f'Budget: "{f.budget.phrase}"')
    if f.appointment.requested:
        when = _WHEN.findall(f.appointment.turn.norm) if f.appointment.turn else []
        details.append("Appointment requested" + (f" ({' '.join(when[:2])})" if when else ""))
    if f.follow_up.reason:
        details.append(f.follow_up.reason)
    if intent in ("wrong_number", "job_inquiry", "other"):
        return _dedupe(details)[:MAX_DETAILS]
    for cue in call.lexicon.key_details:
        turns = call.turns if cue.side == "any" else call.caller
        if any(cue.pattern.search(u.norm) for u in turns):
            details.append(cue.detail)
    place = _place(call)
    if place:
        details.append(f"Location mentioned: {place}")
    return _dedupe(details)[:MAX_DETAILS]


def _place(call: Call) -> str | None:
    for u in call.caller:
        for m in _PLACE.finditer(u.text):
            words = m.group(1).split()
            if words[0] not in _NOT_PLACES:
                return " ".join(w for w in words if w not in _NOT_PLACES)
    return None


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(i[:80] for i in items))


def summary(fields: dict[str, object], labels: Mapping[str, str], context: CallContext) -> str:
    """One or two sentences from the fields: who, what, qualifiers; then what happens next."""
    intent = str(fields["intent"])
    who = "Returning caller" if context.first_call is False else "Caller"
    if context.answered is False or context.voicemail:
        who = "Voicemail"
    first = f"{who}: {INTENT_PHRASES[intent]}"
    project = str(fields["project_type"])
    if project not in ("unknown", "other") and project in labels:
        label = labels[project]
        first += f" ({label if label.isupper() else label[0].lower() + label[1:]})"
    quals = []
    if fields["timeline"] in TIMELINE_PHRASES:
        quals.append(f"wants it {TIMELINE_PHRASES[str(fields['timeline'])]}")
    if fields["budget_indicator"] != "unknown":
        quals.append(f"{fields['budget_indicator']} budget")
    if fields["urgency"] == "high" and intent not in ("spam", "solicitation"):
        quals.append("urgent")
    if fields["sentiment"] in ("negative", "mixed"):
        quals.append(f"{fields['sentiment']} sentiment")
    if quals:
        first += ", " + ", ".join(quals)
    nxt = []
    if fields["appointment_requested"]:
        nxt.append("appointment requested")
    if fields["follow_up_required"]:
        nxt.append("follow-up needed")
    if not nxt and intent in ("spam", "solicitation", "wrong_number"):
        nxt.append("no action needed")
    second = (" " + "; ".join(nxt).capitalize() + ".") if nxt else ""
    return (first + "." + second)[:600]


def no_transcript_summary(context: CallContext, spam: bool) -> str:
    if spam:
        return "No recording; CallRail flagged the call as spam. No action needed."
    if context.voicemail:
        return (
            "Voicemail with no recording or no speech. Call back: the caller's reason is unknown."
        )
    if context.answered is False:
        return "Missed call with no recording. Call back: the caller's reason is unknown."
    return "Answered call with no recording or no speech; nothing to analyze."
