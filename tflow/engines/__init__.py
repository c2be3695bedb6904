"""Generation engines: what decodes every agent's text, the same one for every mode.

- hf:   Hugging Face `generate` in this process; a perturbation is applied by `lora.apply`
        (merged or low-rank per request). The default.
- vllm: a vLLM OpenAI-compatible server in its own environment and process (`tflow-vllm`);
        a TFlow perturbation travels as a per-request LoRA adapter (see `engines.vllm`).

The sender prefill (hidden states of every layer) and the generator always run in torch in this
process: only generation (Single, TextMAS's senders and receiver, TFlow's and the static
adapter's receiver) goes through the engine, so comparisons between modes stay fair.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # the command-line tools parse their flags before torch is imported
    from ..agents import Backbone, Generated, GenerationSettings
    from ..lora import Perturbation

ENGINES = ("hf", "vllm")


@dataclass
class Decode:
    """One batch of generations, what an engine is asked: one per prompt; sample i of `perturbation` (if any;
    a batch of one applies to every prompt) applies to prompt i only. on_text(texts): every answer so far,
    after each decoded token; started: the perf_counter first-token times count from; steps: the expected
    decoding steps (prefill + answer), which an engine may use to choose how to apply a perturbation."""

    prompts: Sequence[Sequence[int]]
    max_new_tokens: int
    settings: GenerationSettings
    perturbation: Perturbation | None = None
    on_text: Callable[[list[str]], None] | None = None
    should_stop: Callable[[], bool] | None = None
    started: float | None = None
    steps: int | None = None


class Engine(Protocol):
    name: str

    def generate(self, backbone: Backbone, job: Decode) -> list[Generated]:
        ...

    def describe(self) -> str:
        """One line for headers and reports: which engine generated."""
        ...


def make_engine(name: str = "hf", merge: bool | str = "auto", vllm_url: str | None = None, **vllm_options) -> Engine:
    """The engine called `name`; vllm needs the server's URL (`tflow-vllm` prints it)."""
    if name == "hf":
        from .hf import HFEngine

        return HFEngine(merge)
    if name == "vllm":
        if not vllm_url:
            raise ValueError("--engine vllm needs --vllm-url (start a server with `tflow-vllm --model MODEL`)")
        from .vllm import VLLMEngine

        return VLLMEngine(vllm_url, **vllm_options)
    raise ValueError(f"unknown engine {name!r}: choose one of {', '.join(ENGINES)}")


def add_engine_arguments(p: argparse.ArgumentParser) -> None:
    """--engine and --vllm-url, the same in every tool."""
    p.add_argument(
        "--engine",
        default="hf",
        choices=ENGINES,
        help="what generates every agent's text: hf (in process, "
        "the default) or vllm (a server started with `tflow-vllm`; the sender pass and generator stay in process)",
    )
    p.add_argument("--vllm-url", default=None, help="--engine vllm: the server, e.g. http://127.0.0.1:8011")
    p.add_argument(
        "--vllm-adapter-dir",
        default=None,
        help="--engine vllm: where per-request adapters are written for the "
        "server to read (default: /dev/shm; a folder the server also sees when it runs on another machine)",
    )


def engine_from_args(a: argparse.Namespace, merge: bool | str = "auto") -> Engine:
    if a.engine != "vllm" and (a.vllm_url or a.vllm_adapter_dir):
        raise ValueError("--vllm-url and --vllm-adapter-dir go with --engine vllm")
    return make_engine(a.engine, merge, a.vllm_url, adapter_root=a.vllm_adapter_dir)


def engine_or_hf(name: str, vllm_url: str | None, adapter_root: str | None, model: str) -> tuple[Engine, str | None]:
    """The configured engine for a receiver called `model`, or hf and a note saying why not (an unreachable
    server, one that serves another model): for an app that must start whatever the server does."""
    try:
        engine = make_engine(name, vllm_url=vllm_url, adapter_root=adapter_root)
    except OSError as e:
        return make_engine("hf"), f"{e}: generating with the hf engine instead"
    if getattr(engine, "model", model) != model:
        engine.close()
        return make_engine("hf"), (f"the vLLM server at {vllm_url} serves {engine.model}, not the receiver {model}: "
                                   "generating with the hf engine instead")
    return engine, None
