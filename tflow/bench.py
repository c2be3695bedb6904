"""Side-by-side benchmark of Single, TextMAS and TFlow: tokens, latency, KV cache, ratios.

    python -m tflow.bench --json bench.json                 # both workloads
    python -m tflow.bench --workload shape --layers 28 --device cuda --dtype bf16   # full Qwen3-0.6B shape
    python -m tflow.bench --workload shape -M 256,512,1024                          # ratios by message length

Workloads (each after a warm-up, with the modes interleaved per query so machine noise
hits all modes alike):
- tasks: the embedded backbone and generators on the embedded tasks, natural lengths.
- shape: cost structure at paper-like lengths on a randomly initialised model with
  Qwen3-0.6B's published shape (hidden 1024, 16 query / 8 KV heads of 128, MLP 3072;
  on CPU by default 4 of its 28 layers and the embedded tokenizer's vocabulary), fixed
  lengths: senders' messages M tokens, receiver answer R tokens, EOS ignored.
Every number printed is measured in this one run; ratios compare modes of this run.
Two bounds are printed with them: the floor of TFlow / TextMAS (Single / TextMAS: TFlow's
receiver decodes Single's answer from Single's prompt) and TFlow over its own limit (one
receiver generation + one batched sender prefill + one generator forward).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import time
from dataclasses import asdict
from pathlib import Path

import torch
import transformers
from torch import nn
from transformers import Qwen3Config, Qwen3ForCausalLM

from . import lora, tasks
from .agents import Backbone, GenerationSettings, load_backbone, resolve_device, resolve_dtype, sender_prompts
from .generators import GeneratorConfig, ParameterGenerator, load_generator
from .modes import Pipeline, RunResult

MODES = ("single", "textmas", "tflow")


def _summary(rows: list[RunResult]) -> dict:
    secs = sorted(r.timings["total"] for r in rows)
    return {
        "queries": len(rows),
        "processed_tokens": statistics.fmean(r.usage.total_tokens for r in rows),
        "paper_tokens": statistics.fmean(r.paper_tokens for r in rows),  # the release's accounting (TFlow: receiver only)
        "receiver_prefill_tokens": statistics.fmean(r.receiver_prompt_tokens for r in rows),
        "generated_tokens": statistics.fmean(r.usage.generated_tokens for r in rows),
        "receiver_generated_tokens": statistics.fmean(r.usage.by_agent[_receiver(r)].generated_tokens for r in rows),
        "seconds_median": statistics.median(secs),
        "seconds_p90": secs[int(0.9 * (len(secs) - 1))],
        "receiver_kv_cache_bytes": statistics.fmean(r.kv_cache_bytes for r in rows),
        "peak_kv_cache_bytes": max(_peak_kv(r) for r in rows),
        "stages_median": {k: statistics.median(r.timings[k] for r in rows) for k in rows[0].timings},
        # per query, in run order: the receiver's seconds per generated token (for paired ratios)
        "receiver_s_per_token": [r.timings["receiver"] / max(1, r.usage.by_agent[_receiver(r)].generated_tokens) for r in rows],
    }


def _receiver(r: RunResult) -> str:
    return list(r.usage.by_agent)[-1]


def _peak_kv(r: RunResult) -> int:
    """The most KV-cache bytes held at once: the batched senders' caches, or the receiver's."""
    senders = sum(u.kv_cache_bytes for k, u in r.usage.by_agent.items() if k != _receiver(r))
    return max(senders, r.kv_cache_bytes)


def interleaved(pipe: Pipeline, queries: list[tuple[str, object]], settings: GenerationSettings, warmup: int = 2) -> dict:
    """Run every mode on every query, modes interleaved per query (the order rotates from one
    query to the next, so no mode always follows another); the first `warmup` queries are
    run but not counted."""
    rows: dict[str, list[RunResult]] = {m: [] for m in MODES}
    for i, (question, contexts) in enumerate(queries):
        for mode in MODES[i % len(MODES):] + MODES[: i % len(MODES)]:
            pipe.clear_cache()  # TFlow pays its sender pass and generator every query
            res = pipe.run(question, mode, contexts, settings=settings)
            if i >= warmup:
                rows[mode].append(res)
    return {m: _summary(r) for m, r in rows.items()}


def ratios(modes: dict) -> dict:
    t, x, s = modes["tflow"], modes["textmas"], modes["single"]
    # Paired per query (same query, same round of modes), then the median: steadier than a ratio of medians.
    paired = [a / b for a, b in zip(t["receiver_s_per_token"], s["receiver_s_per_token"])]
    out = {
        "tflow_over_textmas_time": t["seconds_median"] / x["seconds_median"],
        "tflow_over_textmas_tokens": t["processed_tokens"] / x["processed_tokens"],
        "tflow_over_textmas_paper_tokens": t["paper_tokens"] / x["paper_tokens"],
        "tflow_over_single_time": t["seconds_median"] / s["seconds_median"],
        "tflow_over_single_tokens": t["processed_tokens"] / s["processed_tokens"],
        "per_token_overhead": statistics.median(paired) - 1,
        # Same question, same receiver prompt: equal cache after prefill (lengths then grow with the answer).
        "tflow_receiver_prefill_equals_single": t["receiver_prefill_tokens"] == s["receiver_prefill_tokens"],
        "textmas_over_single_receiver_kv": x["receiver_kv_cache_bytes"] / s["receiver_kv_cache_bytes"],
    }
    if t["receiver_generated_tokens"] == s["receiver_generated_tokens"]:  # fixed lengths: the bounds are exact
        # TFlow's receiver decodes as many tokens as Single from Single's prompt, so Single's time
        # is a floor: no TFlow can go below Single / TextMAS in this run.
        out["floor_tflow_over_textmas_time"] = s["seconds_median"] / x["seconds_median"]
        # Its own limit: one receiver generation + one batched sender prefill + one generator forward.
        limit = s["seconds_median"] + t["stages_median"]["sender_pass"] + t["stages_median"]["generator"]
        out["tflow_over_its_limit"] = t["seconds_median"] / limit
    return out


def batch_throughput(pipe: Pipeline, queries: list[tuple[str, object]], settings: GenerationSettings, batch: int = 16) -> dict:
    """TFlow queries per second at batch `batch` (per-sample perturbations) versus batch 1."""
    qs, ctx = [q for q, _ in queries[:batch]], [c for _, c in queries[:batch]]
    pipe.run_batch(qs[:2], "tflow", ctx[:2], settings=settings)  # warm-up
    pipe.clear_cache()
    t0 = time.perf_counter()
    for q, c in zip(qs, ctx):
        pipe.run(q, "tflow", c, settings=settings)
    one = len(qs) / (time.perf_counter() - t0)
    pipe.clear_cache()
    t0 = time.perf_counter()
    pipe.run_batch(qs, "tflow", ctx, settings=settings)
    many = len(qs) / (time.perf_counter() - t0)
    return {"batch": len(qs), "queries_per_s_batch1": one, f"queries_per_s_batch{len(qs)}": many, "speedup": many / one}


def tasks_workload(model: str, queries: int, device: str, merge: bool | str = "auto", prefix_cache: bool = True) -> dict:
    backbone = load_backbone(model, device=device)
    if not prefix_cache:
        backbone.prefix_cache.capacity = 0  # every role prefix is computed anew
    out = {}
    for task in tasks.TASKS:
        gen_dir = Path("checkpoints/generators") / task
        spec = lora.infer_targets(backbone.model)
        gen = load_generator(gen_dir, spec, backbone.name).eval() if gen_dir.is_dir() else None
        pipe = Pipeline(backbone, gen, merge=merge)
        qs = [(e.question, e.contexts) for e in tasks.examples(task, "test", max(queries + 2, 16), seed=0)]
        settings = GenerationSettings(max_new_tokens=tasks.ANSWER_TOKENS, sender_max_new_tokens=tasks.MESSAGE_TOKENS)
        modes = interleaved(pipe, qs[: queries + 2], settings)
        out[task] = {"modes": modes, "ratios": ratios(modes), "throughput": batch_throughput(pipe, qs, settings)}
    return out


def shape_backbone(tokenizer_dir: str, layers: int, device: str, dtype: str | None) -> Backbone:
    """A random model with Qwen3-0.6B's per-layer shape and `layers` layers."""
    tok = load_backbone(tokenizer_dir, device="cpu").tokenizer
    dev = resolve_device(device)
    cfg = Qwen3Config(vocab_size=len(tok), hidden_size=1024, intermediate_size=3072, num_hidden_layers=layers,
                      num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=4096,
                      tie_word_embeddings=True)
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(cfg).to(dev, resolve_dtype(dtype, dev))
    return Backbone(model, tok, f"random Qwen3-0.6B shape, {layers}/28 layers")


