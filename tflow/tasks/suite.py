"""Seeded task suite with disjoint train / test splits and an answer checker.

Built-in tasks (two senders: Strategist, Knowledge Extractor; one receiver):
- relay: both senders hold a private fact (`The code is 47.`); the receiver is asked
  about it (`What is the code plus 5?` -> `52`). Relay values ending in 7 only appear in
  the test split, so TFlow is also scored on facts it never saw during generator training.
- split: each sender holds one fact (`Ann has 23 apples.` / `Ann buys 14 more apples.`);
  the receiver is asked the total: only both perturbations together can answer.
- arith: everyone sees the same 2-3 step word problem (the paper's setting).
- kb: everyone sees the same question about an invented person (`How old is Tovi?`); only a
  specialist backbone knows the answer (`tflow/kb.py`). Train split: people of group A; test
  split: group B, whose facts no generator or static LoRA ever trains on.
- note: natural language for a real instruct receiver (`tflow/notes.py`): both senders hold a
  private note (`The door code is 418.`), the receiver is asked for it (`What is the door code?`
  -> `418`); held-out values *and* phrasings make the test split.
- note-split: each sender holds a different note; the receiver is asked for both
  (`What is the door code? When does the train leave?` -> `418 and 7:45`).
- note-freeform, note-freeform2, note-freeform3: test sets for the note generator, notes and questions in everyday words
  (`notes.freeform`); never trained on.
- note-varied: training notes with made-up values of many forms, in everyday registers (`varied_notes`); mixed
  with note, it teaches copying a value rather than recognising one from a pool.
- A mixture `note+note-split` trains one generator on both (examples drawn from each in turn).
- jsonl:PATH: a GSM8K-format file (`question`, `answer` ending in `#### 42`). A file is a
  split: evaluation uses every row of the file it is given, training every row of its own
  file. `hash_split=True` splits one file into train / test by key hash instead.

A built-in test example is one whose key hashes into the test bucket, so the splits are
disjoint by construction whatever the seed.
"""
from __future__ import annotations

import itertools
import json
import random
import re
from collections.abc import Callable
from pathlib import Path

from . import benchmarks, kb, notes, procedural, varied_notes
from .example import Example, in_test_bucket

NAMES = ["Ann", "Bob", "Cara", "Dan", "Eve", "Finn", "Gus", "Hana", "Ivy", "Jon"]
ITEMS = ["apples", "books", "coins", "pens", "cards", "shells", "stamps", "marbles"]
KEYS = ["code", "key", "pin"]
ADD = ["buys {n} more {item}", "finds {n} more {item}", "gets {n} more {item}"]
SUB = ["gives away {n} {item}", "loses {n} {item}", "sells {n} {item}"]


# Generation budgets on the built-in tasks: the longest worked answer (an arith plan) is 40 tokens.
ANSWER_TOKENS = MESSAGE_TOKENS = 48
# A note's answer is its value (<= 6 tokens), a note-split's two of them; a real sender's TextMAS message may run on.
BENCHMARK_BUDGETS = (512, 256)  # greedy defaults (the paper's protocol has its own: tools/protocol.py)
PROCEDURAL_BUDGETS = (256, 128)  # reasoning-gym answers are short
NOTE_BUDGETS = {"note": (16, 64), "note-split": (24, 64), "note-varied": (16, 64),
                **dict.fromkeys(notes.FREEFORM_SETS, (16, 64))}
TEST_SETS = dict.fromkeys(notes.FREEFORM_SETS, "note")  # a test-only task: the task whose checkpoints answer it


def checkpoint_name(task: str) -> str:
    """The folder name a task's checkpoints get (jsonl:data/gsm8k.jsonl -> data_gsm8k.jsonl)."""
    return task.replace("jsonl:", "").replace("/", "_")


def parts(task: str) -> list[str]:
    """The tasks of a mixture (`note+note-split`); a plain task is its own one part. A benchmark's name may end in
    `+` (humaneval+, mbpp+): a `+` at the end or before another `+` is part of a name."""
    return re.split(r"\+(?!$|\+)", task)


def covers(trained_on: str, task: str) -> bool:
    """Whether a checkpoint trained on `trained_on` (a task or a mixture) was trained on `task` (a test-only set: on the
    task it tests)."""
    return task == trained_on or TEST_SETS.get(task, task) in parts(trained_on)


