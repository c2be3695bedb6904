"""Evaluate the communication modes on a task's held-out test split (Table-1 style).

    python -m tflow.tools.evaluate --task relay --modes single,textmas,tflow,static --limit 300 --seed 0 --json out.json

Prints accuracy, processed tokens per query and seconds per query for each mode, then
TFlow's savings versus TextMAS and Single, and writes JSON ({"task", "results": {mode:
{...}}}) and CSV. Controls: --shuffle-conditions (each query gets another query's sender
states), --sender-ablation (each sender's perturbation alone), --swap-facts (relay: the
senders hold another value; does the answer follow them?). Greedy decoding throughout.

A JSONL file (`--task jsonl:gsm8k_test.jsonl`) is evaluated whole; its rows are checked
before any model loads, and a bad row fails the run in one line naming it.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from .. import tasks
from ..agents import GenerationSettings
from ..engines import add_engine_arguments, engine_from_args
from ..errors import user_errors
from ..pipeline import MODES, Pipeline
from ..results import RunResult
from ..scoring.thinking import split_thinking
from ..tasks import kb
from ..tasks.benchmarks import BENCHMARKS
from . import catalog
from .protocol import PROTOCOLS, Protocol
from .protocol import get as get_protocol
from .stats import paired, percentile, wilson

Variant = Callable[[Pipeline, list[tasks.Example], GenerationSettings], list[tuple[RunResult, tasks.Example]]]


def _variant(mode: str = "tflow", rewrite: Callable[[tasks.Example], tasks.Example] | None = None,
             senders_read: Callable[[tasks.Example], tasks.Example] | None = None,
             keep_senders: list[int] | None = None) -> Variant:
    """Run `mode` on a batch. rewrite: replace each example (scored against its new answer);
    senders_read: the example whose question and private contexts the senders read instead;
    keep_senders: fuse only these senders' perturbations."""
    def run(pipe: Pipeline, batch: list[tasks.Example], settings: GenerationSettings) -> list[tuple[RunResult,
                                                                                                  tasks.Example]]:
        batch = [rewrite(e) for e in batch] if rewrite else batch
        read = [senders_read(e) for e in batch] if senders_read else batch
        res = pipe.run_batch([e.question for e in batch], mode, [o.contexts for o in read], settings=settings,
                             sender_questions=[o.question for o in read] if senders_read else None,
                             keep_senders=keep_senders)
        return list(zip(res, batch))
    return run


def _by_attribute(rows: list[tuple[RunResult, tasks.Example]], correct: list[bool]) -> dict:
    """kb questions: the accuracy per attribute (friend, age, lucky number), to see which facts travel."""
    names = [kb.attribute_of(r.question) for r, _ in rows]
    if None in names:
        return {}
    groups: dict[str, list[bool]] = {}
    for name, ok in zip(names, correct):
        groups.setdefault(name, []).append(ok)
    return {"by_attribute": {k: {"accuracy": sum(v) / len(v), "n": len(v)} for k, v in groups.items()}}


def _thinking_tokens(pipe: Pipeline, rows: list[tuple[RunResult, tasks.Example]]) -> dict:
    """Tokens the receiver spent thinking (`<think>...</think>`, stripped before scoring), when it thought at all."""
    thoughts = [split_thinking(r.answer)[0] for r, _ in rows]
    if not any(thoughts):
        return {}
    tok = pipe.backbone.tokenizer
    return {"thinking_tokens_per_query": statistics.fmean(len(tok(t).input_ids) if t else 0 for t in thoughts)}


def mode_summary(results: Sequence[RunResult], correct: Sequence[bool]) -> dict:
    """One mode's Table-1 numbers: accuracy with its 95% interval, tokens in both counts, seconds per query, n."""
    k, n = sum(correct), len(results)
    return {"accuracy": k / n, "accuracy_ci95": wilson(k, n),
            "tokens_per_query": statistics.fmean(r.usage.total_tokens for r in results),
            "paper_tokens_per_query": statistics.fmean(r.paper_tokens for r in results),  # the release's accounting
            "seconds_per_query": statistics.fmean(r.timings["total"] for r in results), "n": n}


