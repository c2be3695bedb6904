"""TFlow Studio: a web app to ask, compare and inspect weight-space communication between agents.

    python app.py                      # embedded tiny Qwen3 + its generators, http://127.0.0.1:7860
    python app.py --model Qwen/Qwen3-4B --generator DIR --device cuda --host 0.0.0.0 --port 8080

Offline by design: no share link, no analytics, no hub downloads (models must be on disk or
in the Hugging Face cache). The UI lives in tflow/ui.py, the figures in tflow/viz.py.
"""
from __future__ import annotations

import os

# Before anything imports huggingface_hub or gradio: they read these at import time.
for _key, _value in {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "GRADIO_ANALYTICS_ENABLED": "False",
                     "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(_key, _value)

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="TFlow Studio: agents that talk through weights.")
    parser.add_argument("--model", default=str(ROOT / "checkpoints" / "tiny-qwen3"), help="backbone: local directory or hub name (default: the embedded tiny Qwen3)")
    parser.add_argument("--generator", default=None, help="a parameter-generator directory, selected at start (default: the first of <checkpoints>/generators/*)")
    parser.add_argument("--checkpoints", default=str(ROOT / "checkpoints"), help="where generators/* and static/* are discovered")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--concurrency", type=int, default=1, help="runs processed at once (the model is shared)")
    parser.add_argument("--max-queue", type=int, default=16, help="requests that may wait in the queue")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow a model repository's own Python code (off by default)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from tflow.ui import StudioConfig, launch

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"WARNING: listening on {args.host}: anyone who can reach this machine can use the app and its model.",
              file=sys.stderr)
    cfg = StudioConfig(model=args.model, generator=args.generator, checkpoints=args.checkpoints, device=args.device,
                       concurrency=args.concurrency, max_queue=args.max_queue, trust_remote_code=args.trust_remote_code)
    try:
        launch(cfg, host=args.host, port=args.port)
    except ValueError as e:  # a model or device that cannot be loaded: say so, no traceback
        raise SystemExit(f"TFlow Studio cannot start: {e}") from None


if __name__ == "__main__":
    main()