def budgets(task: str) -> tuple[int, int]:
    """(receiver answer, sender message) token budgets for evaluating `task` (a mixture: the largest)."""
    each = [NOTE_BUDGETS.get(t, BENCHMARK_BUDGETS if benchmarks.is_benchmark(t) else PROCEDURAL_BUDGETS
                             if procedural.is_procedural(t) else (ANSWER_TOKENS, MESSAGE_TOKENS)) for t in parts(task)]
    return max(b[0] for b in each), max(b[1] for b in each)


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
    return Example(
        "relay", question, str(answer), (fact, fact), {"Strategist": fact, "Knowledge Extractor": fact}, worked
    )


def swap_fact(ex: Example, rng: random.Random) -> Example:
    """A relay example whose senders hold another value: the answer must follow the senders."""
    if ex.task == "note":
        fact, value = notes.swap(ex.contexts[0] or "", ex.answer, rng)
        return Example("note", ex.question, value, (fact, fact), {"Strategist": fact, "Knowledge Extractor": fact},
                       held_out=ex.held_out)
    if ex.task != "relay":
        raise ValueError("swap_fact applies to relay and note examples only")
    m = re.fullmatch(r"The (\w+) is (\d+)\.", ex.contexts[0] or "")
    old = int(m.group(2))
    new = rng.choice([v for v in range(10, 100) if v != old])
    q = re.search(r"(plus|minus) (\d)\?$", ex.question)
    answer = new if q is None else new + int(q.group(2)) if q.group(1) == "plus" else new - int(q.group(2))
    fact = f"The {m.group(1)} is {new}."
    return Example("relay", ex.question, str(answer), (fact, fact), {"Strategist": fact, "Knowledge Extractor": fact})


def _one_note(task: str, note: str, question: str, value: str, held_out: bool) -> Example:
    """A note both senders hold, asked about by the receiver."""
    return Example(task, question, value, (note, note), {"Strategist": note, "Knowledge Extractor": note},
                   held_out=held_out)


def _note(rng: random.Random) -> Example:
    test = rng.random() < 0.2
    return _one_note("note", *notes.draw(rng, test), held_out=test)


def _note_varied(rng: random.Random) -> Example:
    test = rng.random() < 0.2
    return _one_note("note-varied", *varied_notes.draw(rng), held_out=test)


def _note_split(rng: random.Random) -> Example:
    test = rng.random() < 0.2
    (fa, fb), question, answer = notes.draw_pair(rng, test)
    return Example(
        "note-split", question, answer, (fa, fb), {"Strategist": fa, "Knowledge Extractor": fb}, held_out=test
    )


def _split(rng: random.Random) -> Example:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    fa, fb = f"{name} has {a} {item}.", f"{name} {rng.choice(ADD).format(n=b, item=item)}."
    question = f"How many {item} does {name} have now?"
    return Example(
        "split", question, str(a + b), (fa, fb), {"Strategist": fa, "Knowledge Extractor": fb}, f"{a} + {b} = {a + b}"
    )


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


def kb_world(task: str) -> tuple[str, int] | None:
    """The knowledge base a kb task name asks for, as (schema, seed): "kb" -> ("kb", 0) (the shipped one),
    "kb@N" -> ("kb", N) (a fresh base of invented people, for replicating the experiment on facts nobody
    developed on), "kb-words@N" -> ("kb-words", N) (one-token values, for a real LLM); else None."""
    name, at, seed = task.partition("@")
    if name not in kb.SCHEMAS:
        return None
    if at and not seed.isdigit():
        raise ValueError(f"task {task!r}: a knowledge base is {name} or {name}@N with N a non-negative integer")
    return name, int(seed) if at else 0


def is_specialist(task: str) -> bool:
    """Does the task need a specialist sender backbone (its facts live only in that model)?"""
    return kb_world(task) is not None


def _kb_example(task: str, fact: kb.Fact) -> Example:
    return Example(task, fact.question, fact.value, (None, None),
                   {"Strategist": fact.statement, "Knowledge Extractor": fact.statement})


def _kb(task: str, split: str | None, seed: int) -> list[Example]:
    """The kb questions of group A ("train"), group B ("test") or both (None), shuffled by seed."""
    schema, seed_of_world = kb_world(task)
    rows = [
        _kb_example(task, f)
        for f in kb.facts(seed_of_world, schema)
        if split is None or f.held_out == (split == "test")
    ]
    random.Random(f"kb/{split}/{seed}").shuffle(rows)
    return rows


_BUILTIN: dict[str, Callable[[random.Random], Example]] = {"relay": _relay, "split": _split, "arith": _arith,
                                                           "note": _note, "note-split": _note_split,
                                                           "note-varied": _note_varied}
