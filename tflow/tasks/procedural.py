"""Procedural reasoning tasks by name: `rg:<dataset>` draws seeded items of a reasoning-gym dataset (`rg:chain_sum`,
`rg:gsm_symbolic`, `rg:leg_counting`, ...), scored by that dataset's own verifier. `rg:<dataset>:key=value,...` sets
fields of the dataset's config (its difficulty: `rg:chain_sum:max_terms=2,max_digits=1`).

Train and test items are disjoint by construction: an item belongs to the test split when the hash of its question
falls in one bucket of five (as the built-in tasks' splits), whatever seed drew it; a seed picks which items.
"""
from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable

from .example import Example, in_test_bucket

PREFIX = "rg:"
INSTRUCTION = "Put your final answer within \\boxed{}."
# The paper's shared-question setting on SmolLM2-135M-Instruct: the candidates where it alone is right on about 10% to
# 60% of the items (docs/shared-question.md); its generator and static LoRA are trained on both, mixed.
SHARED_TASKS = ("rg:chain_sum:min_terms=2,max_terms=3,min_digits=1,max_digits=1", "rg:letter_counting")


def is_procedural(task: str) -> bool:
    return task.startswith(PREFIX)


def _value(text: str) -> int | float | bool | str:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            continue
    return {"true": True, "false": False}.get(text.lower(), text)


def _config(task: str) -> dict:
    """The dataset config fields a task name sets (`rg:NAME:key=value,...`), checked against the dataset's config."""
    from reasoning_gym.factory import DATASETS

    _, _, spec = task[len(PREFIX):].partition(":")
    pairs = [p.split("=", 1) for p in spec.split(",") if p]
    if any(len(p) != 2 for p in pairs):
        raise ValueError(f"{task}: settings are key=value pairs separated by commas")
    fields = DATASETS[_name(task)][1].__dataclass_fields__
    unknown = [k for k, _ in pairs if k not in fields or k in ("seed", "size")]
    if unknown:
        raise ValueError(f"{task}: {', '.join(unknown)} not a setting of {_name(task)} "
                         f"(its settings: {', '.join(f for f in fields if f not in ('seed', 'size'))})")
    return {k: _value(v) for k, v in pairs}


def _name(task: str) -> str:
    from reasoning_gym.factory import DATASETS  # heavy (sympy and more): only when a procedural task is used

    name = task[len(PREFIX):].partition(":")[0]
    if name not in DATASETS:
        close = sorted(n for n in DATASETS if name and (name in n or n in name))[:8]
        raise ValueError(f"unknown reasoning-gym dataset {name!r}" + (f": did you mean {', '.join(close)}?" if close
                         else f": choose one of {', '.join(sorted(DATASETS)[:12])}, ..."))
    return name


def _draws(task: str, split: str, seed: int) -> Callable[[], Example]:
    """An endless draw of distinct items of `split`, fixed by (task, split, seed)."""
    import reasoning_gym

    name, config, want_test, seen = _name(task), _config(task), split == "test", set()
    chunk = itertools.count()

    def items():
        while True:
            part = int(hashlib.sha1(f"{task}/{split}/{seed}/{next(chunk)}".encode()).hexdigest()[:8], 16)
            yield from reasoning_gym.create_dataset(name, seed=part, size=256, **config)

    source = items()

    def draw() -> Example:
        for misses, entry in enumerate(source):
            question = str(entry["question"])
            if question in seen or in_test_bucket(question) != want_test:
                if misses > 50_000:  # a small item space: every distinct item of the split is drawn already
                    raise ValueError(f"{task} has only {len(seen)} distinct {split} items: ask for fewer or widen "
                                     "its settings")
                continue
            seen.add(question)
            answer = str(entry["answer"])
            # trained to answer as asked (the boxed answer): the receiver already writes that format
            return Example(task, f"{question}\n\n{INSTRUCTION}", answer, worked=f"\\boxed{{{answer}}}", kind="rg",
                           grading={"entry": entry, "dataset": name})
        raise AssertionError("reasoning-gym datasets are drawn without end")

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
