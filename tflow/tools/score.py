"""Score completions made elsewhere (by vLLM, by another harness) as this project scores them; no model is loaded.

    tflow-score --task humaneval --predictions completions.jsonl
    tflow-score --task gsm8k --dataset-path data/gsm8k --predictions out.jsonl --json scored.json

Each line of the predictions file is a JSON object with the completion (`completion`, or `response` / `output` /
`prediction`) and, to match it to its item, the benchmark's `task_id` (or `id`); without an id, lines match the
task's items in order. Thinking (`<think>...</think>`) is stripped before scoring and counted. Code runs in the
sandbox (tflow.scoring.sandbox). Prints the accuracy with its 95% interval; --json writes every item's verdict.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .. import tasks
from ..errors import user_errors
from ..scoring.thinking import split_thinking
from ..tasks.benchmarks import is_benchmark
from .stats import wilson

COMPLETION_KEYS = ("completion", "response", "output", "prediction")


def read_predictions(path: str) -> list[dict]:
    """The predictions file's rows, each with its completion under `completion`; every bad line is named."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"no such predictions file: {path}")
    rows, bad = [], []
    for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            bad.append(f"line {i}: not JSON ({e.msg})")
            continue
        key = next((k for k in COMPLETION_KEYS if isinstance(row, dict) and isinstance(row.get(k), str)), None)
        if key is None:
            bad.append(f"line {i}: no completion (one of {', '.join(COMPLETION_KEYS)}) as text")
            continue
        rows.append({**row, "completion": row[key]})
    if bad:
        raise ValueError(f"{path}: {len(bad)} bad line(s): " + "; ".join(bad[:5]) + ("; ..." if len(bad) > 5 else ""))
    if not rows:
        raise ValueError(f"{path}: no predictions")
    return rows


def match(examples: list[tasks.Example], rows: list[dict]) -> list[tuple[tasks.Example, dict]]:
    """Pair each prediction with its item: by id when the rows carry one, else in order."""
    ids = [str(r.get("task_id", r.get("id"))) if r.get("task_id", r.get("id")) is not None else None for r in rows]
    if all(i is not None for i in ids):
        by_id = {e.grading.get("id"): e for e in examples}
        unknown = [i for i in ids if i not in by_id]
        if unknown:
            raise ValueError(f"{len(unknown)} prediction id(s) not in the task, e.g. {unknown[0]!r}")
        return [(by_id[i], r) for i, r in zip(ids, rows, strict=True)]
    if len(rows) > len(examples):
        raise ValueError(f"{len(rows)} predictions without ids for {len(examples)} items")
    return list(zip(examples, rows, strict=False))


def score(task: str, predictions: str, dataset_path: str | None = None, split: str = "test", seed: int = 0) -> dict:
    rows = read_predictions(predictions)
    limit = None if task.startswith("jsonl:") or is_benchmark(task) else len(rows)
    examples = tasks.examples(task, split, limit, seed, dataset_path=dataset_path)
    pairs = match(examples, rows)
    verdicts = tasks.grade([e for e, _ in pairs], [r["completion"] for _, r in pairs])
    thinking = [bool(split_thinking(r["completion"])[0]) for _, r in pairs]
    k, n = sum(verdicts), len(verdicts)
    return {"task": task, "predictions": predictions, "n": n, "correct": k, "accuracy": k / n,
            "accuracy_ci95": wilson(k, n), "with_thinking": sum(thinking),
            "items": [{"id": e.grading.get("id", str(i)), "correct": ok}
                      for i, ((e, _), ok) in enumerate(zip(pairs, verdicts, strict=True))]}


@user_errors
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", required=True, help="a benchmark (gsm8k, humaneval, ...), rg:NAME or any built-in task")
    p.add_argument("--predictions", required=True, help="JSONL: one completion per line (see --help's text)")
    p.add_argument("--dataset-path", default=None, help="the benchmark's local copy in the hub's format")
    p.add_argument("--split", choices=("test", "train"), default="test", help="the split the predictions answer")
    p.add_argument("--seed", type=int, default=0, help="generated tasks: the seed their items were drawn with")
    p.add_argument("--json", default=None, help="write the report with every item's verdict here")
    a = p.parse_args(argv)
    report = score(a.task, a.predictions, a.dataset_path, a.split, a.seed)
    lo, hi = report["accuracy_ci95"]
    print(f"{a.task}: {report['correct']} / {report['n']} correct, accuracy {100 * report['accuracy']:.1f}% "
          f"(95% interval {100 * lo:.1f}-{100 * hi:.1f}%)"
          + (f"; {report['with_thinking']} completions thought first" if report["with_thinking"] else ""))
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    sys.exit(main())
