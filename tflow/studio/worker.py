"""One run of the Studio: validated request, the worker that runs its modes, what it leaves behind.

A run streams: `execute` runs the chosen modes one after another (in a worker thread for
the page) and posts `Event`s (stage, tokens, result, error, done); `Live` folds them into
the `RunRecord` the page shows. A record also keeps its exported perturbations and its
causal probes (`causal_probe`, computed once per run and source). Nothing here imports gradio.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .. import tasks
from ..agents import Agent, GenerationSettings, Roles, clean_text
from ..diagnostics import measures
from ..diagnostics.causal import Probe, spearman
from ..peft_io import peft_zip_bytes, save_raw
from ..pipeline import MODES, Pipeline
from ..results import RunResult
from .registry import NONE, Studio

log = logging.getLogger("tflow.studio")

DEFAULT_ROLES = Roles()
MAX_NEW_TOKENS = 32  # the page's default for the receiver and for each TextMAS sender message
RUN_TIMEOUT_S = 120.0
HISTORY_LIMIT = 20
PROBES = ("ablation", "sweep", "token_kl", "senders", "other_query")


@dataclass(frozen=True)
class RunRequest:
    """Everything a run needs, validated."""

    question: str
    contexts: tuple[str, ...]
    reference: str
    modes: tuple[str, ...]
    generator: str
    static: str
    settings: GenerationSettings
    roles: Roles


def make_roles(prompts: list[str]) -> Roles:
    """The default roles with (possibly edited) system prompts: senders..., receiver last."""
    agents = [*DEFAULT_ROLES.senders, DEFAULT_ROLES.receiver]
    if len(prompts) != len(agents):
        raise ValueError(f"expected {len(agents)} role prompts, got {len(prompts)}")
    edited = [Agent(a.role, clean_text(p or "", f"{a.role} prompt")) for a, p in zip(agents, prompts)]
    return Roles(senders=tuple(edited[:-1]), receiver=edited[-1])


def make_request(studio: Studio, question: str, contexts: list[str], reference: str, modes: list[str], generator: str,
                 static: str, settings: GenerationSettings, roles: Roles) -> RunRequest:
    """Validate the inputs; ValueError with a readable message on bad input."""
    question = clean_text(question or "")
    modes = tuple(m for m in MODES if m in (modes or []))
    if not modes:
        raise ValueError("no mode is selected: tick at least one of Single, TextMAS, TFlow, Static LoRA")
    if "static" in modes and static == NONE:
        raise ValueError("Static LoRA needs a static adapter: pick one or untick Static LoRA")
    studio.pipeline(generator, static)  # validates both names
    ctx = tuple((c or "").strip() for c in contexts)
    if len(ctx) != len(roles.senders):
        raise ValueError(
            f"got {len(ctx)} private contexts for {len(roles.senders)} senders: give one per sender ('' for none)"
        )
    for text, what in ((question, "question"), *((c, "private context") for c in ctx)):
        check_fits(studio, text, what)
    return RunRequest(question, ctx, (reference or "").strip(), modes, generator, static, settings, roles)


def request_from_form(studio: Studio, question: str, contexts: list[str], reference: str, modes: list[str],
                      generator: str, static: str, max_new: float, sender_max_new: float, do_sample: bool,
                      temperature: float, top_p: float, seed: float, prompts: list[str]) -> RunRequest:
    """The request of the page's (or the API's) raw values; ValueError with a readable message on bad input."""
    settings = GenerationSettings(
        max_new_tokens=int(max_new), sender_max_new_tokens=int(sender_max_new), do_sample=do_sample,
        temperature=float(temperature), top_p=float(top_p), seed=int(seed or 0), timeout_s=RUN_TIMEOUT_S,
    )
    return make_request(studio, question, contexts, reference, modes, generator, static, settings, make_roles(prompts))


def available_modes(static: str) -> list[str]:
    """The modes a run can use: Static LoRA only with a static adapter."""
    return [m for m in MODES if m != "static" or static != NONE]


def check_fits(studio: Studio, text: str, what: str) -> None:
    """Refuse at once a text that alone exceeds the model's context (the pipeline checks whole prompts later)."""
    limit = studio.backbone.max_context
    if len(text) < limit:  # a token is at least one character
        return
    n = len(studio.backbone.tokenizer(text, add_special_tokens=False).input_ids)
    if n >= limit:
        raise ValueError(f"the {what} is {n:,} tokens ({len(text):,} characters) but the model's context is only "
                         f"{limit:,} tokens: shorten the {what}")


@dataclass
class Event:
    """What the worker reports: stage / tokens / result / error for a mode, or done."""

    kind: str
    mode: str = ""
    payload: Any = None


def execute(pipe: Pipeline, req: RunRequest, post: Callable[[Event], None], stop: threading.Event) -> None:
    """Run the request's modes one after another, posting events; never raises."""
    for mode in req.modes:
        post(Event("stage", mode, "start"))
        try:
            result = pipe.run(
                req.question, mode, sender_context=list(req.contexts), settings=req.settings, roles=req.roles,
                on_token=lambda texts, m=mode: post(Event("tokens", m, texts[0])),
                on_stage=lambda s, m=mode: post(Event("stage", m, s)), should_stop=stop.is_set,
            )
            post(Event("result", mode, result))
        except (ValueError, OSError) as e:  # bad input; an engine's server that went away
            post(Event("error", mode, str(e)))
        except Exception as e:  # a bug must not take the server down; the log keeps the traceback
            log.exception("mode %s failed", mode)
            post(Event("error", mode, f"internal error ({type(e).__name__}): {e}"))
    post(Event("done"))


