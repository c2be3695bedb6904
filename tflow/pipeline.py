"""The communication modes behind one object, `Pipeline`, with full cost accounting.

- single:  the receiver alone answers the plain question.
- textmas: each sender *generates* a message; the receiver reads question + messages.
- tflow:   senders prefill only -> generator -> fused transient LoRA -> the receiver
           generates from the plain question (sender knowledge arrives only as weights).
- static:  the receiver with a fixed, query-independent LoRA (an ablation), applied
           through the same transient mechanism.

Usage counts every token every agent processes (prompt + generated); timings split
into stages; all of it per query, amortised over the batch for `run_batch`.
`RunResult.paper_tokens` is the paper's accounting beside it (TFlow: the receiver only).

The senders may run on their own backbone (`sender_backbone`, e.g. a specialist that knows
facts the receiver does not): their prompts use its tokenizer and chat template, and each
agent's usage names its backbone and parameter count.
"""
from __future__ import annotations

import contextlib
import statistics
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from . import lora
from .agents import (
    Backbone,
    Generated,
    GenerationSettings,
    Prompt,
    Roles,
    build_prompt,
    clean_text,
    load_backbone,
    sender_prompts,
    sender_states,
)
from .checkpoints import SenderShape, recorded_sender
from .engines import Decode, Engine
from .engines.hf import HFEngine
from .generators import (
    Generator,
    GeneratorConfig,
    GeneratorMismatchError,
    ParameterGenerator,
    check_generator,
    load_generator,
    stack_conditions,
)
from .lru import LRUCache
from .peft_io import load_peft_adapter
from .results import AgentUsage, RunResult, SenderStates, Usage

MODES = ("single", "textmas", "tflow", "static")


def sender_shape(backbone: Backbone) -> SenderShape:
    """What a generator must know of the backbone whose states it reads."""
    return SenderShape(backbone.name, backbone.hidden_size, backbone.num_layers)


@dataclass
class Condition:
    """What the sender pass and the generator made for a batch of queries."""

    perturbation: lora.Perturbation
    views: list[list[SenderStates]]  # per query, per sender
    prompts: list[list[Prompt]]  # per query, per sender
    processed_tokens: list[list[int]]  # per query, per sender: tokens the backbone ran (cached role prefixes excluded)
    sender_seconds: float
    generator_seconds: float


def normalise_contexts(sender_context: str | Sequence[str | None] | None, n: int) -> list[str | None]:
    """One context for all senders, or one per sender (None / '' = no context)."""
    if sender_context is None or isinstance(sender_context, str):
        ctx = [sender_context] * n
    else:
        ctx = list(sender_context)
        if len(ctx) != n:
            raise ValueError(f"got {len(ctx)} sender contexts for {n} senders")
    return [clean_text(c, "sender context") if c and c.strip() else None for c in ctx]


def load_recorded_sender(recorded: SenderShape, receiver: Backbone, trust_remote_code: bool = False) -> Backbone:
    """The senders' backbone a generator records (its specialist), beside `receiver` (a PEFT adapter on the
    receiver's base shares its weights); a `GeneratorMismatchError` naming it when it cannot be loaded."""
    try:
        return load_backbone(recorded.name, device=receiver.device, dtype=receiver.dtype,
                             trust_remote_code=trust_remote_code, share_with=receiver)
    except (ValueError, OSError) as e:
        raise GeneratorMismatchError(f"wrong sender: the generator's senders run on {recorded.describe()}, which "
                                     f"could not be loaded ({e}); pass sender_model= (--sender-model PATH)") from e


def load_generator_for(directory: str | Path, receiver: Backbone, sender: Backbone | None = None,
                       specialist: Callable[[SenderShape], Backbone] | None = None,
                       trust_remote_code: bool = False) -> tuple[Generator, Backbone | None]:
    """The one way a generator checkpoint is put to work on `receiver`: its senders run on `sender` when given, else on
    the specialist the checkpoint records (`specialist(shape)` provides it; default: loaded beside the receiver), else
    on the receiver. Returns the generator (eval mode, on the receiver's device) and the senders' own backbone (None:
    the receiver). A checkpoint for another receiver is reported before any specialist is loaded."""
    recorded = None
    if sender is None:
        with contextlib.suppress(ValueError):  # an unreadable checkpoint is reported by load_generator below
            recorded = recorded_sender(directory)
    if recorded is not None:
        check_generator(directory, receiver.targets, receiver.name, recorded)
        sender = specialist(recorded) if specialist else load_recorded_sender(recorded, receiver, trust_remote_code)
    gen = load_generator(directory, receiver.targets, receiver.name, sender_shape(sender or receiver))
    return gen.to(receiver.device).eval(), sender


