"""Time the Studio's four causal probes (tflow/causal.py) on the page's example questions.

Each example is answered with TFlow by its task's generator exactly as the page does (greedy, 32
new tokens), then every probe runs once on that run, as a press of the causal section's button
does (after one warm-up run, as the app warms up at start). Prints median and max seconds per probe.

    python scripts/causal_timing.py                 # embedded backbone, fp32
    python scripts/causal_timing.py --dtype bf16
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

import torch  # noqa: E402

from tflow.agents import load_backbone  # noqa: E402
from tflow.diagnostics.causal import Probe  # noqa: E402
from tflow.generators import load_generator  # noqa: E402
from tflow.pipeline import Pipeline  # noqa: E402

PROBES = ("ablation", "sweep", "token_kl", "senders")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(ROOT / "checkpoints" / "tiny-qwen3"))
    p.add_argument("--checkpoints", default=str(ROOT / "checkpoints"))
    p.add_argument("--dtype", default="fp32")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    backbone = load_backbone(a.model, "cpu", a.dtype)
    spec = backbone.targets
    examples = json.loads((ROOT / "tflow" / "studio" / "assets" / "examples.json").read_text())
    pipes = {task: Pipeline(backbone, load_generator(Path(a.checkpoints, "generators", task), spec, a.model).eval())
             for task in dict.fromkeys(e["task"] for e in examples)}
    warm = pipes[examples[0]["task"]].run(
        examples[0]["question"], "tflow", sender_context=examples[0]["contexts"], max_new_tokens=32
    )
    for name in PROBES:
        getattr(Probe.of_result(backbone, warm), name)()
    seconds: dict[str, list[float]] = {name: [] for name in PROBES}
    for ex in examples:
        run = pipes[ex["task"]].run(ex["question"], "tflow", sender_context=ex["contexts"], max_new_tokens=32)
        probe = Probe.of_result(backbone, run)
        for name in PROBES:
            t0 = time.perf_counter()
            probe.sweep(max_new_tokens=32) if name == "sweep" else getattr(probe, name)()
            seconds[name].append(time.perf_counter() - t0)
    print(f"{len(examples)} examples, {a.model} ({a.dtype}), {a.threads} threads")
    print("| probe | median s | max s |\n| --- | ---: | ---: |")
    for name, values in seconds.items():
        print(f"| {name} | {statistics.median(values):.3f} | {max(values):.3f} |")


if __name__ == "__main__":
    main()