def evaluate(pipe: Pipeline, examples: list[tasks.Example], variants: dict[str, Variant], batch_size: int = 1,
             protocol: Protocol = PROTOCOLS["greedy"], samples: int = 1, seed: int = 0) -> dict:
    """Every variant on every example (`samples` times each, pass@1 their mean), scored as each task is scored."""
    results = {}
    for name, variant in variants.items():
        rows: list[tuple[RunResult, tasks.Example]] = []
        for k in range(samples):
            for i in tqdm(range(0, len(examples), batch_size), desc=name + (f" sample {k + 1}" if samples > 1 else ""),
                          mininterval=5):
                batch = examples[i : i + batch_size]
                settings = protocol.settings(batch[0].task, seed=(seed * 1_000_003 + k) * 100_003 + i)
                rows += variant(pipe, batch, settings)
        correct = tasks.grade([e for _, e in rows], [r.answer for r, _ in rows])
        seconds = [r.timings["total"] for r, _ in rows]
        results[name] = {
            **mode_summary([r for r, _ in rows], correct),
            "samples": samples,
            "receiver_prompt_tokens": statistics.fmean(r.receiver_prompt_tokens for r, _ in rows),
            "generated_tokens": statistics.fmean(r.usage.generated_tokens for r, _ in rows),
            "seconds_p90": percentile(seconds, 0.9),
            "kv_cache_bytes": statistics.fmean(r.kv_cache_bytes for r, _ in rows),
            **_thinking_tokens(pipe, rows),
            **_by_attribute(rows, correct),
            "examples": [{"question": r.question, "answer": r.answer, "reference": e.answer} for r, e in rows[:3]],
            # every item's verdict, in order (an id: the benchmark's own, else the position): paired comparisons
            "items": [{"id": e.grading.get("id", str(j % len(examples))), "correct": ok,
                       **({"error_type": e.grading["error_type"]} if "error_type" in e.grading else {})}
                      for j, ((_, e), ok) in enumerate(zip(rows, correct, strict=True))],
        }
    return results


def savings(results: dict) -> dict:
    """TFlow's token and time savings versus TextMAS and Single, from this run."""
    out = {}
    if "tflow" not in results:
        return out
    t = results["tflow"]
    for base in ("textmas", "single"):
        if base in results:
            b = results[base]
            out[f"tokens_saved_vs_{base}_pct"] = 100 * (1 - t["tokens_per_query"] / b["tokens_per_query"])
            if "paper_tokens_per_query" in t and "paper_tokens_per_query" in b:
                out[f"paper_tokens_saved_vs_{base}_pct"] = 100 * (
                    1 - t["paper_tokens_per_query"] / b["paper_tokens_per_query"]
                )
            out[f"speedup_vs_{base}"] = b["seconds_per_query"] / t["seconds_per_query"]
    return out


def comparisons(results: dict) -> dict:
    """TFlow against every other mode run on the same items: the paired difference with its 95% interval and
    McNemar's exact test (`stats.paired`); the comparisons that decide whether a gain is communication are TFlow
    against Single, the static LoRA and shuffled senders."""
    if "items" not in results.get("tflow", {}):
        return {}
    mine = [i["correct"] for i in results["tflow"]["items"]]
    return {f"tflow_vs_{name}": paired(mine, [i["correct"] for i in r["items"]])
            for name, r in results.items() if name != "tflow" and len(r.get("items", ())) == len(mine)}


def format_table(task: str, results: dict) -> str:
    """Markdown table; the paper-accounting column when the results have it (older JSON files do not)."""
    paper = all("paper_tokens_per_query" in r for r in results.values())
    extra = (" paper tokens / query |", " ---: |") if paper else ("", "")
    lines = [f"task: {task}", f"| mode | accuracy % | tokens / query |{extra[0]} seconds / query | n |",
             f"| --- | ---: | ---: |{extra[1]} ---: | ---: |"]
    ci = all("accuracy_ci95" in r for r in results.values())  # older JSON files have no interval
    if ci:
        lines[1] = lines[1].replace("accuracy %", "accuracy % [95% interval]")
    for name, r in results.items():
        cell = f" {r['paper_tokens_per_query']:.1f} |" if paper else ""
        acc = f"{100 * r['accuracy']:.1f}" + (" [{:.1f}, {:.1f}]".format(*(100 * x for x in r["accuracy_ci95"]))
                                              if ci else "")
        lines.append(f"| {name} | {acc} | {r['tokens_per_query']:.1f} |{cell} {r['seconds_per_query']:.4f} "
                     f"| {r['n']} |")
    for name, r in results.items():
        if "by_attribute" in r:
            lines.append(
                f"{name} by attribute: "
                + ", ".join(f"{k} {100 * v['accuracy']:.1f}% of {v['n']}" for k, v in r["by_attribute"].items())
            )
    for k, v in savings(results).items():
        lines.append(f"{k}: {v:.1f}" + ("%" if k.endswith("pct") else "x"))
    for k, v in comparisons(results).items():
        low, high = (100 * x for x in v["difference_ci95"])
        lines.append(f"{k}: {100 * v['difference']:+.1f} points [{low:+.1f}, {high:+.1f}] (paired bootstrap), "
                     f"McNemar p = {v['mcnemar_p']:.3g} ({v['a_only']} vs {v['b_only']} discordant items)")
    return "\n".join(lines)


