"""Text preparation for the rule-based analyzer: normalization, spoken numbers, speaker roles.

Lexicon patterns are written against *normalized* text: lower case, straight apostrophes,
``&`` spelled ``and``, hyphens between words turned into spaces (``walk-in`` = ``walk in``),
and spoken numbers written as digits (``forty thousand`` → ``40000``, ``eight grand`` →
``8 grand``), so that one pattern covers what different speech engines produce.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from callpipe.analysis import CallContext
from callpipe.transcripts import Transcript

Role = Literal["agent", "caller"]

_UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9,
}  # fmt: skip
_TEENS = {
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}  # fmt: skip
_TENS = {
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
    "eighty": 80, "ninety": 90,
}  # fmt: skip
_SCALES = {"thousand": 1_000, "million": 1_000_000}
_NUMBER_WORDS = {*_UNITS, *_TEENS, *_TENS, "hundred", *_SCALES}
# A lone "one" is usually a pronoun ("the one bathroom", "no one"); it is a number only
# next to another number word or before one of these.
_ONE_CONTEXT = re.compile(r"^\s*(?:month|week|year|day|hour|thousand|grand|dollar|buck)")
_TOKEN = re.compile(r"[a-z]+")


def _parse_number_run(words: list[str]) -> int | None:
    """Value of a run of number words ("twenty four hundred" → 2400), or None if the run is
    not one number. Callers split runs where a new number starts ("forty fifty")."""
    total, current, seen = 0, 0, False
    for word in words:
        if word == "and":
            continue
        if word in _UNITS:
            current += _UNITS[word]
        elif word in _TEENS:
            current += _TEENS[word]
        elif word in _TENS:
            current += _TENS[word]
        elif word == "hundred":
            current = (current or 1) * 100
        elif word in _SCALES:
            total += (current or 1) * _SCALES[word]
            current = 0
        else:
            return None
        seen = True
    return total + current if seen else None


def _kind(word: str) -> str:
    if word in _UNITS:
        return "unit"
    if word in _TEENS:
        return "teen"
    if word in _TENS:
        return "tens"
    return word  # "hundred", "thousand", "million", "and", "a"


# Which word kinds may follow which inside one spoken number.
_MAY_FOLLOW: dict[str, set[str]] = {
    "start": {"unit", "teen", "tens", "hundred", "thousand", "million"},
    "a": {"hundred", "thousand", "million"},
    "unit": {"hundred", "thousand", "million"},
    "teen": {"hundred", "thousand", "million"},
    "tens": {"unit", "hundred", "thousand", "million"},
    "hundred": {"and", "unit", "teen", "tens", "thousand", "million"},
    "and": {"unit", "teen", "tens"},
    "thousand": {"unit", "teen", "tens", "and"},
    "million": {"unit", "teen", "tens", "and"},
}


def words_to_digits(text: str) -> str:
    """Replace spoken numbers in lower-case ``text`` with digits."""
    tokens = list(_TOKEN.finditer(text))
    out: list[str] = []
    pos = 0
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        word = tok.group()
        starts_number = word in _NUMBER_WORDS and word not in ("hundred", "thousand", "million")
        if word == "a" and i + 1 < len(tokens) and tokens[i + 1].group() in ("hundred", "thousand"):
            starts_number = True
        if not starts_number:
            i += 1
            continue
        run = [word]
        prev = "a" if word == "a" else _kind(word)
        j = i + 1
        while j < len(tokens):
            gap = text[tokens[j - 1].end() : tokens[j].start()]
            if gap.strip(" -"):  # punctuation ends a number ("forty, fifty")
                break
            nxt = tokens[j].group()
            if nxt not in _NUMBER_WORDS and nxt != "and":
                break
            kind = _kind(nxt)
            if kind not in _MAY_FOLLOW.get(prev, set()):
                break
            if kind == "and" and not (
                j + 1 < len(tokens) and _kind(tokens[j + 1].group()) in ("unit", "teen", "tens")
            ):
                break
            run.append(nxt)
            prev = kind
            j += 1
        value = _parse_number_run(["one" if w == "a" else w for w in run])
        lone_one = run == ["one"] and not (
            _ONE_CONTEXT.match(text[tok.end() :]) or text[: tok.start()].endswith("press ")
        )
        if value is None or lone_one:
            i += 1
            continue
        out.append(text[pos : tok.start()])
        out.append(str(value))
        pos = tokens[j - 1].end()
        i = j
    out.append(text[pos:])
    return "".join(out)


# Phone numbers, written ("555-123-4567", "(555) 123 4567") or spoken digit by digit
# ("5 5 5, 0 1 4 3" once words are digits): 7+ digits in 3+ groups of at most 4, or one
# 10-11 digit block. They become "phone" so that no rule reads them as money or times.
_PHONE = re.compile(
    r"(?<![\d$])(?:\(?\d{1,4}\)?[ ,.-]+){2,}\d{1,4}(?![\d,]*\d)|(?<![\d$])\d{10,11}\b"
)


def _mask_phones(t: str) -> str:
    def repl(m: re.Match[str]) -> str:
        digits = sum(ch.isdigit() for ch in m.group())
        return " phone " if digits >= 7 else m.group()

    return _PHONE.sub(repl, t)


def normalize(text: str) -> str:
    """The form lexicon patterns match against (see the module docstring)."""
    t = text.lower()
    t = t.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"')
    t = t.replace("\u201d", '"').replace("&", " and ")
    t = re.sub(r"(?<=[a-z])-(?=[a-z])", " ", t)
    t = words_to_digits(t)
    # A lone "one" beside digits is a digit ("0 one 4 3" in a spoken phone number).
    t = re.sub(r"(?<=\d[ ,.-])one\b|\bone(?=[ ,.-]+\d)", "1", t)
    t = _mask_phones(t)
    t = re.sub(r"(?<=\d),(?=\d{3}\b)", "", t)  # "$40,000" → "$40000"
    return re.sub(r"\s+", " ", t).strip()


@dataclass(frozen=True)
class Utterance:
    """One turn with its resolved role; ``text`` is the original, ``norm`` normalized."""

    role: Role
    text: str
    norm: str
    index: int


_GREETING = re.compile(
    r"thank(?:s| you) for calling|how (?:can|may) i help|this is \w+ speaking|"
    r"^[\w&' ]{0,60}, this is \w+\b",
    re.IGNORECASE,
)


def _agent_label(speakers: list[str], first_texts: dict[str, str], ctx: CallContext) -> str | None:
    """Which diarized speaker (speaker_1, speaker_2…) is the business: the one who greets
    with the business's phrases; otherwise the first to speak on an inbound call (the
    business answers) and the second on an outbound one."""
    for speaker in speakers:
        if _GREETING.search(first_texts[speaker]):
            return speaker
    if ctx.business_name:
        name = ctx.business_name.lower()
        for speaker in speakers:
            if name in first_texts[speaker].lower():
                return speaker
    if ctx.direction == "outbound" and len(speakers) > 1:
        return speakers[1]
    return speakers[0]


def utterances(transcript: Transcript, ctx: CallContext) -> list[Utterance]:
    """The transcript's turns with ``agent``/``caller`` roles.

    A transcript with one speaker is the caller's whatever its label: a voicemail, or a
    robocall talking to whoever picked up.
    """
    segments = [s for s in transcript.segments if s.text.strip()]
    speakers = list(dict.fromkeys(s.speaker for s in segments))
    first_texts = {sp: next(s.text for s in segments if s.speaker == sp) for sp in speakers}
    if len(speakers) <= 1:
        agent: str | None = None
    elif "agent" in speakers or "caller" in speakers:
        agent = "agent" if "agent" in speakers else None
    else:
        agent = _agent_label(speakers, first_texts, ctx)
    return [
        Utterance(
            role="agent" if s.speaker == agent else "caller",
            text=s.text.strip(),
            norm=normalize(s.text),
            index=i,
        )
        for i, s in enumerate(segments)
    ]


NEGATORS = frozenset(
    {"not", "no", "never", "without", "nothing", "nobody", "hardly", "isn't", "wasn't",
     "aren't", "don't", "doesn't", "didn't", "won't", "can't", "cannot", "ain't", "isnt",
     "dont", "didnt", "wont", "cant", "neither", "nor"}
)  # fmt: skip


def negated(norm: str, start: int, window: int = 3) -> bool:
    """True when one of the ``window`` words before ``start`` is a negator, within the same
    clause ("not in a hurry", "no rush", "it isn't urgent")."""
    before = re.split(r"[.,;!?]", norm[:start])[-1]
    words = before.split()[-window:]
    return any(w in NEGATORS or w.endswith("n't") for w in words)