def fixed_question(tokenizer, n_tokens: int, i: int) -> str:
    words = "apples pens coins books cards shells stamps marbles".split()
    text = " ".join(words[(i + k) % len(words)] for k in range(n_tokens))
    while len(tokenizer(text, add_special_tokens=False)["input_ids"]) > n_tokens:
        text = text.rsplit(" ", 1)[0]
    return text


def shape_workload(tokenizer_dir: str, layers: int, device: str, dtype: str | None, messages: list[int], answer: int, question: int,
                   queries: int, merge: bool | str = "auto", prefix_cache: bool = True) -> dict[int, dict]:
    """One block per sender-message length M (the same model, generator and questions)."""
    backbone = shape_backbone(tokenizer_dir, layers, device, dtype)
    if not prefix_cache:
        backbone.prefix_cache.capacity = 0  # every role prefix is computed anew
    spec = lora.infer_targets(backbone.model)
    # The released generator's parameter tokens are 256 wide and carry 2 x 256 factor values
    # each ("dim accumulation 2"): chunk_size 512 is that packing.
    gen = ParameterGenerator(GeneratorConfig(d_model=256, chunk_size=512, n_heads=4), spec, backbone.name)
    nn.init.normal_(gen.head_b.weight, std=0.02)  # non-zero factors: the real cost of applying them
    gen.to(backbone.device, backbone.dtype).eval()
    pipe = Pipeline(backbone, gen, merge=merge)
    qs = [(fixed_question(backbone.tokenizer, question, i), None) for i in range(queries + 2)]
    # TextMAS's senders could skip their role prefixes too, with a prefix cache in generation
    # (HF generate cannot batch rows with different cached prefixes): the ratio credited with that.
    prefixes = sum(p.prefix_len for p in sender_prompts(backbone, pipe.roles.senders, [qs[0][0]], [[None] * len(pipe.roles.senders)]))
    blocks = {}
    for message in messages:
        settings = GenerationSettings(max_new_tokens=answer, sender_max_new_tokens=message, ignore_eos=True)
        modes = interleaved(pipe, qs, settings)
        out = ratios(modes)
        if prefix_cache:
            out["tflow_over_textmas_tokens_if_textmas_cached_prefixes"] = modes["tflow"]["processed_tokens"] / (modes["textmas"]["processed_tokens"] - prefixes)
        blocks[message] = {
            "config": {"layers": layers, "hidden": 1024, "M": message, "R": answer, "question_tokens": question,
                       "device": str(backbone.device), "dtype": str(backbone.dtype), "model": backbone.name,
                       "parameters": backbone.num_parameters, "merge": merge, "prefix_cache": prefix_cache,
                       "generator": asdict(gen.config)},
            "modes": modes, "ratios": out}
    return blocks


