"""Time the Studio's causal probes (tflow/diagnostics/causal.py) as a press of the causal section's button does.

The Studio is built as `tflow-studio` builds it (same backbone, checkpoints and warm-up); for the first
`--per-task` page examples of each task it answers with TFlow through the `/causal` API (greedy, the page's 32 new
tokens) and runs every probe once on that run. Prints median and max seconds per probe, the seconds the page's own
timing line shows. With --compare-exact, each run's ablation is also computed exactly (every part removed in its
own variant) and compared with the first-order one the page shows: Spearman's ρ of the estimate and the exact effect
over every cell, over the cells the page removes exactly, and how many of the exact top cells it found.

    python scripts/causal_timing.py                                  # embedded backbone, fp32
    python scripts/causal_timing.py --dtype bf16
    python scripts/causal_timing.py --model smollm2-135m-instruct --compare-exact
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from tflow.diagnostics.causal import Probe, spearman  # noqa: E402
from tflow.studio.api import Api  # noqa: E402
from tflow.studio.registry import NONE, Studio, StudioConfig  # noqa: E402
from tflow.studio.worker import MAX_NEW_TOKENS, PROBES  # noqa: E402


def compare(studio: Studio, generator: str, ex: dict, shown: dict) -> dict:
    """The exact ablation of the page's run (run again: greedy, the same answer), against the page's first-order one."""
    run = studio.pipeline(generator, NONE).run(ex["question"], "tflow", sender_context=ex["contexts"],
                                               max_new_tokens=MAX_NEW_TOKENS)
    assert run.answer == shown["answer"], (run.answer, shown["answer"])
    t0 = time.perf_counter()
    exact = np.array(Probe.of_result(studio.backbone, run).ablation(exact=True).cells)
    seconds = time.perf_counter() - t0
    estimate, top = np.array(shown["estimate"]), {tuple(c) for c in shown["exact_cells"]}
    best = {divmod(int(i), exact.shape[1]) for i in np.argsort(-np.abs(exact).ravel(), kind="stable")[: len(top)]}
    return {"exact_s": seconds, "rho_all": spearman(estimate, exact), "rho_top": shown["agreement"],
            "top_found": len(best & top), "k": len(top)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(ROOT / "checkpoints" / "tiny-qwen3"))
    p.add_argument("--checkpoints", default=str(ROOT / "checkpoints"))
    p.add_argument("--dtype", default=None, help="the backbone's dtype (default: the Studio's)")
    p.add_argument("--per-task", type=int, default=1, help="page examples per task")
    p.add_argument("--compare-exact", action="store_true", help="also compute each ablation exactly and compare")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--json", default=None, help="write every run's timings here")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    studio = Studio(StudioConfig(model=a.model, checkpoints=a.checkpoints, dtype=a.dtype, device="cpu"))
    studio.warm_up()
    api, examples, rows = Api(studio), [], []
    for ex in studio.examples:
        if sum(e["task"] == ex["task"] for e in examples) < a.per_task:
            examples.append(ex)
    for i, ex in enumerate(examples):
        generator = studio.generator_for(ex["task"]) or studio.default_generator
        out = api.causal(ex["question"], ex["contexts"], generator)
        row = {"task": ex["task"], "answer": out["answer"], **{n: out[n]["seconds"] for n in PROBES},
               "method": out["ablation"].get("method", "exact")}
        if a.compare_exact and row["method"] == "first-order":
            row.update(compare(studio, generator, ex, {**out["ablation"], "answer": out["answer"]}))
        rows.append(row)
        print(f"[{i + 1}/{len(examples)}] {ex['task']}: " + " · ".join(f"{n} {row[n]:.2f} s" for n in PROBES)
              + (f" · exact {row['exact_s']:.1f} s, ρ all {row['rho_all']}, ρ top {row['rho_top']}, "
                 f"top {row['k']} found {row['top_found']}" if "exact_s" in row else ""), flush=True)
    print(f"\n{len(rows)} examples, {studio.backbone.name} ({studio.backbone.dtype}), {a.threads} threads, "
          f"ablation {rows[0]['method']}")
    print("| probe | median s | max s |\n| --- | ---: | ---: |")
    for name in PROBES:
        values = [r[name] for r in rows]
        print(f"| {name} | {statistics.median(values):.3f} | {max(values):.3f} |")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2) + "\n")
    studio.close()


if __name__ == "__main__":
    main()
