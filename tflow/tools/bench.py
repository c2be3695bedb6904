r"""Side-by-side benchmark of Single, TextMAS and TFlow: tokens, latency, KV cache, ratios.

    python -m tflow.tools.bench --json bench.json                 # both workloads
    python -m tflow.tools.bench --workload shape --shape qwen3-4b \
        --device cuda --dtype bf16                                # all 36 layers of Qwen3-4B's shape
    python -m tflow.tools.bench --workload shape -M 256,512,1024  # ratios by message length
    python -m tflow.tools.bench --workload shape --shape qwen3-0.6b --sender-shape qwen3-8b \
        --device cuda --dtype bf16                                # big senders, small receiver
    python -m tflow.tools.bench --workload engines --model smollm2-135m-instruct --engine hf,vllm \
        --concurrency 1,4,8,16 -R 64 --queries 16

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
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import transformers

from .. import tasks
from ..agents import GenerationSettings, load_backbone, resolve_device
from ..allocator import huge_pages
from ..engines import ENGINES
from ..errors import user_errors
from ..pipeline import Pipeline, load_generator_for
from . import catalog
from .bench_engines import engines_workload, print_report
from .bench_shape import limit_summary, print_limits, print_sweep, shape_workload
from .measure import MODES, bandwidth, batch_throughput, copy_bandwidth, interleaved, ratios, summarise
from .shapes import SHAPES, ModelShape, get_shape


def tasks_workload(model: str, queries: int, device: str, merge: bool | str = "auto", prefix_cache: bool = True,
                   warmup: int = 2, sender_model: str | None = None, message_cap: int | None = None,
                   only: Sequence[str] | None = None, modes: Sequence[str] = MODES,
                   fixed_answer: int | None = None) -> Iterator[tuple[str, dict]]:
    """(task, block) for each task with a shipped generator for `model`, yielded as soon as it is measured.
    A generator that records another senders' backbone (kb's specialist) runs with it (or with `sender_model`).
    message_cap: the most tokens a TextMAS sender may write (default: the task's evaluation budget); the senders
    stop where they choose below it. only: these tasks (default: every task a shipped generator for `model` was
    trained on). modes: those run (single and tflow at least). fixed_answer: every answer exactly this many tokens
    (EOS ignored), so that TFlow over its limit is exact rather than estimated at TFlow's answer length."""
    trained = catalog.tasks_for(model)
    missing = [t for t in only or () if t not in trained]
    if missing:
        raise ValueError(f"no shipped generator for {model} was trained on {', '.join(missing)}: "
                         f"choose among {', '.join(trained) or 'none'}")
    backbone = load_backbone(model, device=device)
    if not prefix_cache:
        backbone.prefix_cache.capacity = 0  # every role prefix is computed anew
    copy_bw = copy_bandwidth(backbone.device)
    for task in only or trained:
        gen_dir = catalog.trained_for(task, model)
        given = sender_model and (lambda _: load_backbone(sender_model, device=backbone.device, share_with=backbone))
        gen, senders = load_generator_for(gen_dir, backbone, specialist=given or None)
        senders = senders or backbone
        pipe = Pipeline(backbone, gen, merge=merge, sender_backbone=senders)
        qs = [(e.question, e.contexts) for e in tasks.examples(task, "test", max(queries + warmup, 16), seed=0)]
        answer, message = tasks.budgets(task)
        settings = GenerationSettings(max_new_tokens=fixed_answer or answer,
                                      sender_max_new_tokens=message_cap or message, ignore_eos=fixed_answer is not None)
        rows = interleaved(pipe, qs[: queries + warmup], settings, warmup, desc=task, modes=modes)
        summaries = {m: summarise(r) for m, r in rows.items()}
        yield (
            task,
            {
                "config": {"model": backbone.name, "parameters": backbone.num_parameters, "layers": backbone.num_layers,
                           "device": str(backbone.device), "dtype": str(backbone.dtype), "generator": str(gen_dir),
                           "senders": senders.name, "answer_tokens": fixed_answer or answer,
                           "fixed_answer": fixed_answer is not None,
                           "message_cap": settings.sender_max_new_tokens},
                "modes": summaries,
                "ratios": ratios(summaries),
                "bandwidth": bandwidth(backbone, summaries, copy_bw),
                "throughput": batch_throughput(pipe, qs, settings),
            },
        )


def _print(name: str, block: dict) -> None:
    print(f"\n== {name} ==")
    print(
        "| mode | processed tokens | paper tokens | receiver prefill | generated | s/query (median) | p90 | peak KV MB "
        "| stages (median s) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for m, r in block["modes"].items():
        stages = ", ".join(f"{k} {v:.4f}" for k, v in r["stages_median"].items() if k != "total")
        print(
            f"| {m} | {r['processed_tokens']:.0f} | {r['paper_tokens']:.0f} | {r['receiver_prefill_tokens']:.0f} | "
            f"{r['generated_tokens']:.0f} | {r['seconds_median']:.4f} | {r['seconds_p90']:.4f} | "
            f"{r['peak_kv_cache_bytes'] / 2**20:.2f} | {stages} |"
        )
    print(
        "ratios: "
        + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in block["ratios"].items())
    )
    if "throughput" in block:
        print("batched TFlow: " + ", ".join(f"{k}={v:.2f}" for k, v in block["throughput"].items()))


def _host(threads: int) -> dict:
    """What the numbers were measured on: CPU model, cores, threads used, library versions."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), cpu)
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "threads": threads, "torch": torch.__version__,
            "transformers": transformers.__version__, "huge_pages": huge_pages()}


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
    """--sender-shape / --sender-layers: the senders' shape and depth (default: the receiver's depth, at most the
    shape's)."""
    if name is None:
        if layers is not None:
            raise ValueError("--sender-layers needs --sender-shape")
        return None
    shape = get_shape(name)
    return shape, layers or (min(receiver_layers, shape.layers) if receiver_layers else None)


def _print_bandwidth(bw: dict) -> None:
    copy = bw["copy_bytes_per_s"]
    print(
        f"distance to the memory-bandwidth limit: {bw['weight_bytes_per_token'] / 1e9:.3f} GB "
        "of weights per decoded token"
        + (f", a large copy on the device {copy / 1e9:.1f} GB/s" if copy else "")
    )
    for mode in (m for m in MODES if m in bw):
        r = bw[mode]
        frac = (
            f", {100 * r['fraction_of_copy_bandwidth']:.1f}% of copy bandwidth"
            if r["fraction_of_copy_bandwidth"]
            else ""
        )
        step = (f"; decoding steps alone {1000 * r['decode_s_per_token']:.2f} ms/token, "
                f"{r['decode_bytes_per_s'] / 1e9:.1f} GB/s" if r.get("decode_s_per_token") else "")
        if step and r.get("decode_fraction_of_copy_bandwidth"):
            step += f", {100 * r['decode_fraction_of_copy_bandwidth']:.1f}% of copy bandwidth"
        print(f"  {mode}: {1000 * r['s_per_token']:.2f} ms/token, KV {r['kv_bytes_per_token'] / 2**20:.1f} MB/token, "
              f"{r['bytes_per_s'] / 1e9:.1f} GB/s achieved{frac}{step}")


@user_errors
def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--workload",
        choices=["tasks", "shape", "both", "engines"],
        default="both",
        help="tasks: the shipped generators on their tasks; "
             "shape: a random model of a published shape with fixed lengths",
    )
    p.add_argument(
        "--model",
        default="tiny",
        help="tasks workload backbone (tiny, smollm2-135m-instruct, a GGUF file, a directory); "
        "its tokenizer serves the shape workload",
    )
    p.add_argument(
        "--message-cap",
        type=int,
        default=None,
        help="tasks workload: the most tokens a TextMAS sender may write; they stop where they choose below it "
        "(default: the task's evaluation budget)",
    )
    p.add_argument(
        "--tasks",
        type=lambda t: [x.strip() for x in t.split(",") if x.strip()],
        default=None,
        help="tasks workload: a comma list of tasks (default: every task with a shipped generator for --model)",
    )
    p.add_argument(
        "--sender-model",
        default=None,
        help="tasks workload: the senders' backbone for generators trained with another one "
             "(default: the one each records)",
    )
    p.add_argument("--shape", choices=sorted(SHAPES), default="qwen3-0.6b",
                   help="shape workload: published config of this model, random weights")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--dtype", default=None, help="fp32, bf16 or fp16 (default: bf16 on CUDA, fp32 on CPU)")
    p.add_argument(
        "--layers", type=int, default=None, help="shape workload layers (default: all of the shape's on GPU, 4 on CPU)"
    )
    p.add_argument(
        "--sender-shape",
        choices=sorted(SHAPES),
        default=None,
        help="shape workload: run the senders on a second random model of this shape (default: the receiver)",
    )
    p.add_argument("--sender-layers", type=int, default=None, help="layers of --sender-shape (default: as --layers)")
    p.add_argument("--message-tokens", "-M", type=_lengths, default=[256],
                   help="senders' message length M; a comma list (256,512,1024) runs one shape block per M")
    p.add_argument("--answer-tokens", "-R", type=_lengths, default=[128],
                   help="shape workload: tokens every receiver answer decodes; a comma list (4,32,128) runs a block "
                        "per R")
    p.add_argument("--repeats", type=int, default=1,
                   help="shape workload: blocks per (M, R), reported with TFlow over its limit min / median / max")
    p.add_argument("--modes", type=_names, default=list(MODES),
                   help="shape and tasks workloads: a comma list of the modes run, single and tflow at least (default:"
                        " all three; single,tflow measures TFlow over its limit in about half the time)")
    p.add_argument("--question-tokens", type=int, default=64, help="shape workload: tokens of every question")
    p.add_argument("--task-answer-tokens", type=int, default=None,
                   help="tasks workload: every answer exactly N tokens, EOS ignored (TFlow over its limit exact, not"
                        " estimated at TFlow's answer length; TextMAS's messages then run to their cap)")
    p.add_argument("--queries", type=int, default=6, help="counted queries per block")
    p.add_argument("--warmup", type=int, default=2, help="queries run first and not counted")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    p.add_argument("--no-merge", action="store_true",
                   help="decode with the low-rank path only, never merged weights (the 'before' of that fast path)")
    p.add_argument("--no-prefix-cache", action="store_true",
                   help="recompute the senders' role prefixes every query (the 'before' of that fast path)")
    p.add_argument("--engine", type=_names, default=["hf"], help="engines workload: a comma list of engines (hf,vllm)")
    p.add_argument("--concurrency", type=_lengths, default=[1, 4, 8, 16],
                   help="engines workload: requests arriving together, a comma list")
    p.add_argument(
        "--vllm-url", default=None, help="engines workload: a running vLLM server (default: one started for the run)"
    )
    p.add_argument(
        "--json", default=None, help="written after every measured block, so an interrupted run keeps its numbers"
    )
    a = p.parse_args(argv)
    if a.queries < 1 or a.warmup < 0 or a.question_tokens < 1 or a.threads < 1 or a.repeats < 1 or (
            a.task_answer_tokens is not None and a.task_answer_tokens < 1):
        raise ValueError("--queries, --question-tokens, --task-answer-tokens, --threads and --repeats must be positive"
                         " and --warmup >= 0")
    if not {"single", "tflow"} <= set(a.modes) <= set(MODES):
        raise ValueError(f"--modes must name single and tflow, and may add textmas; got {','.join(a.modes)}")
    if "textmas" not in a.modes and len(a.message_tokens) > 1:
        raise ValueError("a sweep over several -M compares TFlow with TextMAS: --modes must include textmas")
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
        report["engines"] = engines_workload(a.model, a.engine, a.concurrency, a.queries, a.answer_tokens[0],
                                             vllm_url=a.vllm_url, device=a.device)
        print_report(report["engines"])
        save()
        return
    if a.workload in ("tasks", "both"):
        report["tasks"] = {}
        for task, block in tasks_workload(a.model, a.queries * 3, a.device, merge=merge,
                                          prefix_cache=not a.no_prefix_cache, warmup=a.warmup,
                                          sender_model=a.sender_model, message_cap=a.message_cap, only=a.tasks,
                                          modes=[m for m in MODES if m in a.modes], fixed_answer=a.task_answer_tokens):
            report["tasks"][task] = block
            _print(f"tasks: {task}", block)
            _print_bandwidth(block["bandwidth"])
            save()
    if a.workload in ("shape", "both"):
        shape = get_shape(a.shape)

        def on_block(m: int, r: int, runs: dict[tuple[int, int], list[dict]]) -> None:
            block = runs[(m, r)][-1]
            by = block["config"]["senders"]["model"]
            _print(f"shape: {block['config']['model']}" + (f", senders: {by}" if by != block["config"]["model"] else "")
                   + f", M = {m}, R = {r}", block)
            _print_bandwidth(block["bandwidth"])
            report["shape"] = runs[(a.message_tokens[0], a.answer_tokens[0])][0]  # the first M and R: the headline
            report["ratios"] = report["shape"]["ratios"]
            if len(a.message_tokens) > 1:
                report["shape_by_message_tokens"] = {str(k): v[0] for (k, rr), v in runs.items()
                                                     if rr == a.answer_tokens[0]}
            if len(runs) > 1 or len(runs[(m, r)]) > 1:
                report["shape_runs"] = [{"M": k, "R": rr, "run": i + 1, **b} for (k, rr), v in runs.items()
                                        for i, b in enumerate(v)]
                report["tflow_over_its_limit"] = limit_summary(runs)
            save()

        layers = a.layers or (None if device.type == "cuda" else 4)
        blocks = shape_workload(shape, a.model, layers, a.device, a.dtype,
                                a.message_tokens, a.answer_tokens, a.question_tokens, a.queries, merge=merge,
                                prefix_cache=not a.no_prefix_cache, on_block=on_block, warmup=a.warmup,
                                senders=_senders(a.sender_shape, a.sender_layers, layers), repeats=a.repeats,
                                modes=[m for m in MODES if m in a.modes])
        if len(a.message_tokens) > 1:
            print_sweep({m: v[0] for (m, r), v in blocks.items() if r == a.answer_tokens[0]})
        if len(blocks) > 1 or a.repeats > 1:
            print_limits(limit_summary(blocks))


if __name__ == "__main__":
    main()
