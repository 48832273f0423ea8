"""Lead qualifiers: timeline, budget, sentiment and urgency."""

from __future__ import annotations

from dataclasses import dataclass

from callpipe.analysis import Budget, Intent, ProjectType, Sentiment, Timeline, Urgency
from callpipe.analyzers.evidence import Call, any_match, cue_found, weigh
from callpipe.analyzers.money import Amount, find_amounts
from callpipe.analyzers.scoring import SALE_INTENTS
from callpipe.analyzers.text import Utterance, negated

# Intents whose timeline can come from the booked visit: for a repair or a maintenance
# visit, the visit is the work.
VISIT_IS_THE_WORK: frozenset[Intent] = frozenset(
    {"service_request", "existing_customer", "appointment_request"}
)
# A complaint's time phrases are about what went wrong ("falling apart after 2 months").
TIMELINE_INTENTS: frozenset[Intent] = SALE_INTENTS | {"existing_customer"}
NOT_A_CUSTOMER: frozenset[Intent] = frozenset(
    {"spam", "solicitation", "wrong_number", "job_inquiry", "other"}
)


@dataclass(frozen=True)
class TimelineFinding:
    timeline: Timeline
    phrase: str | None  # the caller's words, for key_details


def find_timeline(call: Call, visit: Utterance | None, intent: Intent) -> TimelineFinding:
    """The caller's first timeline phrase (people answer "when?" with the start); else, for
    a repair or a visit, when the visit is."""
    lex = call.lexicon.timeline
    if intent not in TIMELINE_INTENTS:
        return TimelineFinding("unknown", None)
    for u in call.caller:
        found: list[tuple[int, int, int, Timeline, str]] = []
        for rank, (bucket, patterns) in enumerate(lex.buckets.items()):
            for p in patterns:
                for m in p.finditer(u.norm):
                    window = u.norm[max(0, m.start() - 12) : m.end() + 6]
                    # "last year" and "2 years ago" say nothing about when. Negation only
                    # undoes "now" ("not an emergency", "not today"): "not for a couple
                    # of years" still says a couple of years.
                    denied = bucket == "immediate" and negated(u.norm, m.start())
                    if not lex.past.search(window) and not denied:
                        found.append((m.start(), -len(m.group()), rank, bucket, m.group()))
        if found:
            *_, bucket, phrase = min(found)
            return TimelineFinding(bucket, phrase)
    if visit is not None and intent in VISIT_IS_THE_WORK:
        for bucket, p in lex.visit_when.items():
            if p.search(visit.norm):
                return TimelineFinding(bucket, None)
    return TimelineFinding("unknown", None)


@dataclass(frozen=True)
class BudgetFinding:
    budget: Budget
    amount: Amount | None
    phrase: str | None


def find_budget(call: Call, intent: Intent) -> BudgetFinding:
    """The caller's first stated amount, else budget words. Prices the business quotes are
    not the caller's budget: the caller has not agreed to spend them."""
    if intent not in SALE_INTENTS:
        return BudgetFinding("unknown", None, None)
    lex = call.lexicon.budget
    for u in call.caller:
        amounts = find_amounts(u.norm, lex)
        if amounts:
            a = amounts[0]
            level: Budget = (
                "high"
                if a.value >= lex.high_from
                else "medium"
                if a.value >= lex.medium_from
                else "low"
            )
            return BudgetFinding(level, a, None)
    for u in call.caller:
        for level, patterns in lex.words.items():
            m = any_match(patterns, u.norm)
            if m:
                return BudgetFinding(level, None, m.group())
    return BudgetFinding("unknown", None, None)


def find_sentiment(call: Call, intent: Intent) -> Sentiment:
    """The caller's, from their own words; a recording or a pitch has none worth reporting."""
    if intent in ("spam", "solicitation"):
        return "neutral"
    lex = call.lexicon.sentiment
    positive = negative = 0.0
    for u in call.caller:
        norm = lex.polite.sub(" ", u.norm)
        for cue in lex.positive:
            for m in cue.pattern.finditer(norm):
                # "not happy" is unhappy; counted once per cue and turn, like the others.
                if cue.negatable and negated(norm, m.start()):
                    negative += cue.weight
                else:
                    positive += cue.weight
                break
        for cue in lex.negative:
            if cue_found(cue, norm) is not None:
                negative += cue.weight
    strong_pos, strong_neg = positive >= lex.strong, negative >= lex.strong
    if strong_pos and strong_neg:
        return "mixed"
    if strong_neg:
        return "negative"
    if strong_pos:
        return "positive"
    return "neutral"


def find_urgency(
    call: Call, intent: Intent, timeline: Timeline, project_type: ProjectType
) -> Urgency:
    if intent in NOT_A_CUSTOMER:
        return "low"
    lex = call.lexicon.urgency
    if intent == "complaint":
        return "high" if weigh(lex.escalation, call.caller) >= 1.0 else "medium"
    emergency = weigh(lex.emergency, call.caller) >= 1.0
    calm = any(any_match(lex.calm, u.norm) for u in call.caller)
    if emergency and not calm:
        return "high"
    if calm:
        return "medium" if timeline in ("immediate", "within_1_month") else "low"
    if timeline == "6_plus_months":
        return "low"
    if intent == "information_request" and project_type == "unknown":
        return "low"
    return "medium"