class Pipeline:
    """Receiver backbone (+ the senders' own, when they differ) + roles + generator (+ optional static adapter)."""

    def __init__(self, backbone: Backbone, generator: Generator | None = None, roles: Roles | None = None,
                 static: lora.Perturbation | None = None, cache_size: int = 64, merge: bool | str = "auto",
                 sender_backbone: Backbone | None = None, engine: Engine | None = None):
        """merge: how the hf engine applies perturbations while decoding (see `lora.apply`): "auto" merges
        dW into per-request weight copies for a single query, False always uses the low-rank path.
        sender_backbone: the senders' backbone (default: the receiver's, one model as in the paper).
        engine: what generates every agent's text (default: hf in this process; see `tflow.engines`)."""
        self.backbone = backbone
        self.sender_backbone = sender_backbone or backbone
        self.engine = engine or HFEngine(merge)
        # the lengths of recent perturbed answers: how many decoding steps a merge would be paid back over
        self.perturbed_answer_tokens: deque[int] = deque(maxlen=32)
        self.roles = roles or Roles()
        self.spec = backbone.targets
        shape = sender_shape(self.sender_backbone)
        self.generator = generator or ParameterGenerator(GeneratorConfig(), self.spec, backbone.name, sender=shape)
        got = self.generator.sender
        if (got.hidden_size, got.num_layers) != (shape.hidden_size, shape.num_layers):
            raise GeneratorMismatchError(f"wrong sender: the generator reads sender backbone {got.describe()}, "
                                         f"but the senders run on {shape.describe()}")
        self.generator.to(backbone.device)
        self.static = static
        self._cache: LRUCache[tuple, Condition] = LRUCache(cache_size)

    @classmethod
    def from_pretrained(cls, model: str, generator: str | Path | None = None, device: str = "auto",
                        dtype: str | None = None, roles: Roles | None = None, static_adapter: str | Path | None = None,
                        trust_remote_code: bool = False, sender_model: str | None = None,
                        engine: Engine | None = None) -> Pipeline:
        """model: the receiver; sender_model: the senders' backbone (absent: the one the generator records, e.g.
        the specialist it was trained on, else the receiver's; equal to model: the receiver's, loaded once)."""
        backbone = load_backbone(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
        senders = None
        if sender_model:
            senders = backbone if sender_model == model else load_backbone(
                sender_model, device=backbone.device, dtype=backbone.dtype, trust_remote_code=trust_remote_code,
                share_with=backbone)
        gen = None
        if generator:
            gen, senders = load_generator_for(generator, backbone, senders, trust_remote_code=trust_remote_code)
        static = load_peft_adapter(static_adapter, backbone.targets) if static_adapter else None
        return cls(backbone, gen, roles, static, sender_backbone=senders, engine=engine)

    @property
    def generator_trained(self) -> bool:
        return self.generator.is_trained

    # ------------------------------------------------------------------ public API

    def run(
        self, question: str, mode: str = "tflow", sender_context: str | Sequence[str | None] | None = None, **kwargs
    ) -> RunResult:
        """Answer one question in one mode; see `run_batch` for the keyword arguments."""
        contexts = None if sender_context is None else [sender_context]
        return self.run_batch([question], mode, contexts, **kwargs)[0]

    def run_batch(self, questions: Sequence[str], mode: str = "tflow",
                  sender_contexts: Sequence[str | Sequence[str | None] | None] | None = None,
                  settings: GenerationSettings | None = None, roles: Roles | None = None,
                  on_token: Callable[[list[str]], None] | None = None, should_stop: Callable[[], bool] | None = None,
                  on_stage: Callable[[str], None] | None = None, sender_questions: Sequence[str] | None = None,
                  keep_senders: Sequence[int] | None = None, **overrides) -> list[RunResult]:
        """Answer a batch of questions (each with its own sender context) in one mode.

        settings / overrides: GenerationSettings fields (max_new_tokens, do_sample, ...).
        on_token(texts): receiver's answers so far, per sample, after each decoded token.
        should_stop(): return True to stop decoding cleanly. on_stage(name): progress.
        Controls (tflow): sender_questions: what the senders read instead of the questions
        (e.g. another query's, to test instance dependence); keep_senders: fuse only these
        senders' perturbations (single-sender ablation).
        """
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")
        if mode == "static" and self.static is None:
            raise ValueError("mode 'static' needs a static adapter (Pipeline.from_pretrained(..., static_adapter=DIR))")
        if isinstance(questions, str) or not questions:
            raise ValueError("questions must be a non-empty list of strings")
        if settings is None or overrides:
            settings = GenerationSettings(**{**(settings.__dict__ if settings else {}), **overrides})
        roles = roles or self.roles
        questions = [clean_text(q) for q in questions]
        contexts = [normalise_contexts(c, len(roles.senders)) for c in (sender_contexts or [None] * len(questions))]
        if len(contexts) != len(questions):
            raise ValueError(f"got {len(contexts)} sender contexts for {len(questions)} questions")
        senders_read = [clean_text(q) for q in sender_questions] if sender_questions is not None else questions
        if len(senders_read) != len(questions):
            raise ValueError(f"got {len(senders_read)} sender questions for {len(questions)} questions")
        job = _Job(self, questions, contexts, settings, roles, on_token, should_stop, on_stage or (lambda s: None),
                   senders_read, keep_senders)
        return getattr(job, mode)()

    def condition(self, questions: Sequence[str], contexts: Sequence[Sequence[str | None]], roles: Roles,
                  on_stage: Callable[[str], None] | None = None) -> Condition:
        """Sender pass + generator for a batch, cached per (question, contexts, roles).

        A cache hit returns the first computation (its seconds and processed tokens)."""
        key = (tuple(questions), tuple(map(tuple, contexts)), roles)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        t0 = time.perf_counter()
        s = len(roles.senders)
        flat = sender_prompts(self.sender_backbone, roles.senders, questions, contexts)
        self._check_fits(flat, 0, self.sender_backbone)
        condition = self.generator.config.condition
        states, processed = sender_states(self.sender_backbone, flat, condition, self.generator.reads_readout)
        def per_query(xs: list) -> list[list]:
            return [xs[i : i + s] for i in range(0, len(xs), s)]

        prompts = per_query(flat)
        t1 = time.perf_counter()
        if on_stage is not None:
            on_stage("generator")
        with torch.inference_mode():
            pert = self.generator(*stack_conditions(states, s), tuple(a.role for a in roles.senders))
        t2 = time.perf_counter()
        tok = self.sender_backbone.tokenizer
        views = [
            [
                SenderStates(a.role, tok.convert_ids_to_tokens(p.input_ids[slice(*p.span(condition))]),
                             states[i * s + j].cpu(), self.generator.reads_readout)
                for j, (a, p) in enumerate(zip(roles.senders, row))
            ]
            for i, row in enumerate(prompts)
        ]
        out = Condition(pert, views, prompts, per_query(processed), t1 - t0, t2 - t1)
        self._cache.put(key, out)
        return out

    def clear_cache(self) -> None:
        self._cache.clear()

    def agent_usage(self, senders: bool, *counts: int) -> AgentUsage:
        """A sender's (or the receiver's) usage: (prompt, generated, KV bytes) and its backbone."""
        bb = self.sender_backbone if senders else self.backbone
        return AgentUsage(*counts, parameters=bb.num_parameters, backbone=bb.name)

    def _check_fits(self, prompts: Sequence[Prompt], new_tokens: int, backbone: Backbone | None = None) -> None:
        limit = (backbone or self.backbone).max_context
        longest = max(len(p.input_ids) for p in prompts)
        if longest + new_tokens > limit:
            raise ValueError(
                f"the prompt is {longest} tokens and up to {new_tokens} more may be generated, "
                f"but the model's context is {limit} tokens: shorten the question or context"
            )


@dataclass
class _Job:
    """One batch in one mode: shared plumbing for the mode implementations."""

    pipe: Pipeline
    questions: list[str]
    contexts: list[list[str | None]]
    settings: GenerationSettings
    roles: Roles
    on_token: Callable[[list[str]], None] | None
    should_stop: Callable[[], bool] | None
    on_stage: Callable[[str], None]
    sender_questions: list[str]
    keep_senders: Sequence[int] | None = None

    @property
    def n(self) -> int:
        return len(self.questions)

    def _receiver(
        self, messages: list[dict[str, str]] | None = None, perturbation: lora.Perturbation | None = None
    ) -> tuple[list[Generated], float]:
        """The receiver's generation, with `perturbation` applied; the seconds include applying it
        (merging dW into weight copies is part of what a perturbed answer costs)."""
        pipe, recv = self.pipe, self.roles.receiver
        prompts = [
            build_prompt(pipe.backbone, recv, q, None, m) for q, m in zip(self.questions, messages or [None] * self.n)
        ]
        pipe._check_fits(prompts, self.settings.max_new_tokens)
        self.on_stage("receiver")
        t0 = time.perf_counter()
        # steps: one prefill + the answer's expected length (the median of recent perturbed answers, within the budget)
        recent = list(pipe.perturbed_answer_tokens)
        budget = self.settings.max_new_tokens
        steps = 1 + (min(budget, round(statistics.median(recent))) if recent else budget)
        gens = pipe.engine.generate(
            pipe.backbone,
            Decode([p.input_ids for p in prompts], budget, self.settings, perturbation, self.on_token, self.should_stop,
                   started=t0, steps=steps),
        )
        if perturbation is not None:
            pipe.perturbed_answer_tokens.extend(g.generated_tokens for g in gens)
        return gens, time.perf_counter() - t0

    def _results(self, mode: str, gens: list[Generated], timings: dict[str, float],
                 usage_extra: list[dict[str, AgentUsage]], **per_query) -> list[RunResult]:
        timings = {k: v / self.n for k, v in timings.items()}
        timings["total"] = sum(timings.values())
        results = []
        for i, g in enumerate(gens):
            usage = Usage(dict(usage_extra[i]))
            usage.by_agent[self.roles.receiver.role] = self.pipe.agent_usage(
                False, g.prompt_tokens, g.generated_tokens, g.kv_cache_bytes
            )
            results.append(
                RunResult(mode=mode, question=self.questions[i], answer=g.text, usage=usage, timings=dict(timings),
                          kv_cache_bytes=g.kv_cache_bytes, stop_reason=g.stop_reason,
                          receiver_prompt_tokens=g.prompt_tokens, batch_size=self.n, answer_ids=g.token_ids,
                          receiver_first_token_s=g.first_token_s, engine=self.pipe.engine.name,
                          receiver_merged=g.merged,
                          **{k: v[i] for k, v in per_query.items()})
            )
        return results

    def single(self) -> list[RunResult]:
        gens, t = self._receiver()
        return self._results("single", gens, {"receiver": t}, [{} for _ in gens])

    def static(self) -> list[RunResult]:
        gens, t = self._receiver(perturbation=self.pipe.static)
        return self._results(
            "static", gens, {"receiver": t}, [{} for _ in gens], perturbation=[self.pipe.static] * self.n
        )

    def textmas(self) -> list[RunResult]:
        pipe, senders = self.pipe, self.roles.senders
        self.on_stage("senders")
        t0 = time.perf_counter()
        prompts = sender_prompts(pipe.sender_backbone, senders, self.questions, self.contexts)
        pipe._check_fits(prompts, self.settings.sender_max_new_tokens, pipe.sender_backbone)
        sent = pipe.engine.generate(
            pipe.sender_backbone,
            Decode([p.input_ids for p in prompts], self.settings.sender_max_new_tokens, self.settings,
                   should_stop=self.should_stop),
        )
        t_send = time.perf_counter() - t0
        s = len(senders)
        messages = [{a.role: sent[i * s + j].text for j, a in enumerate(senders)} for i in range(self.n)]
        usage = [
            {
                a.role: pipe.agent_usage(True, sent[i * s + j].prompt_tokens, sent[i * s + j].generated_tokens,
                                         sent[i * s + j].kv_cache_bytes)
                for j, a in enumerate(senders)
            }
            for i in range(self.n)
        ]
        gens, t = self._receiver(messages)
        return self._results("textmas", gens, {"senders": t_send, "receiver": t}, usage, messages=messages)

    def tflow(self) -> list[RunResult]:
        self.on_stage("senders")
        cond = self.pipe.condition(self.sender_questions, self.contexts, self.roles, self.on_stage)
        pert = cond.perturbation if self.keep_senders is None else cond.perturbation.only(self.keep_senders)
        usage = [
            {a.role: self.pipe.agent_usage(True, n, 0, 0) for a, n in zip(self.roles.senders, row)}
            for row in cond.processed_tokens
        ]
        gens, t = self._receiver(perturbation=pert)
        per_sample = [pert.sample(i) for i in range(self.n)]
        return self._results("tflow", gens,
                             {"sender_pass": cond.sender_seconds, "generator": cond.generator_seconds, "receiver": t},
                             usage, perturbation=per_sample, sender_states=cond.views)
