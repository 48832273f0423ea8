"""Loading the rule-based analyzer's lexicon (``lexicon_v<N>.yaml`` next to this module).

The YAML is validated into these models, so a misspelt key or a pattern that does not
compile fails at load time rather than silently matching nothing. Patterns are compiled by
pydantic (``re.Pattern`` fields); they are matched against normalized text (``text.py``).
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from callpipe.analysis import ProjectType, Timeline


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Cue(_Strict):
    pattern: re.Pattern[str]
    weight: float = 1.0
    negatable: bool = False


class SpamSign(Cue):
    reason: str
    robocall: bool = False


class Monologue(_Strict):
    min_words: int
    weight: float


class SpamLexicon(_Strict):
    threshold: float
    callrail_flag_weight: float
    monologue: Monologue
    signs: list[SpamSign]
    agent_signs: list[SpamSign]


class ProjectCues(_Strict):
    label: str
    cues: list[Cue]


class ProjectLexicon(_Strict):
    min_evidence: float
    kitchen_scope: re.Pattern[str]
    types: dict[ProjectType, ProjectCues]


class TimelineLexicon(_Strict):
    past: re.Pattern[str]
    buckets: dict[Timeline, list[re.Pattern[str]]]
    visit_when: dict[Timeline, re.Pattern[str]]


class BudgetLexicon(_Strict):
    medium_from: int
    high_from: int
    not_money_units: re.Pattern[str]
    not_budget_before: re.Pattern[str]
    not_budget_after: re.Pattern[str]
    # For numbers without a money cue only:
    not_money_before: re.Pattern[str]  # "zip code is 80104", "model 2150"
    street_after: re.Pattern[str]  # "2150 Maple Avenue"
    year_before: re.Pattern[str]  # "built in 2000": a round year
    words: dict[Literal["low", "medium", "high"], list[re.Pattern[str]]]


class SentimentLexicon(_Strict):
    strong: float
    polite: re.Pattern[str]
    positive: list[Cue]
    negative: list[Cue]


class UrgencyLexicon(_Strict):
    emergency: list[Cue]
    escalation: list[Cue]
    calm: list[re.Pattern[str]]


class AppointmentLexicon(_Strict):
    caller_request: list[re.Pattern[str]]
    visit: list[re.Pattern[str]]
    when: re.Pattern[str]
    accept: re.Pattern[str]
    decline: re.Pattern[str]
    no_visit: re.Pattern[str]


class FollowUpLexicon(_Strict):
    agent_promise: list[re.Pattern[str]]
    agent_offer: list[re.Pattern[str]]
    caller_request: list[re.Pattern[str]]
    dropped: re.Pattern[str]


class DetailCue(_Strict):
    pattern: re.Pattern[str]
    detail: str
    side: Literal["caller", "any"] = "caller"


IntentGroup = Literal[
    "price_ask",
    "desire",
    "info",
    "appointment",
    "problem",
    "existing",
    "existing_agent",
    "complaint",
    "wrong_number",
    "wrong_number_agent",
    "job",
    "vendor",
]


class Lexicon(_Strict):
    version: int
    agent_weight: float = Field(ge=0, le=1)
    spam: SpamLexicon
    intents: dict[IntentGroup, list[Cue]]
    projects: ProjectLexicon
    timeline: TimelineLexicon
    budget: BudgetLexicon
    sentiment: SentimentLexicon
    urgency: UrgencyLexicon
    appointment: AppointmentLexicon
    follow_up: FollowUpLexicon
    key_details: list[DetailCue] = Field(max_length=40)


@cache
def load_lexicon(version: int) -> Lexicon:
    """The packaged ``lexicon_v<version>.yaml``, validated (cached: it is read once)."""
    source = resources.files("callpipe.analyzers").joinpath(f"lexicon_v{version}.yaml")
    lexicon = Lexicon.model_validate(yaml.safe_load(source.read_text(encoding="utf-8")))
    if lexicon.version != version:
        raise ValueError(f"lexicon_v{version}.yaml says version {lexicon.version}")
    return lexicon
