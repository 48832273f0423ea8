"""Call analysis with Gemini on Vertex AI, through ``google-genai`` (``vertexai=True``).

The request: the system instruction and user template of a versioned prompt file
(``prompts/call_analysis_v1.md``), the call context as JSON plus the transcript as
"speaker: text" lines (bounded: a long transcript keeps its beginning and end), structured
output with ``response_mime_type="application/json"`` and ``response_schema=CallAnalysis``,
a low temperature. The SDK turns the pydantic model into a Vertex ``Schema`` (enums for the
``Literal`` fields, ``minimum``/``maximum``, ``maxItems``, ``maxLength``, ``required``), so the
one model in ``callpipe.analysis`` is both the output type and the response schema.

What can go wrong, and what the caller gets (``AnalysisFailed.permanent`` decides whether
the step dead-letters or lets Pub/Sub retry):

- 429, 5xx, 408, timeouts and connection errors: retried here with exponential backoff and
  jitter, ``max_attempts`` calls in all; then ``AnalysisFailed(permanent=False)``.
- An answer that is not valid JSON or breaks the schema (constrained decoding makes this
  rare, but it happens, e.g. when the output hits ``max_output_tokens``): one more call with
  the same prompt, then ``AnalysisFailed("model answered off-schema: …", permanent=True)``.
- A blocked prompt, a ``SAFETY``-like finish reason or no candidates at all:
  ``AnalysisFailed("refused: …", permanent=True)``; the same transcript would be refused again.
- 400/401/403/404 and other 4xx: permanent, with what to check (a 404 is nearly always a
  wrong or retired model name: ``VERTEX_AI_MODEL``).

A call without a transcript (no recording, or a recording with no speech) does not go to
Gemini at all: see ``analyze_without_transcript``.

Messages never quote the transcript or the model's answer: either may hold personal data.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import google.auth.exceptions
import httpx
from google import genai
from google.genai import errors, types
from pydantic import ValidationError

from callpipe.analysis import (
    LIST_MAX_ITEMS,
    SUMMARY_MAX_CHARS,
    AnalysisFailed,
    AnalysisResult,
    CallAnalysis,
    CallContext,
)
from callpipe.redact import redact_text
from callpipe.transcripts import Transcript

logger = logging.getLogger(__name__)

PROMPT_VERSION = "call_analysis_v1"
ENGINE = "gemini"
# Provenance of the deterministic result for calls without a transcript (no LLM involved).
NO_TRANSCRIPT_ENGINE = "rules"
NO_TRANSCRIPT_MODEL = "no-transcript-v1"

_SYSTEM_MARKER = "<!-- system -->"
_USER_MARKER = "<!-- user -->"

# Finish reasons that mean "the model would not answer this", as opposed to a bad answer.
_REFUSAL_FINISH_REASONS = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "MODEL_ARMOR",
        "LANGUAGE",
    }
)
# 408 and 499 (CANCELLED) are the server giving up on us, not a verdict on the request.
_TRANSIENT_4XX = frozenset({408, 429, 499})


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Network-level failures of whichever HTTP stack the SDK uses: google-genai 3.x sends
    through httpx2 (a fork with its own exception classes), older versions through httpx, and
    the mTLS path through requests; google-auth raises its own when a token refresh fails."""
    found: list[type[BaseException]] = [
        httpx.TransportError,
        google.auth.exceptions.TransportError,
    ]
    for module, names in (
        ("httpx2", ("TransportError",)),
        ("requests.exceptions", ("ConnectionError", "Timeout")),
    ):
        try:
            imported = importlib.import_module(module)
        except ImportError:
            continue
        found.extend(getattr(imported, name) for name in names)
    return tuple(found)


_TRANSPORT_ERRORS = _transport_errors()

# Backoff: 1 s doubling up to a 30 s cap, each wait jittered between half and all of it (see
# ``_backoff``). Vertex's 429 (dynamic shared quota exhausted) usually clears within seconds,
# and Pub/Sub's own redelivery backoff takes over once these attempts are spent.
_BACKOFF_BASE_SECONDS = 1.0
_BACKOFF_CAP_SECONDS = 30.0
# A call given less than this is not worth making: it would time out before an answer.
_MIN_CALL_SECONDS = 5.0
_NOT_A_LEAD = frozenset({"spam", "solicitation", "wrong_number"})
_NOT_A_LEAD_MAX_SCORE = 19
# One more call after an off-schema answer: a second bad answer to the same prompt means the
# prompt or the schema is the problem, and more calls would only cost money.
_OFF_SCHEMA_RETRIES = 1


