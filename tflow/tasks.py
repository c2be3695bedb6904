"""Seeded task suite with disjoint train / test splits and an answer checker.

Built-in tasks (two senders: Strategist, Knowledge Extractor; one receiver):
- relay: both senders hold a private fact (`The code is 47.`); the receiver is asked
  about it (`What is the code plus 5?` -> `52`). Relay values ending in 7 only appear in
  the test split, so TFlow is also scored on facts it never saw during generator training.
- split: each sender holds one fact (`Ann has 23 apples.` / `Ann buys 14 more apples.`);
  the receiver is asked the total: only both perturbations together can answer.
- arith: everyone sees the same 2-3 step word problem (the paper's setting).
- jsonl:PATH: a GSM8K-format file (`question`, `answer` ending in `#### 42`).

A test example is one whose key hashes into the test bucket, so the splits are disjoint
by construction whatever the seed.
"""
from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

NAMES = ["Ann", "Bob", "Cara", "Dan", "Eve", "Finn", "Gus", "Hana", "Ivy", "Jon"]
ITEMS = ["apples", "books", "coins", "pens", "cards", "shells", "stamps", "marbles"]
KEYS = ["code", "key", "pin"]
ADD = ["buys {n} more {item}", "finds {n} more {item}", "gets {n} more {item}"]
SUB = ["gives away {n} {item}", "loses {n} {item}", "sells {n} {item}"]


# Generation budgets on the built-in tasks: the longest worked answer (an arith plan) is 40 tokens.
ANSWER_TOKENS = MESSAGE_TOKENS = 48


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

    @property
    def target(self) -> str:
        return self.worked or self.answer

    @property
    def key(self) -> str:
        return json.dumps([self.question, list(self.contexts)])


def _in_test(key: str, every: int = 5) -> bool:
    return int(hashlib.sha1(key.encode()).hexdigest(), 16) % every == 0


def _relay(rng: random.Random) -> Example:
    key, value = rng.choice(KEYS), rng.randint(10, 99)
    fact = f"The {key} is {value}."
    kind = rng.choice(["plus", "minus", "is"])
    if kind == "is":
        question, answer, worked = f"What is the {key}?", value, str(value)
    else:
        d = rng.randint(1, 9)
        question = f"What is the {key} {kind} {d}?"
        answer, sign = (value + d, "+") if kind == "plus" else (value - d, "-")
        worked = f"{value} {sign} {d} = {answer}"
    return Example("relay", question, str(answer), (fact, fact), {"Strategist": fact, "Knowledge Extractor": fact}, worked)


def swap_fact(ex: Example, rng: random.Random) -> Example:
    """A relay example whose senders hold another value: the answer must follow the senders."""
    if ex.task != "relay":
        raise ValueError("swap_fact applies to relay examples only")
    m = re.fullmatch(r"The (\w+) is (\d+)\.", ex.contexts[0] or "")
    old = int(m.group(2))
    new = rng.choice([v for v in range(10, 100) if v != old])
    q = re.search(r"(plus|minus) (\d)\?$", ex.question)
    answer = new if q is None else new + int(q.group(2)) if q.group(1) == "plus" else new - int(q.group(2))
    fact = f"The {m.group(1)} is {new}."
    return Example("relay", ex.question, str(answer), (fact, fact), {"Strategist": fact, "Knowledge Extractor": fact})


def _split(rng: random.Random) -> Example:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    fa, fb = f"{name} has {a} {item}.", f"{name} {rng.choice(ADD).format(n=b, item=item)}."
    question = f"How many {item} does {name} have now?"
    return Example("split", question, str(a + b), (fa, fb), {"Strategist": fa, "Knowledge Extractor": fb}, f"{a} + {b} = {a + b}")


