"""Whether answers are right, for any task: the project's own checker (`suite.is_correct`) for its built-in tasks,
the field's scorers (`tflow.scoring`) for benchmarks and procedural tasks. Code items run in the sandbox, in
parallel across a batch."""
from __future__ import annotations

from collections.abc import Sequence

from ..scoring import TEXT_KINDS, code, procedural
from .example import Example
from .suite import is_correct


def code_tests(ex: Example) -> code.CodeTests:
    g = ex.grading
    return code.CodeTests(g["test"], g.get("prompt", ""), g.get("entry_point", ""), tuple(g.get("imports", ())))


def grade_one(ex: Example, completion: str) -> bool:
    """One answer (a code item runs its program; prefer `grade` for a batch)."""
    return grade([ex], [completion])[0]


def grade(examples: Sequence[Example], completions: Sequence[str]) -> list[bool]:
    """Each completion against its example, as its kind is scored."""
    if len(examples) != len(completions):
        raise ValueError(f"got {len(completions)} completions for {len(examples)} examples")
    out: list[bool | None] = [None] * len(examples)
    coded = [i for i, ex in enumerate(examples) if ex.kind == "code"]
    if coded:
        passed = code.score([completions[i] for i in coded], [code_tests(examples[i]) for i in coded])
        for i, ok in zip(coded, passed, strict=True):
            out[i] = ok
    for i, (ex, completion) in enumerate(zip(examples, completions, strict=True)):
        if ex.kind == "code":
            continue
        if ex.kind == "rg":
            out[i] = procedural.score(completion, ex.grading["entry"], ex.grading["dataset"])
        elif ex.kind in TEXT_KINDS:
            out[i] = TEXT_KINDS[ex.kind](completion, ex.answer)
        else:
            out[i] = is_correct(completion, ex.answer, ex.question)
    return [bool(x) for x in out]
