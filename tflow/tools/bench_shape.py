"""The shape workload of `tflow-bench`: cost structure at paper-like lengths on a randomly initialised model of a
published Qwen3 shape, fixed lengths (senders' messages M tokens, the answer R tokens, EOS ignored), decoding
restricted to word tokens that re-tokenise to themselves so each TextMAS message reaches the receiver as exactly M
tokens."""
from __future__ import annotations

import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict

from torch import nn

from ..agents import GenerationSettings, build_prompt, sender_prompts
from ..generators import ParameterGenerator
from ..pipeline import Pipeline, sender_shape
from .measure import MODES, bandwidth, copy_bandwidth, interleaved, ratios, summarise
from .shapes import ModelShape, shape_backbone


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
        raise ValueError(
            "the tokenizer has no single-word tokens that round-trip; the shape workload cannot fix message lengths"
        )
    return tuple(ids)


def fixed_question(tokenizer, n_tokens: int, i: int) -> str:
    words = ["apples", "pens", "coins", "books", "cards", "shells", "stamps", "marbles"]
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


def shape_workload(shape: ModelShape, tokenizer_dir: str, layers: int | None, device: str, dtype: str | None,
                   messages: list[int], answers: list[int], question: int, queries: int, merge: bool | str = "auto",
                   prefix_cache: bool = True,
                   on_block: Callable[[int, int, dict[tuple[int, int], list[dict]]], None] | None = None,
                   warmup: int = 2, senders: tuple[ModelShape, int | None] | None = None,
                   repeats: int = 1, modes: Sequence[str] = MODES) -> dict[tuple[int, int], list[dict]]:
    """`repeats` blocks per (sender-message length M, answer length R) (the same model, generator and questions; the
    `warmup` queries run before the first block only); `on_block(M, R, blocks)` is called as soon as each block is
    measured, with every block so far (the new one last in blocks[(M, R)]). senders: (shape, layers) of the senders'
    own backbone (default: the receiver's). modes: those run (single and tflow at least: TFlow's limit is read from
    Single; without textmas a block holds no TextMAS ratios, and costs about half as much at small M)."""
    backbone = shape_backbone(shape, tokenizer_dir, layers, device, dtype)
    sender_bb = shape_backbone(senders[0], tokenizer_dir, senders[1], device, dtype, seed=1) if senders else backbone
    if not prefix_cache:  # every role prefix is computed anew
        backbone.prefix_cache.capacity = sender_bb.prefix_cache.capacity = 0
    gen = ParameterGenerator(shape.generator, backbone.targets, backbone.name, sender=sender_shape(sender_bb))
    nn.init.normal_(gen.head_b.weight, std=0.02)  # non-zero factors: the real cost of applying them
    gen.to(backbone.device, backbone.dtype).eval()
    pipe = Pipeline(backbone, gen, merge=merge, sender_backbone=sender_bb)
    words = round_trip_tokens(backbone.tokenizer)
    qs = [(fixed_question(backbone.tokenizer, question, i), None) for i in range(queries + warmup)]
    # TextMAS's senders could skip their role prefixes too, with a prefix cache in generation
    # (HF generate cannot batch rows with different cached prefixes): the ratio credited with that.
    prefixes = sum(
        p.prefix_len
        for p in sender_prompts(sender_bb, pipe.roles.senders, [qs[0][0]], [[None] * len(pipe.roles.senders)])
    )
    copy_bw = copy_bandwidth(backbone.device)
    blocks: dict[tuple[int, int], list[dict]] = {}
    runs = [(m, r, i) for m in messages for r in answers for i in range(repeats)]
    for k, (message, answer, i) in enumerate(runs):
        settings = GenerationSettings(
            max_new_tokens=answer, sender_max_new_tokens=message, ignore_eos=True, allowed_tokens=words
        )
        # the process is warm after the first block: later blocks count every query
        desc = f"{shape.name} M={message} R={answer}" + (f" run {i + 1}/{repeats}" if repeats > 1 else "")
        pipe.perturbed_answer_tokens.clear()  # a merge's payback is judged on this block's answers only
        rows = interleaved(pipe, qs if k == 0 else qs[warmup:], settings, warmup if k == 0 else 0, desc=desc,
                           modes=modes)
        summaries = {m: summarise(r) for m, r in rows.items()}
        out = ratios(summaries)
        if "textmas" in rows:
            if prefix_cache:
                out["tflow_over_textmas_tokens_if_textmas_cached_prefixes"] = summaries["tflow"]["processed_tokens"] / (
                    summaries["textmas"]["processed_tokens"] - prefixes
                )
            in_prompt = [
                message_tokens_in_receiver_prompt(pipe, r.question, r.receiver_prompt_tokens, words[0])
                for r in rows["textmas"]
            ]
            out["textmas_message_tokens_in_receiver_prompt"] = statistics.fmean(in_prompt)
            out["textmas_messages_reach_receiver_exactly"] = all(
                n == len(pipe.roles.senders) * message for n in in_prompt)
        # no TFlow query slower than this times Single's median
        out["slowest_tflow_over_single_median"] = (max(summaries["tflow"]["seconds"])
                                                   / summaries["single"]["seconds_median"])
        block = {
            "config": {
                "shape": shape.name,
                "layers": backbone.num_layers,
                "hidden": shape.hidden,
                "vocab": shape.vocab,
                "M": message,
                "R": answer,
                "question_tokens": question,
                "device": str(backbone.device),
                "dtype": str(backbone.dtype),
                "model": backbone.name,
                "parameters": backbone.num_parameters,
                "merge": merge,
                "prefix_cache": prefix_cache,
                "generator": asdict(gen.config),
                "generator_parameters": sum(p.numel() for p in gen.parameters()),
                "senders": {"model": sender_bb.name, "layers": sender_bb.num_layers, "hidden": sender_bb.hidden_size,
                            "parameters": sender_bb.num_parameters},
            },
            "modes": summaries,
            "ratios": out,
            "bandwidth": bandwidth(backbone, summaries, copy_bw),
        }
        blocks.setdefault((message, answer), []).append(block)
        if on_block is not None:
            on_block(message, answer, blocks)
    return blocks


