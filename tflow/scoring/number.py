"""GSM8K's answer kind: the final number.

A reference is GSM8K's answer field (worked solution, then `#### 42`) or a bare number. A prediction's number is,
in this order: the number after its last `####`, inside its last `\boxed{...}`, after its last "answer is" /
"Answer:", else its last number. Thousands separators, currency signs, a trailing period and surrounding
markdown are ignored; numbers compare as exact decimals (`1000` = `1,000.00` = `$1,000.`).
"""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from .thinking import strip_thinking

_NUMBER = r"-?\$?\s?\d[\d,]*(?:\.\d+)?|-?\$?\s?\.\d+"
_MARKERS = (
    re.compile(r"####\s*([^\n]*)"),
    re.compile(r"\\boxed\{([^{}]*)\}"),
    re.compile(r"answer(?: is|:)\s*:?\s*([^\n]*)", re.I),
)


def to_decimal(text: str) -> Decimal | None:
    """The first number in `text` as a Decimal (commas, currency and spaces dropped), or None."""
    m = re.search(_NUMBER, text)
    if not m:
        return None
    raw = re.sub(r"[\s$,]", "", m.group(0))
    try:
        return Decimal(raw)
    except InvalidOperation:
        return None


def extract(text: str) -> Decimal | None:
    """The final number a completion gives (thinking removed), or None when it gives none."""
    text = strip_thinking(text)
    for marker in _MARKERS:
        found = marker.findall(text)
        for candidate in reversed(found):
            value = to_decimal(candidate)
            if value is not None:
                return value
    numbers = re.findall(_NUMBER, text)
    return to_decimal(numbers[-1]) if numbers else None


def reference(answer: str) -> Decimal:
    """The number a GSM8K answer field ends with (`#### 42`), or a bare number."""
    value = extract(answer)
    if value is None:
        raise ValueError(f"no number in the reference answer {answer[:60]!r}")
    return value


def score(completion: str, answer: str) -> bool:
    """Whether the completion's final number equals the reference's."""
    got = extract(completion)
    return got is not None and got == reference(answer)