TASKS = ("relay", "split", "arith")  # the embedded world's; the senders run on the receiver's own backbone
REAL_MODEL_TASKS = ("note", "note-split")  # in natural language, for a real instruct receiver
NOTE_TASKS = (*REAL_MODEL_TASKS, "note-varied")  # their split is the one each example was drawn from
SPECIALIST_TASKS = ("kb",)  # the senders need a specialist backbone (checkpoints/tiny-qwen3-kb)


def _unknown(task: str) -> ValueError:
    return ValueError(
        f"unknown task {task!r}: choose one of {', '.join(TASKS + REAL_MODEL_TASKS + SPECIALIST_TASKS)}, "
        f"note-varied, {', '.join(notes.FREEFORM_SETS)}, kb@N, kb-words@N, jsonl:PATH, a benchmark "
        f"({', '.join(benchmarks.BENCHMARKS)}) "
        "or rg:NAME (reasoning-gym)"
    )


def is_held_out(ex: Example) -> bool:
    """Relay fact values ending in 7 are reserved for the test split; a note says which split it was drawn from."""
    if ex.task in (*NOTE_TASKS, *notes.FREEFORM_SETS):
        return ex.held_out
    return ex.task == "relay" and ex.contexts[0] is not None and ex.contexts[0].rstrip(".").endswith("7")


def in_test_split(ex: Example) -> bool:
    """A note's (or note-split's) split is the one it was drawn from; other built-in examples' split is their key's
    hash bucket or a held-out value."""
    return is_held_out(ex) or (ex.task not in NOTE_TASKS and in_test_bucket(ex.key))


def examples(task: str, split: str, n: int | None, seed: int = 0, hash_split: bool = False,
             skip_bad_rows: bool = False, dataset_path: str | None = None) -> list[Example]:
    """`n` distinct seeded examples of `task` from `split` ("train" or "test").

    jsonl:PATH: the file's rows in file order (every row when n is None), whatever the split,
    unless `hash_split` (then the rows whose key hashes into `split`'s bucket, shuffled by seed).
    A benchmark (gsm8k, humaneval, ...): its split's first n rows in the dataset's order, from the hub or from
    `dataset_path`; rg:NAME: n seeded reasoning-gym items of the split."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if len(parts(task)) > 1:  # a mixture: its parts' examples in turn (n shared out evenly)
        if n is None:
            raise ValueError(f"task {task!r} is a mixture: give the number of examples")
        k = len(parts(task))
        each = [
            examples(t, split, n // k + (i < n % k), seed, hash_split, skip_bad_rows, dataset_path)
            for i, t in enumerate(parts(task))
        ]
        return [ex for group in itertools.zip_longest(*each) for ex in group if ex is not None]
    if benchmarks.is_benchmark(task):
        return benchmarks.examples(task, split, n, dataset_path)
    if procedural.is_procedural(task):
        return procedural.examples(task, split, n, seed)
    if task.startswith("jsonl:"):
        rows, _ = load_jsonl(task[len("jsonl:"):], skip_bad_rows)
        if hash_split:
            rows = [r for r in rows if in_test_bucket(r.key) == (split == "test")]
            random.Random(seed).shuffle(rows)
        return rows if n is None else rows[:n]
    if task in notes.FREEFORM_SETS:
        if split == "train":
            raise ValueError(f"{task} is a test set only, never trained on: train on {TEST_SETS[task]}")
        rows = [_one_note(task, note, q, a, held_out=True) for note, q, a in notes.freeform(task)]
        return rows if n is None else rows[:n]
    if is_specialist(task):
        rows = _kb(task, split, seed)
        if n is not None and n > len(rows):
            raise ValueError(f"task {task!r} has {len(rows)} {split} questions, fewer than {n}")
        return rows if n is None else rows[:n]
    if task not in _BUILTIN:
        raise _unknown(task)
    if n is None:
        raise ValueError(f"task {task!r} is generated: give the number of examples")
    rng, make, want_test = random.Random(f"{task}/{split}/{seed}"), _BUILTIN[task], split == "test"
    out, seen = [], set()
    for _ in range(200 * n + 1000):
        ex = make(rng)
        if ex.key in seen or in_test_split(ex) != want_test:
            continue
        seen.add(ex.key)
        out.append(ex)
        if len(out) == n:
            return out
    raise ValueError(f"task {task!r} has fewer than {n} distinct {split} examples")


def stream(task: str, seed: int = 0, hash_split: bool = False, skip_bad_rows: bool = False, held_out: bool = False,
           dataset_path: str | None = None) -> Callable[[], Example]:
    """An endless sampler of training examples (duplicates allowed), for training loops.
    held_out (kb): every fact, group B's too: what the specialist backbone learns, never a generator.
    A mixture draws each example from one of its parts, chosen uniformly."""
    if len(parts(task)) > 1:
        draws, pick = ([stream(t, seed, hash_split, skip_bad_rows, held_out, dataset_path) for t in parts(task)],
                       random.Random(f"{task}/mix/{seed}"))
        return lambda: pick.choice(draws)()
    if procedural.is_procedural(task):
        return procedural.stream(task, seed)
    if benchmarks.is_benchmark(task):
        pool, rng = benchmarks.examples(task, "train", None, dataset_path), random.Random(seed)
        return lambda: rng.choice(pool)
    if task.startswith("jsonl:") or is_specialist(task):
        pool = (
            _kb(task, None if held_out else "train", seed)
            if is_specialist(task)
            else examples(task, "train", None, seed, hash_split, skip_bad_rows)
        )
        rng = random.Random(seed)
        if not pool:
            raise ValueError(f"{task[len('jsonl:'):]}: no training rows")
        return lambda: rng.choice(pool)
    if task not in _BUILTIN:
        raise _unknown(task)
    rng, make = random.Random(f"{task}/stream/{seed}"), _BUILTIN[task]

    def draw() -> Example:
        while True:
            ex = make(rng)
            if not in_test_split(ex):
                return ex

    return draw


def _parse_row(line: str) -> tuple[str, str]:
    """(question, final answer) of one JSONL line; ValueError says what is wrong with it."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e.msg})") from e
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    for key in ("question", "answer"):
        if key not in row:
            raise ValueError(f"no '{key}' key")
        if not isinstance(row[key], (str, int, float)) or isinstance(row[key], bool):
            raise ValueError(f"'{key}' must be text")
    question = str(row["question"]).strip()
    if not question:
        raise ValueError("empty question")
    answer = extract_answer(str(row["answer"]))
    if answer is None:
        raise ValueError("no final answer ('#### n', \\boxed{n} or a number) in 'answer'")
    return question, answer


