"""Throughput of TFlow requests per generation engine and concurrency, side by side in one run.

    python -m tflow.tools.bench --workload engines --model smollm2-135m-instruct --engine hf,vllm --concurrency 1,4,8,16

At concurrency c, c TFlow requests arrive together and go through `Pipeline.run_batch`: one batched
sender pass + generator in this process, then the engine: hf decodes the c answers in one batched
`generate` with per-sample low-rank perturbations (merged for c = 1), vllm sends c requests, each with
its own adapter, which the server batches. Every request decodes `answer_tokens` tokens (end tokens
ignored), so engines do the same work. For each concurrency the engines take turns batch by batch.
Reported: requests per second, p50 / p95 request latency, and vllm's adapter registration cost.
"""
from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator, Sequence

from tqdm import tqdm

from .. import tasks
from ..agents import GenerationSettings, load_backbone
from ..engines import make_engine
from ..pipeline import Pipeline, load_generator_for
from . import catalog
from .stats import percentile


@contextlib.contextmanager
def _engines(names: Sequence[str], model: str, vllm_url: str | None) -> Iterator[dict]:
    """Every named engine; vllm on `vllm_url`, else on a server started here for the run."""
    with contextlib.ExitStack() as stack:
        made = {}
        for name in names:
            url = vllm_url
            if name == "vllm" and not url:
                from ..engines.vllm_server import Server

                url = stack.enter_context(Server(model)).url
            engine = make_engine(name, vllm_url=url)
            if name == "vllm":
                stack.callback(engine.close)
            made[name] = engine
        yield made


def engines_workload(model: str, engines: Sequence[str], concurrency: Sequence[int], queries: int = 16,
                     answer_tokens: int = 64, task: str = "note", vllm_url: str | None = None,
                     device: str = "auto") -> dict:
    gen_dir = catalog.trained_for(task, model)
    if gen_dir is None:
        raise ValueError(f"no shipped generator for {model} on {task}: the engines workload needs one")
    backbone = load_backbone(model, device=device)
    generator, _ = load_generator_for(gen_dir, backbone, sender=backbone)
    settings = GenerationSettings(max_new_tokens=answer_tokens, ignore_eos=True)
    pool = [
        (e.question, list(e.contexts)) for e in tasks.examples(task, "test", max(queries, max(concurrency)), seed=0)
    ]
    report: dict = {
        "config": {"model": backbone.name, "generator": str(gen_dir), "task": task, "answer_tokens": answer_tokens,
                   "requests_per_point": queries, "device": str(backbone.device), "dtype": str(backbone.dtype)},
        "points": {},
    }
    with _engines(engines, model, vllm_url) as made:
        pipes = {name: Pipeline(backbone, generator, engine=engine) for name, engine in made.items()}
        report["config"]["engines"] = {name: e.describe() for name, e in made.items()}
        for pipe in pipes.values():  # warm-up: first requests, first adapter
            pipe.run_batch([pool[0][0]], "tflow", [pool[0][1]], settings=settings)
        for c in concurrency:
            batches = [pool[i : i + c] for i in range(0, max(queries, 2 * c), c)]
            batches = [b if len(b) == c else (b + pool)[:c] for b in batches]
            latencies: dict[str, list[float]] = {n: [] for n in pipes}
            busy = dict.fromkeys(pipes, 0.0)
            for batch in tqdm(batches, desc=f"concurrency {c}", unit="batch"):
                for name, pipe in pipes.items():
                    pipe.clear_cache()  # every request pays its sender pass and generator
                    t0 = time.perf_counter()
                    pipe.run_batch([q for q, _ in batch], "tflow", [ctx for _, ctx in batch], settings=settings)
                    took = time.perf_counter() - t0
                    busy[name] += took
                    latencies[name] += [took] * len(batch)  # a batch's requests complete together
            point = {}
            for name in pipes:
                lat = latencies[name]
                point[name] = {"requests_per_s": len(lat) / busy[name], "p50_s": statistics.median(lat),
                               "p95_s": percentile(lat, 0.95), "requests": len(lat)}
            if "hf" in point and "vllm" in point:
                point["vllm_over_hf"] = point["vllm"]["requests_per_s"] / point["hf"]["requests_per_s"]
            report["points"][str(c)] = point
        vllm = made.get("vllm")
        if vllm is not None and vllm.adapter_seconds:
            register = [r for r, _ in vllm.adapter_seconds]
            unregister = [u for _, u in vllm.adapter_seconds]
            report["vllm_adapter"] = {"register_s_p50": statistics.median(register),
                                      "unregister_s_p50": statistics.median(unregister), "adapters": len(register),
                                      "left_on_server": len(vllm.request_adapters())}
    return report


def print_report(report: dict) -> None:
    cfg = report["config"]
    print(f"engines: {cfg['model']}, TFlow on {cfg['task']}, {cfg['answer_tokens']} answer tokens per request")
    for c, point in report["points"].items():
        cells = [f"{n}: {p['requests_per_s']:.2f} req/s (p50 {p['p50_s']:.2f} s, p95 {p['p95_s']:.2f} s)"
                 for n, p in point.items() if isinstance(p, dict)]
        ratio = f"; vllm/hf {point['vllm_over_hf']:.2f}x" if "vllm_over_hf" in point else ""
        print(f"  concurrency {c}: " + "; ".join(cells) + ratio)
    if "vllm_adapter" in report:
        a = report["vllm_adapter"]
        print(
            f"  vllm adapter: register {1000 * a['register_s_p50']:.0f} ms, unregister "
            f"{1000 * a['unregister_s_p50']:.0f} ms (p50 of {a['adapters']})"
        )
