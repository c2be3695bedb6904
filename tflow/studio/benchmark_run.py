"""A benchmark slice in the Studio: the items of a task or benchmark run through several modes, one after another,
scored as the field scores them (`tflow.tasks.grade`; code in the sandbox), summed up as Table-1 rows.

Nothing here imports gradio: `run_items` posts one event per (item, mode) and the tab draws from the record.
Items the Studio has offered (a slice, the Ask tab's benchmark examples) are remembered by question, so an answer to
one of them is judged by its benchmark's scorer wherever it appears (`verdict_for`).
"""
from __future__ import annotations

import csv
import io
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from .. import tasks
from ..agents import GenerationSettings
from ..lru import LRUCache
from ..pipeline import MODES
from ..results import RunResult
from ..tasks.benchmarks import BENCHMARKS
from ..tasks.procedural import SHARED_TASKS
from ..tools.evaluate import mode_summary, savings
from .registry import Studio

PROCEDURAL = (*SHARED_TASKS, "rg:chain_sum", "rg:basic_arithmetic", "rg:gsm_symbolic", "rg:leg_counting")
MAX_ITEMS = 500
_ITEMS: LRUCache[str, tasks.Example] = LRUCache(4096)  # question -> the benchmark item it is
_VERDICTS: LRUCache[tuple[str, str], bool] = LRUCache(4096)


def remember(items: list[tasks.Example]) -> None:
    for ex in items:
        if ex.kind:
            _ITEMS.put(ex.question, ex)


def verdict_for(question: str, answer: str) -> bool | None:
    """The benchmark scorer's verdict on `answer` when `question` is an item the Studio offered, else None."""
    ex = _ITEMS.get(question)
    if ex is None:
        return None
    hit = _VERDICTS.get((question, answer))
    if hit is None:
        hit = tasks.grade_one(ex, answer)
        _VERDICTS.put((question, answer), hit)
    return hit


def benchmark_path(studio: Studio, task: str) -> str | None:
    """The local copy of a benchmark under --benchmarks-dir (`DIR/<name>/test.jsonl`, the hub's format), if any."""
    root = studio.cfg.benchmarks_dir
    folder = Path(root) / task if root and task in BENCHMARKS else None
    return str(folder) if folder is not None and folder.is_dir() else None


def ask_examples() -> list[dict]:
    """Benchmark items for the Ask tab's examples: HumanEval's first two problems and two items of each task of the
    shared-question setting."""
    items = [*tasks.examples("humaneval", "test", 2), *(e for t in SHARED_TASKS for e in tasks.examples(t, "test", 2))]
    remember(items)
    return [{"task": e.task, "question": e.question, "contexts": list(e.contexts), "answer": e.answer} for e in items]


def available_tasks(studio: Studio) -> list[str]:
    """What the loaded backbone has data for: its generators' tasks, HumanEval (from its package), the benchmarks
    under --benchmarks-dir, and a few procedural reasoning-gym tasks."""
    own = [t for c in studio.generators.values() if c.trained and c.task for t in tasks.parts(c.task)]
    local = [name for name in BENCHMARKS if benchmark_path(studio, name)]
    return list(dict.fromkeys([*own, "humaneval", *local, *PROCEDURAL]))


@dataclass
class BenchmarkRecord:
    """One slice: its items, every (item, mode) result and verdict, and how the run ended."""

    task: str
    modes: tuple[str, ...]
    generator: str
    static: str
    items: list[tasks.Example]
    settings: GenerationSettings
    started: str = field(default_factory=lambda: time.strftime("%H:%M:%S"))
    results: dict[int, dict[str, RunResult]] = field(default_factory=dict)
    verdicts: dict[int, dict[str, bool]] = field(default_factory=dict)
    errors: dict[int, dict[str, str]] = field(default_factory=dict)
    finished: int = 0  # (item, mode) pairs done
    state: str = "running"  # running | done | cancelled
    key: int = field(default_factory=lambda: time.monotonic_ns())  # names the slice across copies of the record

    @property
    def total(self) -> int:
        return len(self.items) * len(self.modes)


def make_record(studio: Studio, task: str, n: int, modes: list[str], generator: str, static: str) -> BenchmarkRecord:
    """A slice's record, its items loaded and checked (ValueError with a readable message on bad input)."""
    if task not in available_tasks(studio):
        raise ValueError(f"unknown task or benchmark {task!r}: choose one of {', '.join(available_tasks(studio))}")
    if not 1 <= int(n) <= MAX_ITEMS:
        raise ValueError(f"the number of items must be from 1 to {MAX_ITEMS}, got {n}")
    chosen = tuple(m for m in MODES if m in (modes or []))
    if not chosen:
        raise ValueError("no mode is selected: tick at least one")
    studio.pipeline(generator, static)  # validates both names
    generator = studio.generator_for(task) or generator  # the task's own checkpoints where it has them
    static = own if (own := studio.static_for(task)) != "none" else static
    if "static" in chosen and static == "none":
        raise ValueError("Static LoRA needs a static adapter: pick one in the Ask tab or untick Static LoRA")
    items = tasks.examples(task, "test", int(n), seed=0, dataset_path=benchmark_path(studio, task))
    remember(items)
    answer, message = tasks.budgets(task)
    return BenchmarkRecord(task, chosen, generator, static, items,
                           GenerationSettings(max_new_tokens=answer, sender_max_new_tokens=message))