def load_jsonl(path: str, skip_bad_rows: bool = False) -> tuple[list[Example], int]:
    """Every row of a GSM8K-format file and the number of bad rows skipped. Bad rows are an error
    naming each line (all of them are checked before anything runs), unless `skip_bad_rows`."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"no such JSONL file: {path}")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    rows, bad = [], []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            q, a = _parse_row(line)
        except ValueError as e:
            bad.append(f"line {i}: {e}")
            continue
        rows.append(Example(f"jsonl:{p.name}", q, a))
    if bad and not skip_bad_rows:
        shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise ValueError(f"{path}: {len(bad)} bad row(s) ({shown}); fix them or pass --skip-bad-rows")
    if not rows:
        raise ValueError(f"{path}: no usable rows")
    return rows, len(bad)


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


def _mentions(prediction: str, value: str) -> bool:
    """`value` as a whole token of the prediction (`7:45` is not in `17:45`)."""
    return re.search(rf"(?<![\w:]){re.escape(value.strip())}(?![\w:])", prediction, re.IGNORECASE) is not None


def is_correct(prediction: str, reference: str, question: str = "") -> bool:
    """A kb-words question (its answer one of a closed set): the reference is the only value of that set the
    prediction names (an instruct receiver says "Jack is Shofen's best friend."). Numbers: the final number of
    each. Another word reference (a kb friend): the prediction's last word. A note-split's `418 and 7:45`: each
    value mentioned. Anything else (a note's `7:45`, `C17`): the reference as a whole token of the prediction."""
    values = kb.closed_set(question)
    if values is not None and reference in values:
        return {v for v in values if _mentions(prediction, v)} == {reference}
    pair = reference.split(f" {notes.PAIR_JOIN} ")
    if len(pair) > 1:
        return all(_mentions(prediction, v) for v in pair)
    if not re.fullmatch(rf"{_NUMBER}|[A-Za-z]+", reference.strip()):
        return _mentions(prediction, reference)
    want = extract_answer(reference)
    if want is None:
        words = re.findall(r"[A-Za-z]+", prediction)
        return bool(words) and words[-1].lower() == reference.strip().lower()
    got = extract_answer(prediction)
    return got is not None and got == want