@dataclass(frozen=True)
class Prompt:
    """A versioned prompt: the system instruction and the user-turn template."""

    version: str
    system: str
    user_template: str

    def render_user(self, context_json: str, transcript: str) -> str:
        # str.replace, not str.format: the JSON and the transcript are full of braces.
        return self.user_template.replace("{{context_json}}", context_json).replace(
            "{{transcript}}", transcript
        )


def load_prompt(version: str = PROMPT_VERSION) -> Prompt:
    """Read ``prompts/<version>.md``: a header comment (not sent), then the system
    instruction after ``<!-- system -->`` and the user template after ``<!-- user -->``."""
    # importlib.resources, not __file__: the package may be imported from a zip or a wheel.
    raw = (
        resources.files("callpipe.analyzers")
        .joinpath("prompts", f"{version}.md")
        .read_text(encoding="utf-8")
    )
    _, found, rest = raw.partition(_SYSTEM_MARKER)
    system, found_user, user = rest.partition(_USER_MARKER)
    if not found or not found_user:
        raise ValueError(f"prompt {version}: needs {_SYSTEM_MARKER} and {_USER_MARKER} markers")
    system, user = system.strip(), user.strip()
    if "{{transcript}}" not in user or "{{context_json}}" not in user:
        raise ValueError(
            f"prompt {version}: user template lacks {{{{context_json}}}}/{{{{transcript}}}}"
        )
    return Prompt(version=version, system=system, user_template=user)


def truncate_middle(text: str, max_chars: int) -> str:
    """Keep at most ``max_chars`` characters of ``text``: the beginning (who calls, what for)
    and the end (what was agreed, next steps), with ``[… N characters omitted …]`` between
    them. Cuts fall on line boundaries when one is near, so no speaker turn is split mid-word."""
    if len(text) <= max_chars:
        return text
    # 60/40: the opening carries intent and project, the close carries the outcome.
    head_len = max_chars * 3 // 5
    tail_len = max_chars - head_len
    head = text[:head_len]
    tail = text[len(text) - tail_len :] if tail_len else ""
    cut = head.rfind("\n")
    if cut >= head_len // 2:
        head = head[:cut]
    cut = tail.find("\n")
    if 0 <= cut <= tail_len // 2:
        tail = tail[cut + 1 :]
    omitted = len(text) - len(head) - len(tail)
    return f"{head.rstrip()}\n[… {omitted} characters omitted …]\n{tail.lstrip()}"


def transcript_lines(transcript: Transcript) -> str:
    """The transcript as "speaker: text" lines (``Transcript.text`` already is; rebuild it from
    the segments if an engine left it empty)."""
    text = transcript.text.strip()
    return text or Transcript.render_text(transcript.segments)


