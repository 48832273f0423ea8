"""Money amounts in normalized text: "$40000", "40k", "8 grand", "40 and 50000 dollars".

Spoken numbers are already digits here (``text.normalize``), which folds "thousand" into
the number: "forty thousand" arrives as "40000". A bare number is money only when it is
large (≥ 1000) and not a quantity, a year, a street number or an identifier ("1200 square
feet", "built in 1978", "2150 maple avenue", "zip code is 80104"); a small one needs a
``$``, "dollars", "bucks", "k" or "grand".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from callpipe.analyzers.lexicon import BudgetLexicon

_NUMBER = r"\d+(?:\.\d+)?"
# One amount, or a range whose first end may be missing its multiplier ("40 and 50000",
# "10, 12000 dollars", "$30 to $40k").
_AMOUNT = re.compile(
    rf"(?P<dollar>\$)?(?P<a>{_NUMBER})\s?(?P<amult>k\b|grand\b)?"
    rf"(?:\s?(?:to|and|or|-|,)\s?\$?(?P<b>{_NUMBER})\s?(?P<bmult>k\b|grand\b)?)?"
    r"(?P<cue>\s?(?:dollars|bucks)\b)?"
)
_MULT = {"k": 1_000, "grand": 1_000}


@dataclass(frozen=True)
class Amount:
    low: float
    high: float
    start: int
    end: int

    @property
    def value(self) -> float:
        """The midpoint: a range "between 40 and 50 thousand" is a budget of about 45k."""
        return (self.low + self.high) / 2


def _scale(number: str, mult: str | None) -> float:
    return float(number) * (_MULT[mult] if mult else 1)


def find_amounts(norm: str, lexicon: BudgetLexicon) -> list[Amount]:
    """Money amounts in one normalized turn, in order, without units, per-unit prices and
    amounts already paid (see the lexicon's ``not_*`` patterns)."""
    amounts: list[Amount] = []
    for m in _AMOUNT.finditer(norm):
        a = _scale(m["a"], m["amult"] or m["bmult"] if m["b"] else m["amult"])
        b = _scale(m["b"], m["bmult"]) if m["b"] else a
        # "40 and 50000": the first end takes the second's order of magnitude.
        if m["b"] and a < 1000 <= b and not m["amult"]:
            magnitude = 10 ** (len(str(int(b))) - len(str(int(a))))
            a = a * magnitude if a * magnitude <= b else a * magnitude / 10
        before, after = norm[: m.start()], norm[m.end() :]
        cued = bool(m["dollar"] or m["amult"] or m["bmult"] or m["cue"])
        if not cued and (max(a, b) < 1000 or _not_money(before, after, (a, b), lexicon)):
            continue
        if lexicon.not_budget_after.match(after):
            continue
        if lexicon.not_budget_before.search(before):
            continue
        if m["b"] and not cued and a >= 1000 and b >= 1000 and m.group().count(",") == 1:
            # "1000, 2000" is a list more often than a range; keep the first.
            b = a
        amounts.append(Amount(low=min(a, b), high=max(a, b), start=m.start(), end=m.end()))
    return amounts


def _not_money(before: str, after: str, ends: tuple[float, float], lexicon: BudgetLexicon) -> bool:
    """For a number without a money cue: a quantity, an identifier, an address or a year."""
    if lexicon.not_money_units.match(after) or lexicon.not_money_before.search(before):
        return True
    if lexicon.street_after.match(after):
        return True
    return all(_year(n, before, lexicon) for n in ends)


def _year(number: float, before: str, lexicon: BudgetLexicon) -> bool:
    """1978, 2004, 2019 are years; a round 2000 is one only after "in", "since", "built"…
    ("about 2000" is money more often)."""
    if not number.is_integer() or not 1900 <= number <= 2099:
        return False
    return number % 100 != 0 or bool(lexicon.year_before.search(before))


def format_amount(amount: Amount) -> str:
    if amount.low == amount.high:
        return f"${amount.low:,.0f}"
    return f"${amount.low:,.0f}-${amount.high:,.0f}"
