"""The rule-based analyzer: accuracy on the labelled set's train split, and the rules that are
easy to get wrong (negation, whose words count, money, phone numbers, spam signs, calls
without a transcript, the lead-score formula), plus ``callpipe analyze`` on a file."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import get_args

import pytest
import typer
from pydantic import ValidationError
from typer.testing import CliRunner

from callpipe.analysis import (
    AnalysisResult,
    Budget,
    CallAnalysis,
    CallContext,
    Intent,
    ProjectType,
    Timeline,
)
from callpipe.analyzers import scoring
from callpipe.analyzers.evaluation import FIELDS, evaluate, load_labelled
from callpipe.analyzers.lexicon import Lexicon, load_lexicon
from callpipe.analyzers.money import find_amounts
from callpipe.analyzers.rules import RuleBasedAnalyzer
from callpipe.analyzers.text import normalize, utterances
from callpipe.cli.analyze import analyze, transcript_from_text
from callpipe.transcripts import Transcript, TranscriptSegment

LABELLED = Path(__file__).resolve().parents[1] / "data/analysis/labelled_calls.jsonl"

# Minimum per-field accuracy on the train split. The rules were tuned on train and score
# 100% there; the first run on the held-out test split scored 92-100% per field (96%
# overall). These floors sit at the held-out level: a lexicon change may cost a call or
# three, not a whole category.
TRAIN_THRESHOLDS = {
    "intent": 0.90,
    "project_type": 0.90,
    "timeline": 0.85,
    "budget_indicator": 0.90,
    "sentiment": 0.85,
    "urgency": 0.85,
    "appointment_requested": 0.90,
    "follow_up_required": 0.90,
    "spam": 1.00,
    "lead_band": 0.85,
}


@pytest.fixture(scope="module")
def analyzer() -> RuleBasedAnalyzer:
    return RuleBasedAnalyzer()


def transcript(*turns: tuple[str, str], diarization: str = "channel") -> Transcript:
    segments = [
        TranscriptSegment(speaker=speaker, start=i * 3.0, end=i * 3.0 + 2.5, text=text)
        for i, (speaker, text) in enumerate(turns)
    ]
    return Transcript(
        segments=segments,
        text=Transcript.render_text(segments),
        language="en-US",
        audio_duration_seconds=len(turns) * 3.0,
        engine="test",
        model="test",
        diarization=diarization,  # type: ignore[arg-type]
        speaker_count=len({s.speaker for s in segments}),
    )


def run(analyzer: RuleBasedAnalyzer, *turns: tuple[str, str], **context: object) -> CallAnalysis:
    ctx = CallContext.model_validate({"answered": True, **context})
    return analyzer.analyze(transcript(*turns), ctx).analysis


def quote_call(analyzer: RuleBasedAnalyzer, caller_says: str, **context: object) -> CallAnalysis:
    return run(
        analyzer,
        ("agent", "Thanks for calling, this is Sam, how can I help?"),
        ("caller", caller_says),
        **context,
    )


# --- the labelled set ---------------------------------------------------------------------


def test_labelled_set_is_large_varied_and_has_a_held_out_split() -> None:
    calls = load_labelled(LABELLED)
    assert len(calls) >= 30
    test = [c for c in calls if c.split == "test"]
    assert len(test) / len(calls) >= 0.25
    intents = {c.expected.get("intent") for c in calls}
    assert {"quote_request", "service_request", "spam", "solicitation", "wrong_number"} <= intents
    assert {"existing_customer", "complaint", "job_inquiry", "other"} <= intents
    assert len({c.expected.get("project_type") for c in calls}) >= 14
    assert any(c.transcript is None for c in calls)
    assert any(c.transcript and c.transcript.speaker_count == 1 for c in calls)  # voicemails
    assert any(c.transcript and c.transcript.diarization == "clustering" for c in calls)


def test_train_split_meets_the_accuracy_floors(analyzer: RuleBasedAnalyzer) -> None:
    train = [c for c in load_labelled(LABELLED) if c.split == "train"]
    report = evaluate(analyzer, train)
    below = {
        f: report.accuracy(f) for f in FIELDS if (report.accuracy(f) or 0.0) < TRAIN_THRESHOLDS[f]
    }
    misses = [(c["id"], c["misses"]) for c in report.calls if c["misses"]]
    assert not below, f"below the floor: {below}; misses: {misses}"
    assert report.spam_precision == 1.0
    assert report.spam_recall == 1.0


def test_every_labelled_call_gives_a_valid_analysis(analyzer: RuleBasedAnalyzer) -> None:
    for call in load_labelled(LABELLED):
        result = analyzer.analyze(call.transcript, call.context)
        assert result.engine == "rules"
        assert result.model == "callpipe-rules-1"
        assert result.input_tokens is None
        assert result.output_tokens is None
        CallAnalysis.model_validate(result.analysis.model_dump())  # limits hold


def test_summaries_and_details_carry_no_names_or_phone_numbers(
    analyzer: RuleBasedAnalyzer,
) -> None:
    names = set()
    for call in load_labelled(LABELLED):
        if call.transcript is None:
            continue
        for seg in call.transcript.segments:
            for m in re.finditer(r"(?:this is|my name is|[Hh]i|[Hh]ey) ([A-Z][a-z]+)", seg.text):
                names.add(m.group(1))
        a = analyzer.analyze(call.transcript, call.context).analysis
        out = " ".join([a.summary, *a.key_details])
        assert not re.search(r"\d[\d ,.-]{6,}\d", out), (call.id, out)
        leaked = {n for n in names if re.search(rf"\b{n}\b", out)}
        assert not leaked, (call.id, leaked, out)


# --- text normalization and money ---------------------------------------------------------


@pytest.mark.parametrize(
    ("spoken", "normalized"),
    [
        ("forty thousand", "40000"),
        ("twenty four hundred square feet", "2400 square feet"),
        ("two hundred and fifty thousand", "250000"),
        ("between forty and fifty thousand", "between 40 and 50000"),
        ("a month or two", "a month or 2"),
        ("press one now", "press 1 now"),
        ("the one bathroom, no one called", "the one bathroom, no one called"),
        ("a walk-in shower", "a walk in shower"),
    ],
)
def test_spoken_numbers_become_digits(spoken: str, normalized: str) -> None:
    assert normalize(spoken) == normalized


@pytest.mark.parametrize(
    "said",
    [
        "call me back at 555-212-4489",
        "call me back at (555) 212 4489",
        "six two six, five five five, zero one four three",
        "5552124489",
    ],
)
def test_phone_numbers_are_masked(said: str) -> None:
    assert "phone" in normalize(said)
    assert not re.search(r"\d{3}", normalize(said))


@pytest.mark.parametrize(
    ("said", "low", "high"),
    [
        ("our budget is $40,000", 40000, 40000),
        ("about 40k", 40000, 40000),
        ("around eight grand", 8000, 8000),
        ("somewhere between forty and fifty thousand dollars", 40000, 50000),
        ("thirty to forty thousand", 30000, 40000),
        ("maybe ten, twelve thousand dollars", 10000, 12000),
        ("$30k to $40k", 30000, 40000),
        ("two hundred thousand", 200000, 200000),
        ("seventy five hundred dollars", 7500, 7500),
        ("about two thousand", 2000, 2000),  # round: money, not the year 2000
        ("we were thinking 2500", 2500, 2500),
        ("we built it in 1978 for $1,978", 1978, 1978),  # with a "$" a year-like number is money
        ("maybe 20000 down the road", 20000, 20000),  # "down the road" is no street
    ],
)
def test_money_amounts(said: str, low: float, high: float) -> None:
    amounts = find_amounts(normalize(said), load_lexicon(1).budget)
    assert [(a.low, a.high) for a in amounts] == [(low, high)]


@pytest.mark.parametrize(
    "said",
    [
        "it's about twelve hundred square feet",
        "a fifty gallon water heater",
        "a two thousand square foot ranch",
        "we paid them nine thousand dollars",
        "five to eight dollars a square foot",
        "it was fifty eight degrees this morning",
        "call me at 555 212 4489",
        "a hundred amp panel",
        "the house was built in 1978",
        "we bought the house in 2019",
        "it's a 2004 carrier",
        "the roof went on in 2000",
        "from 2019 to 2021 we rented it out",
        "we're at 2150 maple avenue",
        "it's 1423 north oak street",
        "my zip code is 80104",
        "the model number is 4512",
    ],
)
def test_not_money(said: str) -> None:
    assert find_amounts(normalize(said), load_lexicon(1).budget) == []


@pytest.mark.parametrize(
    ("said", "budget"),
    [
        ("I want a new kitchen, our budget is $40,000.", "high"),
        ("I want a new kitchen, we were thinking forty thousand.", "high"),
        ("I want to redo the bathroom for about fifteen thousand.", "medium"),
        ("I want to redo the bathroom, I have maybe eight grand.", "low"),
        ("I want to redo the bathroom, we're on a tight budget.", "low"),
        ("I want a new deck and money isn't really an issue.", "high"),
        ("I want a new deck, please call me back at 555 212 4489.", "unknown"),
    ],
)
def test_budget_from_the_callers_words(
    analyzer: RuleBasedAnalyzer, said: str, budget: Budget
) -> None:
    assert quote_call(analyzer, said).budget_indicator == budget


def test_a_street_address_is_neither_the_budget_nor_a_key_detail(
    analyzer: RuleBasedAnalyzer,
) -> None:
    a = run(
        analyzer,
        ("agent", "Summit Roofing, this is Carlos, how can I help?"),
        ("caller", "Water is pouring through my ceiling! It's 1423 Oak Street, please hurry."),
    )
    assert a.intent == "service_request" and a.urgency == "high"
    assert a.budget_indicator == "unknown"
    assert not any("1423" in detail or "1,423" in detail for detail in a.key_details)


def test_a_price_the_agent_quotes_is_not_the_callers_budget(analyzer: RuleBasedAnalyzer) -> None:
    a = run(
        analyzer,
        ("agent", "Thanks for calling, how can I help?"),
        ("caller", "How much would a new roof cost on a ranch house?"),
        ("agent", "Usually twelve to sixteen thousand dollars."),
        ("caller", "Okay, thanks."),
    )
    assert a.intent == "quote_request"
    assert a.budget_indicator == "unknown"


# --- timeline, negation, urgency ----------------------------------------------------------


@pytest.mark.parametrize(
    ("phrase", "timeline"),
    [
        ("we need it ASAP", "immediate"),
        ("we want it done this week", "immediate"),
        ("in the next couple of weeks", "within_1_month"),
        ("we'd like to start next month", "1-3_months"),
        ("in a month or two", "1-3_months"),
        ("in the spring", "3-6_months"),
        ("in three or four months", "3-6_months"),
        ("sometime next year", "6_plus_months"),
        ("not for a couple of years", "6_plus_months"),
        ("you did our bathroom last year", "unknown"),
        ("it is not an emergency", "unknown"),
    ],
)
def test_timeline_phrases(analyzer: RuleBasedAnalyzer, phrase: str, timeline: Timeline) -> None:
    a = quote_call(analyzer, f"I'd like a quote on new windows, {phrase}.")
    assert a.timeline == timeline


def test_the_callers_first_timeline_phrase_wins(analyzer: RuleBasedAnalyzer) -> None:
    said = (
        "We want to start the kitchen in three months, so it's done before the holidays next year."
    )
    assert quote_call(analyzer, said).timeline == "3-6_months"


@pytest.mark.parametrize(
    "calm",
    ["we're not in a hurry", "there's no rush", "it's not urgent", "it's nothing urgent"],
)
def test_calm_words_make_urgency_low(analyzer: RuleBasedAnalyzer, calm: str) -> None:
    a = quote_call(analyzer, f"I'd like a quote on painting the house, {calm}.")
    assert a.urgency == "low"


def test_negated_emergency_is_not_urgent(analyzer: RuleBasedAnalyzer) -> None:
    a = quote_call(
        analyzer, "My kitchen sink drains slowly. It's not an emergency, whenever you can."
    )
    assert a.intent == "service_request"
    assert a.urgency != "high"


@pytest.mark.parametrize(
    "emergency",
    [
        "water is pouring through the ceiling",
        "we have no heat and it's freezing",
        "the AC is not cooling and it's a hundred degrees",
        "the basement is flooding",
    ],
)
def test_emergencies_are_urgent(analyzer: RuleBasedAnalyzer, emergency: str) -> None:
    a = quote_call(analyzer, f"Hi, {emergency}, can you send someone?")
    assert a.urgency == "high"
    assert a.intent == "service_request"


def test_negated_positive_words_are_negative(analyzer: RuleBasedAnalyzer) -> None:
    a = run(
        analyzer,
        ("agent", "Thanks for calling, this is Sam."),
        (
            "caller",
            "You guys installed our windows and I'm not happy, they leak and nobody has called me back.",
        ),
        first_call=False,
    )
    assert a.sentiment == "negative"
    assert a.intent == "complaint"
    assert a.follow_up_required


def test_courtesy_is_not_enthusiasm(analyzer: RuleBasedAnalyzer) -> None:
    a = quote_call(analyzer, "I'd like a quote for a new deck. A call back would be great.")
    assert a.sentiment == "neutral"


def test_strong_feelings_both_ways_are_mixed(analyzer: RuleBasedAnalyzer) -> None:
    a = quote_call(
        analyzer,
        "The last contractor ripped us off and I'm so angry, but you've been so helpful, "
        "I really appreciate it. We need the bathroom redone.",
    )
    assert a.sentiment == "mixed"


# --- whose words count --------------------------------------------------------------------


def test_the_agents_trades_are_not_the_callers_project(analyzer: RuleBasedAnalyzer) -> None:
    a = run(
        analyzer,
        ("agent", "Summit Home, we do roofing, siding, windows and gutters. How can I help?"),
        ("caller", "Hi, I want to redo my kitchen, new cabinets and an island."),
        ("agent", "Our roofing crew is busy but our kitchen designer can help."),
        business_name="Summit Home",
    )
    assert a.project_type == "kitchen"


def test_the_business_name_is_not_the_callers_project(analyzer: RuleBasedAnalyzer) -> None:
    a = run(
        analyzer,
        ("agent", "Oakline Kitchen and Bath, this is Megan."),
        ("caller", "Hi, what are your showroom hours on Saturday?"),
        business_name="Oakline Kitchen & Bath",
    )
    assert a.intent == "information_request"
    assert a.project_type == "unknown"


def test_a_single_trade_business_name_fills_in_an_unnamed_project(
    analyzer: RuleBasedAnalyzer,
) -> None:
    a = run(
        analyzer,
        ("agent", "Summit Roofing, this is Carlos."),
        ("caller", "Water is dripping through my bedroom ceiling, I need somebody out here today."),
        business_name="Summit Roofing",
    )
    assert a.project_type == "roofing"


def test_agent_congratulations_are_not_a_spam_sign(analyzer: RuleBasedAnalyzer) -> None:
    a = run(
        analyzer,
        ("agent", "Congratulations on the new home! What are you looking to do?"),
        ("caller", "We want new windows, about twelve of them."),
    )
    assert a.spam_likelihood == 0
    assert a.intent == "quote_request"


def test_diarized_speakers_get_roles_from_the_greeting() -> None:
    t = transcript(
        ("speaker_1", "Hello?"),
        ("speaker_2", "Hi, this is Dana from Bright Baths returning your call."),
        ("speaker_1", "Oh yes, we want a walk in shower."),
        diarization="clustering",
    )
    roles = [u.role for u in utterances(t, CallContext(direction="outbound"))]
    assert roles == ["caller", "agent", "caller"]


def test_without_a_greeting_the_first_speaker_answers_an_inbound_call() -> None:
    t = transcript(
        ("speaker_1", "Hello."), ("speaker_2", "Hi, I need a quote."), diarization="clustering"
    )
    roles = [u.role for u in utterances(t, CallContext(direction="inbound"))]
    assert roles == ["agent", "caller"]


# --- appointments and follow-ups ----------------------------------------------------------


def test_an_accepted_visit_with_a_time_is_an_appointment(analyzer: RuleBasedAnalyzer) -> None:
    a = run(
        analyzer,
        ("agent", "Thanks for calling, this is Sam."),
        ("caller", "We'd like a quote for a new patio."),
        ("agent", "I can come out Friday afternoon to measure."),
        ("caller", "Friday afternoon is perfect."),
    )
    assert a.appointment_requested


@pytest.mark.parametrize(
    ("ask", "offer"),
    [
        # the caller books, with words between "my" and the visit
        ("I'd like to schedule my annual furnace tune-up, sometime next week.", "Sure."),
        # the agent offers a day and time the caller takes
        ("My furnace is making a rattling noise.", "How about Tuesday at 9?"),
    ],
)
def test_a_maintenance_visit_is_an_appointment(
    analyzer: RuleBasedAnalyzer, ask: str, offer: str
) -> None:
    a = run(
        analyzer,
        ("agent", "ABC Heating and Air, this is Pat."),
        ("caller", ask),
        ("agent", offer),
        ("caller", "Tuesday works, thanks."),
    )
    assert a.appointment_requested


@pytest.mark.parametrize(
    ("offer", "reply"),
    [
        ("We can come out and measure for free if you like.", "Sure."),  # no time
        ("I can come out Friday afternoon to measure.", "No, that's okay, I'm just comparing."),
        ("I'll have our estimator call you tomorrow.", "Okay."),  # a call, not a visit
    ],
)
def test_not_an_appointment(analyzer: RuleBasedAnalyzer, offer: str, reply: str) -> None:
    a = run(
        analyzer,
        ("agent", "Thanks for calling, this is Sam."),
        ("caller", "We'd like a quote for a new patio."),
        ("agent", offer),
        ("caller", reply),
    )
    assert not a.appointment_requested


@pytest.mark.parametrize(
    ("agent_says", "follow_up"),
    [
        ("I'll email you our price list today.", True),
        ("Our estimator will call you back this afternoon.", True),
        ("Feel free to call us back anytime.", False),
        ("The tech will call about thirty minutes before he arrives.", False),
    ],
)
def test_follow_up_from_the_agents_promises(
    analyzer: RuleBasedAnalyzer, agent_says: str, follow_up: bool
) -> None:
    a = run(
        analyzer,
        ("agent", "Thanks for calling, this is Sam."),
        ("caller", "I'd like a price on a new water heater."),
        ("agent", agent_says),
        ("caller", "Okay."),
    )
    assert a.follow_up_required is follow_up


def test_an_outbound_hello_is_not_a_dropped_call(analyzer: RuleBasedAnalyzer) -> None:
    a = run(
        analyzer,
        ("caller", "Hello?"),
        ("agent", "Hi, this is Dana from Bright Baths, returning your call about the shower."),
        ("caller", "Oh yes, we want a walk in shower."),
        ("agent", "Great, I'll see you Tuesday at ten for the consultation."),
        ("caller", "Tuesday at ten works."),
        direction="outbound",
    )
    assert not a.follow_up_required


# --- spam -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pitch",
    [
        "Congratulations! You have been selected for a free cruise. Press 1 to claim your prize.",
        "This is your final notice about your vehicle's extended warranty. Press 1 now.",
        "Your Google business listing has not been verified. Press 9 to be removed.",
        "We help contractors get to the first page of Google with SEO, guaranteed.",
        "Your business has been pre-approved for a business loan. This is not a sales call.",
        "We send exclusive roofing leads to contractors in your area, pay per lead.",
    ],
)
def test_spam_signs(analyzer: RuleBasedAnalyzer, pitch: str) -> None:
    a = run(analyzer, ("caller", pitch))
    assert a.intent in ("spam", "solicitation")
    assert a.spam_likelihood >= 0.5
    assert a.spam_reasons
    assert a.lead_score < 40
    assert not a.follow_up_required
    assert a.budget_indicator == "unknown"


def test_a_live_pitch_is_a_solicitation(analyzer: RuleBasedAnalyzer) -> None:
    a = run(
        analyzer,
        ("agent", "Brightside Painting, this is Mike."),
        (
            "caller",
            "Hi, am I speaking with the owner? We help contractors rank on the first page of Google.",
        ),
        ("agent", "We're not interested, take us off your list."),
    )
    assert a.intent == "solicitation"


def test_a_long_monologue_on_an_answered_call_is_a_spam_sign(analyzer: RuleBasedAnalyzer) -> None:
    words = "we are reaching out today about an opportunity for your household " * 5
    answered = run(analyzer, ("caller", words))
    voicemail = run(analyzer, ("caller", words), answered=False, voicemail=True)
    assert any("one speaker" in r for r in answered.spam_reasons)
    assert answered.spam_likelihood > voicemail.spam_likelihood == 0


@pytest.mark.parametrize(
    "turns",
    [
        [
            ("agent", "Summit Roofing, how can I help you?"),
            (
                "caller",
                "Hi, I'm trying to reach Walgreens pharmacy, I need to refill a prescription.",
            ),
            ("agent", "Sorry, this is a roofing company."),
            ("caller", "Oh, my mistake, sorry."),
        ],
        [
            ("agent", "Summit Roofing, how can I help you?"),
            ("caller", "Yeah hi, I need to get my car in for an oil change this week."),
            ("agent", "I'm sorry sir, you've reached a roofing company."),
            ("caller", "Oh sorry about that."),
        ],
    ],
)
def test_a_wrong_number_with_a_need_of_its_own_is_a_wrong_number(
    analyzer: RuleBasedAnalyzer, turns: list[tuple[str, str]]
) -> None:
    """Neither side says "wrong number"; the agent says what the business is, the caller
    apologizes. The caller's "I need to…" is for another business."""
    a = run(analyzer, *turns)
    assert a.intent == "wrong_number"
    assert a.lead_score < 20 and not a.follow_up_required


