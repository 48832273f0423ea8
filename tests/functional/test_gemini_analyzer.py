"""The Gemini analyzer with the real google-genai client against a local HTTP fake of Vertex
AI's generateContent endpoint (tests/fakes/vertex_gemini.py).

Every test gets its own fake on a free loopback port and a script of canned replies; the
analyzer's sleep is injected, so backoff is checked without waiting.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from google.genai import errors, types

from callpipe.analysis import AnalysisFailed, CallAnalysis, CallContext
from callpipe.analyzers.gemini import (
    NO_TRANSCRIPT_ENGINE,
    PROMPT_VERSION,
    GeminiAnalyzer,
    load_prompt,
    truncate_middle,
)
from callpipe.transcripts import Transcript, TranscriptSegment
from tests.fakes.vertex_gemini import (
    Reply,
    VertexGeminiFake,
    analysis_reply,
    error_reply,
    no_candidates_reply,
    prompt_blocked_reply,
    safety_finish_reply,
    text_reply,
)

pytestmark = pytest.mark.timeout(30)

PROJECT = "test-project"
LOCATION = "us-central1"
MODEL = "gemini-2.5-flash"

GOOD: dict[str, Any] = {
    "intent": "quote_request",
    "project_type": "kitchen",
    "timeline": "1-3_months",
    "budget_indicator": "medium",
    "sentiment": "positive",
    "urgency": "medium",
    "lead_score": 78,
    "appointment_requested": True,
    "follow_up_required": True,
    "key_details": ["Full kitchen remodel, about 200 sq ft", "Wants quartz countertops"],
    "spam_likelihood": 0.03,
    "spam_reasons": [],
    "summary": "The caller wants a quote for a kitchen remodel and asked for an in-home estimate.",
}
CONTEXT = CallContext(
    direction="inbound",
    answered=True,
    duration_seconds=184,
    first_call=True,
    source="Google Ads",
    business_name="Acme Remodeling",
)


def transcript(lines: list[tuple[str, str]]) -> Transcript:
    segments = [
        TranscriptSegment(speaker=speaker, start=float(i), end=float(i) + 1, text=text)
        for i, (speaker, text) in enumerate(lines)
    ]
    return Transcript(
        segments=segments,
        text=Transcript.render_text(segments),
        language="en-US",
        audio_duration_seconds=float(len(lines)),
        engine="faster-whisper",
        model="base",
        diarization="channel",
        speaker_count=2,
    )


CALL = transcript(
    [
        ("agent", "Thanks for calling Acme Remodeling, how can I help?"),
        ("caller", "Hi, we want to redo our kitchen, new cabinets and quartz countertops."),
        ("agent", "Great. Could someone come out for an estimate next week?"),
        ("caller", "Yes, Tuesday afternoon works. We'd like it done in the next two months."),
    ]
)


@pytest.fixture
def fake() -> Iterator[VertexGeminiFake]:
    with VertexGeminiFake(project=PROJECT, location=LOCATION, models=(MODEL,)) as server:
        yield server


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def analyzer(fake: VertexGeminiFake, sleeps: Sleeps, **kwargs: Any) -> GeminiAnalyzer:
    options: dict[str, Any] = {"model": MODEL, "rng": lambda: 0.5, **kwargs}
    return GeminiAnalyzer(PROJECT, LOCATION, client=fake.client(), sleep=sleeps, **options)


# --- the request ----------------------------------------------------------------------


def test_request_carries_model_prompt_schema_context_and_transcript(
    fake: VertexGeminiFake, sleeps: Sleeps
) -> None:
    fake.script(analysis_reply(GOOD))
    analyzer(fake, sleeps).analyze(CALL, CONTEXT)

    [request] = fake.requests
    assert request.rejected is None
    assert (request.project, request.location, request.model) == (PROJECT, LOCATION, MODEL)
    assert request.path.endswith(f"/publishers/google/models/{MODEL}:generateContent")
    assert request.headers["authorization"] == "Bearer fake-token"

    # The system instruction is the prompt file's, verbatim.
    assert request.system_text == load_prompt(PROMPT_VERSION).system
    assert "lead-score rubric v1" in request.system_text

    config = request.generation_config
    assert config["responseMimeType"] == "application/json"
    assert config["temperature"] <= 0.2
    assert config["candidateCount"] == 1
    schema = config["responseSchema"]
    assert schema["type"] == "OBJECT"
    assert set(schema["properties"]) == set(CallAnalysis.model_fields)
    assert set(schema["required"]) == set(CallAnalysis.model_fields)
    # The Literal types arrive as enums, the bounds as bounds.
    intents = typing.get_args(CallAnalysis.model_fields["intent"].annotation)
    assert schema["properties"]["intent"]["enum"] == list(intents)
    assert schema["properties"]["timeline"]["enum"][2] == "1-3_months"
    score = schema["properties"]["lead_score"]
    assert (score["type"], score["minimum"], score["maximum"]) == ("INTEGER", 1, 100)
    assert schema["properties"]["summary"]["max_length"] == 600
    assert schema["properties"]["key_details"]["max_items"] == 10

    # One user turn: the context as JSON (unknown fields left out), then the transcript lines.
    [content] = request.body["contents"]
    assert content["role"] == "user"
    user = request.user_text
    context_json = user.split("Call context (JSON):\n", 1)[1].split("\n\nTranscript", 1)[0]
    assert json.loads(context_json) == CONTEXT.model_dump(exclude_none=True)
    assert user.endswith(CALL.text)
    assert "caller: Hi, we want to redo our kitchen" in user


def test_long_transcript_keeps_beginning_and_end_with_a_marker(
    fake: VertexGeminiFake, sleeps: Sleeps
) -> None:
    middle = [
        ("caller" if i % 2 else "agent", f"filler sentence number {i} " * 3) for i in range(400)
    ]
    long_call = transcript(
        [
            ("agent", "OPENING: thanks for calling, how can I help?"),
            *middle,
            ("caller", "CLOSING: so Tuesday at two for the estimate, thanks."),
        ]
    )
    assert len(long_call.text) > 30_000
    fake.script(analysis_reply(GOOD))
    analyzer(fake, sleeps, max_transcript_chars=4000).analyze(long_call, CONTEXT)

    user = fake.requests[0].user_text
    sent = user.split("per turn):\n", 1)[1]
    assert sent.startswith("agent: OPENING: thanks for calling")
    assert sent.endswith("caller: CLOSING: so Tuesday at two for the estimate, thanks.")
    assert "filler sentence number 200 " not in sent
    marker = [line for line in sent.splitlines() if line.startswith("[… ")]
    assert len(marker) == 1 and marker[0].endswith(" characters omitted …]")
    omitted = int(marker[0].split()[1])
    kept = sent.replace(marker[0], "")
    # What was kept plus what was omitted is the whole transcript (newlines at the cuts aside).
    assert abs(len(kept) + omitted - len(long_call.text)) <= 3
    assert len(sent) <= 4000 + len(marker[0]) + 2


def test_phone_numbers_and_emails_do_not_reach_the_model(
    fake: VertexGeminiFake, sleeps: Sleeps
) -> None:
    call = transcript(
        [
            ("agent", "Can I get a number to reach you?"),
            ("caller", "Sure, it's (555) 867-5309, or email pat.doe@example.com."),
        ]
    )
    fake.script(analysis_reply(GOOD))
    analyzer(fake, sleeps).analyze(call, CONTEXT)

    user = fake.requests[0].user_text
    assert "867-5309" not in user and "example.com" not in user
    assert "caller: Sure, it's [phone], or email [email]." in user


def test_truncate_middle_leaves_short_text_alone_and_counts_what_it_drops() -> None:
    assert truncate_middle("a: hi\nb: hello", 100) == "a: hi\nb: hello"
    text = "\n".join(f"speaker_{i % 2 + 1}: line {i:04d} " + "x" * 40 for i in range(500))
    out = truncate_middle(text, 2000)
    marker = next(line for line in out.splitlines() if line.startswith("[… "))
    head, tail = out.split(f"\n{marker}\n")
    assert text.startswith(head) and text.endswith(tail)
    assert int(marker.split()[1]) == len(text) - len(head) - len(tail)
    # Cuts fall on line boundaries: every kept line is a whole transcript line.
    assert all(line in text.splitlines() for line in head.splitlines() + tail.splitlines())


def test_prompt_names_every_allowed_value_of_every_enumerated_field() -> None:
    """The prompt and the model must not drift apart: each Literal value is explained."""
    system = load_prompt(PROMPT_VERSION).system
    for name, info in CallAnalysis.model_fields.items():
        assert name in system, name
        for value in typing.get_args(info.annotation):
            if isinstance(value, str):
                assert f'"{value}"' in system, f"{name}={value}"


# --- answers ----------------------------------------------------------------------------


def test_valid_answer_is_parsed_with_tokens_counted(fake: VertexGeminiFake, sleeps: Sleeps) -> None:
    fake.script(analysis_reply(GOOD, prompt_tokens=2345, output_tokens=210, thoughts_tokens=400))
    result = analyzer(fake, sleeps).analyze(CALL, CONTEXT)

    assert result.analysis == CallAnalysis.model_validate(GOOD)
    assert result.engine == "gemini"
    assert result.model == MODEL
    assert result.prompt_version == "call_analysis_v1"
    assert result.input_tokens == 2345
    # Thinking tokens are billed as output.
    assert result.output_tokens == 210 + 400
    assert sleeps == []


def test_malformed_answer_then_valid_succeeds_after_one_retry(
    fake: VertexGeminiFake, sleeps: Sleeps
) -> None:
    fake.script(text_reply('{"intent": "quote_request", "project_'), analysis_reply(GOOD))
    result = analyzer(fake, sleeps).analyze(CALL, CONTEXT)

    assert result.analysis.intent == "quote_request"
    assert len(fake.requests) == 2
    assert fake.requests[0].body == fake.requests[1].body  # the same prompt again
    assert result.input_tokens == 2 * 1200  # both calls were billed
    assert sleeps == []


@pytest.mark.parametrize(
    ("first", "second", "problem"),
    [
        pytest.param(
            text_reply("Sure! Here is the analysis: intent is quote_request."),
            text_reply("not json either"),
            "Invalid JSON",
            id="malformed-json",
        ),
        pytest.param(
            analysis_reply({**GOOD, "timeline": "someday"}),
            analysis_reply({**GOOD, "intent": "buy_now", "mood": "great"}),
            "intent",
            id="off-schema-json",
        ),
        pytest.param(
            text_reply('{"intent": "quote_req', finish_reason="MAX_TOKENS"),
            text_reply('{"intent": "quote_req', finish_reason="MAX_TOKENS"),
            "MAX_TOKENS",
            id="cut-at-max-tokens",
        ),
    ],
)
def test_two_bad_answers_fail_permanently(
    fake: VertexGeminiFake, sleeps: Sleeps, first: Any, second: Any, problem: str
) -> None:
    fake.script(first, second)
    with pytest.raises(AnalysisFailed) as failure:
        analyzer(fake, sleeps).analyze(CALL, CONTEXT)

    assert failure.value.permanent
    assert str(failure.value).startswith("model answered off-schema: ")
    assert problem in str(failure.value)
    assert "buy_now" not in str(failure.value)  # the answer itself is not echoed
    assert len(fake.requests) == 2
    assert not fake.script_exhausted


@pytest.mark.parametrize(
    ("reply", "detail"),
    [
        pytest.param(prompt_blocked_reply("PROHIBITED_CONTENT"), "PROHIBITED_CONTENT", id="prompt"),
        pytest.param(
            safety_finish_reply("HARM_CATEGORY_DANGEROUS_CONTENT"),
            "SAFETY (HARM_CATEGORY_DANGEROUS_CONTENT)",
            id="finish-safety",
        ),
        pytest.param(no_candidates_reply(), "no candidates", id="no-candidates"),
    ],
)
def test_refusal_fails_permanently_without_retry(
    fake: VertexGeminiFake, sleeps: Sleeps, reply: Any, detail: str
) -> None:
    fake.script(reply)
    with pytest.raises(AnalysisFailed) as failure:
        analyzer(fake, sleeps).analyze(CALL, CONTEXT)

    assert failure.value.permanent
    assert str(failure.value).startswith("refused: ")
    assert detail in str(failure.value)
    assert len(fake.requests) == 1


# --- transport errors -------------------------------------------------------------------


def test_503_and_429_are_retried_with_backoff(fake: VertexGeminiFake, sleeps: Sleeps) -> None:
    fake.script(error_reply(503), error_reply(429), analysis_reply(GOOD))
    result = analyzer(fake, sleeps).analyze(CALL, CONTEXT)

    assert result.analysis.lead_score == 78
    assert len(fake.requests) == 3
    # Exponential (1 s, 2 s) with jitter in [d/2, d]; rng fixed at 0.5 → 3/4 of each.
    assert sleeps == [0.75, 1.5]


def test_backoff_jitter_stays_within_its_band(fake: VertexGeminiFake, sleeps: Sleeps) -> None:
    fake.script(*[error_reply(503)] * 3, analysis_reply(GOOD))
    analyzer(fake, sleeps, rng=lambda: 0.0).analyze(CALL, CONTEXT)
    low = list(sleeps)
    sleeps.clear()
    fake.script(*[error_reply(503)] * 3, analysis_reply(GOOD))
    analyzer(fake, sleeps, rng=lambda: 0.999999).analyze(CALL, CONTEXT)
    assert low == [0.5, 1.0, 2.0]
    assert sleeps == pytest.approx([1.0, 2.0, 4.0], rel=1e-5)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        pytest.param({"lead_score": 150}, {"lead_score": 100}, id="score-above-100"),
        pytest.param({"lead_score": 0}, {"lead_score": 1}, id="score-below-1"),
        pytest.param({"lead_score": 72.6}, {"lead_score": 73}, id="score-not-whole"),
        pytest.param({"spam_likelihood": 1.2}, {"spam_likelihood": 1.0}, id="spam-above-1"),
        pytest.param(
            {"intent": "spam", "lead_score": 90}, {"lead_score": 19}, id="spam-scored-as-lead"
        ),
        pytest.param(
            {"spam_likelihood": 0.8, "lead_score": 85},
            {"lead_score": 19},
            id="likely-spam-scored-as-lead",
        ),
        pytest.param(
            {"spam_likelihood": "0.9", "lead_score": 90},
            {"spam_likelihood": 0.9, "lead_score": 19},
            id="spam-as-a-string-scored-as-lead",
        ),
        pytest.param(
            {"key_details": [f"detail {i}" for i in range(14)]},
            {"key_details": [f"detail {i}" for i in range(10)]},
            id="too-many-details",
        ),
    ],
)
def test_an_answer_out_of_bounds_is_brought_within_the_contract(
    fake: VertexGeminiFake, sleeps: Sleeps, answer: dict[str, Any], expected: dict[str, Any]
) -> None:
    """Constrained decoding does not always hold the schema's bounds; a plain fix beats
    paying for a second call and then failing the call's analysis for good."""
    fake.script(analysis_reply({**GOOD, **answer}))
    result = analyzer(fake, sleeps).analyze(CALL, CONTEXT)

    assert result.analysis.model_dump(include=set(expected)) == expected
    assert len(fake.requests) == 1


