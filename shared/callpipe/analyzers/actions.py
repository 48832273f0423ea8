"""What the call leads to: an appointment, a follow-up."""

from __future__ import annotations

from dataclasses import dataclass

from callpipe.analysis import Intent
from callpipe.analyzers.evidence import Call, any_match
from callpipe.analyzers.text import Utterance, negated


@dataclass(frozen=True)
class AppointmentFinding:
    requested: bool
    turn: Utterance | None  # the turn that says when (the offer, or the caller's request)
    by_caller: bool


def accepted(call: Call, offer: Utterance) -> bool:
    """The caller's next turn takes what the agent offered."""
    reply = call.next_caller_turn(offer)
    if reply is None:
        return False
    lex = call.lexicon.appointment
    return bool(lex.accept.search(reply.norm)) and not lex.decline.search(reply.norm)


def find_appointment(call: Call) -> AppointmentFinding:
    """A visit asked for by the caller, or offered by the agent with a time and accepted.
    An offer without a time ("we can set up a site visit") is not an appointment yet. The
    accepted offer is the turn that says when, so it is preferred to the caller's request."""
    lex = call.lexicon.appointment
    request: Utterance | None = None
    for u in call.turns:
        if u.role == "caller":
            if request is None:
                for p in lex.caller_request:
                    m = p.search(u.norm)
                    if m and not negated(u.norm, m.start()):
                        request = u
                        break
        elif (
            any_match(lex.visit, u.norm)
            and lex.when.search(u.norm)
            and not lex.no_visit.search(u.norm)
            and accepted(call, u)
        ):
            return AppointmentFinding(True, u, request is not None)
    if request is not None:
        return AppointmentFinding(True, request, True)
    return AppointmentFinding(False, None, False)


@dataclass(frozen=True)
class FollowUpFinding:
    required: bool
    reason: str | None  # for key_details: "Callback requested", "Business to send estimate"…


def find_follow_up(call: Call, intent: Intent) -> FollowUpFinding:
    if intent in ("spam", "solicitation", "wrong_number"):
        return FollowUpFinding(False, None)
    ctx, lex = call.context, call.lexicon.follow_up
    for u in call.caller:
        if any_match(lex.caller_request, u.norm):
            return FollowUpFinding(True, "Callback requested")
    if ctx.answered is False or ctx.voicemail:
        return FollowUpFinding(True, "Voicemail: call back")
    if intent == "complaint":
        return FollowUpFinding(True, "Complaint to resolve")
    for u in call.turns[-2:]:
        if lex.dropped.search(u.norm):
            return FollowUpFinding(True, "Call dropped: call back")
    for u in call.agent:
        m = any_match(lex.agent_promise, u.norm)
        if m:
            return FollowUpFinding(True, _promise_reason(m.group()))
        if any_match(lex.agent_offer, u.norm) and _offer_taken(call, u):
            return FollowUpFinding(True, _promise_reason(u.norm))
    return FollowUpFinding(False, None)


def _offer_taken(call: Call, offer: Utterance) -> bool:
    reply = call.next_caller_turn(offer)
    lex = call.lexicon.appointment
    return (
        reply is not None
        and bool(lex.accept.search(reply.norm))
        and not (lex.decline.search(reply.norm))
    )


def _promise_reason(words: str) -> str:
    if "email" in words or "send" in words:
        return "Business to send information"
    if "text" in words:
        return "Business to text information"
    return "Business to call back"