def run_items(studio: Studio, record: BenchmarkRecord, post: Callable[[], None], stop: threading.Event) -> None:
    """Every item through every mode, posting after each; never raises (an error is recorded for its item)."""
    pipe = studio.pipeline(record.generator, record.static)
    for i, ex in enumerate(record.items):
        for mode in record.modes:
            if stop.is_set():
                record.state = "cancelled"
                post()
                return
            try:
                result = pipe.run(ex.question, mode, sender_context=list(ex.contexts), settings=record.settings,
                                  should_stop=stop.is_set)
                record.results.setdefault(i, {})[mode] = replace(result, sender_states=None)  # MBs per answer
                record.verdicts.setdefault(i, {})[mode] = tasks.grade_one(ex, result.answer)
            except (ValueError, OSError) as e:
                record.errors.setdefault(i, {})[mode] = str(e)
            record.finished += 1
            post()
    record.state = "done"
    post()


def summaries(record: BenchmarkRecord) -> dict[str, dict]:
    """Each mode's Table-1 numbers over the items it has answered (those of `tflow-evaluate`: `mode_summary`)."""
    out = {}
    for m in record.modes:
        done = [i for i in record.verdicts if m in record.verdicts[i]]
        if done:
            out[m] = mode_summary([record.results[i][m] for i in done], [record.verdicts[i][m] for i in done])
    return out


def table_rows(record: BenchmarkRecord) -> list[list]:
    """One Table-1 row per mode: accuracy with its 95% interval, tokens in both counts, seconds per query, n."""
    return [[m, "{:.1f} [{:.0f}, {:.0f}]".format(*(100 * x for x in (s["accuracy"], *s["accuracy_ci95"]))),
             round(s["tokens_per_query"], 1), round(s["paper_tokens_per_query"], 1),
             round(s["seconds_per_query"], 3), s["n"]] for m, s in summaries(record).items()]


def savings_markdown(record: BenchmarkRecord) -> str:
    s = summaries(record)
    saved = savings(s)  # tflow-evaluate's
    return "\n\n".join(
        f"TFlow against {label}: {saved[f'tokens_saved_vs_{base}_pct']:+.1f}% tokens saved "
        f"({saved[f'paper_tokens_saved_vs_{base}_pct']:+.1f}% as the paper counts), {saved[f'speedup_vs_{base}']:.2f}x "
        f"its speed, accuracy {100 * (s['tflow']['accuracy'] - s[base]['accuracy']):+.1f} points"
        for base, label in (("textmas", "TextMAS"), ("single", "Single")) if f"speedup_vs_{base}" in saved)


def item_rows(record: BenchmarkRecord) -> list[list]:
    """One row per item: its number, id, question and each mode's verdict (… while it runs)."""
    def mark(i: int, m: str) -> str:
        if m in record.errors.get(i, {}):
            return "error"
        v = record.verdicts.get(i, {}).get(m)
        return "…" if v is None else ("✔" if v else "✘")

    return [[i + 1, ex.grading.get("id", str(i)), ex.question[:90].replace("\n", " "),
             *(mark(i, m) for m in record.modes)] for i, ex in enumerate(record.items)]


def to_json(record: BenchmarkRecord) -> str:
    return json.dumps({
        "task": record.task, "modes": list(record.modes), "generator": record.generator, "static": record.static,
        "started": record.started, "state": record.state, "summary": summaries(record),
        "items": [{"id": ex.grading.get("id", str(i)), "question": ex.question,
                   "answers": {m: r.answer for m, r in record.results.get(i, {}).items()},
                   "correct": record.verdicts.get(i, {}), "errors": record.errors.get(i, {})}
                  for i, ex in enumerate(record.items)]}, indent=2)


def to_csv(record: BenchmarkRecord) -> str:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["task", "mode", "accuracy", "ci95_low", "ci95_high", "tokens_per_query", "paper_tokens_per_query",
                "seconds_per_query", "n"])
    for m, s in summaries(record).items():
        w.writerow([record.task, m, s["accuracy"], *s["accuracy_ci95"], s["tokens_per_query"],
                    s["paper_tokens_per_query"], s["seconds_per_query"], s["n"]])
    return out.getvalue()
