"""One query of any task: what the receiver is asked, what each sender privately knows, the reference answer, and
how an answer is scored (`kind`, `grading`)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field


def in_test_bucket(key: str, every: int = 5) -> bool:
    """Whether a generated item belongs to the test split: its key hashes into one bucket of `every`, whatever seed
    drew it, so train and test items are disjoint by construction."""
    return int(hashlib.sha1(key.encode()).hexdigest(), 16) % every == 0


@dataclass(frozen=True)
class Example:
    """One query: what the receiver is asked, what each sender privately knows, the answer,
    and the reference messages the senders would write in TextMAS."""

    task: str
    question: str
    answer: str
    contexts: tuple[str | None, ...] = (None, None)
    messages: dict[str, str] = field(default_factory=dict)
    worked: str = ""  # what the receiver says once it has been told something ("47 + 5 = 52", an arith plan)
    held_out: bool = False  # note: drawn from the test split's values and templates
    kind: str = ""  # how an answer is scored: "" (is_correct), or a tflow.scoring kind (number, math, choice, code, rg)
    grading: dict = field(default_factory=dict)  # what that scorer needs beyond the answer (a code item's tests, ...)

    @property
    def target(self) -> str:
        return self.worked or self.answer

    @property
    def key(self) -> str:
        return json.dumps([self.question, list(self.contexts)])