@pytest.mark.parametrize("field", ["lead_score", "spam_likelihood"])
def test_a_number_too_large_for_a_float_is_off_schema_not_a_crash(
    fake: VertexGeminiFake, sleeps: Sleeps, field: str
) -> None:
    huge = text_reply(json.dumps(GOOD).replace('"summary"', f'"{field}": {"9" * 400}, "summary"'))
    fake.script(huge, huge)
    with pytest.raises(AnalysisFailed) as failure:
        analyzer(fake, sleeps).analyze(CALL, CONTEXT)

    assert failure.value.permanent and "off-schema" in str(failure.value)


def test_a_summary_too_long_is_cut_at_a_word(fake: VertexGeminiFake, sleeps: Sleeps) -> None:
    fake.script(analysis_reply({**GOOD, "summary": "The caller wants a new kitchen. " * 40}))
    summary = analyzer(fake, sleeps).analyze(CALL, CONTEXT).analysis.summary

    assert len(summary) <= 600 and summary.endswith("…")
    assert summary.startswith("The caller wants a new kitchen.")
    assert summary[:-1].split(" ")[-1] in {"new", "kitchen.", "The", "caller", "wants", "a"}


def test_all_calls_stay_within_the_time_budget(fake: VertexGeminiFake, sleeps: Sleeps) -> None:
    """The step must answer Pub/Sub within its ack deadline: every call and wait counts,
    and the last call gets only the time that is left."""
    fake.script(*[error_reply(503)] * 5)
    # each request takes 100 s on this clock
    slow = analyzer(
        fake,
        sleeps,
        max_attempts=10,
        time_budget_seconds=240,
        timeout_seconds=60,
        clock=lambda: 100.0 * len(fake.requests),
    )
    with pytest.raises(AnalysisFailed) as failure:
        slow.analyze(CALL, CONTEXT)

    assert not failure.value.permanent
    assert "within the 240 s budget" in str(failure.value)
    assert len(fake.requests) == 3
    timeouts = [request.headers.get("x-server-timeout") for request in fake.requests]
    assert timeouts == ["60", "60", "40"]


