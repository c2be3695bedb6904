"""Scoring as the field scores: one module per answer kind, each usable without a model.

- `number`: GSM8K's final number; `maths`: MATH through math-verify; `choice`: MMLU's letter;
- `code`: the completion run against the benchmark's tests in `sandbox` (model-written code never runs in
  this process);
- `thinking`: `<think>...</think>` split off before any of them reads an answer.

`score(kind, completion, reference)` dispatches the text kinds; code is scored in batches (`code.score`), so its
programs run in parallel.
"""
from __future__ import annotations

from collections.abc import Callable

from . import choice, maths, number

TEXT_KINDS: dict[str, Callable[[str, str], bool]] = {"number": number.score, "math": maths.score,
                                                     "choice": choice.score}
KINDS = (*TEXT_KINDS, "code")


def score(kind: str, completion: str, reference: str) -> bool:
    """Whether `completion` answers `reference` correctly, as the answer kind `kind` is scored."""
    if kind not in TEXT_KINDS:
        raise ValueError(f"unknown answer kind {kind!r}: choose one of {', '.join(TEXT_KINDS)} (code: code.score)")
    return TEXT_KINDS[kind](completion, reference)
