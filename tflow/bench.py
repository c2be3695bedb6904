"""Side-by-side benchmark of Single, TextMAS and TFlow: tokens, latency, KV cache, ratios.

    python -m tflow.bench --json bench.json                 # both workloads
    python -m tflow.bench --workload shape --shape qwen3-4b --device cuda --dtype bf16   # all 36 layers of Qwen3-4B's shape
    python -m tflow.bench --workload shape -M 256,512,1024                               # ratios by message length
    python -m tflow.bench --workload shape --shape qwen3-0.6b --sender-shape qwen3-8b --device cuda --dtype bf16   # big senders, small receiver
    python -m tflow.bench --workload engines --model smollm2-135m-instruct --engine hf,vllm --concurrency 1,4,8,16 -R 64 --queries 16

Workloads (each after a warm-up, with the modes interleaved per query so machine noise
hits all modes alike):
- tasks: the embedded backbone and generators on the embedded tasks, natural lengths.
- shape: cost structure at paper-like lengths on a randomly initialised model with a
  published Qwen3 shape (`--shape qwen3-0.6b | qwen3-4b | qwen3-8b`, full 151,936-token
  vocabulary; on CPU by default 4 of its layers), the generator sized for it, fixed
  lengths: senders' messages M tokens, receiver answer R tokens, EOS ignored. Decoding is
  restricted to word tokens that re-tokenise to themselves, so each TextMAS message reaches
  the receiver as exactly M tokens (the report checks it). `--sender-shape` runs the senders
  on a second random model of another shape (a specialist advising a smaller receiver).
Each block also reports its distance to the physical limit: bytes of weights and KV read
per decoded token, seconds per token and the bandwidth achieved (on CUDA, as a fraction of
a device-to-device copy measured in the same run). A progress bar follows every query and
the JSON is rewritten after every block.
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
import re
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path

import torch
import transformers
from torch import nn
from tqdm import tqdm

from . import catalog, lora, tasks
from .agents import Backbone, GenerationSettings, build_prompt, load_backbone, resolve_device, sender_prompts
from .bench_engines import engines_workload, print_report
from .cli import user_errors
from .engines import ENGINES
from .generators import ParameterGenerator, load_generator, recorded_sender
from .modes import Pipeline, RunResult, load_recorded_sender, sender_shape
from .shapes import SHAPES, ModelShape, get_shape, shape_backbone
from .stats import percentile

MODES = ("single", "textmas", "tflow")


def _summary(rows: list[RunResult]) -> dict:
    secs = [r.timings["total"] for r in rows]
    return {
        "queries": len(rows),
        "processed_tokens": statistics.fmean(r.usage.total_tokens for r in rows),
        "paper_tokens": statistics.fmean(r.paper_tokens for r in rows),  # the release's accounting (TFlow: receiver only)
        "receiver_prefill_tokens": statistics.fmean(r.receiver_prompt_tokens for r in rows),
        "generated_tokens": statistics.fmean(r.usage.generated_tokens for r in rows),
        "receiver_generated_tokens": statistics.fmean(r.usage.by_agent[_receiver(r)].generated_tokens for r in rows),
        "seconds_median": statistics.median(secs),
        "seconds_p90": percentile(secs, 0.9),
        "seconds": secs,  # per query, in run order
        "receiver_kv_cache_bytes": statistics.fmean(r.kv_cache_bytes for r in rows),
        "peak_kv_cache_bytes": max(_peak_kv(r) for r in rows),
        "stages_median": {k: statistics.median(r.timings[k] for r in rows) for k in rows[0].timings},
        "receiver_first_token_s_median": statistics.median(r.receiver_first_token_s for r in rows),  # perturbation applied + prefill
        # per query, in run order: the receiver's seconds per generated token (for paired ratios)
        "receiver_s_per_token": [r.timings["receiver"] / max(1, r.usage.by_agent[_receiver(r)].generated_tokens) for r in rows],
    }


def _receiver(r: RunResult) -> str:
    return list(r.usage.by_agent)[-1]


def _peak_kv(r: RunResult) -> int:
    """The most KV-cache bytes held at once: the batched senders' caches, or the receiver's."""
    senders = sum(u.kv_cache_bytes for k, u in r.usage.by_agent.items() if k != _receiver(r))
    return max(senders, r.kv_cache_bytes)


def interleaved(pipe: Pipeline, queries: list[tuple[str, object]], settings: GenerationSettings, warmup: int = 2,
                desc: str = "queries") -> dict[str, list[RunResult]]:
    """Run every mode on every query, modes interleaved per query (the order rotates from one
    query to the next, so no mode always follows another); the first `warmup` queries are
    run but not counted. A progress bar shows each query and mode as it runs."""
    rows: dict[str, list[RunResult]] = {m: [] for m in MODES}
    bar = tqdm(queries, desc=desc, unit="query")
    for i, (question, contexts) in enumerate(bar):
        for mode in MODES[i % len(MODES):] + MODES[: i % len(MODES)]:
            bar.set_postfix_str(f"{'warm-up' if i < warmup else 'counted'}: {mode}")
            pipe.clear_cache()  # TFlow pays its sender pass and generator every query
            res = pipe.run(question, mode, contexts, settings=settings)
            if i >= warmup:
                rows[mode].append(res)
    return rows


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
    else:  # answers of other lengths: Single's prefill, then Single's seconds per decoding step for TFlow's other tokens
        # (one receiver time per token would spread Single's prefill over its own, longer answer)
        first = s["receiver_first_token_s_median"]
        per_step = (s["stages_median"]["receiver"] - first) / max(1.0, s["receiver_generated_tokens"] - 1)
        receiver = first + per_step * max(0.0, t["receiver_generated_tokens"] - 1)
        limit = t["stages_median"]["sender_pass"] + t["stages_median"]["generator"] + receiver
        out["tflow_over_its_limit_at_its_answer_length"] = t["stages_median"]["total"] / limit
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


def tasks_workload(model: str, queries: int, device: str, merge: bool | str = "auto", prefix_cache: bool = True,
                   warmup: int = 2, sender_model: str | None = None, message_cap: int | None = None,
                   only: Sequence[str] | None = None) -> Iterator[tuple[str, dict]]:
    """(task, block) for each task with a shipped generator for `model`, yielded as soon as it is measured.
    A generator that records another senders' backbone (kb's specialist) runs with it (or with `sender_model`).
    message_cap: the most tokens a TextMAS sender may write (default: the task's evaluation budget); the senders
    stop where they choose below it. only: these tasks (default: every task a shipped generator for `model` was trained on)."""
    trained = catalog.tasks_for(model)
    missing = [t for t in only or () if t not in trained]
    if missing:
        raise ValueError(f"no shipped generator for {model} was trained on {', '.join(missing)}: "
                         f"choose among {', '.join(trained) or 'none'}")
    backbone = load_backbone(model, device=device)
    if not prefix_cache:
        backbone.prefix_cache.capacity = 0  # every role prefix is computed anew
    spec = lora.infer_targets(backbone.model)
    copy_bw = copy_bandwidth(backbone.device)
    for task in only or trained:
        gen_dir = catalog.trained_for(task, model)
        other = recorded_sender(gen_dir)
        senders = backbone
        if other:
            senders = (load_backbone(sender_model, device=backbone.device, share_with=backbone) if sender_model
                       else load_recorded_sender(other, backbone))
        gen = load_generator(gen_dir, spec, backbone.name, sender_shape(senders)).eval()
        pipe = Pipeline(backbone, gen, merge=merge, sender_backbone=senders)
        qs = [(e.question, e.contexts) for e in tasks.examples(task, "test", max(queries + warmup, 16), seed=0)]
        answer, message = tasks.budgets(task)
        settings = GenerationSettings(max_new_tokens=answer, sender_max_new_tokens=message_cap or message)
        modes = {m: _summary(r) for m, r in interleaved(pipe, qs[: queries + warmup], settings, warmup, desc=task).items()}
        yield task, {"config": {"model": backbone.name, "parameters": backbone.num_parameters, "layers": backbone.num_layers,
                                "device": str(backbone.device), "dtype": str(backbone.dtype), "generator": str(gen_dir),
                                "senders": senders.name,
                                "answer_tokens": answer, "message_cap": settings.sender_max_new_tokens},
                     "modes": modes, "ratios": ratios(modes), "bandwidth": bandwidth(backbone, modes, copy_bw),
                     "throughput": batch_throughput(pipe, qs, settings)}


def round_trip_tokens(tokenizer) -> tuple[int, ...]:
    """Ids that decode to one lowercase word with a leading space and encode back to themselves:
    any sequence of them re-tokenises to exactly the same ids, so a TextMAS message of M
    generated tokens reaches the receiver as exactly M tokens (random ids decoded to text and
    re-tokenised come back about twice as long)."""
    ids = []
    for i in range(len(tokenizer)):
        text = tokenizer.decode([i])
        if re.fullmatch(r" [a-z]+", text) and tokenizer(text, add_special_tokens=False)["input_ids"] == [i]:
            ids.append(i)
    if not ids:
        raise ValueError("the tokenizer has no single-word tokens that round-trip; the shape workload cannot fix message lengths")
    return tuple(ids)


def fixed_question(tokenizer, n_tokens: int, i: int) -> str:
    words = "apples pens coins books cards shells stamps marbles".split()
    text = " ".join(words[(i + k) % len(words)] for k in range(n_tokens))
    while len(tokenizer(text, add_special_tokens=False)["input_ids"]) > n_tokens:
        text = text.rsplit(" ", 1)[0]
    return text


def message_tokens_in_receiver_prompt(pipe: Pipeline, question: str, prefill: int, word: int) -> int:
    """How many of the TextMAS receiver's prompt tokens are the senders' messages: its prefill
    minus the same prompt with one-token messages, plus those tokens."""
    senders = pipe.roles.senders
    one = {a.role: pipe.backbone.tokenizer.decode([word]).strip() for a in senders}
    return prefill - len(build_prompt(pipe.backbone, pipe.roles.receiver, question, None, one).input_ids) + len(senders)


def weight_bytes_per_token(model: nn.Module) -> int:
    """Bytes of weights one decoding step reads: every parameter once (a tied embedding is the LM
    head), except an untied input embedding, of which only one row is read."""
    emb = model.get_input_embeddings().weight
    tied = model.get_output_embeddings() is not None and model.get_output_embeddings().weight is emb
    return sum(p.nbytes for p in model.parameters() if tied or p is not emb)


def copy_bandwidth(device: torch.device, gib: float = 1.0) -> float | None:
    """Memory bandwidth of a large copy on `device` in bytes/s (read + write counted): CUDA and CPU; None elsewhere."""
    if device.type not in ("cuda", "cpu"):
        return None
    src = torch.empty(int(gib * 2**30), dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    if device.type == "cpu":
        t0 = time.perf_counter()
        for _ in range(5):
            dst.copy_(src)
        return 5 * 2 * src.nbytes / (time.perf_counter() - t0)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        dst.copy_(src)
    end.record()
    torch.cuda.synchronize(device)
    return 10 * 2 * src.nbytes / (start.elapsed_time(end) / 1000)


def bandwidth(backbone: Backbone, modes: dict, copy_bw: float | None) -> dict:
    """Per mode: bytes read per decoded token (weights + the receiver's mean KV cache), seconds per
    token (receiver stage / tokens: one prefill and the merge included) and the bandwidth achieved."""
    weights = weight_bytes_per_token(backbone.model)
    out = {"weight_bytes_per_token": weights, "copy_bytes_per_s": copy_bw}
    for mode, r in modes.items():
        tokens = r["receiver_generated_tokens"]
        kv = backbone.kv_cache_bytes(int(r["receiver_prefill_tokens"] + tokens / 2))
        s_tok = r["stages_median"]["receiver"] / max(1, tokens)
        achieved = (weights + kv) / s_tok
        out[mode] = {"kv_bytes_per_token": kv, "s_per_token": s_tok, "bytes_per_s": achieved,
                     "fraction_of_copy_bandwidth": achieved / copy_bw if copy_bw else None}
    return out


def shape_workload(shape: ModelShape, tokenizer_dir: str, layers: int | None, device: str, dtype: str | None, messages: list[int],
                   answer: int, question: int, queries: int, merge: bool | str = "auto", prefix_cache: bool = True,
                   on_block: Callable[[int, dict], None] | None = None, warmup: int = 2,
                   senders: tuple[ModelShape, int | None] | None = None) -> dict[int, dict]:
    """One block per sender-message length M (the same model, generator and questions; the
    `warmup` queries run before the first block only); `on_block(M, block)` is called as soon
    as each block is measured. senders: (shape, layers) of the senders' own backbone (default:
    the receiver's)."""
    backbone = shape_backbone(shape, tokenizer_dir, layers, device, dtype)
    sender_bb = shape_backbone(senders[0], tokenizer_dir, senders[1], device, dtype, seed=1) if senders else backbone
    if not prefix_cache:  # every role prefix is computed anew
        backbone.prefix_cache.capacity = sender_bb.prefix_cache.capacity = 0
    spec = lora.infer_targets(backbone.model)
    gen = ParameterGenerator(shape.generator, spec, backbone.name, sender=sender_shape(sender_bb))
    nn.init.normal_(gen.head_b.weight, std=0.02)  # non-zero factors: the real cost of applying them
    gen.to(backbone.device, backbone.dtype).eval()
    pipe = Pipeline(backbone, gen, merge=merge, sender_backbone=sender_bb)
    words = round_trip_tokens(backbone.tokenizer)
    qs = [(fixed_question(backbone.tokenizer, question, i), None) for i in range(queries + warmup)]
    # TextMAS's senders could skip their role prefixes too, with a prefix cache in generation
    # (HF generate cannot batch rows with different cached prefixes): the ratio credited with that.
    prefixes = sum(p.prefix_len for p in sender_prompts(sender_bb, pipe.roles.senders, [qs[0][0]], [[None] * len(pipe.roles.senders)]))
    copy_bw = copy_bandwidth(backbone.device)
    blocks = {}
    for k, message in enumerate(messages):
        settings = GenerationSettings(max_new_tokens=answer, sender_max_new_tokens=message, ignore_eos=True, allowed_tokens=words)
        # the process is warm after the first block: later blocks count every query
        rows = interleaved(pipe, qs if k == 0 else qs[warmup:], settings, warmup if k == 0 else 0, desc=f"{shape.name} M={message}")
        modes = {m: _summary(r) for m, r in rows.items()}
        out = ratios(modes)
        if prefix_cache:
            out["tflow_over_textmas_tokens_if_textmas_cached_prefixes"] = modes["tflow"]["processed_tokens"] / (modes["textmas"]["processed_tokens"] - prefixes)
        in_prompt = [message_tokens_in_receiver_prompt(pipe, r.question, r.receiver_prompt_tokens, words[0]) for r in rows["textmas"]]
        out["textmas_message_tokens_in_receiver_prompt"] = statistics.fmean(in_prompt)
        out["textmas_messages_reach_receiver_exactly"] = all(n == len(pipe.roles.senders) * message for n in in_prompt)
        # no TFlow query slower than this times Single's median
        out["slowest_tflow_over_single_median"] = max(modes["tflow"]["seconds"]) / modes["single"]["seconds_median"]
        blocks[message] = {
            "config": {"shape": shape.name, "layers": backbone.num_layers, "hidden": shape.hidden, "vocab": shape.vocab, "M": message,
                       "R": answer, "question_tokens": question, "device": str(backbone.device), "dtype": str(backbone.dtype),
                       "model": backbone.name, "parameters": backbone.num_parameters, "merge": merge, "prefix_cache": prefix_cache,
                       "generator": asdict(gen.config), "generator_parameters": sum(p.numel() for p in gen.parameters()),
                       "senders": {"model": sender_bb.name, "layers": sender_bb.num_layers, "hidden": sender_bb.hidden_size,
                                   "parameters": sender_bb.num_parameters}},
            "modes": modes, "ratios": out, "bandwidth": bandwidth(backbone, modes, copy_bw)}
        if on_block is not None:
            on_block(message, blocks[message])
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


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _senders(name: str | None, layers: int | None, receiver_layers: int | None) -> tuple[ModelShape, int | None] | None:
    """--sender-shape / --sender-layers: the senders' shape and depth (default: the receiver's depth, at most the shape's)."""
    if name is None:
        if layers is not None:
            raise ValueError("--sender-layers needs --sender-shape")
        return None
    shape = get_shape(name)
    return shape, layers or (min(receiver_layers, shape.layers) if receiver_layers else None)


def _print_bandwidth(bw: dict) -> None:
    copy = bw["copy_bytes_per_s"]
    print(f"distance to the memory-bandwidth limit: {bw['weight_bytes_per_token'] / 1e9:.3f} GB of weights per decoded token"
          + (f", a large copy on the device {copy / 1e9:.1f} GB/s" if copy else ""))
    for mode in MODES:
        r = bw[mode]
        frac = f", {100 * r['fraction_of_copy_bandwidth']:.1f}% of copy bandwidth" if r["fraction_of_copy_bandwidth"] else ""
        print(f"  {mode}: {1000 * r['s_per_token']:.2f} ms/token, KV {r['kv_bytes_per_token'] / 2**20:.1f} MB/token, "
              f"{r['bytes_per_s'] / 1e9:.1f} GB/s achieved{frac}")


@user_errors
def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workload", choices=["tasks", "shape", "both", "engines"], default="both",
                   help="tasks: the shipped generators on their tasks; shape: a random model of a published shape with fixed lengths")
    p.add_argument("--model", default="tiny", help="tasks workload backbone (tiny, smollm2-135m-instruct, a GGUF file, a directory); "
                                                  "its tokenizer serves the shape workload")
    p.add_argument("--message-cap", type=int, default=None,
                   help="tasks workload: the most tokens a TextMAS sender may write; they stop where they choose below it "
                        "(default: the task's evaluation budget)")
    p.add_argument("--tasks", type=lambda t: [x.strip() for x in t.split(",") if x.strip()], default=None,
                   help="tasks workload: a comma list of tasks (default: every task with a shipped generator for --model)")
    p.add_argument("--sender-model", default=None, help="tasks workload: the senders' backbone for generators trained with another one (default: the one each records)")
    p.add_argument("--shape", choices=sorted(SHAPES), default="qwen3-0.6b", help="shape workload: published config of this model, random weights")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--dtype", default=None, help="fp32, bf16 or fp16 (default: bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--layers", type=int, default=None, help="shape workload layers (default: all of the shape's on GPU, 4 on CPU)")
    p.add_argument("--sender-shape", choices=sorted(SHAPES), default=None,
                   help="shape workload: run the senders on a second random model of this shape (default: the receiver)")
    p.add_argument("--sender-layers", type=int, default=None, help="layers of --sender-shape (default: as --layers)")
    p.add_argument("--message-tokens", "-M", type=_lengths, default=[256],
                   help="senders' message length M; a comma list (256,512,1024) runs one shape block per M")
    p.add_argument("--answer-tokens", "-R", type=int, default=128, help="shape workload: tokens every receiver answer decodes")
    p.add_argument("--question-tokens", type=int, default=64, help="shape workload: tokens of every question")
    p.add_argument("--queries", type=int, default=6, help="counted queries per block")
    p.add_argument("--warmup", type=int, default=2, help="queries run first and not counted")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    p.add_argument("--no-merge", action="store_true", help="decode with the low-rank path only, never merged weights (the 'before' of that fast path)")
    p.add_argument("--no-prefix-cache", action="store_true", help="recompute the senders' role prefixes every query (the 'before' of that fast path)")
    p.add_argument("--engine", type=_names, default=["hf"], help="engines workload: a comma list of engines (hf,vllm)")
    p.add_argument("--concurrency", type=_lengths, default=[1, 4, 8, 16], help="engines workload: requests arriving together, a comma list")
    p.add_argument("--vllm-url", default=None, help="engines workload: a running vLLM server (default: one started for the run)")
    p.add_argument("--json", default=None, help="written after every measured block, so an interrupted run keeps its numbers")
    a = p.parse_args(argv)
    if a.queries < 1 or a.warmup < 0 or a.answer_tokens < 1 or a.question_tokens < 1 or a.threads < 1:
        raise ValueError("--queries, -R, --question-tokens and --threads must be positive and --warmup >= 0")
    torch.set_num_threads(a.threads)
    device = resolve_device(a.device)
    report: dict = {"device": str(device), "host": _host(a.threads)}
    if device.type == "cuda":
        report["device_name"] = torch.cuda.get_device_name(device)

    def save() -> None:
        if a.json:
            Path(a.json).write_text(json.dumps(report, indent=2))

    merge = False if a.no_merge else "auto"
    if a.workload == "engines":
        unknown = [e for e in a.engine if e not in ENGINES]
        if unknown:
            raise ValueError(f"unknown engine(s) {', '.join(unknown)}: choose from {', '.join(ENGINES)}")
        report["engines"] = engines_workload(a.model, a.engine, a.concurrency, a.queries, a.answer_tokens,
                                             vllm_url=a.vllm_url, device=a.device)
        print_report(report["engines"])
        save()
        return
    if a.workload in ("tasks", "both"):
        report["tasks"] = {}
        for task, block in tasks_workload(a.model, a.queries * 3, a.device, merge=merge, prefix_cache=not a.no_prefix_cache, warmup=a.warmup,
                                      sender_model=a.sender_model, message_cap=a.message_cap, only=a.tasks):
            report["tasks"][task] = block
            _print(f"tasks: {task}", block)
            _print_bandwidth(block["bandwidth"])
            save()
    if a.workload in ("shape", "both"):
        shape = get_shape(a.shape)
        sweep: dict[str, dict] = {}

        def on_block(m: int, block: dict) -> None:
            by = block["config"]["senders"]["model"]
            _print(f"shape: {block['config']['model']}" + (f", senders: {by}" if by != block["config"]["model"] else "")
                   + f", M = {m}, R = {a.answer_tokens}", block)
            _print_bandwidth(block["bandwidth"])
            sweep[str(m)] = block
            report["shape"] = sweep[str(a.message_tokens[0])]  # the first M is the headline
            report["ratios"] = report["shape"]["ratios"]
            if len(a.message_tokens) > 1:
                report["shape_by_message_tokens"] = sweep
            save()

        layers = a.layers or (None if device.type == "cuda" else 4)
        blocks = shape_workload(shape, a.model, layers, a.device, a.dtype,
                                a.message_tokens, a.answer_tokens, a.question_tokens, a.queries, merge=merge,
                                prefix_cache=not a.no_prefix_cache, on_block=on_block, warmup=a.warmup,
                                senders=_senders(a.sender_shape, a.sender_layers, layers))
        if len(blocks) > 1:
            _print_sweep(blocks)


if __name__ == "__main__":
    main()
