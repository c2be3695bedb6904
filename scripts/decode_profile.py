"""Where a decoded token's time goes: steady-state decode step time against the memory-bandwidth floor, and a
torch.profiler breakdown of one generation (matrix products, attention, other ops, and what no op accounts for:
Python, HF's generate loop and dispatch).

The step time excludes the prefill: (time to generate N tokens - time to generate 1) / (N - 1), the fastest of
--repeats, EOS ignored. Bytes per token are every weight the step reads (the LM head included) plus the mean KV
cache; the floor is a large copy measured in the same run.

    python scripts/decode_profile.py                               # SmolLM2-135M-Instruct, fp32, Single
    python scripts/decode_profile.py --dtype bf16 --json decode-bf16.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from tflow.agents import GenerationSettings, Roles, build_prompt, generate, load_backbone  # noqa: E402
from tflow.merge_cost import fastest_seconds  # noqa: E402
from tflow.tools.measure import copy_bandwidth, weight_bytes_per_token  # noqa: E402

QUESTION = "Ann has 23 apples and buys 14 more. How many apples does she have now? Explain step by step."
GEMM = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear")
ATTENTION = ("scaled_dot_product",)


def seconds(backbone, prompt: list[int], tokens: int, repeats: int) -> float:
    settings = GenerationSettings(max_new_tokens=tokens, ignore_eos=True)
    return fastest_seconds(lambda: generate(backbone, [prompt], tokens, settings), backbone.device, repeats)


def breakdown(backbone, prompt: list[int], tokens: int, top: int) -> dict:
    """Self CPU time per op group over one generation of `tokens` tokens, as fractions of its wall time."""
    settings = GenerationSettings(max_new_tokens=tokens, ignore_eos=True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        generate(backbone, [prompt], tokens, settings)
        wall = time.perf_counter() - t0
    ops = [(e.key, e.self_cpu_time_total / 1e6, e.count) for e in prof.key_averages()]
    ops.sort(key=lambda o: -o[1])
    groups = {"matrix products": 0.0, "attention": 0.0, "other ops": 0.0}
    for name, s, _ in ops:
        kind = ("matrix products" if name in GEMM else "attention" if any(a in name for a in ATTENTION)
                else "other ops")
        groups[kind] += s
    groups["outside any op (Python, generate, dispatch)"] = max(0.0, wall - sum(groups.values()))
    return {"wall_s": wall, "groups": {k: v / wall for k, v in groups.items()},
            "top_ops": [{"op": n, "self_s": s, "calls": c} for n, s, c in ops[:top]]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--dtype", default="fp32")
    p.add_argument("--tokens", type=int, default=64, help="tokens per timed generation")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--top", type=int, default=12, help="ops listed by self time")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    if a.tokens < 2 or a.repeats < 1:
        raise SystemExit("--tokens must be at least 2 and --repeats at least 1")
    torch.set_num_threads(a.threads)
    backbone = load_backbone(a.model, "cpu", a.dtype)
    prompt = build_prompt(backbone, Roles().receiver, QUESTION).input_ids
    generate(backbone, [prompt], 8, GenerationSettings(max_new_tokens=8, ignore_eos=True))  # warm-up
    one, many = seconds(backbone, prompt, 1, a.repeats), seconds(backbone, prompt, a.tokens, a.repeats)
    step = (many - one) / (a.tokens - 1)
    weights = weight_bytes_per_token(backbone.model)
    kv = backbone.kv_cache_bytes(len(prompt) + a.tokens // 2)
    copy = copy_bandwidth(backbone.device)
    report = {"model": backbone.name, "dtype": str(backbone.dtype), "threads": a.threads, "prompt_tokens": len(prompt),
              "tokens": a.tokens, "prefill_s": one, "step_s": step, "bytes_per_token": weights + kv,
              "bytes_per_s": (weights + kv) / step, "copy_bytes_per_s": copy,
              "fraction_of_copy_bandwidth": (weights + kv) / step / copy if copy else None,
              "profile": breakdown(backbone, prompt, a.tokens, a.top)}
    share = report["fraction_of_copy_bandwidth"]
    floor = f", {100 * share:.0f}% of a large copy ({copy / 1e9:.1f} GB/s)" if copy else ""
    print(f"{backbone.name} ({backbone.dtype}, {a.threads} threads): prefill {1000 * one:.1f} ms for "
          f"{len(prompt)} tokens, decode step {1000 * step:.2f} ms, {(weights + kv) / 1e6:.1f} MB read per token = "
          f"{report['bytes_per_s'] / 1e9:.1f} GB/s{floor}")
    prof = report["profile"]
    print(f"one generation of {a.tokens} tokens under the profiler: {prof['wall_s']:.2f} s")
    for k, v in prof["groups"].items():
        print(f"  {k}: {100 * v:.1f}%")
    print("| op | self s | calls |\n| --- | ---: | ---: |")
    for o in prof["top_ops"]:
        print(f"| {o['op']} | {o['self_s']:.3f} | {o['calls']} |")
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