def test_an_unreadable_response_is_retried(fake: VertexGeminiFake, sleeps: Sleeps) -> None:
    fake.script(Reply(200, "<html>upstream connect error</html>"), analysis_reply(GOOD))
    result = analyzer(fake, sleeps).analyze(CALL, CONTEXT)

    assert result.analysis.intent == "quote_request"
    assert len(fake.requests) == 2 and len(sleeps) == 1


def test_persistent_503_fails_transiently_after_max_attempts(
    fake: VertexGeminiFake, sleeps: Sleeps
) -> None:
    fake.script(*[error_reply(503)] * 4)
    with pytest.raises(AnalysisFailed) as failure:
        analyzer(fake, sleeps, max_attempts=4).analyze(CALL, CONTEXT)

    assert not failure.value.permanent
    assert "after 4 attempts" in str(failure.value)
    assert "503" in str(failure.value)
    assert len(fake.requests) == 4
    assert len(sleeps) == 3


def test_timeout_is_retried(fake: VertexGeminiFake, sleeps: Sleeps) -> None:
    slow = analysis_reply(GOOD)
    fake.script(type(slow)(slow.status, slow.body, delay=1.5), analysis_reply(GOOD))
    result = analyzer(fake, sleeps, timeout_seconds=0.3).analyze(CALL, CONTEXT)

    assert result.analysis.intent == "quote_request"
    assert len(fake.requests) == 2
    assert len(sleeps) == 1