class GeminiAnalyzer:
    """The ``Analyzer`` port on Gemini (Vertex AI). Thread-safe: no per-call state."""

    def __init__(
        self,
        project: str,
        location: str,
        model: str,
        max_transcript_chars: int = 24000,
        client: genai.Client | None = None,
        max_attempts: int = 4,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
        *,
        prompt_version: str = PROMPT_VERSION,
        temperature: float = 0.1,
        max_output_tokens: int = 8192,
        thinking_budget: int | None = None,
        timeout_seconds: float = 60.0,
        time_budget_seconds: float = 240.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``model`` comes from configuration (``VERTEX_AI_MODEL``), never from code: Gemini
        models retire on published dates. ``client`` is for tests (a client pointed at a local
        fake); by default one is built with Application Default Credentials.

        ``max_output_tokens`` counts thinking tokens on 2.5 models, hence the room above the
        ~500 tokens the JSON needs. ``thinking_budget`` None sends no thinking setting (the
        model's default; for models that take none); the deployment sets it from
        ``VERTEX_AI_THINKING_BUDGET`` (1024) so thinking cannot use up the output allowance.
        0 turns thinking off on gemini-2.5-flash but is rejected (400) by models that cannot
        stop thinking.
        ``timeout_seconds`` bounds each HTTP call, ``time_budget_seconds`` all of them with
        the backoff between them: the analyze step must answer Pub/Sub within its ack
        deadline (300 s), or its function is stopped before it can say why."""
        if not model:
            raise ValueError("model is required: set VERTEX_AI_MODEL")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if max_transcript_chars < 100:
            raise ValueError("max_transcript_chars must be at least 100")
        self.project = project
        self.location = location
        self.model = model
        self.max_transcript_chars = max_transcript_chars
        self.max_attempts = max_attempts
        self.timeout_seconds = timeout_seconds
        self.time_budget_seconds = time_budget_seconds
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self.prompt = load_prompt(prompt_version)
        self._client = client or genai.Client(vertexai=True, project=project, location=location)
        self._config = types.GenerateContentConfig(
            system_instruction=self.prompt.system,
            response_mime_type="application/json",
            response_schema=CallAnalysis,
            temperature=temperature,
            max_output_tokens=max_output_tokens,
            candidate_count=1,
            thinking_config=(
                types.ThinkingConfig(thinking_budget=thinking_budget)
                if thinking_budget is not None
                else None
            ),
            # Per request, so an injected client gets the same bound (HttpOptions wants ms).
            http_options=types.HttpOptions(timeout=int(timeout_seconds * 1000)),
        )

    # -- the port -----------------------------------------------------------------------

    def analyze(self, transcript: Transcript | None, context: CallContext) -> AnalysisResult:
        lines = transcript_lines(transcript) if transcript is not None else ""
        if not lines:
            return AnalysisResult(
                analysis=analyze_without_transcript(context),
                engine=NO_TRANSCRIPT_ENGINE,
                model=NO_TRANSCRIPT_MODEL,
                input_tokens=0,
                output_tokens=0,
            )
        contents = self.user_content(lines, context)
        input_tokens = output_tokens = 0
        transient_failures = off_schema = 0
        deadline = self._clock() + self.time_budget_seconds
        reason = "no call made"
        while True:
            remaining = deadline - self._clock()
            if remaining < _MIN_CALL_SECONDS:
                raise AnalysisFailed(
                    f"Vertex AI model {self.model} did not answer within the "
                    f"{self.time_budget_seconds:g} s budget ({transient_failures} failed "
                    f"calls): {reason}",
                    permanent=False,
                )
            try:
                response = self._client.models.generate_content(
                    model=self.model, contents=contents, config=self._config_within(remaining)
                )
            except errors.APIError as exc:
                self._raise_if_permanent(exc)
                reason = f"HTTP {exc.code} {exc.status or ''}".rstrip()
            except (errors.UnknownApiResponseError, json.JSONDecodeError) as exc:
                # a body that is not the API's JSON (a proxy's error page): not the model's
                # answer, so not off-schema; another call may well get through
                reason = f"unreadable response: {type(exc).__name__}"
            except _TRANSPORT_ERRORS as exc:
                # Timeouts, refused connections, resets; also token refresh hitting the network.
                reason = f"{type(exc).__name__}: {exc}"
            else:
                # Every answered call is billed, the discarded off-schema ones too.
                usage = response.usage_metadata
                if usage is not None:
                    input_tokens += usage.prompt_token_count or 0
                    # Thinking tokens are billed at the output price.
                    output_tokens += (usage.candidates_token_count or 0) + (
                        usage.thoughts_token_count or 0
                    )
                analysis, problem = self._read(response)
                if analysis is not None:
                    return AnalysisResult(
                        analysis=analysis,
                        engine=ENGINE,
                        model=self.model,
                        prompt_version=self.prompt.version,
                        input_tokens=input_tokens,
                        output_tokens=output_tokens,
                    )
                off_schema += 1
                if off_schema > _OFF_SCHEMA_RETRIES:
                    raise AnalysisFailed(f"model answered off-schema: {problem}", permanent=True)
                logger.warning(
                    "gemini answered off-schema, asking again",
                    extra={"fields": {"model": self.model, "problem": problem}},
                )
                continue
            transient_failures += 1
            if transient_failures >= self.max_attempts:
                raise AnalysisFailed(
                    f"Vertex AI model {self.model} unavailable after {transient_failures} "
                    f"attempts: {reason}",
                    permanent=False,
                )
            delay = min(self._backoff(transient_failures), max(0.0, deadline - self._clock()))
            logger.warning(
                "gemini call failed, retrying",
                extra={"fields": {"model": self.model, "reason": reason, "delay_s": delay}},
            )
            self._sleep(delay)

    # -- pieces, public for tests and for the README's request description ---------------

    def user_content(self, lines: str, context: CallContext) -> str:
        """The user turn: the context (unknown fields left out) and the bounded transcript.

        Phone numbers and e-mail addresses in the transcript become ``[phone]``/``[email]``
        first: the analysis never needs them, and the model cannot copy into a summary what
        it never saw."""
        context_json = context.model_dump_json(exclude_none=True, indent=2)
        return self.prompt.render_user(
            context_json, truncate_middle(redact_text(lines), self.max_transcript_chars)
        )

    def _config_within(self, remaining: float) -> types.GenerateContentConfig:
        """The request's settings, its timeout cut to what is left of the time budget."""
        if remaining >= self.timeout_seconds:
            return self._config
        return self._config.model_copy(
            update={"http_options": types.HttpOptions(timeout=int(remaining * 1000))}
        )

    def _backoff(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th transient failure: half of
        ``min(cap, base * 2**(failures-1))`` fixed plus up to the other half at random
        (0.5-1 s, 1-2 s, 2-4 s, …), so instances that failed together do not retry together."""
        delay = min(_BACKOFF_CAP_SECONDS, _BACKOFF_BASE_SECONDS * 2.0 ** (failures - 1))
        return delay / 2 + self._rng() * delay / 2

    def _read(self, response: types.GenerateContentResponse) -> tuple[CallAnalysis | None, str]:
        """The analysis, or None and why the answer is off-schema. Raises a permanent
        ``AnalysisFailed`` when the model refused."""
        feedback = response.prompt_feedback
        if feedback is not None and feedback.block_reason is not None:
            detail = f": {feedback.block_reason_message}" if feedback.block_reason_message else ""
            raise AnalysisFailed(
                f"refused: prompt blocked ({_enum_name(feedback.block_reason)}{detail})",
                permanent=True,
            )
        if not response.candidates:
            raise AnalysisFailed("refused: the model returned no candidates", permanent=True)
        candidate = response.candidates[0]
        finish = _enum_name(candidate.finish_reason) if candidate.finish_reason else None
        if finish in _REFUSAL_FINISH_REASONS:
            blocked = sorted(
                _enum_name(rating.category)
                for rating in candidate.safety_ratings or []
                if rating.blocked and rating.category is not None
            )
            because = f" ({', '.join(blocked)})" if blocked else ""
            raise AnalysisFailed(f"refused: finish_reason {finish}{because}", permanent=True)
        after = f" (finish_reason {finish})" if finish and finish != "STOP" else ""
        # Read from the text, not ``response.parsed``: the SDK drops an answer that breaks
        # the schema without saying why, and one that is only out of bounds can be mended.
        text = response.text
        if not text or not text.strip():
            return None, f"empty answer{after}"
        try:
            answer = json.loads(text)
        except ValueError as exc:
            return (
                None,
                f"Invalid JSON ({type(exc).__name__} at character {getattr(exc, 'pos', '?')}){after}",
            )
        try:
            return CallAnalysis.model_validate(conform(answer)), ""
        except ValidationError as exc:
            return None, _describe(exc) + after

    def _raise_if_permanent(self, exc: errors.APIError) -> None:
        code = exc.code
        if code is None or code >= 500 or code in _TRANSIENT_4XX:
            return
        status = exc.status or ""
        message = exc.message or ""
        where = f"project {self.project}, location {self.location}"
        if code == 404:
            raise AnalysisFailed(
                f"Vertex AI model {self.model!r} not found in {where} (404 {status}): the name is "
                f"wrong, the model is retired or not offered there; check VERTEX_AI_MODEL and "
                f"VERTEX_AI_LOCATION. {message}".rstrip(),
                permanent=True,
            )
        if code in (401, 403):
            raise AnalysisFailed(
                f"Vertex AI refused the credentials for {where} ({code} {status}): enable the "
                f"Vertex AI API and grant the function's service account roles/aiplatform.user. "
                f"{message}".rstrip(),
                permanent=True,
            )
        raise AnalysisFailed(
            f"Vertex AI rejected the request to model {self.model!r} ({code} {status}); the "
            f"model may not accept this prompt, schema or setting (check VERTEX_AI_MODEL). "
            f"{message}".rstrip(),
            permanent=True,
        )


def conform(answer: Any) -> Any:
    """The model's answer brought within the contract where the fix is plain, instead of
    thrown away (a second call, then a permanent failure): constrained decoding does not
    always hold ``maxLength``, ``maxItems`` or number bounds.

    - a summary over 600 characters is cut at a word, lists over 10 items keep the first 10;
    - a lead score outside 1-100 (or not whole) and a spam likelihood outside 0-1 are
      brought to the nearest allowed value;
    - a call the answer itself calls spam, a solicitation or a wrong number, or gives a spam
      likelihood of 0.5 or more (what persist flags as spam), scores at most 19, the
      rubric's "not a lead" band: a hot lead that is also spam would page the sales team
      for a robocall.

    Anything else (an unknown intent, a missing field) is left for validation to refuse.
    """
    if not isinstance(answer, dict):
        return answer
    fixed = dict(answer)
    summary = fixed.get("summary")
    if isinstance(summary, str) and len(summary) > SUMMARY_MAX_CHARS:
        fixed["summary"] = _shorten(summary, SUMMARY_MAX_CHARS)
    for key in ("key_details", "spam_reasons"):
        items = fixed.get(key)
        if isinstance(items, list) and len(items) > LIST_MAX_ITEMS:
            fixed[key] = items[:LIST_MAX_ITEMS]
    score = _number(fixed.get("lead_score"))
    if score is not None:
        fixed["lead_score"] = min(100, max(1, round(score)))
    spam = _number(fixed.get("spam_likelihood"))
    if spam is not None:
        fixed["spam_likelihood"] = min(1.0, max(0.0, spam))
    not_a_lead = fixed.get("intent") in _NOT_A_LEAD or (spam is not None and spam >= 0.5)
    if not_a_lead and isinstance(fixed.get("lead_score"), int):
        fixed["lead_score"] = min(fixed["lead_score"], _NOT_A_LEAD_MAX_SCORE)
    return fixed


def _number(value: Any) -> float | None:
    """A JSON number, or a number written as a string (which validation would accept as
    one, so it must be bounded too); None for anything else."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)  # an integer of 310+ digits does not fit
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _shorten(text: str, limit: int) -> str:
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:-") + "…"


def analyze_without_transcript(context: CallContext) -> CallAnalysis:
    """A deterministic analysis for a call with nothing to listen to.

    Why not ask Gemini from the context alone: the context (direction, answered, duration,
    source, CallRail's spam flag) holds a handful of facts, a few rules turn them into the
    same answer a model would give, and a model asked to analyze an empty call is the one
    most likely to invent a project. It would still cost the whole ~2,000-token system
    prompt per call. Scores follow the prompt's lead-score rubric v1 ("a voicemail or short
    call with no project details": 20-39; spam: 1-19)."""
    facts = ["No transcript available (no recording, or no speech in it)"]
    if context.source:
        facts.append(f"Source: {context.source}")
    if context.duration_seconds is not None:
        facts.append(f"Duration: {context.duration_seconds} s")
    if context.first_call:
        facts.append("First call from this number")
    if context.direction != "outbound" and context.voicemail:
        facts.append("Voicemail left")

    inbound = context.direction != "outbound"
    if context.callrail_spam:
        return CallAnalysis(
            intent="spam",
            project_type="unknown",
            timeline="unknown",
            budget_indicator="unknown",
            sentiment="neutral",
            urgency="low",
            lead_score=5,
            appointment_requested=False,
            follow_up_required=False,
            key_details=facts,
            spam_likelihood=0.9,
            spam_reasons=["Flagged as spam by CallRail", "No transcript to check"],
            summary="Call flagged as spam by CallRail; there is no transcript to check it by.",
        )
    # "no transcript": no recording, or one with no speech in it
    voicemail = inbound and bool(context.voicemail)
    missed = voicemail or (inbound and context.answered is False)
    who = "a first-time caller" if context.first_call else "a caller"
    if voicemail:
        summary = (
            f"Voicemail from {who}, with no transcript to say what about; the call should "
            "be returned."
        )
        # someone cared enough to leave a message (the rubric's voicemail band, 20-39)
        score = 35 if context.first_call else 30
    elif missed:
        summary = f"Missed inbound call from {who} with no transcript; the call should be returned."
        # A missed first call is the most valuable of these: someone new tried to reach us.
        score = 35 if context.first_call else 25
    elif inbound:
        summary = "Inbound call with no transcript; what was discussed is unknown."
        score = 25
    else:
        summary = "Outbound call with no transcript; what was discussed is unknown."
        score = 20
    return CallAnalysis(
        intent="other",
        project_type="unknown",
        timeline="unknown",
        budget_indicator="unknown",
        sentiment="neutral",
        urgency="medium" if missed else "low",
        lead_score=score,
        appointment_requested=False,
        follow_up_required=missed,
        key_details=facts,
        spam_likelihood=0.1,
        spam_reasons=[],
        summary=summary,
    )


def _enum_name(value: object) -> str:
    """``FinishReason.SAFETY`` → "SAFETY"; the SDK may also hand back a plain string for a value
    newer than itself."""
    return str(getattr(value, "value", value))


def _describe(exc: ValidationError) -> str:
    """Where and how the answer broke the schema, without echoing its content (PII)."""
    problems = [
        f"{'.'.join(str(p) for p in error['loc']) or '(root)'}: {error['msg']}"
        for error in exc.errors(include_input=False, include_url=False)
    ]
    more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
    return "; ".join(problems[:5]) + more