def limit_summary(blocks: dict[tuple[int, int], list[dict]]) -> dict[str, dict]:
    """TFlow over its own limit per (M, R) over the repeated blocks: every run's value, min / median / max."""
    out = {}
    for (m, r), runs in blocks.items():
        values = [b["ratios"]["tflow_over_its_limit"] for b in runs]
        out[f"M={m},R={r}"] = {"M": m, "R": r, "runs": values, "min": min(values),
                               "median": statistics.median(values), "max": max(values)}
    return out


def print_limits(summary: dict[str, dict]) -> None:
    print("\n== shape: TFlow over its own limit (one receiver generation + sender pass + generator) ==")
    print("| M | R | runs | min | median | max |\n| ---: | ---: | ---: | ---: | ---: | ---: |")
    for v in summary.values():
        print(f"| {v['M']} | {v['R']} | {len(v['runs'])} | {v['min']:.3f} | {v['median']:.3f} | {v['max']:.3f} |")


def print_sweep(blocks: dict[int, dict]) -> None:
    """blocks: one per M (the first R's first run)."""
    print("\n== shape: ratios by senders' message length M ==")
    print(
        "| M | TFlow / TextMAS time | floor (Single / TextMAS) | TFlow / TextMAS tokens | TFlow / Single time | "
        "per-token overhead |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for m, b in blocks.items():
        r = b["ratios"]
        print(
            f"| {m} | {r['tflow_over_textmas_time']:.3f} (1/{1 / r['tflow_over_textmas_time']:.1f}) | "
            f"{r['floor_tflow_over_textmas_time']:.3f} | {r['tflow_over_textmas_tokens']:.3f} | "
            f"{r['tflow_over_single_time']:.3f} | {100 * r['per_token_overhead']:.1f}% |"
        )
