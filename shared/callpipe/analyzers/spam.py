"""Spam likelihood: robocalls, scams and sales pitches to the business.

Each sign found is a reason with a weight; the likelihood is a noisy-or of the weights,
1 - prod(1 - w_i), so independent signs add up without passing 1 and one weak sign
("guaranteed") stays weak. CallRail's own spam flag is one sign among the others. A two-way
conversation in which the caller asks about a project of their own halves the likelihood:
CallRail flags by number reputation and a homeowner can mention "press 1", and a real
lead thrown away costs more than a pitch kept.
"""

from __future__ import annotations

from dataclasses import dataclass

from callpipe.analyzers.evidence import Call, weigh
from callpipe.analyzers.lexicon import Lexicon


@dataclass(frozen=True)
class SpamVerdict:
    likelihood: float
    reasons: list[str]
    robocall: bool  # automated (intent "spam") rather than a live pitch ("solicitation")

    def is_spam(self, lexicon: Lexicon) -> bool:
        return self.likelihood >= lexicon.spam.threshold


def _noisy_or(weights: list[float]) -> float:
    remaining = 1.0
    for w in weights:
        remaining *= 1.0 - min(max(w, 0.0), 1.0)
    return round(1.0 - remaining, 3)


def flag_only(callrail_spam: bool | None, lexicon: Lexicon) -> SpamVerdict:
    """For a call without a transcript: CallRail's flag is all there is."""
    if callrail_spam:
        return SpamVerdict(
            lexicon.spam.callrail_flag_weight, ["CallRail flagged the call as spam"], False
        )
    return SpamVerdict(0.0, [], False)


def assess(call: Call) -> SpamVerdict:
    spam = call.lexicon.spam
    weights: list[float] = []
    reasons: list[str] = []
    robocall = False
    # Caller side only: the spammer is the one calling ("congratulations on the new home"
    # from the agent is not a prize pitch).
    for sign in spam.signs:
        if any(sign.pattern.search(u.norm) for u in call.caller):
            weights.append(sign.weight)
            reasons.append(sign.reason)
            robocall = robocall or sign.robocall
    for sign in spam.agent_signs:
        if any(sign.pattern.search(u.norm) for u in call.agent):
            weights.append(sign.weight)
            reasons.append(sign.reason)
    # A single voice talking at length on an answered call is a recording, not a homeowner.
    # Only when the transcriber keeps voices apart: diarization "none" puts everyone in one
    # speaker, and "clustering" (the local engine on mono audio) can merge two voices of
    # the same pitch. Not on an outbound call either: there the one voice is the business's
    # message on someone's voicemail, or their greeting, never a robocall to the business.
    if (
        call.context.answered is not False
        and not call.context.voicemail
        and call.context.direction != "outbound"
        and call.voices_separated
        and call.speaker_count == 1
        and call.caller_words >= spam.monologue.min_words
    ):
        weights.append(spam.monologue.weight)
        reasons.append(f"one speaker talking for {call.caller_words} words on an answered call")
        robocall = True
    if call.context.callrail_spam:
        weights.append(spam.callrail_flag_weight)
        reasons.append("CallRail flagged the call as spam")
    likelihood = _noisy_or(weights)
    if likelihood and call.speaker_count > 1 and _discusses_project(call):
        # A two-way conversation in which the caller asks about a project of theirs: the
        # signs are more likely incidental ("your line said press 1 for service").
        likelihood = round(likelihood / 2, 3)
    return SpamVerdict(likelihood, reasons[:10], robocall)


def _discusses_project(call: Call) -> bool:
    """The caller asks for a price, wants work done or reports a problem, about a trade."""
    intents = call.lexicon.intents
    asks = weigh(intents["price_ask"], call.caller) + weigh(intents["desire"], call.caller)
    if asks + weigh(intents["problem"], call.caller) < 1.0:
        return False
    trades = call.lexicon.projects
    caller_trade = max((weigh(pc.cues, call.caller) for pc in trades.types.values()), default=0.0)
    return caller_trade >= trades.min_evidence