def _print(name: str, block: dict) -> None:
    print(f"\n== {name} ==")
    print("| mode | processed tokens | paper tokens | receiver prefill | generated | s/query (median) | p90 | peak KV MB | stages (median s) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for m, r in block["modes"].items():
        stages = ", ".join(f"{k} {v:.4f}" for k, v in r["stages_median"].items() if k != "total")
        print(f"| {m} | {r['processed_tokens']:.0f} | {r['paper_tokens']:.0f} | {r['receiver_prefill_tokens']:.0f} | {r['generated_tokens']:.0f} | "
              f"{r['seconds_median']:.4f} | {r['seconds_p90']:.4f} | {r['peak_kv_cache_bytes'] / 2**20:.2f} | {stages} |")
    print("ratios: " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in block["ratios"].items()))
    if "throughput" in block:
        print("batched TFlow: " + ", ".join(f"{k}={v:.2f}" for k, v in block["throughput"].items()))


def _print_sweep(blocks: dict[int, dict]) -> None:
    print("\n== shape: ratios by senders' message length M ==")
    print("| M | TFlow / TextMAS time | floor (Single / TextMAS) | TFlow / TextMAS tokens | TFlow / Single time | per-token overhead |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for m, b in blocks.items():
        r = b["ratios"]
        print(f"| {m} | {r['tflow_over_textmas_time']:.3f} (1/{1 / r['tflow_over_textmas_time']:.1f}) | {r['floor_tflow_over_textmas_time']:.3f} | "
              f"{r['tflow_over_textmas_tokens']:.3f} | {r['tflow_over_single_time']:.3f} | {100 * r['per_token_overhead']:.1f}% |")


def _host(threads: int) -> dict:
    """What the numbers were measured on: CPU model, cores, threads used, library versions."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), cpu)
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "threads": threads, "torch": torch.__version__, "transformers": transformers.__version__}


def _lengths(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workload", choices=["tasks", "shape", "both"], default="both")
    p.add_argument("--model", default="checkpoints/tiny-qwen3", help="tasks workload backbone; its tokenizer serves the shape workload")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default=None)
    p.add_argument("--layers", type=int, default=None, help="shape workload layers (default: 28 on GPU, 4 on CPU)")
    p.add_argument("--message-tokens", "-M", type=_lengths, default=[256],
                   help="senders' message length M; a comma list (256,512,1024) runs one shape block per M")
    p.add_argument("--answer-tokens", "-R", type=int, default=128)
    p.add_argument("--question-tokens", type=int, default=64)
    p.add_argument("--queries", type=int, default=6)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-merge", action="store_true", help="decode with the low-rank path only, never merged weights (the 'before' of that fast path)")
    p.add_argument("--no-prefix-cache", action="store_true", help="recompute the senders' role prefixes every query (the 'before' of that fast path)")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    report: dict = {"device": str(resolve_device(a.device)), "host": _host(a.threads)}
    if torch.cuda.is_available():
        report["device_name"] = torch.cuda.get_device_name()
    if a.workload in ("tasks", "both"):
        report["tasks"] = tasks_workload(a.model, a.queries * 3, a.device, merge=False if a.no_merge else "auto",
                                         prefix_cache=not a.no_prefix_cache)
        for task, block in report["tasks"].items():
            _print(f"tasks: {task}", block)
    if a.workload in ("shape", "both"):
        layers = a.layers or (28 if resolve_device(a.device).type == "cuda" else 4)
        blocks = shape_workload(a.model, layers, a.device, a.dtype, a.message_tokens, a.answer_tokens, a.question_tokens, a.queries,
                                merge=False if a.no_merge else "auto", prefix_cache=not a.no_prefix_cache)
        for m, block in blocks.items():
            _print(f"shape: {block['config']['model']}, M = {m}, R = {a.answer_tokens}", block)
        report["shape"] = blocks[a.message_tokens[0]]  # the first M is the headline
        report["ratios"] = report["shape"]["ratios"]
        if len(blocks) > 1:
            report["shape_by_message_tokens"] = {str(m): b for m, b in blocks.items()}
            _print_sweep(blocks)
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
