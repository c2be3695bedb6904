"""Where a vLLM server's time goes for TFlow requests: decoding without an adapter, with the all-zero adapter
plain requests carry, and the cost of registering one TFlow-sized adapter, side by side in one run.

    tflow-vllm --model smollm2-135m-instruct &          # a server on :8011
    python scripts/vllm_costs.py --url http://127.0.0.1:8011 [--tokens 64] [--concurrency 8] [--json out.json]

Every request decodes --tokens tokens (end tokens ignored) from the same chat prompt; the adapter is the
shipped note generator's perturbation for one held-out note, exported as the engine exports it.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tflow import tasks  # noqa: E402
from tflow.agents import build_prompt  # noqa: E402
from tflow.engines.vllm import VLLMEngine, _write_adapter  # noqa: E402
from tflow.errors import user_errors  # noqa: E402
from tflow.peft_io import peft_state  # noqa: E402
from tflow.pipeline import Pipeline  # noqa: E402


@user_errors
def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8011", help="the vLLM server (started with tflow-vllm)")
    p.add_argument("--tokens", type=int, default=64, help="tokens every request decodes")
    p.add_argument("--concurrency", type=int, default=8, help="requests sent at once in the concurrent rows")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats of each row (median reported)")
    p.add_argument("--json", default=None, help="write the report here")
    a = p.parse_args()
    engine = VLLMEngine(a.url)
    try:
        pipe = Pipeline.from_pretrained(engine.model, generator="checkpoints/generators/smollm2-note")
        zero = engine._adapter_for(pipe.backbone)
        prompt = build_prompt(pipe.backbone, pipe.roles.receiver, "Write a short poem about the sea.").input_ids

        def complete(model: str) -> None:
            engine._request("POST", "/v1/completions", json={"model": model, "prompt": prompt, "max_tokens": a.tokens,
                                                              "temperature": 0, "ignore_eos": True})

        def timed(model: str, n: int) -> float:
            runs = []
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                with ThreadPoolExecutor(n) as pool:
                    list(pool.map(lambda _: complete(model), range(n)))
                runs.append(time.perf_counter() - t0)
            return statistics.median(runs)

        complete(engine.model)
        complete(zero)  # warm-up
        report: dict = {"url": a.url, "model": engine.model, "tokens": a.tokens, "decode_s": {}}
        for n in (1, a.concurrency):
            for label, model in (("no adapter", engine.model), ("zero adapter", zero)):
                report["decode_s"][f"{label}, {n} at once"] = seconds = timed(model, n)
                print(f"{label}, {n} request(s) at once, {a.tokens} tokens each: {seconds:.2f} s", flush=True)
        ex = tasks.examples("note", "test", 1, seed=0)[0]
        pert = pipe.condition([ex.question], [list(ex.contexts)], pipe.roles).perturbation
        stages: dict[str, list[float]] = {"export": [], "write": [], "load": [], "unload": []}
        for k in range(5):
            t0 = time.perf_counter()
            config, tensors = peft_state(pert, 0)
            t1 = time.perf_counter()
            folder = engine.folder / f"cost-{k}"
            _write_adapter(folder, config, tensors)
            t2 = time.perf_counter()
            engine._load(folder.name, folder)
            t3 = time.perf_counter()
            engine._unload(folder.name)
            stages["export"].append(t1 - t0)
            stages["write"].append(t2 - t1)
            stages["load"].append(t3 - t2)
            stages["unload"].append(time.perf_counter() - t3)
        report["adapter_ms"] = {k: 1000 * statistics.median(v) for k, v in stages.items()}
        report["adapter_mb"] = sum(t.numel() * t.element_size() for t in tensors.values()) / 1e6
        print(f"one adapter (rank {config['r']}, {report['adapter_mb']:.1f} MB): "
              + ", ".join(f"{k} {v:.0f} ms" for k, v in report["adapter_ms"].items()) + " (median of 5, idle server)")
        if a.json:
            Path(a.json).write_text(json.dumps(report, indent=2))
    finally:
        engine.close()


if __name__ == "__main__":
    main()