def test_a_persons_name_is_not_a_location(analyzer: RuleBasedAnalyzer) -> None:
    a = run(
        analyzer,
        ("agent", "Summit Roofing, this is Carlos."),
        ("caller", "I need a roof inspection, can you come out to Maria Gonzalez's house?"),
        ("agent", "Sure, where is that?"),
        ("caller", "It's in Castle Rock, near the library."),
    )
    assert "Location mentioned: Castle Rock" in a.key_details
    assert not any("Maria" in detail or "Gonzalez" in detail for detail in a.key_details)


KITCHEN_CALL = (
    "Bright Kitchens, this is Dave, how can I help you? Hi Dave, we'd like to get a quote on "
    "a kitchen remodel, new cabinets and countertops, maybe moving the island. Sure, when "
    "were you hoping to start? Probably in the spring, we're guaranteed some time off then."
)


@pytest.mark.parametrize("diarization", ["clustering", "none"])
def test_two_voices_merged_into_one_speaker_are_not_taken_for_a_robocall(
    analyzer: RuleBasedAnalyzer, diarization: str
) -> None:
    """The local engine on mono audio can put two similar voices in one speaker: a real
    conversation then has one speaker, and one weak sign ("guaranteed") must not make the
    lead spam."""
    a = analyzer.analyze(
        transcript(("speaker_1", KITCHEN_CALL), diarization=diarization),
        CallContext(answered=True, direction="inbound"),
    ).analysis
    assert not any("one speaker" in reason for reason in a.spam_reasons)
    assert a.intent == "quote_request" and a.project_type == "kitchen"


