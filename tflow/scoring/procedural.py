"""reasoning-gym's answer kind: each procedural dataset scores its own items (`score_answer`), from the answer the
completion gives: its last `\\boxed{...}`, else its last `<answer>...</answer>`, else what follows its last
"answer is" / "Answer:", else (an integer answer) its final number, as GSM8K's is read, else its last line. Only full
credit (1.0) counts as correct.
"""
from __future__ import annotations

import functools
import re

from . import number
from .thinking import strip_thinking

_BOXED = re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")
_TAGGED = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.S)
_STATED = re.compile(r"answer(?: is|:)\s*:?\s*(.+)", re.I)


def extract(completion: str, numeric: bool = False) -> str:
    """The answer a completion gives; for a numeric item without a marked answer, its final number (as GSM8K's)."""
    text = strip_thinking(completion)
    for pattern in (_BOXED, _TAGGED, _STATED):
        found = pattern.findall(text)
        if found:
            return found[-1].strip().rstrip(".").strip()
    if numeric and (value := number.extract(text)) is not None:
        return str(int(value)) if value == value.to_integral_value() else format(value.normalize(), "f")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1].rstrip(".").strip("*").strip() if lines else ""


@functools.cache
def _dataset(name: str):
    import reasoning_gym  # its datasets import sympy and more: only when a procedural task is scored

    return reasoning_gym.create_dataset(name, seed=0, size=1)


def score(completion: str, entry: dict, name: str) -> bool:
    """Whether the completion answers the reasoning-gym item `entry` of dataset `name` with full credit."""
    numeric = number.to_decimal(str(entry["answer"])) is not None and str(entry["answer"]).lstrip("-").isdigit()
    return float(_dataset(name).score_answer(answer=extract(completion, numeric), entry=entry)) >= 1.0