def _arith(rng: random.Random) -> Example:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    total = rng.randint(10, 99)
    sentences, plan, steps = [f"{name} has {total} {item}."], [], [f"Start {total}."]
    for _ in range(rng.randint(2, 3)):
        if total > 20 and rng.random() < 0.5:
            n = rng.randint(1, min(total - 1, 99))
            sentences.append(f"{name} {rng.choice(SUB).format(n=n, item=item)}.")
            plan.append(f"{total} - {n} = {total - n}.")
            steps.append(f"Subtract {n}.")
            total -= n
        else:
            n = rng.randint(1, 99)
            sentences.append(f"{name} {rng.choice(ADD).format(n=n, item=item)}.")
            plan.append(f"{total} + {n} = {total + n}.")
            steps.append(f"Add {n}.")
            total += n
    question = " ".join(sentences) + f" How many {item} does {name} have now?"
    return Example("arith", question, str(total), (None, None),
                   {"Strategist": " ".join(plan), "Knowledge Extractor": " ".join(steps)}, " ".join(plan))


_BUILTIN: dict[str, Callable[[random.Random], Example]] = {"relay": _relay, "split": _split, "arith": _arith}
TASKS = tuple(_BUILTIN)


def is_held_out(ex: Example) -> bool:
    """Relay fact values ending in 7 are reserved for the test split."""
    return ex.task == "relay" and ex.contexts[0] is not None and ex.contexts[0].rstrip(".").endswith("7")


def examples(task: str, split: str, n: int, seed: int = 0) -> list[Example]:
    """`n` distinct seeded examples of `task` from `split` ("train" or "test")."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if task.startswith("jsonl:"):
        return _jsonl(task[len("jsonl:"):], split, n, seed)
    if task not in _BUILTIN:
        raise ValueError(f"unknown task {task!r}: choose one of {', '.join(TASKS)} or jsonl:PATH")
    rng, make, want_test = random.Random(f"{task}/{split}/{seed}"), _BUILTIN[task], split == "test"
    out, seen = [], set()
    for _ in range(200 * n + 1000):
        ex = make(rng)
        if ex.key in seen or (_in_test(ex.key) or is_held_out(ex)) != want_test:
            continue
        seen.add(ex.key)
        out.append(ex)
        if len(out) == n:
            return out
    raise ValueError(f"task {task!r} has fewer than {n} distinct {split} examples")


def stream(task: str, seed: int = 0) -> Callable[[], Example]:
    """An endless sampler of training examples (duplicates allowed), for training loops."""
    if task.startswith("jsonl:"):
        pool, rng = examples(task, "train", 10**9, seed), random.Random(seed)
        return lambda: rng.choice(pool)
    rng, make = random.Random(f"{task}/stream/{seed}"), _BUILTIN[task]

    def draw() -> Example:
        while True:
            ex = make(rng)
            if not (_in_test(ex.key) or is_held_out(ex)):
                return ex

    return draw


def _jsonl(path: str, split: str, n: int, seed: int) -> list[Example]:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"no such JSONL file: {path}")
    rows = []
    for i, line in enumerate(p.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            q, a = str(row["question"]), extract_answer(str(row["answer"]))
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path}:{i + 1}: expected a JSON object with 'question' and 'answer' ({e})") from e
        if a is None:
            raise ValueError(f"{path}:{i + 1}: no final answer ('#### n' or \\boxed{{n}}) in 'answer'")
        rows.append(Example(f"jsonl:{p.name}", q, a))
    picked = [r for r in rows if _in_test(r.key) == (split == "test")]
    random.Random(seed).shuffle(picked)
    return picked[:n]


_NUMBER = r"-?\d[\d,]*(?:\.\d+)?"


def _normalise(number: str) -> str:
    number = number.replace(",", "")
    return number[:-2] if number.endswith(".0") else number


def extract_answer(text: str) -> str | None:
    """Final answer of a reference or generated text: `#### n`, `\\boxed{n}`, else the last number."""
    for pattern in (rf"####\s*({_NUMBER})", rf"\\boxed\{{\s*({_NUMBER})\s*\}}"):
        found = re.findall(pattern, text)
        if found:
            return _normalise(found[-1])
    found = re.findall(_NUMBER, text)
    return _normalise(found[-1]) if found else None


def is_correct(prediction: str, reference: str) -> bool:
    got = extract_answer(prediction)
    return got is not None and got == extract_answer(reference)