def test_one_voice_on_an_outbound_call_is_not_a_robocall(analyzer: RuleBasedAnalyzer) -> None:
    """The business called: the one voice is its message on the customer's voicemail."""
    message = (
        "Hi, this is Carlos from Summit Roofing calling back about the estimate you requested "
        "for your roof. We've been trying to reach you, we can come out Thursday afternoon "
        "to take measurements, give us a call back when you get a chance, thanks so much."
    )
    inbound, outbound = (
        analyzer.analyze(
            transcript(("speaker_1", message)), CallContext(answered=True, direction=direction)
        ).analysis
        for direction in ("inbound", "outbound")
    )
    assert any("one speaker" in reason for reason in inbound.spam_reasons)
    assert not any("one speaker" in reason for reason in outbound.spam_reasons)
    assert outbound.intent != "spam" and outbound.lead_score > 1


def test_a_spam_sign_in_a_real_conversation_does_not_sink_the_lead(
    analyzer: RuleBasedAnalyzer,
) -> None:
    a = run(
        analyzer,
        ("agent", "Thanks for calling, this is Jess."),
        (
            "caller",
            "Your line said press 1 for service. My AC is not cooling, can you send someone?",
        ),
        ("agent", "We'll send a tech out today at two."),
        ("caller", "Great, thanks."),
    )
    assert a.intent == "service_request"
    assert 0 < a.spam_likelihood < 0.5


