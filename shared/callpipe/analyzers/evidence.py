"""A call prepared for the rules (roles resolved, text normalized) and the cue-weighing
helpers every field rule uses."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from callpipe.analysis import CallContext
from callpipe.analyzers.lexicon import Cue, Lexicon
from callpipe.analyzers.text import Utterance, negated, normalize

_GREETING = re.compile(
    r"thank(?:s| you) for calling|how (?:can|may) i help|\bthis is \w+\b|speaking\b"
)


@dataclass(frozen=True)
class Call:
    turns: list[Utterance]
    context: CallContext
    lexicon: Lexicon
    speaker_count: int
    # Whether one speaker label means one voice: stereo channels or the provider's
    # diarization, not the local engine's clustering (two similar voices can merge there).
    voices_separated: bool
    # The turns project and trade cues look at: the business's own name removed, and the
    # agent's greeting dropped ("Summit Roofing, this is Carlos" says nothing about the
    # caller's project).
    content: list[Utterance] = field(init=False)

    def __post_init__(self) -> None:
        name = normalize(self.context.business_name or "")
        content: list[Utterance] = []
        greeted = False
        for u in self.turns:
            if u.role == "agent" and not greeted:
                greeted = True
                if _GREETING.search(u.norm) or (name and name in u.norm):
                    continue
            norm = u.norm.replace(name, " ") if name else u.norm
            content.append(Utterance(role=u.role, text=u.text, norm=norm, index=u.index))
        object.__setattr__(self, "content", content)

    @property
    def caller(self) -> list[Utterance]:
        return [u for u in self.turns if u.role == "caller"]

    @property
    def agent(self) -> list[Utterance]:
        return [u for u in self.turns if u.role == "agent"]

    @property
    def caller_words(self) -> int:
        return sum(len(u.norm.split()) for u in self.caller)

    def next_caller_turn(self, after: Utterance) -> Utterance | None:
        return next((u for u in self.turns if u.index > after.index and u.role == "caller"), None)


def cue_found(cue: Cue, norm: str) -> re.Match[str] | None:
    """The first match of ``cue`` in ``norm`` that is not negated (when negation applies)."""
    for m in cue.pattern.finditer(norm):
        if not (cue.negatable and negated(norm, m.start())):
            return m
    return None


def weigh(cues: Sequence[Cue], turns: Iterable[Utterance], scale: float = 1.0) -> float:
    """Evidence points: each cue counts once per turn in which it is found."""
    return sum(
        cue.weight * scale for u in turns for cue in cues if cue_found(cue, u.norm) is not None
    )


def weigh_call(cues: Sequence[Cue], call: Call, turns: list[Utterance] | None = None) -> float:
    """Evidence over both sides: the caller's turns in full, the agent's at the lexicon's
    ``agent_weight``."""
    turns = call.turns if turns is None else turns
    caller = weigh(cues, (u for u in turns if u.role == "caller"))
    agent = weigh(cues, (u for u in turns if u.role == "agent"), call.lexicon.agent_weight)
    return caller + agent


def any_match(patterns: Sequence[re.Pattern[str]], norm: str) -> re.Match[str] | None:
    for p in patterns:
        m = p.search(norm)
        if m:
            return m
    return None
