"""The Studio's JSON API: `/ask`, `/causal` and `/health` (plain JSON in and out, no page state).

`/causal` answers the question with TFlow exactly as the page's Run does (same defaults, greedy)
and returns the causal probes of that run's perturbation, the numbers the page's causal
section draws. Runs made through it are kept (a few) with their probes, so asking again for
the same inputs, or for another probe of them, computes nothing twice.
"""
from __future__ import annotations

import threading

import gradio as gr

from ..lora import is_patched
from ..lru import LRUCache
from .registry import NONE, Studio, weights_sha256
from .render import result_summary
from .worker import (
    DEFAULT_ROLES,
    MAX_NEW_TOKENS,
    PROBES,
    Live,
    RunRecord,
    RunRequest,
    available_modes,
    causal_probe,
    context_warning,
    execute,
    request_from_form,
)

API_RUNS = 16  # runs made through /causal kept with their probes

DEFAULT_PROMPTS = [a.system_prompt for a in (*DEFAULT_ROLES.senders, DEFAULT_ROLES.receiver)]


class Api:
    """The endpoints' functions (their signatures and docstrings are what *Use via API* shows)."""

    def __init__(self, studio: Studio):
        self.studio = studio
        self._runs: LRUCache[tuple, RunRecord] = LRUCache(API_RUNS)

    def _run(self, req: RunRequest) -> RunRecord:
        live, stop = Live(RunRecord(0, "", req)), threading.Event()
        execute(self.studio.pipeline(req.generator, req.static), req, live.apply, stop)
        return live.record

    def health(self) -> dict:
        """Liveness and integrity: what is loaded, whether any perturbation is applied now, the weights' hash."""
        s = self.studio
        return {"status": "ok", "backbone": s.backbone.name, "device": str(s.backbone.device),
                "dtype": str(s.backbone.dtype), "generators": {k: c.describe() for k, c in s.generators.items()},
                "static_adapters": list(s.statics), "sender_backbones": {k: s.senders_of(k).name for k in s.generators},
                "engine": s.engine.describe(), "notes": s.notes, "patched": is_patched(s.backbone.model),
                "weights_sha256": weights_sha256(s.backbone.model)}

    def ask(self, question: str, contexts: list[str] | None = None, modes: list[str] | None = None,
            generator: str | None = None, static: str | None = None, reference: str = "",
            max_new_tokens: int = MAX_NEW_TOKENS, do_sample: bool = False, temperature: float = 1.0,
            seed: int = 0) -> dict:
        """Answer a question in several modes (default: all available) and return answers, tokens and timings per
        mode."""
        generator = generator or self.studio.default_generator
        static = static or self.studio.static_for(
            self.studio.generators.get(generator, self.studio.generators[NONE]).task
        )
        try:
            req = request_from_form(self.studio, question, list(contexts or ["", ""]), reference,
                                    modes or available_modes(static), generator, static, max_new_tokens, max_new_tokens,
                                    do_sample, temperature, 1.0, seed, DEFAULT_PROMPTS)
        except ValueError as e:
            raise gr.Error(str(e), print_exception=False) from e
        record = self._run(req)
        return {"generator": generator, "static": static, "warning": context_warning(self.studio, req),
                "errors": record.errors,
                "results": {m: result_summary(r, req.reference) for m, r in record.results.items()}}

    def causal(self, question: str, contexts: list[str] | None = None, generator: str | None = None,
               max_new_tokens: int = MAX_NEW_TOKENS, probes: list[str] | None = None) -> dict:
        """Answer with TFlow (greedy), then test what its perturbation does to that answer.

        probes (default: all): "ablation" (Δ log p with each layer x module, layer, module type of ΔW removed;
        with ‖ΔW‖ and their Spearman ρ; on a large backbone first-order estimates, `method` "first-order", with the
        `exact_cells` removed exactly and the estimate's `agreement` with them), "sweep" (log p and greedy answer
        with ΔW scaled 0, 0.25, ..., 2), "token_kl" (per answer token KL(perturbed || plain)), "senders" (log p
        with each sender alone, beside the norm-based share)."""
        generator = generator or self.studio.default_generator
        try:
            unknown = sorted(set(probes or ()) - set(PROBES))
            if unknown:
                raise ValueError(f"unknown probe(s) {', '.join(unknown)}: choose from {', '.join(PROBES)}")
            req = request_from_form(self.studio, question, list(contexts or ["", ""]), "", ["tflow"], generator, NONE,
                                    max_new_tokens, max_new_tokens, False, 1.0, 1.0, 0, DEFAULT_PROMPTS)
            key = (req.question, req.contexts, req.generator, req.settings.max_new_tokens)
            record = self._runs.get(key)
            if record is None:
                record = self._run(req)
                if "tflow" in record.errors:
                    raise ValueError(record.errors["tflow"])
                self._runs.put(key, record)
            out = {name: causal_probe(self.studio, record, "tflow", name) for name in (probes or PROBES)}
        except ValueError as e:
            raise gr.Error(str(e), print_exception=False) from e
        result = record.results["tflow"]
        tokens = self.studio.backbone.tokenizer.convert_ids_to_tokens(result.answer_ids)
        return {"generator": generator, "answer": result.answer, "answer_tokens": tokens,
                "warning": context_warning(self.studio, req), **out}
