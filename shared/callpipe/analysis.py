"""The analysis model every analyzer produces (the seed's output plus spam, summary and
provenance), and the analyzer port."""

from __future__ import annotations

from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from callpipe.transcripts import Transcript

Intent = Literal[
    "quote_request",
    "appointment_request",
    "service_request",
    "existing_customer",
    "complaint",
    "information_request",
    "spam",
    "wrong_number",
    "solicitation",
    "job_inquiry",
    "other",
]
ProjectType = Literal[
    "kitchen",
    "bathroom",
    "roofing",
    "siding",
    "windows_doors",
    "flooring",
    "painting",
    "hvac",
    "plumbing",
    "electrical",
    "basement",
    "deck_patio",
    "addition",
    "whole_home",
    "landscaping",
    "cabinets_countertops",
    "other",
    "unknown",
]
Timeline = Literal[
    "immediate", "within_1_month", "1-3_months", "3-6_months", "6_plus_months", "unknown"
]
Budget = Literal["low", "medium", "high", "unknown"]
Sentiment = Literal["positive", "neutral", "negative", "mixed"]
Urgency = Literal["low", "medium", "high"]


SUMMARY_MAX_CHARS = 600
LIST_MAX_ITEMS = 10


class CallAnalysis(BaseModel):
    """What the business wants to know about a call. Also the LLM's response schema."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    intent: Intent
    project_type: ProjectType
    timeline: Timeline
    budget_indicator: Budget
    sentiment: Sentiment
    urgency: Urgency
    lead_score: int = Field(ge=1, le=100)
    appointment_requested: bool
    follow_up_required: bool
    key_details: list[str] = Field(max_length=LIST_MAX_ITEMS)
    spam_likelihood: float = Field(ge=0, le=1)
    spam_reasons: list[str] = Field(max_length=LIST_MAX_ITEMS)
    summary: str = Field(max_length=SUMMARY_MAX_CHARS)


class CallContext(BaseModel):
    """What the analyzer may know besides the transcript (no names or phone numbers)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    direction: str | None = None
    answered: bool | None = None
    voicemail: bool | None = None
    duration_seconds: int | None = None
    first_call: bool | None = None
    callrail_spam: bool | None = None
    source: str | None = None
    customer_state: str | None = None
    business_name: str | None = None


class AnalysisResult(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    analysis: CallAnalysis
    engine: str = Field(description="'gemini' or 'rules'.")
    model: str
    prompt_version: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None


class AnalysisFailed(RuntimeError):
    """``permanent``: the model refused or kept answering off-schema; otherwise retry."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class Analyzer(Protocol):
    def analyze(self, transcript: Transcript | None, context: CallContext) -> AnalysisResult:
        """Analyze a call; ``transcript`` is None for a call without audio."""
        ...
