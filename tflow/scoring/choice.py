"""MMLU's answer kind: one letter of A-D.

The letter is read from the answer text (thinking removed), in this order: the last "answer is (X)" /
"Answer: X" / `\\boxed{X}`, else a reply that is a letter alone ("C", "(C)", "C." or "C) text"), else the last
letter standing alone in parentheses. A reply naming no letter is wrong.
"""
from __future__ import annotations

import re

from .thinking import strip_thinking

LETTERS = "ABCD"
_STATED = re.compile(r"(?:answer\s*(?:is|:)\s*(?:option\s*)?|\\boxed\{)\s*\(?([A-D])\b", re.I)
_ALONE = re.compile(r"^\s*\(?([A-D])(?:[).:]|\s|$)")
_PAREN = re.compile(r"\(([A-D])\)")


def extract(text: str) -> str | None:
    text = strip_thinking(text)
    stated = _STATED.findall(text)
    if stated:
        return stated[-1].upper()
    alone = _ALONE.match(text)
    if alone:
        return alone.group(1)
    paren = _PAREN.findall(text)
    return paren[-1] if paren else None


def reference(answer: str | int) -> str:
    """A letter, or a 0-based index (MMLU-Redux stores the answer as an index)."""
    if isinstance(answer, int) or str(answer).strip().isdigit():
        return LETTERS[int(answer)]
    letter = str(answer).strip().upper()
    if letter not in LETTERS:
        raise ValueError(f"not an answer letter: {answer!r}")
    return letter


def score(completion: str, answer: str | int) -> bool:
    return extract(completion) == reference(answer)
