"""Load test: concurrent mixed requests against a running TFlow Studio must each return
exactly what the same request returns alone, and leave the backbone bit-identical.

    python tests/studio/load_test.py                       # starts the app, 16 requests, 16 at once
    python tests/studio/load_test.py --requests 64 --parallel 16 --app-concurrency 4
    python tests/studio/load_test.py --model smollm2-135m-instruct --vllm-url http://127.0.0.1:8011   # the vllm engine

Prints requests sent, succeeded, mismatches against sequential answers (must be 0),
p50 / p95 latency, and whether the weights hash changed (must not). Exits 1 on any
failure. Traffic goes to 127.0.0.1 only; every loop is bounded.
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gradio_client import Client  # noqa: E402
from studio_server import studio  # noqa: E402

from tflow import tasks  # noqa: E402

MODES = ("single", "textmas", "tflow")


def workload(n: int, real: bool = False) -> list[dict]:
    """Mixed modes, questions and private contexts across the built-in tasks (real: the real model's note task)."""
    names = {"note": "smollm2-note"} if real else {t: t for t in ("relay", "split", "arith")}
    pool = [e for t in names for e in tasks.examples(t, "test", n, seed=1)]
    jobs = []
    for i in range(n):
        e = pool[(i * 7) % len(pool)]
        jobs.append({"question": e.question, "contexts": [c or "" for c in e.contexts], "modes": [MODES[i % 3]],
                     "generator": names[e.task], "max_new_tokens": 16})
    return jobs


def answer(client: Client, job: dict) -> tuple[str, float]:
    t0 = time.perf_counter()
    out = client.predict(**job, api_name="/ask")
    if out["errors"]:
        raise RuntimeError(f"request failed: {out['errors']}")
    return json.dumps({m: r["answer"] for m, r in out["results"].items()}), time.perf_counter() - t0


def run(
    requests: int, parallel: int, app_concurrency: int, model: str | None = None, engine: list[str] | None = None
) -> dict:
    """model: a packaged real model (default: the embedded world); engine: the app's engine flags
    (e.g. ["--engine", "vllm", "--vllm-url", URL])."""
    app = studio(
        ["--concurrency", str(app_concurrency), "--max-queue", str(max(2 * requests, 16)), *(engine or [])], model=model
    )
    client = Client(app.url, verbose=False)
    before = client.predict(api_name="/health")
    jobs = workload(requests, real=model is not None)
    alone = [answer(client, j)[0] for j in jobs]
    sent, ok, latencies, results = len(jobs), 0, [], [None] * len(jobs)

    def fire(i: int) -> None:
        results[i] = answer(Client(app.url, verbose=False), jobs[i])

    with ThreadPoolExecutor(parallel) as pool:
        futures = [pool.submit(fire, i) for i in range(len(jobs))]
        errors = [f.exception(timeout=600) for f in futures]
    mismatches = 0
    for i, (err, res) in enumerate(zip(errors, results)):
        if err is None and res is not None:
            ok += 1
            latencies.append(res[1])
            mismatches += res[0] != alone[i]
    after = client.predict(api_name="/health")
    latencies.sort()
    return {
        "engine": after.get("engine"),
        "requests_sent": sent,
        "succeeded": ok,
        "mismatches_vs_sequential": mismatches,
        "latency_p50_s": statistics.median(latencies) if latencies else None,
        "latency_p95_s": latencies[int(0.95 * (len(latencies) - 1))] if latencies else None,
        "weights_hash_changed": before["weights_sha256"] != after["weights_sha256"],
        "patched_after": after["patched"],
        "errors": [str(e) for e in errors if e is not None][:3],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=16)
    p.add_argument("--parallel", type=int, default=16)
    p.add_argument("--app-concurrency", type=int, default=4, help="runs the app processes at once")
    p.add_argument(
        "--model", default=None, help="a packaged real model, e.g. smollm2-135m-instruct (default: the embedded world)"
    )
    p.add_argument(
        "--vllm-url", default=None, help="run the app with --engine vllm on this server (needs --model: the server's)"
    )
    a = p.parse_args(argv)
    engine = ["--engine", "vllm", "--vllm-url", a.vllm_url] if a.vllm_url else None
    report = run(a.requests, a.parallel, a.app_concurrency, a.model, engine)
    for k, v in report.items():
        print(f"{k}: {v}")
    good = report["succeeded"] == report["requests_sent"] and report["mismatches_vs_sequential"] == 0
    return 0 if good and not report["weights_hash_changed"] and not report["patched_after"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
