"""Causal probes of one query's perturbation: what ΔW *does* to the receiver's answer.

The norms in `viz` describe ΔW; these probes test it. Each probe is a set of variants of
the perturbation (parts of ΔW removed, ΔW rescaled, one sender alone) stacked as the
samples of one batched `Perturbation`, so a probe is one forward pass on lora's
per-sample low-rank path over the prompt + answer repeated once per variant:

- `Probe.ablation`: Δ log p(answer) when the ΔW of one (layer, module), one whole layer or
  one module type is removed and the rest kept (0: that part does not matter; < 0: it helps);
- `Probe.sweep`: log p(answer) and the greedy answer with ΔW scaled by 0, 0.25, ..., 2
  (scale 0 is the plain receiver, 1 the perturbation as generated; decoding batched across scales);
- `Probe.token_kl`: per answer token, KL(perturbed || plain) of the next-token distributions;
- `Probe.senders`: log p(answer) with each sender alone (the others' fusion weight set to 0);
- `Probe.other_query`: log p(answer) and the greedy answer with the ΔW the same generator makes when the senders read
  another query (the shuffled control for one item: did this answer depend on this query's senders?).

log p is teacher-forced over the answer's tokens only (the generated ones, with the end
token when the answer ended on it) and, like the KL, computed in fp32 whatever the backbone's dtype.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from .. import lora
from ..agents import Backbone, GenerationSettings, Roles, build_prompt, generate
from ..results import RunResult

SCALES = tuple(i / 4 for i in range(9))  # 0, 0.25, ..., 2
Cells = frozenset[tuple[int, str]]  # the (layer, module) parts of ΔW a variant removes


class _Result:
    """A probe's numbers; `to_json` gives them as plain JSON (what the Studio's API returns)."""

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Ablation(_Result):
    """Δ log p(answer) when a part of ΔW is removed; `logprob` is the full perturbation's."""

    layers: list[int]
    modules: list[str]
    cells: list[list[float]]  # (layers, modules): that one module of that layer removed
    per_layer: list[float]  # the whole layer removed
    per_module: list[float]  # that module type removed in every layer
    logprob: float


@dataclass
class Sweep(_Result):
    """log p(answer) and the greedy answer for ΔW scaled by each of `scales`."""

    scales: list[float]
    logprob: list[float]
    answers: list[str]


@dataclass
class TokenKL(_Result):
    """Per answer token: KL(perturbed || plain) in nats, and both models' log p of that token."""

    tokens: list[str]
    kl: list[float]
    logprob: list[float]
    plain_logprob: list[float]


@dataclass
class SenderProbe(_Result):
    """log p(answer) with each sender alone, with every sender (as generated) and with none (plain)."""

    senders: list[str]
    alone: list[float]
    all: float
    none: float


@dataclass
class OtherQuery(_Result):
    """log p(answer) with this query's ΔW, with the ΔW of another query's senders and with none; the greedy answer
    under the other query's ΔW."""

    other_question: str
    other_contexts: list[str]
    logprob: float
    other_logprob: float
    none: float
    other_answer: str


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman's rank correlation of two equally shaped arrays; None when one is constant (undefined)."""
    from scipy.stats import spearmanr  # scipy is already here (umap-learn needs it); import only when used

    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(spearmanr(x, y).statistic)


def _rows(p: lora.Perturbation, sl: slice) -> lora.Perturbation:
    return replace(p, A={k: v[sl] for k, v in p.A.items()}, B={k: v[sl] for k, v in p.B.items()}, weights=p.weights[sl])


