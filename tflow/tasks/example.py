"""One query of any task: what the receiver is asked, what each sender privately knows, the reference answer, and
how an answer is scored (`kind`, `grading`)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field


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