@dataclass
class RunRecord:
    """One finished run: its request, per-mode results or errors, and the exported perturbations."""

    number: int
    started: str
    request: RunRequest
    results: dict[str, RunResult] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    downloads: dict[str, tuple[str, str]] = field(default_factory=dict)  # mode -> (peft zip, raw safetensors)
    warning: str = ""
    hidden: tuple | None = None  # (figure, note, next-token rows) of the senders' states, built on first view
    causal: dict[tuple[str, str], dict] = field(default_factory=dict)  # (source, probe) -> its JSON


@dataclass
class Live:
    """A run in progress, as the page shows it."""

    record: RunRecord
    stage: dict[str, str] = field(default_factory=dict)
    partial: dict[str, str] = field(default_factory=dict)
    done: bool = False

    def apply(self, ev: Event) -> None:
        if ev.kind == "stage":
            self.stage[ev.mode] = ev.payload
        elif ev.kind == "tokens":
            self.partial[ev.mode] = ev.payload
        elif ev.kind == "result":
            self.record.results[ev.mode] = ev.payload
        elif ev.kind == "error":
            self.record.errors[ev.mode] = ev.payload
        elif ev.kind == "done":
            self.done = True


def export_perturbations(studio: Studio, record: RunRecord) -> None:
    """Write each perturbation of the record as a PEFT zip and a raw safetensors file."""
    for mode, result in record.results.items():
        if result.perturbation is None:
            continue
        pert = replace(result.perturbation, extra={**result.perturbation.extra, "backbone_name": studio.backbone.name})
        stem = studio.downloads / f"run{record.number}-{mode}"
        stem.mkdir(exist_ok=True)
        zip_path, raw_path = stem / f"tflow-{mode}-peft-adapter.zip", stem / f"tflow-{mode}-perturbation.safetensors"
        zip_path.write_bytes(peft_zip_bytes(pert))
        save_raw(pert, raw_path)
        record.downloads[mode] = (str(zip_path), str(raw_path))


def context_warning(studio: Studio, req: RunRequest) -> str:
    """Non-blocking: a private context that cannot reach the TFlow receiver."""
    if "tflow" in req.modes and any(req.contexts) and not studio.generators[req.generator].trained:
        return ("The selected generator is untrained, so its perturbation is zero: the senders' private context "
                "cannot reach the TFlow receiver. Pick a trained generator to see TFlow use the context.")
    return ""


def causal_probe(studio: Studio, record: RunRecord, source: str, name: str) -> dict:
    """One causal probe (see `tflow.diagnostics.causal`) of the run's `source` perturbation as plain JSON, computed
    once per run."""
    if name not in PROBES:
        raise ValueError(f"unknown probe {name!r}: choose one of {', '.join(PROBES)}")
    key = (source, name)
    if key in record.causal:
        return record.causal[key]
    result = record.results.get(source)
    if result is None or result.perturbation is None:
        raise ValueError("run TFlow (or Static LoRA) first: there is no perturbation to probe")
    t0 = time.perf_counter()
    probe = Probe.of_result(studio.backbone, result, record.request.roles)
    if name == "sweep":
        data = probe.sweep(max_new_tokens=record.request.settings.max_new_tokens).to_json()
    elif name == "other_query":
        if source != "tflow":
            raise ValueError("only TFlow's perturbation is made from its senders: a static LoRA reads none")
        req = record.request
        other = other_query(studio, req.question, req.contexts, req.generator)
        pert = studio.pipeline(req.generator, NONE).condition([other.question], [other.contexts], req.roles)
        data = probe.other_query(pert.perturbation, other.question, other.contexts,
                                 req.settings.max_new_tokens).to_json()
    else:
        data = getattr(probe, name)().to_json()
    if name == "ablation":
        norms = measures.delta_norms(result.perturbation)
        data["delta_norm"] = norms.tolist()
        data["spearman"] = spearman(norms, np.abs(np.array(data["cells"])))
    elif name == "senders":
        data["norm_share"] = measures.sender_shares(result.perturbation).tolist()
    data["answer"], data["seconds"] = result.answer, time.perf_counter() - t0
    record.causal[key] = data
    return data


def other_query(studio: Studio, question: str, contexts: tuple[str, ...], generator: str) -> tasks.Example:
    """Another query of the same task for the shuffled control of one item (the senders read another question, or the
    same question with other private contexts): the next of the page's examples of the task this query is an example
    of, else a test item of the generator's first task."""
    def key(q: str, c) -> tuple:
        return q, tuple(x or "" for x in c)

    mine = key(question, contexts)
    known = next((e["task"] for e in studio.examples if key(e["question"], e["contexts"]) == mine), None)
    task = known or tasks.parts(studio.generators[generator].task or "")[0]
    if not task:
        raise ValueError("this generator records no task: there is no other query of its kind to compare with")
    pool = [tasks.Example(e["task"], e["question"], e["answer"], tuple(e["contexts"]))
            for e in studio.examples if e["task"] == task] or tasks.examples(task, "test", 8, seed=7)
    at = next((i for i, e in enumerate(pool) if key(e.question, e.contexts) == mine), -1)
    others = [e for e in pool[at + 1:] + pool[:at + 1] if key(e.question, e.contexts) != mine]  # the next one first
    if not others:
        raise ValueError(f"{task} has no other query to compare with")
    return others[0]
