"""What the benchmarks measure and how: modes interleaved per query, per-mode summaries, ratios between modes,
batch throughput, and the distance to the memory-bandwidth limit (bytes of weights per decoded token against a
device copy measured in the same run)."""
from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import torch
from torch import nn
from tqdm import tqdm

from ..agents import Backbone, GenerationSettings
from ..pipeline import Pipeline
from ..results import RunResult
from .stats import percentile

MODES = ("single", "textmas", "tflow")


def summarise(rows: list[RunResult]) -> dict:
    secs = [r.timings["total"] for r in rows]
    return {
        "queries": len(rows),
        "processed_tokens": statistics.fmean(r.usage.total_tokens for r in rows),
        "paper_tokens": statistics.fmean(
            r.paper_tokens for r in rows
        ),  # the release's accounting (TFlow: receiver only)
        "receiver_prefill_tokens": statistics.fmean(r.receiver_prompt_tokens for r in rows),
        "generated_tokens": statistics.fmean(r.usage.generated_tokens for r in rows),
        "receiver_generated_tokens": statistics.fmean(r.usage.by_agent[_receiver(r)].generated_tokens for r in rows),
        "seconds_median": statistics.median(secs),
        "merged_queries": sum(bool(r.receiver_merged) for r in rows),  # decoded on merged weights (hf engine)
        "seconds_p90": percentile(secs, 0.9),
        "seconds": secs,  # per query, in run order
        "receiver_kv_cache_bytes": statistics.fmean(r.kv_cache_bytes for r in rows),
        "peak_kv_cache_bytes": max(_peak_kv(r) for r in rows),
        "stages_median": {k: statistics.median(r.timings[k] for r in rows) for k in rows[0].timings},
        "receiver_first_token_s_median": statistics.median(
            r.receiver_first_token_s for r in rows
        ),  # perturbation applied + prefill
        # per query, in run order: the receiver's seconds per generated token (for paired ratios)
        "receiver_s_per_token": [
            r.timings["receiver"] / max(1, r.usage.by_agent[_receiver(r)].generated_tokens) for r in rows
        ],
    }


def _receiver(r: RunResult) -> str:
    return list(r.usage.by_agent)[-1]


def _peak_kv(r: RunResult) -> int:
    """The most KV-cache bytes held at once: the batched senders' caches, or the receiver's."""
    senders = sum(u.kv_cache_bytes for k, u in r.usage.by_agent.items() if k != _receiver(r))
    return max(senders, r.kv_cache_bytes)


def interleaved(pipe: Pipeline, queries: list[tuple[str, object]], settings: GenerationSettings, warmup: int = 2,
                desc: str = "queries", modes: Sequence[str] = MODES) -> dict[str, list[RunResult]]:
    """Run every mode on every query, modes interleaved per query (the order rotates from one
    query to the next, so no mode always follows another); the first `warmup` queries are
    run but not counted. A progress bar shows each query and mode as it runs."""
    modes = tuple(modes)
    rows: dict[str, list[RunResult]] = {m: [] for m in modes}
    bar = tqdm(queries, desc=desc, unit="query")
    for i, (question, contexts) in enumerate(bar):
        for mode in modes[i % len(modes):] + modes[: i % len(modes)]:
            bar.set_postfix_str(f"{'warm-up' if i < warmup else 'counted'}: {mode}")
            pipe.clear_cache()  # TFlow pays its sender pass and generator every query
            res = pipe.run(question, mode, contexts, settings=settings)
            if i >= warmup:
                rows[mode].append(res)
    return rows


