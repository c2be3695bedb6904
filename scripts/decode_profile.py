"""Where a decoded token's time goes: steady-state decode step time against the memory-bandwidth floor, and a
torch.profiler breakdown of one generation (matrix products, attention, other ops, and what no op accounts for:
Python, HF's generate loop and dispatch). `--paths` decodes the same prompt with a random perturbation applied
as a TFlow request applies it, on the low-rank path and merged into weight copies, beside the plain model (rounds
interleaved, so machine noise hits every path alike): what each path adds per step.

The step time excludes the prefill: (time to generate N tokens - time to generate 1) / (N - 1), the fastest of
--repeats, EOS ignored. Bytes per token are every weight the step reads (the LM head included) plus the mean KV
cache; the floor is a large copy measured in the same run.

    python scripts/decode_profile.py                               # SmolLM2-135M-Instruct, fp32, Single
    python scripts/decode_profile.py --dtype bf16 --json decode-bf16.json
    python scripts/decode_profile.py --paths plain,lowrank,merged --rank 8   # a perturbation's cost per step
    python scripts/decode_profile.py --shape qwen3-0.6b --layers 28 --paths plain,merged --rank 128
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from tflow.allocator import huge_pages, prefer_huge_pages  # noqa: E402

prefer_huge_pages()  # as the tools do, before torch loads (THP_MEM_ALLOC_ENABLE=0 measures without)

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from tflow import lora  # noqa: E402
from tflow.agents import GenerationSettings, Roles, build_prompt, generate, load_backbone  # noqa: E402
from tflow.errors import user_errors  # noqa: E402
from tflow.merge_cost import seconds  # noqa: E402
from tflow.tools.measure import copy_bandwidth, weight_bytes_per_token  # noqa: E402
from tflow.tools.shapes import get_shape, shape_backbone  # noqa: E402

QUESTION = "Ann has 23 apples and buys 14 more. How many apples does she have now? Explain step by step."
GEMM = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear")
ATTENTION = ("scaled_dot_product",)
PATHS = ("plain", "lowrank", "merged")


def applier(backbone, path: str, rank: int) -> Callable[[], contextlib.AbstractContextManager]:
    """The context a generation of `path` runs in: nothing, or a random perturbation of stacked rank `rank` applied
    on the low-rank path or merged (the merge is paid on entry, outside the timed generations)."""
    if path == "plain":
        return contextlib.nullcontext
    spec = lora.infer_targets(backbone.model)
    p = lora.random_perturbation(backbone.model, spec, rank)
    return lambda: lora.apply(backbone.model, p, merge=path == "merged")


def generation_seconds(backbone, prompt: list[int], tokens: int) -> float:
    settings = GenerationSettings(max_new_tokens=tokens, ignore_eos=True)
    return seconds(lambda: generate(backbone, [prompt], tokens, settings), backbone.device)


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


@user_errors
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct", help="the model (with --shape: its tokenizer)")
    p.add_argument("--shape", default=None, help="a random model of this published shape instead (qwen3-0.6b, ...)")
    p.add_argument("--layers", type=int, default=None, help="with --shape: its first N layers")
    p.add_argument("--dtype", default="fp32")
    p.add_argument("--tokens", type=int, default=64, help="tokens per timed generation")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--top", type=int, default=12, help="ops listed by self time")
    p.add_argument("--paths", default="plain", help=f"comma-separated, from {', '.join(PATHS)}; the first is profiled"
                   " in full, each other one beside it")
    p.add_argument("--rank", type=int, default=8, help="the perturbation's stacked rank (senders x rank) for lowrank"
                   " and merged")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    paths = [x.strip() for x in a.paths.split(",") if x.strip()]
    if a.tokens < 2 or a.repeats < 1 or a.rank < 1:
        raise ValueError("--tokens must be at least 2, --repeats and --rank at least 1")
    if not paths or any(x not in PATHS for x in paths) or len(set(paths)) != len(paths):
        raise ValueError(f"--paths: distinct names from {', '.join(PATHS)}")
    torch.set_num_threads(a.threads)
    if a.shape:
        backbone = shape_backbone(get_shape(a.shape), a.model, a.layers, "cpu", a.dtype)
    else:
        backbone = load_backbone(a.model, "cpu", a.dtype)
    prompt = build_prompt(backbone, Roles().receiver, QUESTION).input_ids
    weights = weight_bytes_per_token(backbone.model)
    kv = backbone.kv_cache_bytes(len(prompt) + a.tokens // 2)
    copy = copy_bandwidth(backbone.device)
    appliers = {path: applier(backbone, path, a.rank) for path in paths}
    for path in paths:  # warm-up (and the merge cost model's one measurement, outside the rounds)
        with appliers[path]():
            generate(backbone, [prompt], 8, GenerationSettings(max_new_tokens=8, ignore_eos=True))
    one, many = {x: float("inf") for x in paths}, {x: float("inf") for x in paths}
    for _ in range(a.repeats):  # rounds: every path once per round, the fastest of the rounds kept
        for path in paths:
            with appliers[path]():
                one[path] = min(one[path], generation_seconds(backbone, prompt, 1))
                many[path] = min(many[path], generation_seconds(backbone, prompt, a.tokens))
    report = {"model": backbone.name, "dtype": str(backbone.dtype), "threads": a.threads,
              "huge_pages": huge_pages(), "prompt_tokens": len(prompt),
              "tokens": a.tokens, "bytes_per_token": weights + kv, "copy_bytes_per_s": copy, "paths": {}}
    print(f"{backbone.name} ({backbone.dtype}, {a.threads} threads), {(weights + kv) / 1e6:.1f} MB read per token"
          + (f", a large copy {copy / 1e9:.1f} GB/s" if copy else ""))
    for path in paths:
        step = (many[path] - one[path]) / (a.tokens - 1)
        row = {"prefill_s": one[path], "step_s": step, "bytes_per_s": (weights + kv) / step,
               "fraction_of_copy_bandwidth": (weights + kv) / step / copy if copy else None}
        if path != "plain":
            row["rank"] = a.rank
        with appliers[path]():
            row["profile"] = breakdown(backbone, prompt, a.tokens, a.top)
        report["paths"][path] = row
        share = f", {100 * row['fraction_of_copy_bandwidth']:.0f}% of the copy" if copy else ""
        versus = "" if path == paths[0] else f" ({step / report['paths'][paths[0]]['step_s']:.3f}x {paths[0]})"
        print(f"{path}: prefill {1000 * one[path]:.1f} ms for {len(prompt)} tokens, decode step {1000 * step:.2f} ms"
              f"{versus}, {row['bytes_per_s'] / 1e9:.1f} GB/s{share}")
        prof = row["profile"]
        print(f"  one generation of {a.tokens} tokens under the profiler: {prof['wall_s']:.2f} s")
        for k, v in prof["groups"].items():
            print(f"    {k}: {100 * v:.1f}%")
    print(f"top ops of {paths[0]}:\n| op | self s | calls |\n| --- | ---: | ---: |")
    for o in report["paths"][paths[0]]["profile"]["top_ops"]:
        print(f"| {o['op']} | {o['self_s']:.3f} | {o['calls']} |")
    # the single-path report keeps its top-level fields (docs/runs' earlier JSON reads the same)
    report.update({k: v for k, v in report["paths"][paths[0]].items() if k != "rank"})
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