def test_callrail_flag_alone_marks_spam(analyzer: RuleBasedAnalyzer) -> None:
    a = analyzer.analyze(None, CallContext(answered=False, callrail_spam=True)).analysis
    assert a.intent == "spam"
    assert a.spam_reasons == ["CallRail flagged the call as spam"]
    assert not a.follow_up_required
    assert a.lead_score == 1


def test_callrail_flag_on_a_real_conversation_is_not_spam(analyzer: RuleBasedAnalyzer) -> None:
    a = run(
        analyzer,
        ("agent", "Summit Roofing, this is Carlos."),
        ("caller", "Hi, I'd like a quote on a new roof, ours is twenty five years old."),
        ("agent", "Can we come out Thursday at ten?"),
        ("caller", "Thursday at ten works."),
        callrail_spam=True,
    )
    assert a.intent == "quote_request"
    assert "CallRail flagged the call as spam" in a.spam_reasons
    assert a.spam_likelihood < 0.5


# --- calls without a transcript -----------------------------------------------------------


@pytest.mark.parametrize(
    ("context", "follow_up", "words"),
    [
        ({"answered": False, "voicemail": False}, True, "Missed call with no recording"),
        ({"answered": False, "voicemail": True}, True, "Voicemail with no recording"),
        ({"answered": True}, False, "no recording"),
    ],
)
def test_calls_without_a_transcript(
    analyzer: RuleBasedAnalyzer, context: dict[str, bool], follow_up: bool, words: str
) -> None:
    a = analyzer.analyze(None, CallContext(first_call=True, **context)).analysis
    assert a.intent == "other"
    assert a.project_type == "unknown"
    assert a.follow_up_required is follow_up
    assert a.lead_score < 40
    assert words in a.summary
    assert a.spam_likelihood == 0