def test_unknown_model_fails_permanently_naming_the_setting(
    fake: VertexGeminiFake, sleeps: Sleeps
) -> None:
    # No script: the fake itself answers 404 for a model it does not serve, as Vertex does.
    with pytest.raises(AnalysisFailed) as failure:
        analyzer(fake, sleeps, model="gemini-1.0-pro-retired").analyze(CALL, CONTEXT)

    assert failure.value.permanent
    message = str(failure.value)
    assert "VERTEX_AI_MODEL" in message
    assert "gemini-1.0-pro-retired" in message
    assert "was not found" in message
    assert len(fake.requests) == 1
    assert fake.requests[0].rejected == "unknown model"
    assert sleeps == []


def test_permission_denied_fails_permanently_with_what_to_fix(
    fake: VertexGeminiFake, sleeps: Sleeps
) -> None:
    client = fake.client(project="other-project")
    wrong = GeminiAnalyzer("other-project", LOCATION, MODEL, client=client, sleep=sleeps)
    with pytest.raises(AnalysisFailed) as failure:
        wrong.analyze(CALL, CONTEXT)

    assert failure.value.permanent
    assert "roles/aiplatform.user" in str(failure.value)
    assert len(fake.requests) == 1


def test_bad_request_fails_permanently(fake: VertexGeminiFake, sleeps: Sleeps) -> None:
    fake.script(error_reply(400, "Request contains an invalid argument."))
    with pytest.raises(AnalysisFailed) as failure:
        analyzer(fake, sleeps).analyze(CALL, CONTEXT)

    assert failure.value.permanent
    assert "400 INVALID_ARGUMENT" in str(failure.value)
    assert len(fake.requests) == 1


