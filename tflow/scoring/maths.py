"""MATH's answer kind: a LaTeX expression, graded by `math-verify` (equivalent forms are equal: `\\frac{1}{2}`,
`0.5`, `\\dfrac12`; sets, intervals, units). The prediction's answer is its last `\\boxed{}` when it has one.

math-verify bounds its own time with SIGALRM, which only the main thread may use: elsewhere (the Studio's
workers) it runs without that bound.
"""
from __future__ import annotations

import threading

from math_verify import parse, verify

from .thinking import strip_thinking


def _timeout() -> int | None:
    return 5 if threading.current_thread() is threading.main_thread() else None


def _boxed(text: str) -> str:
    """A gold answer given bare (MATH-500's `answer` field) is read as LaTeX math."""
    return text if "\\boxed" in text or "$" in text else f"${text}$"


def score(completion: str, answer: str) -> bool:
    """Whether the completion's answer is mathematically equal to the reference (a solution or a bare answer)."""
    timeout = _timeout()
    gold = parse(_boxed(answer), parsing_timeout=timeout)
    pred = parse(strip_thinking(completion), parsing_timeout=timeout)
    return bool(gold) and bool(pred) and verify(gold, pred, timeout_seconds=timeout)