def test_a_transcript_without_speech_is_a_call_without_a_transcript(
    analyzer: RuleBasedAnalyzer,
) -> None:
    empty = transcript(("caller", "   "))
    ctx = CallContext(answered=False)
    assert analyzer.analyze(empty, ctx).analysis == analyzer.analyze(None, ctx).analysis


# --- the lead score -------------------------------------------------------------------------

INTENTS: tuple[Intent, ...] = get_args(Intent)
BUDGETS: tuple[Budget, ...] = get_args(Budget)
TIMELINES: tuple[Timeline, ...] = get_args(Timeline)
PROJECTS: tuple[ProjectType, ...] = ("kitchen", "unknown")


def all_inputs() -> list[scoring.ScoreInputs]:
    return [
        scoring.ScoreInputs(i, p, b, t, appt, first, missed, spam)
        for i, p, b, t, appt, first, missed, spam in itertools.product(
            INTENTS, PROJECTS, BUDGETS, TIMELINES,
            (False, True), (False, True), (False, True), (0.0, 0.5, 1.0),
        )
    ]  # fmt: skip


def test_score_stays_within_1_and_100() -> None:
    scores = [scoring.lead_score(x) for x in all_inputs()]
    assert min(scores) >= 1
    assert max(scores) <= 100


def test_an_appointment_never_lowers_the_score() -> None:
    for x in all_inputs():
        if not x.appointment_requested:
            with_appt = scoring.ScoreInputs(**{**x.__dict__, "appointment_requested": True})
            assert scoring.lead_score(with_appt) >= scoring.lead_score(x), x


