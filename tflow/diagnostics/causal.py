"""Causal probes of one query's perturbation: what ΔW *does* to the receiver's answer.

The norms in `viz` describe ΔW; these probes test it. Each probe is a set of variants of
the perturbation (parts of ΔW removed, ΔW rescaled, one sender alone) stacked as the
samples of one batched `Perturbation`, so a probe is one forward pass on lora's
per-sample low-rank path over the prompt + answer repeated once per variant:

- `Probe.ablation`: Δ log p(answer) when the ΔW of one (layer, module), one whole layer or
  one module type is removed and the rest kept (0: that part does not matter; < 0: it helps). On a
  large backbone (more than `EXACT_PARTS` parts) every part's effect is first estimated from one
  backward pass (`Probe.attribution`) and only the cells it ranks highest are removed exactly;
- `Probe.sweep`: log p(answer) and the greedy answer with ΔW scaled by 0, 0.25, ..., 2
  (scale 0 is the plain receiver, 1 the perturbation as generated). The teacher-forced pass already
  holds each scale's greedy choice at every answer position: a scale decodes only from where it
  leaves the answer (batched across scales);
- `Probe.token_kl`: per answer token, KL(perturbed || plain) of the next-token distributions;
- `Probe.senders`: log p(answer) with each sender alone (the others' fusion weight set to 0);
- `Probe.other_query`: log p(answer) and the greedy answer with the ΔW the same generator makes when the senders read
  another query (the shuffled control for one item: did this answer depend on this query's senders?).

log p is teacher-forced over the answer's tokens only (the generated ones, with the end
token when the answer ended on it) and, like the KL, computed in fp32 whatever the backbone's dtype.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from .. import lora
from ..agents import Backbone, GenerationSettings, Roles, build_prompt, generate
from ..prefix import left_padded
from ..results import RunResult

SCALES = tuple(i / 4 for i in range(9))  # 0, 0.25, ..., 2
# beyond this many parts (a layer x module cell, a layer, a module type) the ablation is first-order with an exact
# check: SmolLM2's 247 parts took 48 s exactly on 2 CPU cores, one forward pass of the prompt + answer per part
EXACT_PARTS = 64
TOP_K = 12  # the cells the first-order ablation also removes exactly (the most affecting ones by its estimate)
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
    # "exact": every part removed in its own variant. "first-order": every cell estimated by `Probe.attribution`, a
    # layer's and a module type's as the sum of their cells; the `exact_cells` ([layer index, module index]) removed
    # exactly too, their exact values in `cells`, the estimate of every cell in `estimate`
    method: str = "exact"
    exact_cells: list[list[int]] = field(default_factory=list)
    estimate: list[list[float]] | None = None
    agreement: float | None = None  # Spearman's ρ of the estimate and the exact effect over `exact_cells`


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


def _plain_greedy(backbone: Backbone) -> bool:
    """Whether the model's own generation settings leave greedy decoding the argmax of its logits (no repetition
    penalty, banned words and the like): then a teacher-forced pass shows where decoding goes."""
    cfg = backbone.model.generation_config
    return (getattr(cfg, "repetition_penalty", None) in (None, 1.0) and not getattr(cfg, "no_repeat_ngram_size", 0)
            and not any(getattr(cfg, k, None) for k in ("bad_words_ids", "suppress_tokens", "begin_suppress_tokens",
                                                         "sequence_bias", "min_new_tokens", "min_length")))


def _full_attention(cache: object) -> bool:
    """A cache of full-attention layers only, every position kept: rows and positions can be cut from it."""
    return isinstance(cache, DynamicCache) and all(type(layer) is DynamicLayer for layer in cache.layers)


def _rows(p: lora.Perturbation, rows: slice | list[int]) -> lora.Perturbation:
    return replace(p, A={k: v[rows] for k, v in p.A.items()}, B={k: v[rows] for k, v in p.B.items()},
                   weights=p.weights[rows])


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

    def _ids(self) -> torch.Tensor:
        return torch.tensor([*self.prompt_ids, *self.answer_ids], device=self.backbone.device)[None]

    def _answer_log_softmax(self, ids: torch.Tensor, keep_cache: bool = False) -> tuple[torch.Tensor, object]:
        """(rows, answer length, vocab) fp32 log-probabilities of the model under the active perturbation, and its KV
        cache of the prompt + answer when asked for (else None)."""
        out = self.backbone.model(input_ids=ids, logits_to_keep=len(self.answer_ids) + 1, use_cache=keep_cache)
        return F.log_softmax(out.logits[:, :-1].float(), dim=-1), out.cache if keep_cache else None

    @torch.inference_mode()
    def _teacher_forced(self, variants: lora.Perturbation, keep_cache: bool) -> tuple[torch.Tensor, object]:
        """`log_softmax`, and the variants' KV cache when asked for and they fit one forward pass (else None)."""
        ids, out, cache = self._ids(), [], None
        keep_cache = keep_cache and variants.batch_size <= self.chunk
        for start in range(0, variants.batch_size, self.chunk):
            part = _rows(variants, slice(start, start + self.chunk))
            with lora.apply(self.backbone.model, part, merge=False):
                logp, cache = self._answer_log_softmax(ids.expand(part.batch_size, -1), keep_cache)
                out.append(logp)
        return torch.cat(out), cache

    def log_softmax(self, variants: lora.Perturbation) -> torch.Tensor:
        """(V, answer length, vocab) fp32 log-probabilities of the next token at each answer position."""
        return self._teacher_forced(variants, keep_cache=False)[0]

    def attribution(self) -> np.ndarray:
        """(layers, modules) first-order Δ log p(answer) of removing each cell, from one forward and one backward pass
        of the prompt + answer: with a gate g on each cell's ΔW (g B A), removing it is g: 1 -> 0, so
        Δ ≈ -∂ log p / ∂g at g = 1 (exact for a part whose effect on log p is linear in its scale)."""
        p, modules = self.perturbation, list(self.perturbation.spec.modules)
        gates = torch.ones(p.spec.num_layers, len(modules), device=p.weights.device, requires_grad=True)
        # clones: the factors may be inference tensors (made under inference_mode), which autograd cannot save
        gated = replace(p, A={k: a.clone() for k, a in p.A.items()},
                        B={k: p.B[k].clone() * gates[:, j].to(p.B[k].dtype)[None, None, :, None, None]
                           for j, k in enumerate(modules)}, weights=p.weights.clone())
        target = torch.tensor(self.answer_ids, device=self.backbone.device)
        with torch.enable_grad(), lora.apply(self.backbone.model, gated, merge=False):
            logp = self._answer_log_softmax(self._ids())[0][0].gather(-1, target[:, None]).sum()
            (grad,) = torch.autograd.grad(logp, gates)  # only the gates' gradient: no weight gradients are formed
        return -grad.double().cpu().numpy()

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

    def ablation(self, exact: bool | None = None, top_k: int = TOP_K) -> Ablation:
        """Δ log p(answer) with each part of ΔW removed. exact (by default when there are at most `EXACT_PARTS`
        parts): each part removed in its own variant of one batch. Otherwise first-order (`attribution`: one
        backward pass), with the `top_k` cells it ranks highest also removed exactly, and the two compared."""
        spec = self.perturbation.spec
        layers, modules = list(range(spec.num_layers)), list(spec.modules)
        cells = [frozenset({(layer, m)}) for layer in layers for m in modules]
        whole = [frozenset((layer, m) for m in modules) for layer in layers]
        kinds = [frozenset((layer, m) for layer in layers) for m in modules]
        if exact is None:
            exact = len(cells) + len(whole) + len(kinds) <= EXACT_PARTS
        if exact:
            effect, full = self.removal_effects(cells + whole + kinds)
            n = len(cells)
            return Ablation(layers, modules, effect[:n].reshape(len(layers), len(modules)).tolist(),
                            effect[n : n + len(layers)].tolist(), effect[n + len(layers) :].tolist(), full)
        estimate = self.attribution()
        top = np.argsort(-np.abs(estimate).ravel(), kind="stable")[: min(top_k, estimate.size)]
        measured, full = self.removal_effects([cells[i] for i in top])
        shown = estimate.copy().ravel()
        shown[top] = measured
        at = [list(divmod(int(i), len(modules))) for i in top]
        return Ablation(layers, modules, shown.reshape(estimate.shape).tolist(), estimate.sum(1).tolist(),
                        estimate.sum(0).tolist(), full, "first-order", at, estimate.tolist(),
                        spearman(estimate.ravel()[top], measured))

    def sweep(self, scales: Sequence[float] = SCALES, max_new_tokens: int | None = None) -> Sweep:
        """Teacher-forced log p and greedy decoding (up to `max_new_tokens`, default the answer's length) per scale."""
        variants = self.scaled(scales)
        logp, cache = self._teacher_forced(variants, keep_cache=True)
        target = torch.tensor(self.answer_ids, device=logp.device)
        total = logp.gather(-1, target.expand(logp.shape[0], -1)[..., None])[..., 0].sum(-1)
        answers = self._greedy(variants, logp.argmax(-1).tolist(), max_new_tokens or len(self.answer_ids), cache)
        return Sweep([float(s) for s in scales], total.double().cpu().tolist(), answers)

    def _greedy(self, variants: lora.Perturbation, chosen: list[list[int]], budget: int,
                cache: object = None) -> list[str]:
        """Each variant's greedy answer. `chosen[v][i]`: its argmax after the prompt + the answer's first i tokens
        (the teacher-forced pass), which is where greedy decoding goes as long as it follows the answer; each variant
        is decoded (batched) only from the first token where it leaves the answer, unless that token ends it, on
        the keys and values the teacher-forced pass left in `cache` (its prompt + answer prefix: no prefill)."""
        eos, text = set(self.backbone.eos_token_ids), self.backbone.tokenizer.decode
        known = budget if _plain_greedy(self.backbone) else 0  # the teacher-forced choices that can be trusted
        followed: list[list[int]] = []
        for row in chosen:
            out: list[int] = []
            for token, answer in zip(row[:known], self.answer_ids):
                out.append(token)
                if token in eos or token != answer:
                    break
            followed.append(out)
        resume = [v for v, out in enumerate(followed) if not out or (out[-1] not in eos and len(out) < budget)]
        if not resume:
            return [text(ids, skip_special_tokens=True).strip() for ids in followed]
        prompts = [self.prompt_ids + followed[v] for v in resume]
        budgets = [budget - len(followed[v]) for v in resume]
        if known and _full_attention(cache):  # each row's prompt + the answer tokens it followed, all but the last
            kv = left_padded([[(layer.keys[v : v + 1, :, : len(p) - 1], layer.values[v : v + 1, :, : len(p) - 1])
                               for layer in cache.layers] for v, p in zip(resume, prompts)],
                             max(map(len, prompts)) - 1, self.backbone.model.config)
            new = self._decode(variants, resume, prompts, kv, budgets)
        else:  # the model's generation settings shape its logits: its own generate applies them
            with lora.apply(self.backbone.model, _rows(variants, resume), merge=False):
                gens = generate(self.backbone, prompts, max(budgets), GenerationSettings(max_new_tokens=max(budgets)))
            new = [g.token_ids[:n] for g, n in zip(gens, budgets)]
        for v, ids in zip(resume, new):
            followed[v] += ids
        return [text(ids, skip_special_tokens=True).strip() for ids in followed]

    @torch.inference_mode()
    def _decode(self, variants: lora.Perturbation, rows: list[int], prompts: list[list[int]], kv: DynamicCache,
                budgets: list[int]) -> list[list[int]]:
        """Greedy tokens after each prompt (`kv`: every prompt but its last token, left-padded), each row leaving the
        batch as soon as it ends or reaches its budget. By hand because HF's generate keeps finished rows in the
        batch to the end: a sweep's scales that answer in a few tokens would decode as long as one that rambles."""
        model, eos, dev = self.backbone.model, set(self.backbone.eos_token_ids), self.backbone.device
        width = kv.get_seq_length()
        mask = torch.zeros(len(prompts), width + 1, dtype=torch.long, device=dev)
        for i, p in enumerate(prompts):
            mask[i, width + 1 - len(p):] = 1
        last = torch.tensor([[p[-1]] for p in prompts], device=dev)
        pos = torch.tensor([[len(p) - 1] for p in prompts], device=dev)
        out: list[list[int]] = [[] for _ in prompts]
        live = list(range(len(prompts)))
        while live:
            with lora.apply(model, _rows(variants, [rows[i] for i in live]), merge=False):
                while True:  # until a row leaves: the perturbation's rows change with the batch's
                    logits = model(input_ids=last, attention_mask=mask, position_ids=pos, cache=kv,
                                   logits_to_keep=1).logits
                    chosen = logits[:, -1].argmax(-1)
                    for j, i in enumerate(live):
                        out[i].append(int(chosen[j]))
                    keep = [j for j, i in enumerate(live) if out[i][-1] not in eos and len(out[i]) < budgets[i]]
                    last, pos, mask = chosen[:, None], pos + 1, F.pad(mask, (0, 1), value=1)
                    if len(keep) < len(live):
                        break
            if keep:
                index = torch.tensor(keep, device=dev)
                kv.batch_select_indices(index)
                last, pos, mask = last[index], pos[index], mask[index]
            live = [live[j] for j in keep]
        return out

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
