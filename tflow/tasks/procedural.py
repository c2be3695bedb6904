"""Procedural reasoning tasks by name: `rg:<dataset>` draws seeded items of a reasoning-gym dataset (`rg:chain_sum`,
`rg:gsm_symbolic`, `rg:leg_counting`, ...), scored by that dataset's own verifier.

Train and test items are disjoint by construction: an item belongs to the test split when the hash of its question
falls in one bucket of five (as the built-in tasks' splits), whatever seed drew it; a seed picks which items.
"""
from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable

from .example import Example

PREFIX = "rg:"
INSTRUCTION = "Put your final answer within \\boxed{}."


def is_procedural(task: str) -> bool:
    return task.startswith(PREFIX)


def _name(task: str) -> str:
    from reasoning_gym.factory import DATASETS  # heavy (sympy and more): only when a procedural task is used

    name = task[len(PREFIX):]
    if name not in DATASETS:
        close = sorted(n for n in DATASETS if name and (name in n or n in name))[:8]
        raise ValueError(f"unknown reasoning-gym dataset {name!r}" + (f": did you mean {', '.join(close)}?" if close
                         else f": choose one of {', '.join(sorted(DATASETS)[:12])}, ..."))
    return name


def _in_test(question: str) -> bool:
    return int(hashlib.sha1(question.encode()).hexdigest(), 16) % 5 == 0


def _draws(task: str, split: str, seed: int) -> Callable[[], Example]:
    """An endless draw of distinct items of `split`, fixed by (task, split, seed)."""
    import reasoning_gym

    name, want_test, seen = _name(task), split == "test", set()
    chunk = itertools.count()

    def items():
        while True:
            part = int(hashlib.sha1(f"{task}/{split}/{seed}/{next(chunk)}".encode()).hexdigest()[:8], 16)
            yield from reasoning_gym.create_dataset(name, seed=part, size=256)

    source = items()

    def draw() -> Example:
        for entry in source:
            question = str(entry["question"])
            if question in seen or _in_test(question) != want_test:
                continue
            seen.add(question)
            return Example(task, f"{question}\n\n{INSTRUCTION}", str(entry["answer"]), kind="rg",
                           grading={"entry": entry, "dataset": name})
        raise ValueError(f"{task}: the dataset ran out of items")  # generators are endless: not reached

    return draw


def examples(task: str, split: str, n: int | None, seed: int = 0) -> list[Example]:
    """`n` distinct seeded items of `split`."""
    if n is None:
        raise ValueError(f"task {task!r} is generated: give the number of examples")
    draw = _draws(task, split, seed)
    return [draw() for _ in range(n)]


def stream(task: str, seed: int = 0) -> Callable[[], Example]:
    """Training items, drawn for ever (never a test item)."""
    return _draws(task, "train", seed)