def test_more_spam_never_raises_the_score() -> None:
    for x in all_inputs():
        more = scoring.ScoreInputs(**{**x.__dict__, "spam_likelihood": 1.0})
        assert scoring.lead_score(more) <= scoring.lead_score(x)


def test_score_bands_follow_the_rubric() -> None:
    """One qualifier (near timeline, appointment, budget ≥ medium) is medium; two are high;
    non-sales calls are low."""
    near: tuple[Timeline, ...] = ("immediate", "within_1_month", "1-3_months")
    for x in all_inputs():
        if x.spam_likelihood or x.missed:
            continue
        qualifiers = sum(
            [x.timeline in near, x.appointment_requested, x.budget in ("medium", "high")]
        )
        band = scoring.lead_band(scoring.lead_score(x))
        if x.intent not in scoring.SALE_INTENTS:
            assert band == "low", x
        elif qualifiers >= 2 and x.timeline != "6_plus_months":
            assert band == "high", x
        elif qualifiers <= 1:
            assert band != "high", x


def test_adding_an_appointment_to_a_real_call_never_lowers_its_score(
    analyzer: RuleBasedAnalyzer,
) -> None:
    turns = [
        ("agent", "Thanks for calling, this is Sam."),
        (
            "caller",
            "We'd like a quote on replacing our windows in the fall, around fifteen thousand.",
        ),
    ]
    without = run(analyzer, *turns)
    with_appt = run(
        analyzer,
        *turns,
        ("caller", "Can someone come out and measure?"),
        ("agent", "Sure, Tuesday at ten?"),
        ("caller", "Tuesday at ten works."),
    )
    assert with_appt.appointment_requested
    assert with_appt.lead_score >= without.lead_score


