"""Scoring a transcript against a known script: WER and speaker attribution.

Used by ``bench/transcribe_bench.py`` and the functional tests. Both sides go through the
same normaliser: lowercase, no punctuation, contractions expanded, numbers as words (the
demo scripts spell numbers out as spoken; Whisper writes digits: "$40,000", "1428",
"626-555-0143"). The alignment is a plain Levenshtein alignment over words.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from callpipe.transcripts import Transcript

_ONES = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
)
_TENS = ("_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_SCALES = ((1_000_000_000, "billion"), (1_000_000, "million"), (1000, "thousand"))
_ORDINALS = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
    "nine": "ninth", "twelve": "twelfth",
}  # fmt: skip
_CONTRACTIONS = {
    "n't": " not", "'m": " am", "'re": " are", "'ve": " have", "'ll": " will", "'d": " would",
}  # fmt: skip
_SPECIAL = {"can't": "can not", "won't": "will not", "let's": "let us", "ok": "okay"}
_IS_CONTRACTED = re.compile(r"\b(it|that|what|there|here|he|she|who|where|how)'s\b")


def number_words(n: int) -> str:
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + number_words(rest))
    for size, name in _SCALES:
        if n >= size:
            rest = n % size
            head = number_words(n // size) + " " + name
            return head + ("" if rest == 0 else " " + number_words(rest))
    raise AssertionError("unreachable")


def _ordinal(words: str) -> str:
    *head, last = words.split()
    if last in _ORDINALS:
        last = _ORDINALS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return " ".join([*head, last])


def _spell_number(token: str) -> str:
    """Digits as a speaker would say them in a call."""
    if re.fullmatch(r"\d+(st|nd|rd|th)", token):
        return _ordinal(number_words(int(token[:-2])))
    if re.fullmatch(r"\d{1,3}(,\d{3})+", token):
        return number_words(int(token.replace(",", "")))
    if re.fullmatch(r"\d+\.\d+", token):
        whole, fraction = token.split(".")
        return number_words(int(whole)) + " point " + " ".join(_ONES[int(d)] for d in fraction)
    if re.fullmatch(r"\d+", token):
        n = int(token)
        if token.startswith("0") and len(token) > 1:  # a digit string: "0143"
            return " ".join(_ONES[int(d)] for d in token)
        if 1100 <= n <= 9999 and (n // 100) % 10 != 0:  # "1428" in an address or a year
            low = n % 100
            tail = "hundred" if low == 0 else ("oh " + _ONES[low] if low < 10 else None)
            return number_words(n // 100) + " " + (tail or number_words(low))
        return number_words(n)
    # Phone numbers and other digit groups: "626-555-0143", "6.2.5": digit by digit.
    return " ".join(_ONES[int(d)] for d in token if d.isdigit())


def normalize(text: str) -> list[str]:
    """Comparable words: lowercase, no punctuation, contractions expanded, numbers spelled."""
    text = text.lower().replace("\u2019", "'").replace("&", " and ").replace("%", " percent")
    for short, long in _SPECIAL.items():
        text = re.sub(rf"\b{re.escape(short)}\b", long, text)
    text = _IS_CONTRACTED.sub(lambda m: m.group(1) + " is", text)
    for short, long in _CONTRACTIONS.items():
        text = text.replace(short, long)
    text = re.sub(r"\$(\d[\d,.]*\d|\d)", r"\1 dollars", text)
    text = re.sub(r"(\d)([a-z]{3,})", r"\1 \2", text)  # "5year" -> "5 year", keeps "1st"
    text = re.sub(
        r"\d[\d,.\-]*\d(st|nd|rd|th)?|\d(st|nd|rd|th)?",
        lambda m: " " + _spell_number(m.group(0)) + " ",
        text,
    )
    text = re.sub(r"[^a-z' ]+", " ", text).replace("'", "")
    return text.split()


@dataclass(frozen=True)
class Alignment:
    pairs: list[tuple[int | None, int | None]]  # (reference index, hypothesis index)
    substitutions: int
    deletions: int
    insertions: int
    reference_words: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        return self.errors / self.reference_words if self.reference_words else 0.0


def align(reference: Sequence[str], hypothesis: Sequence[str]) -> Alignment:
    """Minimum-edit alignment; ties prefer a substitution, then a deletion."""
    rows, cols = len(reference) + 1, len(hypothesis) + 1
    cost = [[0] * cols for _ in range(rows)]
    for i in range(rows):
        cost[i][0] = i
    for j in range(cols):
        cost[0][j] = j
    for i in range(1, rows):
        for j in range(1, cols):
            same = reference[i - 1] == hypothesis[j - 1]
            cost[i][j] = min(
                cost[i - 1][j - 1] + (0 if same else 1), cost[i - 1][j] + 1, cost[i][j - 1] + 1
            )
    pairs: list[tuple[int | None, int | None]] = []
    subs = dels = ins = 0
    i, j = rows - 1, cols - 1
    while i > 0 or j > 0:
        if i > 0 and j > 0:
            same = reference[i - 1] == hypothesis[j - 1]
            if cost[i][j] == cost[i - 1][j - 1] + (0 if same else 1):
                subs += 0 if same else 1
                pairs.append((i - 1, j - 1))
                i, j = i - 1, j - 1
                continue
        if i > 0 and cost[i][j] == cost[i - 1][j] + 1:
            dels += 1
            pairs.append((i - 1, None))
            i -= 1
        else:
            ins += 1
            pairs.append((None, j - 1))
            j -= 1
    pairs.reverse()
    return Alignment(pairs, subs, dels, ins, len(reference))


def best_mapping_accuracy(
    pairs: Iterable[tuple[str, str]],
) -> tuple[float, dict[str, str]]:
    """Share of (reference speaker, hypothesis speaker) pairs that agree under the best
    one-to-one renaming of hypothesis speakers (labels are arbitrary on mono calls)."""
    pairs = list(pairs)
    if not pairs:
        return 0.0, {}
    hyp = sorted({h for _, h in pairs})
    ref = sorted({r for r, _ in pairs})
    targets = ref + [f"<extra {i}>" for i in range(max(len(hyp) - len(ref), 0))]
    best: tuple[int, dict[str, str]] = (-1, {})
    for chosen in itertools.permutations(targets, len(hyp)):
        mapping = dict(zip(hyp, chosen, strict=True))
        hits = sum(mapping[h] == r for r, h in pairs)
        if hits > best[0]:
            best = (hits, mapping)
    return best[0] / len(pairs), best[1]


@dataclass(frozen=True)
class Score:
    wer: float
    reference_words: int
    errors: int
    speaker_accuracy: float | None  # None when the reference has one voice
    label_accuracy: float | None  # literal agent/caller agreement, when labels are roles
    reference_speakers: int
    hypothesis_speakers: int


def score(reference_turns: Sequence[tuple[str, str]], transcript: Transcript) -> Score:
    """``reference_turns``: (speaker, text) in order, as in a demo call's script."""
    ref_words: list[str] = []
    ref_speakers: list[str] = []
    for speaker, text in reference_turns:
        words = normalize(text)
        ref_words += words
        ref_speakers += [speaker] * len(words)
    hyp_words: list[str] = []
    hyp_speakers: list[str] = []
    for word in transcript.words:
        tokens = normalize(word.word)
        hyp_words += tokens
        hyp_speakers += [word.speaker or "unknown"] * len(tokens)
    alignment = align(ref_words, hyp_words)
    matched = [
        (ref_speakers[r], hyp_speakers[h])
        for r, h in alignment.pairs
        if r is not None and h is not None
    ]
    two_voices = len(set(ref_speakers)) > 1
    accuracy = best_mapping_accuracy(matched)[0] if two_voices and matched else None
    roles = {h for _, h in matched} <= {"agent", "caller"}
    literal = sum(r == h for r, h in matched) / len(matched) if matched and roles else None
    return Score(
        wer=alignment.wer,
        reference_words=alignment.reference_words,
        errors=alignment.errors,
        speaker_accuracy=accuracy,
        label_accuracy=literal,
        reference_speakers=len(set(ref_speakers)),
        hypothesis_speakers=transcript.speaker_count,
    )