# --- calls without a transcript ---------------------------------------------------------


@pytest.mark.parametrize(
    ("context", "intent", "score", "follow_up"),
    [
        (CallContext(direction="inbound", answered=False, first_call=True), "other", 35, True),
        (CallContext(direction="inbound", answered=True, duration_seconds=40), "other", 25, False),
        (CallContext(direction="inbound", callrail_spam=True), "spam", 5, False),
        (CallContext(direction="inbound", answered=False, voicemail=True), "other", 30, True),
        (CallContext(direction="inbound", voicemail=True, first_call=True), "other", 35, True),
        (CallContext(direction="outbound", answered=True), "other", 20, False),
    ],
)
def test_no_transcript_skips_the_model(
    fake: VertexGeminiFake,
    sleeps: Sleeps,
    context: CallContext,
    intent: str,
    score: int,
    follow_up: bool,
) -> None:
    result = analyzer(fake, sleeps).analyze(None, context)

    assert fake.requests == []
    assert result.engine == NO_TRANSCRIPT_ENGINE
    assert result.prompt_version is None
    assert (result.input_tokens, result.output_tokens) == (0, 0)
    assert result.analysis.intent == intent
    assert result.analysis.lead_score == score
    assert result.analysis.follow_up_required is follow_up
    assert result.analysis.project_type == "unknown"