def test_score_terms_add_up() -> None:
    x = scoring.ScoreInputs(
        "quote_request", "kitchen", "high", "1-3_months", True, True, False, 0.0
    )
    terms = scoring.score_terms(x)
    assert terms == {
        "base": 40, "project": 5, "budget": 18, "timeline": 15, "appointment": 15,
        "first_call": 3, "missed_call": 0, "spam": 0,
    }  # fmt: skip
    assert scoring.lead_score(x) == 96


# --- the lexicon --------------------------------------------------------------------------


def test_lexicon_loads_and_rejects_unknown_keys() -> None:
    from importlib import resources

    import yaml

    raw = yaml.safe_load(
        resources.files("callpipe.analyzers").joinpath("lexicon_v1.yaml").read_text("utf-8")
    )
    assert load_lexicon(1).version == 1
    with pytest.raises(ValidationError):
        Lexicon.model_validate({**raw, "intnets": {}})
    with pytest.raises(ValidationError):
        Lexicon.model_validate({**raw, "projects": {**raw["projects"], "types": {"garage": {}}}})


# --- callpipe analyze -------------------------------------------------------------------------


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(analyze)
    return app


CALL_TEXT = """\
[00:00] Agent: Thanks for calling Summit Roofing, this is Carlos.
[00:03] Caller: Hi, we had hail last week and I'd like an estimate for a new roof,
it's about twenty years old anyway.
[00:10] Agent: Sure, can we come out Thursday at ten?
[00:13] Caller: Thursday at ten works.
"""


