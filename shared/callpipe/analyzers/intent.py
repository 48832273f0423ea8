"""Intent and project type.

Intent is decided in a fixed order, from the calls that are clearly *not* leads to the
kinds of lead, because the cheap mistakes differ: calling a robocall a quote request wastes
a salesperson's callback, while calling a homeowner "other" loses a job. So spam, wrong
numbers, applicants and suppliers must each be unambiguous, and everything with a project in
it falls through to a lead intent.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from callpipe.analysis import Intent, ProjectType
from callpipe.analyzers.evidence import Call, weigh, weigh_call
from callpipe.analyzers.lexicon import IntentGroup
from callpipe.analyzers.spam import SpamVerdict
from callpipe.analyzers.text import normalize

# Intents about a project or a job of the caller's: the ones that get a project type,
# timeline and appointment.
PROJECT_INTENTS: frozenset[Intent] = frozenset(
    {
        "quote_request",
        "appointment_request",
        "service_request",
        "information_request",
        "existing_customer",
        "complaint",
    }
)


@dataclass(frozen=True)
class IntentEvidence:
    """Caller-side evidence points per cue group (agent-only groups: agent turns)."""

    points: dict[IntentGroup, float]

    def __getitem__(self, group: IntentGroup) -> float:
        return self.points.get(group, 0.0)


def intent_evidence(call: Call) -> IntentEvidence:
    groups = call.lexicon.intents
    points: dict[IntentGroup, float] = {}
    for group, cues in groups.items():
        side = call.agent if group.endswith("_agent") else call.caller
        points[group] = weigh(cues, side)
    return IntentEvidence(points)


def classify_intent(call: Call, spam: SpamVerdict, ev: IntentEvidence, project: bool) -> Intent:
    if spam.is_spam(call.lexicon):
        # A recording, or a single voice, is spam; a pitch in a conversation is a salesperson.
        return "spam" if spam.robocall or call.speaker_count < 2 else "solicitation"
    asks = ev["price_ask"] + ev["desire"]
    # "I need to reschedule my cleaning" is a need, just not one for this business: strong
    # wrong-number evidence (both sides say so) wins over it.
    wrong = ev["wrong_number"] + ev["wrong_number_agent"]
    if wrong >= 2.0 or (wrong >= 1.0 and asks < 1.0):
        return "wrong_number"
    if ev["job"] >= 1.0 and ev["price_ask"] < 0.8:
        return "job_inquiry"
    if ev["vendor"] >= max(1.0, asks):
        return "other"
    existing = ev["existing"] + ev["existing_agent"] >= 1.0
    returning = existing or call.context.first_call is False
    if ev["complaint"] >= 2.5 or (ev["complaint"] >= 1.5 and returning):
        return "complaint"
    # An existing customer with a new project ("you did our bathroom, now the kitchen") is a
    # new sale; one with something broken or a question about their job is not.
    new_project = ev["price_ask"] >= 0.8 or (ev["desire"] >= 1.0 and ev["problem"] < 0.8)
    if existing and not new_project:
        return "existing_customer"
    no_price = ev["price_ask"] < 0.8
    if ev["info"] >= 1.0 and no_price and ev["problem"] < 0.8 and ev["desire"] <= ev["info"]:
        return "information_request"
    if ev["appointment"] >= 1.0 and no_price and ev["problem"] < 0.8:
        return "appointment_request"
    if ev["problem"] >= 0.8 and no_price:
        return "service_request"
    if ev["price_ask"] >= 0.8 or (ev["desire"] >= 1.0 and project):
        return "quote_request"
    if ev["info"] >= 0.7:
        return "information_request"
    if ev["desire"] >= 1.0 or project:
        return "quote_request"
    return "other"


def project_scores(call: Call) -> dict[ProjectType, float]:
    lex = call.lexicon.projects
    scores: dict[ProjectType, float] = defaultdict(float)
    for ptype, pc in lex.types.items():
        scores[ptype] = weigh_call(pc.cues, call, call.content)
    # Cabinets or countertops alone are their own trade; with a whole-kitchen cue from the
    # caller they are part of the kitchen remodel.
    if scores["cabinets_countertops"] > 0:
        whole_kitchen = any(
            lex.kitchen_scope.search(u.norm) for u in call.content if u.role == "caller"
        )
        if whole_kitchen:
            scores["kitchen"] += scores.pop("cabinets_countertops")
        else:
            scores["cabinets_countertops"] += scores.pop("kitchen", 0.0)
    return dict(scores)


def classify_project(call: Call) -> ProjectType:
    scores = project_scores(call)
    best: ProjectType = max(scores, key=lambda p: scores[p], default="unknown")
    if scores.get(best, 0.0) >= call.lexicon.projects.min_evidence:
        return best
    return business_trade(call)


def business_trade(call: Call) -> ProjectType:
    """The trade in the business's name when it names exactly one ("Summit Roofing"): a
    caller with a leak who never says "roof" is calling a roofer about the roof."""
    name = call.context.business_name
    if not name:
        return "unknown"
    norm = normalize(name)
    trades = [
        ptype
        for ptype, pc in call.lexicon.projects.types.items()
        if ptype != "other" and any(c.pattern.search(norm) for c in pc.cues if c.weight >= 1.0)
    ]
    return trades[0] if len(trades) == 1 else "unknown"


def has_project_evidence(call: Call) -> bool:
    scores = project_scores(call)
    return max(scores.values(), default=0.0) >= call.lexicon.projects.min_evidence
