"""The rule-based analyzer's lead score: how likely the call is to become new, paid work.

    score = clamp(1, 100,
                  base[intent]
                  + sale * (project + budget[budget] + timeline[timeline]
                            + appointment + first_call)
                  + missed_call
                  - round(50 * spam_likelihood))

Term by term:

- ``base[intent]``: where a call starts. A new-sale intent (quote, appointment, service or
  information request) starts at 40; existing customers 25 (service work, rarely a new sale),
  complaints 15, ``other`` 10, applicants and wrong numbers 5, solicitations 3, spam 1.
- ``sale`` is 1 for the new-sale intents and 0 otherwise: the qualifying terms below only
  count for someone who might buy (an existing customer booking a warranty visit is not a
  hot lead, however soon the visit).
- ``project``: +5 when a project type is known (not ``unknown``/``other``): the caller said
  what they want.
- ``budget``: high +18, medium +15, low +3, unknown 0. Any stated budget shows intent to
  spend; a larger one is worth more to the business.
- ``timeline``: immediate, within 1 month and 1-3 months +15; 3-6 months +3; unknown 0;
  6+ months -10 (a tire-kicker: worth a note, not a call today).
- ``appointment``: +15 when a visit or consultation was requested or booked: the strongest
  sign of a real lead. It is never negative, so asking for an appointment never lowers a
  score.
- ``first_call``: +3 for a first-time caller (a new lead rather than a repeat call).
- ``missed_call``: +10 for an unanswered call with no recording (or no speech) that is not
  spam: someone tried to reach the business and nothing else is known, so it scores above
  noise but stays low. A voicemail with speech is scored from what it says instead.
- ``spam``: minus up to 50 by spam likelihood, so a pitch that slipped through as a "quote
  request" still sinks.

The numbers make the bands mean something. The three qualifiers are a timeline within 3
months (+15), an appointment (+15) and a budget of medium or more (+15/+18); the rest
(project +5, first call +3, 3-6 months +3, low budget +3) is at most +14 beside one of them.
So a new-sale call with one qualifier scores at most 40 + 18 + 11 = 69 (``medium``), any two
qualifiers reach 40 + 15 + 15 = 70 (``high``), and non-sales calls stay under 40 (``low``):
``tests/unit/test_rules_analyzer.py`` checks this over every combination.
"""

from __future__ import annotations

from dataclasses import dataclass

from callpipe.analysis import Budget, Intent, ProjectType, Timeline

SALE_INTENTS: frozenset[Intent] = frozenset(
    {"quote_request", "appointment_request", "service_request", "information_request"}
)
BASE: dict[Intent, int] = {
    "quote_request": 40,
    "appointment_request": 40,
    "service_request": 40,
    "information_request": 40,
    "existing_customer": 25,
    "complaint": 15,
    "other": 10,
    "job_inquiry": 5,
    "wrong_number": 5,
    "solicitation": 3,
    "spam": 1,
}
PROJECT_KNOWN = 5
BUDGET: dict[Budget, int] = {"high": 18, "medium": 15, "low": 3, "unknown": 0}
TIMELINE: dict[Timeline, int] = {
    "immediate": 15,
    "within_1_month": 15,
    "1-3_months": 15,
    "3-6_months": 3,
    "6_plus_months": -10,
    "unknown": 0,
}
APPOINTMENT = 15
FIRST_CALL = 3
MISSED_CALL = 10
SPAM_PENALTY = 50


@dataclass(frozen=True)
class ScoreInputs:
    intent: Intent
    project_type: ProjectType
    budget: Budget
    timeline: Timeline
    appointment_requested: bool
    first_call: bool
    missed: bool  # unanswered and nothing recorded (see missed_call)
    spam_likelihood: float


def score_terms(x: ScoreInputs) -> dict[str, int]:
    """Each term of the formula (zero terms included), for explanations and tests."""
    sale = x.intent in SALE_INTENTS
    return {
        "base": BASE[x.intent],
        "project": PROJECT_KNOWN if sale and x.project_type not in ("unknown", "other") else 0,
        "budget": BUDGET[x.budget] if sale else 0,
        "timeline": TIMELINE[x.timeline] if sale else 0,
        "appointment": APPOINTMENT if sale and x.appointment_requested else 0,
        "first_call": FIRST_CALL if sale and x.first_call else 0,
        "missed_call": MISSED_CALL if x.missed and x.intent not in ("spam", "solicitation") else 0,
        "spam": -round(SPAM_PENALTY * x.spam_likelihood),
    }


def lead_score(x: ScoreInputs) -> int:
    return max(1, min(100, sum(score_terms(x).values())))


def lead_band(score: int) -> str:
    """The bands the labelled set and the benchmark use."""
    return "high" if score >= 70 else "medium" if score >= 40 else "low"