def ratios(modes: dict) -> dict:
    """Ratios between the modes measured (single and tflow always; those with TextMAS when it ran)."""
    t, x, s = modes["tflow"], modes.get("textmas"), modes["single"]
    # Paired per query (same query, same round of modes), then the median: steadier than a ratio of medians.
    paired = [a / b for a, b in zip(t["receiver_s_per_token"], s["receiver_s_per_token"])]
    out = {
        "tflow_over_single_time": t["seconds_median"] / s["seconds_median"],
        "tflow_over_single_tokens": t["processed_tokens"] / s["processed_tokens"],
        "per_token_overhead": statistics.median(paired) - 1,
        # Same question, same receiver prompt: equal cache after prefill (lengths then grow with the answer).
        "tflow_receiver_prefill_equals_single": t["receiver_prefill_tokens"] == s["receiver_prefill_tokens"],
    }
    if x is not None:
        out = {
            "tflow_over_textmas_time": t["seconds_median"] / x["seconds_median"],
            "tflow_over_textmas_tokens": t["processed_tokens"] / x["processed_tokens"],
            "tflow_over_textmas_paper_tokens": t["paper_tokens"] / x["paper_tokens"],
            **out,
            "textmas_over_single_receiver_kv": x["receiver_kv_cache_bytes"] / s["receiver_kv_cache_bytes"],
        }
    if t["receiver_generated_tokens"] == s["receiver_generated_tokens"]:  # fixed lengths: the bounds are exact
        # TFlow's receiver decodes as many tokens as Single from Single's prompt, so Single's time
        # is a floor: no TFlow can go below Single / TextMAS in this run.
        if x is not None:
            out["floor_tflow_over_textmas_time"] = s["seconds_median"] / x["seconds_median"]
        # Its own limit: one receiver generation + one batched sender prefill + one generator forward.
        limit = s["seconds_median"] + t["stages_median"]["sender_pass"] + t["stages_median"]["generator"]
        out["tflow_over_its_limit"] = t["seconds_median"] / limit
    else:  # answers of other lengths: Single's prefill, then Single's seconds per decoding step for TFlow's other
        # tokens (one receiver time per token would spread Single's prefill over its own, longer answer)
        first = s["receiver_first_token_s_median"]
        per_step = (s["stages_median"]["receiver"] - first) / max(1.0, s["receiver_generated_tokens"] - 1)
        receiver = first + per_step * max(0.0, t["receiver_generated_tokens"] - 1)
        limit = t["stages_median"]["sender_pass"] + t["stages_median"]["generator"] + receiver
        out["tflow_over_its_limit_at_its_answer_length"] = t["stages_median"]["total"] / limit
    return out


def batch_throughput(
    pipe: Pipeline, queries: list[tuple[str, object]], settings: GenerationSettings, batch: int = 16
) -> dict:
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
    token (receiver stage / tokens: one prefill and the merge included) and the bandwidth achieved; and the same for
    the decoding steps alone (`decode_*`: the receiver stage after its first token, over the tokens after it), the
    figure to hold against the memory-bandwidth floor (None for answers of one token)."""
    weights = weight_bytes_per_token(backbone.model)
    out = {"weight_bytes_per_token": weights, "copy_bytes_per_s": copy_bw}
    for mode, r in modes.items():
        tokens = r["receiver_generated_tokens"]
        kv = backbone.kv_cache_bytes(int(r["receiver_prefill_tokens"] + tokens / 2))
        s_tok = r["stages_median"]["receiver"] / max(1, tokens)
        achieved = (weights + kv) / s_tok
        after_first = r["stages_median"]["receiver"] - r["receiver_first_token_s_median"]  # medians: may cross
        step = after_first / (tokens - 1) if tokens > 1 and after_first > 0 else None
        decode = (weights + kv) / step if step else None
        out[mode] = {"kv_bytes_per_token": kv, "s_per_token": s_tok, "bytes_per_s": achieved,
                     "fraction_of_copy_bandwidth": achieved / copy_bw if copy_bw else None,
                     "decode_s_per_token": step, "decode_bytes_per_s": decode,
                     "decode_fraction_of_copy_bandwidth": decode / copy_bw if copy_bw and decode else None}
    return out