def test_cli_analyzes_a_text_file(cli: typer.Typer, tmp_path: Path) -> None:
    path = tmp_path / "call.txt"
    path.write_text(CALL_TEXT, encoding="utf-8")
    result = CliRunner().invoke(cli, [str(path)])
    assert result.exit_code == 0, result.output
    assert "quote_request" in result.output
    assert "roofing" in result.output
    assert "appointment requested  yes" in result.output

    as_json = CliRunner().invoke(cli, [str(path), "--json"])
    assert as_json.exit_code == 0, as_json.output
    parsed = AnalysisResult.model_validate_json(as_json.output)
    assert parsed.engine == "rules"
    assert parsed.analysis.appointment_requested


def test_cli_reads_transcript_json(cli: typer.Typer, tmp_path: Path) -> None:
    path = tmp_path / "call.json"
    path.write_text(transcript_from_text(CALL_TEXT).model_dump_json(), encoding="utf-8")
    result = CliRunner().invoke(cli, [str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["analysis"]["project_type"] == "roofing"


def test_cli_rejects_json_that_is_not_a_transcript(cli: typer.Typer, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"segments": "nope"}', encoding="utf-8")
    result = CliRunner().invoke(cli, [str(path)])
    assert result.exit_code == 1


@pytest.mark.parametrize("name", ["call.txt", "call.json"])
def test_cli_refuses_a_file_that_is_not_utf8_with_a_message(
    cli: typer.Typer, tmp_path: Path, name: str
) -> None:
    path = tmp_path / name
    path.write_bytes(CALL_TEXT.encode("utf-16"))
    result = CliRunner().invoke(cli, [str(path)])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)  # a message, not a traceback
    assert "is not UTF-8 text (byte 0)" in result.stderr


def test_text_lines_become_segments() -> None:
    t = transcript_from_text(CALL_TEXT)
    assert [s.speaker for s in t.segments] == ["agent", "caller", "agent", "caller"]
    assert t.segments[1].text.endswith("about twenty years old anyway.")  # continuation line
    assert t.segments[2].start == 10.0
    assert t.speaker_count == 2