@dataclass
class Probe:
    """One query's perturbation (a batch of one), the receiver's prompt and the answer to explain."""

    backbone: Backbone
    perturbation: lora.Perturbation
    prompt_ids: list[int]
    answer_ids: list[int]
    chunk: int = 64  # variants per forward pass: bounds the memory of the stacked factors on a large backbone

    def __post_init__(self) -> None:
        if self.perturbation.batch_size != 1:
            raise ValueError(
                f"a probe explains one query's perturbation, got a batch of {self.perturbation.batch_size}"
            )
        if not self.answer_ids:
            raise ValueError("the answer is empty: there is nothing to explain")
        if len(self.prompt_ids) + len(self.answer_ids) > self.backbone.max_context:
            raise ValueError("the prompt and the answer do not fit in the model's context")

    @classmethod
    def of_result(cls, backbone: Backbone, result: RunResult, roles: Roles | None = None) -> Probe:
        """The probe of a TFlow (or static) run: its perturbation, the receiver's prompt, its answer's tokens."""
        if result.perturbation is None:
            raise ValueError(f"a {result.mode} run has no perturbation to probe: run TFlow or Static LoRA")
        prompt = build_prompt(backbone, (roles or Roles()).receiver, result.question).input_ids
        return cls(backbone, result.perturbation, prompt, list(result.answer_ids))

    # ------------------------------------------------------------------ variants

    def variants(self, weights: torch.Tensor, removed: Sequence[Cells] | None = None) -> lora.Perturbation:
        """V variants as one batch: fusion weights (V, senders) and, per variant, the (layer, module) parts zeroed."""
        p, v = self.perturbation, weights.shape[0]
        B = {}
        for name, b in p.B.items():
            if removed is None:
                B[name] = b.expand(v, *b.shape[1:])
                continue
            keep = torch.ones(v, p.spec.num_layers, dtype=b.dtype, device=b.device)
            for i, cells in enumerate(removed):
                for layer, module in cells:
                    if module == name:
                        keep[i, layer] = 0
            B[name] = b * keep[:, None, :, None, None]
        A = {k: a.expand(v, *a.shape[1:]) for k, a in p.A.items()}
        return replace(p, A=A, B=B, weights=weights.to(p.weights))

    def scaled(self, scales: Sequence[float]) -> lora.Perturbation:
        s = torch.tensor(list(scales), dtype=self.perturbation.weights.dtype, device=self.perturbation.weights.device)
        return self.variants(self.perturbation.weights * s[:, None])

    # ------------------------------------------------------------------ teacher forcing

    @torch.inference_mode()
    def log_softmax(self, variants: lora.Perturbation) -> torch.Tensor:
        """(V, answer length, vocab) fp32 log-probabilities of the next token at each answer position."""
        model, n = self.backbone.model, len(self.answer_ids)
        ids = torch.tensor([*self.prompt_ids, *self.answer_ids], device=self.backbone.device)[None]
        out = []
        for start in range(0, variants.batch_size, self.chunk):
            part = _rows(variants, slice(start, start + self.chunk))
            with lora.apply(model, part, merge=False):
                logits = model(input_ids=ids.expand(part.batch_size, -1), logits_to_keep=n + 1).logits[:, :-1]
            out.append(F.log_softmax(logits.float(), dim=-1))
        return torch.cat(out)

    def token_logprobs(self, variants: lora.Perturbation) -> torch.Tensor:
        """(V, answer length) fp32 log p of each answer token under each variant."""
        target = torch.tensor(self.answer_ids, device=self.backbone.device)
        logp = self.log_softmax(variants)
        return logp.gather(-1, target.expand(logp.shape[0], -1)[..., None])[..., 0]

    def logprobs(self, variants: lora.Perturbation) -> np.ndarray:
        """(V,) log p(answer) under each variant, summed over the answer's tokens."""
        return self.token_logprobs(variants).sum(-1).double().cpu().numpy()

    def removal_effects(self, removed: Sequence[Cells]) -> tuple[np.ndarray, float]:
        """Δ log p(answer) for each set of removed parts (one batch, the full perturbation first), and the full
        log p."""
        weights = self.perturbation.weights.expand(len(removed) + 1, -1)
        logp = self.logprobs(self.variants(weights, [frozenset(), *removed]))
        return logp[1:] - logp[0], float(logp[0])

    # ------------------------------------------------------------------ the four probes

    def ablation(self) -> Ablation:
        spec = self.perturbation.spec
        layers, modules = list(range(spec.num_layers)), list(spec.modules)
        parts = [frozenset({(layer, m)}) for layer in layers for m in modules]
        parts += [frozenset((layer, m) for m in modules) for layer in layers]
        parts += [frozenset((layer, m) for layer in layers) for m in modules]
        effect, full = self.removal_effects(parts)
        n = len(layers) * len(modules)
        return Ablation(layers, modules, effect[:n].reshape(len(layers), len(modules)).tolist(),
                        effect[n : n + len(layers)].tolist(), effect[n + len(layers) :].tolist(), full)

    def sweep(self, scales: Sequence[float] = SCALES, max_new_tokens: int | None = None) -> Sweep:
        """Teacher-forced log p and greedy decoding (up to `max_new_tokens`, default the answer's length) per scale."""
        variants = self.scaled(scales)
        logp = self.logprobs(variants)
        budget = max_new_tokens or len(self.answer_ids)
        settings = GenerationSettings(max_new_tokens=budget)
        with lora.apply(self.backbone.model, variants, merge=False):
            gens = generate(self.backbone, [self.prompt_ids] * len(scales), budget, settings)
        return Sweep([float(s) for s in scales], logp.tolist(), [g.text for g in gens])

    def token_kl(self) -> TokenKL:
        logp = self.log_softmax(self.scaled([1.0, 0.0]))  # perturbed, plain
        kl = (logp[0].exp() * (logp[0] - logp[1])).sum(-1).clamp(min=0.0)  # ≥ 0 up to rounding
        target = torch.tensor(self.answer_ids, device=logp.device)[:, None]
        picked = logp.gather(-1, target.expand(2, -1, -1))[..., 0].cpu()
        tokens = self.backbone.tokenizer.convert_ids_to_tokens(self.answer_ids)
        return TokenKL(tokens, kl.cpu().tolist(), picked[0].tolist(), picked[1].tolist())

    def senders(self) -> SenderProbe:
        p = self.perturbation
        s = len(p.senders)
        one_hot = torch.eye(s, dtype=p.weights.dtype, device=p.weights.device)
        weights = torch.cat([p.weights * one_hot, p.weights, torch.zeros_like(p.weights)])
        logp = self.logprobs(self.variants(weights))
        return SenderProbe(list(p.senders), logp[:s].tolist(), float(logp[s]), float(logp[s + 1]))

    def other_query(self, other: lora.Perturbation, question: str, contexts: Sequence[str | None] = (),
                    max_new_tokens: int | None = None) -> OtherQuery:
        """`other`: the perturbation the same generator made from senders reading `question` (and `contexts`, their
        private ones), for one query."""
        p = self.perturbation
        if other.batch_size != 1 or set(other.A) != set(p.A) or other.senders != p.senders:
            raise ValueError("the other query's perturbation must come from the same generator, for one query")
        both = replace(p, A={k: torch.cat([a, other.A[k].to(a), a]) for k, a in p.A.items()},
                       B={k: torch.cat([b, other.B[k].to(b), b]) for k, b in p.B.items()},
                       weights=torch.cat([p.weights, other.weights.to(p.weights), torch.zeros_like(p.weights)]))
        own, theirs, none = self.logprobs(both).tolist()
        budget = max_new_tokens or len(self.answer_ids)
        with lora.apply(self.backbone.model, other, merge=False):
            answer = generate(self.backbone, [self.prompt_ids], budget, GenerationSettings(max_new_tokens=budget))[0]
        return OtherQuery(question, [c or "" for c in contexts], own, theirs, none, answer.text)