def test_transcript_without_speech_skips_the_model(fake: VertexGeminiFake, sleeps: Sleeps) -> None:
    silent = transcript([])
    result = analyzer(fake, sleeps).analyze(silent, CONTEXT)
    assert fake.requests == []
    assert result.engine == NO_TRANSCRIPT_ENGINE


# --- the fake itself checks requests like the service ----------------------------------


def test_fake_rejects_requests_the_service_would_reject(fake: VertexGeminiFake) -> None:
    client = fake.client()
    with pytest.raises(errors.ClientError) as no_schema:
        client.models.generate_content(
            model=MODEL,
            contents="hello",
            config=types.GenerateContentConfig(system_instruction="You analyze calls."),
        )
    assert no_schema.value.code == 400
    assert fake.requests[-1].rejected == "responseMimeType not JSON"

    url = (
        f"{fake.base_url}/v1/projects/{PROJECT}/locations/{LOCATION}/publishers/google/models/"
        f"{MODEL}:generateContent"
    )
    unauthenticated = httpx.post(
        url, json={"contents": [{"role": "user", "parts": [{"text": "x"}]}]}
    )
    assert unauthenticated.status_code == 401
    assert unauthenticated.json()["error"]["status"] == "UNAUTHENTICATED"

    unknown_field = httpx.post(
        url, headers={"Authorization": "Bearer t"}, json={"contents": [], "temprature": 1}
    )
    assert unknown_field.status_code == 400
    assert "Unknown name" in unknown_field.json()["error"]["message"]
    assert fake.accepted == []


def test_thinking_is_bounded_by_default(fake: VertexGeminiFake, sleeps: Sleeps) -> None:
    """max_output_tokens counts thinking tokens on 2.5 models: unbounded, a long transcript
    can think the whole allowance away and end at MAX_TOKENS with no answer."""
    from callpipe.config import Settings

    budget = Settings().vertex_ai_thinking_budget
    fake.script(analysis_reply(GOOD))
    analyzer(fake, sleeps, thinking_budget=budget).analyze(CALL, CONTEXT)

    config = fake.requests[0].body["generationConfig"]
    # the SDK sends the proto field name, which proto JSON accepts as well as lowerCamel
    (budget_sent,) = config["thinkingConfig"].values()
    assert budget_sent == 1024
    assert config["maxOutputTokens"] > 1024 + 2000  # room for the answer after thinking