@user_errors
def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--task",
        required=True,
        help="note (a real model's) | relay | split | arith | kb (needs --sender-model) "
             "| kb@N (a fresh knowledge base, seed N) | kb-words@N (one with one-token values) | jsonl:PATH "
             "| a benchmark: gsm8k, math, math-500, mmlu-redux, mmlu-redux-all, humaneval, humaneval+, mbpp+ "
             "| rg:NAME (a reasoning-gym dataset)",
    )
    p.add_argument("--dataset-path", default=None,
                   help="a benchmark's local copy in the hub's format (a .jsonl/.json/.parquet file, a folder with "
                        "<split>.jsonl, or a save_to_disk folder): no hub access")
    p.add_argument("--protocol", default="greedy", choices=sorted(PROTOCOLS),
                   help="greedy (default) or paper: thinking mode where the template has it, temperature 0.6, "
                        "top-p 0.95, the paper's budgets, a seed per query")
    p.add_argument("--samples", type=int, default=1, help="samples per query (pass@1 is their mean; needs sampling)")
    p.add_argument("--modes", default="single,textmas,tflow", help="comma-separated: single,textmas,tflow,static")
    p.add_argument("--limit", type=int, default=None,
                   help="queries to evaluate (default: 300 of a generated task, every row of a file or benchmark)")
    p.add_argument("--seed", type=int, default=0, help="which test queries are drawn (built-in tasks) and their order")
    p.add_argument(
        "--model",
        default="tiny",
        help="the receiver: tiny (the embedded world), smollm2-135m-instruct (fetched once), "
             "a GGUF file, a directory or a hub name",
    )
    p.add_argument(
        "--sender-model",
        default=None,
        help="the senders' backbone (default: the receiver's); "
             "a PEFT adapter directory on the receiver's base shares its weights",
    )
    p.add_argument("--split", choices=("test", "train"), default="test",
                   help="train: the queries generators train on (kb: facts A)")
    p.add_argument("--generator", default=None, help="default: the shipped generator trained on --task for --model")
    p.add_argument("--static-adapter", default=None,
                   help="default: the shipped static adapter trained on --task for --model, when there is one")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--dtype", default=None,
                   help="the backbones' dtype: fp32, bf16, fp16 or fastest (a probe on this CPU); default: bf16 on "
                        "CUDA, fp16 on MPS, fp32 on CPU. The generator keeps its own")
    p.add_argument("--batch-size", type=int, default=1,
                   help="queries run together (per-sample perturbations; answers equal one by one)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    p.add_argument("--shuffle-conditions", action="store_true",
                   help="also run TFlow with each query's senders reading the next query (instance dependence)")
    p.add_argument(
        "--sender-ablation", action="store_true", help="also run TFlow with each sender's perturbation alone"
    )
    p.add_argument("--swap-facts", action="store_true",
                   help="relay: also run with the senders holding another value (does the answer follow them?)")
    p.add_argument(
        "--split-by-hash",
        action="store_true",
        help="jsonl: evaluate only the fifth of the file whose keys hash into the test bucket "
             "(the rest is for training)",
    )
    p.add_argument(
        "--skip-bad-rows", action="store_true", help="jsonl: skip malformed rows (with a count) instead of failing"
    )
    add_engine_arguments(p)
    p.add_argument(
        "--json", default=None, help="write the report (every mode's accuracy, tokens, seconds) to this JSON file"
    )
    p.add_argument("--csv", default=None, help="default: the --json path with .csv")
    a = p.parse_args(argv)
    if a.limit is not None and a.limit < 1:
        raise ValueError(f"--limit must be positive, got {a.limit}")
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise ValueError(f"unknown mode(s) {', '.join(unknown) or '(none given)'}: choose from {', '.join(MODES)}")
    # the data are checked (every bad row named) before any model is loaded
    protocol = get_protocol(a.protocol)
    if a.samples < 1 or (a.samples > 1 and not protocol.do_sample):
        raise ValueError(f"--samples {a.samples}: more than one sample needs a sampling protocol (--protocol paper)")
    whole = a.task.startswith("jsonl:") or a.task in BENCHMARKS
    limit = a.limit if a.limit is not None or whole else 300
    examples = tasks.examples(a.task, a.split, limit, a.seed, hash_split=a.split_by_hash, skip_bad_rows=a.skip_bad_rows,
                              dataset_path=a.dataset_path)
    if a.task.startswith("jsonl:"):
        skipped = tasks.load_jsonl(a.task[len("jsonl:"):], skip_bad_rows=True)[1]
        print(
            f"{a.task[len('jsonl:') :]}: evaluating {len(examples)} rows"
            + (f" ({skipped} bad rows skipped)" if skipped else ""),
            file=sys.stderr,
        )
    torch.set_num_threads(a.threads)
    engine = engine_from_args(a)  # an unreachable server is one line before any model loads
    found = catalog.trained_for(a.task, a.model), catalog.trained_for(a.task, a.model, static=True)
    generator = a.generator or (str(found[0]) if found[0] else None)
    static = a.static_adapter or (str(found[1]) if found[1] else None)
    if not ({"tflow", "textmas"} & set(modes) or a.shuffle_conditions or a.sender_ablation or a.swap_facts):
        generator = None  # no sender runs: e.g. a specialist answering alone (--model SPECIALIST --modes single)
    pipe = Pipeline.from_pretrained(a.model, generator=generator, device=a.device, dtype=a.dtype,
                                    static_adapter=static if "static" in modes else None, sender_model=a.sender_model,
                                    engine=engine)
    ran = protocol.apply(*{id(b): b for b in (pipe.backbone, pipe.sender_backbone)}.values())
    variants: dict[str, Variant] = {m: _variant(m) for m in modes}
    if a.shuffle_conditions:  # each query's senders read the next query (question and contexts)
        index = {e.key: i for i, e in enumerate(examples)}
        variants["tflow_shuffled"] = _variant(senders_read=lambda e: examples[(index[e.key] + 1) % len(examples)])
    if a.sender_ablation:
        for j, agent in enumerate(pipe.roles.senders):
            variants[f"tflow_only_{agent.role.lower().replace(' ', '_')}"] = _variant(keep_senders=[j])
    if a.swap_facts:  # relay with another fact value: does the answer follow the senders?
        rng = random.Random(a.seed)
        variants["tflow_swapped_fact"] = _variant(rewrite=lambda e: tasks.swap_fact(e, rng))
    results = evaluate(pipe, examples, variants, a.batch_size, protocol, a.samples, a.seed)
    print(format_table(a.task, results))
    report = {
        "command": "python -m tflow.tools.evaluate " + " ".join(argv if argv is not None else sys.argv[1:]),
        "task": a.task,
        "limit": limit,
        "seed": a.seed,
        "split": ("whole file" if not a.split_by_hash else "test hash bucket of the file")
        if a.task.startswith("jsonl:")
        else a.split,
        "model": a.model,
        "sender_model": a.sender_model or a.model,
        "generator": generator,
        "static_adapter": static,
        "engine": engine.describe(),
        "dtype": str(pipe.backbone.dtype).removeprefix("torch."),
        **({"dtype_why": pipe.backbone.dtype_why} if pipe.backbone.dtype_why else {}),
        "decoding": "greedy" if not protocol.do_sample else f"sampling, {a.samples} sample(s) per query",
        "protocol": ran,
        "dataset_path": a.dataset_path,
        "results": results,
        "savings": savings(results),
        "paired": comparisons(results),
    }
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=2))
        with open(a.csv or str(Path(a.json).with_suffix(".csv")), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(
                ["task", "mode", "accuracy", "tokens_per_query", "paper_tokens_per_query", "seconds_per_query", "n"]
            )
            for m, r in results.items():
                w.writerow(
                    [a.task, m, r["accuracy"], r["tokens_per_query"], r["paper_tokens_per_query"],
                     r["seconds_per_query"], r["n"]]
                )


if __name__ == "__main__":
    main()
