"""The shared frozen backbone and the role-prompted agents that run on it.

One causal LM and its tokenizer are loaded once (`load_backbone`) and shared by every
agent; agents differ only by their system prompt. This module builds chat prompts
(recording where the question's tokens sit, from the fast tokenizer's offset mapping),
runs all senders as one batched prefill that returns every hidden state restricted
to the question span, and generates with full token / stop-reason / KV-cache accounting.
"""
from __future__ import annotations

import os
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.generation.streamers import BaseStreamer

from . import cpu_dtype, lora, sources
from .errors import first_line
from .prefix import PrefixCache
from .sources.adapter import attach, base_of

_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
           "fp16": torch.float16, "float16": torch.float16}


@dataclass(frozen=True)
class Agent:
    """A role on the shared backbone: a name and the system prompt that defines it."""

    role: str
    system_prompt: str


# The paper's three roles; the embedded backbone is pretrained with exactly these prompts.
STRATEGIST = Agent("Strategist", "You are the Strategist. Say how to approach the problem.")
KNOWLEDGE_EXTRACTOR = Agent(
    "Knowledge Extractor", "You are the Knowledge Extractor. State the facts the problem needs."
)
EXECUTOR = Agent("Executor", "You are the Executor. Solve the problem and give the final answer.")


@dataclass(frozen=True)
class Roles:
    """Who sends and who answers."""

    senders: tuple[Agent, ...] = (STRATEGIST, KNOWLEDGE_EXTRACTOR)
    receiver: Agent = EXECUTOR

    def __post_init__(self) -> None:
        if not self.senders:
            raise ValueError("at least one sender role is needed")
        names = [a.role for a in self.senders] + [self.receiver.role]
        if len(set(names)) != len(names):
            raise ValueError(f"role names must be distinct, got {names}")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' picks cuda > mps > cpu; an explicit device that is not there is an error."""
    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is available")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' was asked for but MPS is not available")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """Default: bf16 on CUDA, fp16 on MPS, fp32 on CPU."""
    if dtype is None or dtype == "auto":
        return {"cuda": torch.bfloat16, "mps": torch.float16}.get(device.type, torch.float32)
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: use one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]


# The prompt format of a model without a chat template (base checkpoints and their GGUF files): each message as
# "Role: text" and a blank line, then "Assistant:" where the answer starts.
PLAIN_TEMPLATE = ("{% for m in messages %}{{ m['role'] | capitalize }}: {{ m['content'] }}\n\n{% endfor %}"
                  "{% if add_generation_prompt %}Assistant:{% endif %}")


@dataclass
class Backbone:
    """The frozen causal LM and its tokenizer, shared by every agent."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str
    chat_template_kwargs: dict | None = None
    prefix_cache: PrefixCache = field(default_factory=PrefixCache, repr=False, compare=False)  # senders' role prefixes
    dtype_why: str = field(default="", compare=False)  # dtype "fastest": what the probe measured (tflow.cpu_dtype)
    plain_prompts: bool = field(default=False, init=False)  # no chat template of its own: PLAIN_TEMPLATE

    def __post_init__(self) -> None:
        if not getattr(self.tokenizer, "is_fast", False):
            raise ValueError(f"{self.name}: a fast tokenizer is needed (offset mappings locate the question)")
        if self.tokenizer.chat_template is None:  # a base checkpoint: roles as plain text (reports say so)
            self.tokenizer.chat_template = PLAIN_TEMPLATE
            self.plain_prompts = True
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.eval().requires_grad_(False)
        # Qwen3's template takes enable_thinking; other templates ignore unknown variables.
        self.chat_template_kwargs = {"enable_thinking": False, **(self.chat_template_kwargs or {})}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def has_thinking(self) -> bool:
        """Whether the chat template has a thinking mode (Qwen3's `enable_thinking`)."""
        return "enable_thinking" in (self.tokenizer.chat_template or "")

    @cached_property
    def targets(self) -> lora.TargetSpec:
        """The linears a perturbation targets, inferred from the model once."""
        return lora.infer_targets(self.model)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def num_layers(self) -> int:
        return self.model.config.num_hidden_layers

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @property
    def max_context(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048))

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def eos_token_ids(self) -> list[int]:
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        return [eos] if isinstance(eos, int) else list(eos)

    def kv_cache_bytes(self, tokens: int) -> int:
        """Bytes a full KV cache takes for `tokens` positions (keys + values, every layer)."""
        cfg = self.model.config
        heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        return 2 * cfg.num_hidden_layers * heads * head_dim * tokens * self.dtype.itemsize


def load_backbone(name_or_path: str, device: str | torch.device = "auto", dtype: str | torch.dtype | None = None,
                  trust_remote_code: bool = False, share_with: Backbone | None = None) -> Backbone:
    """Load any Hugging Face causal LM + tokenizer: a hub name or local directory, a packaged model's
    name (`smollm2-135m-instruct`), a GGUF file, `tiny`, or a PEFT adapter directory on any of those
    (see `tflow.sources`). share_with: a loaded backbone; an adapter on its base then shares its weights.
    dtype "fastest": on a CPU, fp32 or bf16 by a probe timed on this machine at the model's shapes
    (`tflow.cpu_dtype`; `Backbone.dtype_why` says what it measured), elsewhere the device's default."""
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise ValueError("model name or path is empty")
    base = base_of(name_or_path)
    if base is not None:
        if share_with is not None and sources.known_as(base) == sources.known_as(share_with.name):
            return Backbone(attach(share_with.model, name_or_path, shared_weights=True), share_with.tokenizer,
                            name_or_path)
        plain = load_backbone(base, device, dtype, trust_remote_code)
        return Backbone(attach(plain.model, name_or_path, shared_weights=False), plain.tokenizer, name_or_path)
    dev = resolve_device(device)
    measured = dtype == "fastest" and dev.type == "cpu"
    torch_dtype = resolve_dtype(None if dtype == "fastest" else dtype, dev)
    src = sources.resolve(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(src.path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(src.path, dtype=torch_dtype, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as e:
        offline = (
            " (HF_HUB_OFFLINE=1: only models already on disk or in the HF cache load)"
            if os.environ.get("HF_HUB_OFFLINE") == "1"
            else ""
        )
        raise ValueError(f"could not load model {name_or_path!r}{offline}: {first_line(e)}") from e
    why = ""
    if measured:
        choice = cpu_dtype.probe(cpu_dtype.model_shapes(model.config))
        model, why = model.to(choice.dtype), choice.why
    return Backbone(model=model.to(dev), tokenizer=tokenizer, name=src.name, dtype_why=why)


_ALLOWED_CONTROL = {"\n", "\t"}


def clean_text(text: str, what: str = "question") -> str:
    """Normalise user text: drop control characters and lone surrogates; reject empty text."""
    if not isinstance(text, str):
        raise ValueError(f"{what} must be text, got {type(text).__name__}")
    text = text.encode("utf-8", "replace").decode("utf-8")  # lone surrogates become '?'
    text = "".join(c for c in text if c in _ALLOWED_CONTROL or unicodedata.category(c) != "Cc")
    text = text.strip()
    if not text:
        raise ValueError(f"the {what} is empty")
    return text


@dataclass
class Prompt:
    """A chat-formatted prompt: token ids, the [start, end) token span of the question, and
    how many leading tokens come before the user's text (the role's fixed prefix)."""

    input_ids: list[int]
    question_span: tuple[int, int]
    prefix_len: int = 0

    def span(self, condition: str = "question") -> tuple[int, int]:
        """The tokens a sender's condition keeps: the question's ("question", the paper's), the whole user
        message's ("message": a private context, then the question; what a real LLM's context tokens hold), or
        the message and the chat template's answer header after it ("prompt": its last state is the one a sender
        would answer from, where a model that knows the answer has it in mind)."""
        if condition == "question":
            return self.question_span
        return (self.prefix_len, self.question_span[1] if condition == "message" else len(self.input_ids))


def user_content(question: str, context: str | None = None, messages: dict[str, str] | None = None) -> tuple[str, int]:
    """The user turn: private context (before the question, so the question's states carry it
    under causal attention), the question, then any senders' messages. Returns (text, question offset)."""
    prefix = f"{context}\n" if context else ""
    suffix = "".join(f"\n{role}: {msg}" for role, msg in (messages or {}).items())
    return prefix + question + suffix, len(prefix)


def build_prompt(backbone: Backbone, agent: Agent, question: str, context: str | None = None,
                 messages: dict[str, str] | None = None) -> Prompt:
    """Render `agent`'s chat prompt for `question` and locate the question's tokens."""
    tok = backbone.tokenizer
    content, q_offset = user_content(question, context, messages)
    chat = [{"role": "system", "content": agent.system_prompt}, {"role": "user", "content": content}]
    text = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True, **backbone.chat_template_kwargs)
    where = text.rfind(content)
    if where < 0:
        raise ValueError("the chat template rewrote the user message; cannot locate the question")
    q_start = where + q_offset
    q_end = q_start + len(question)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    inside = [i for i, (s, e) in enumerate(offsets) if s < q_end and e > q_start]
    prefix_len = next((i for i, (_, e) in enumerate(offsets) if e > where), len(offsets))
    return Prompt(list(enc["input_ids"]), (inside[0], inside[-1] + 1), prefix_len)


def sender_prompts(backbone: Backbone, senders: Sequence[Agent], questions: Sequence[str],
                   contexts: Sequence[Sequence[str | None]]) -> list[Prompt]:
    """Every sender's prompt for every question, query-major: [q0 s0, q0 s1, q1 s0, ...]."""
    return [build_prompt(backbone, a, q, c) for q, ctx in zip(questions, contexts) for a, c in zip(senders, ctx)]


def _pad(
    rows: Sequence[Sequence[int]], pad_id: int, left: bool, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        sl = slice(width - len(r), width) if left else slice(0, len(r))
        ids[i, sl] = torch.tensor(r, dtype=torch.long)
        mask[i, sl] = 1
    return ids.to(device), mask.to(device)


def pad_with_labels(
    rows: Sequence[tuple[Sequence[int], int]], pad_id: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (ids, attention mask, labels) from (token ids, prompt length) pairs;
    labels are -100 on the prompt and padding, so the loss covers only the target."""
    ids, mask = _pad([r for r, _ in rows], pad_id, left=False, device=device)
    labels = torch.full_like(ids, -100)
    for i, (r, p) in enumerate(rows):
        labels[i, p : len(r)] = ids[i, p : len(r)]
    return ids, mask, labels


@torch.no_grad()
def sender_states(
    backbone: Backbone, prompts: Sequence[Prompt], condition: str = "question", readout: bool = False
) -> tuple[list[torch.Tensor], list[int]]:
    """One batched prefill of all sender prompts (no LM head, no generation).

    Only what the condition's states depend on is run: the role prefix comes from the
    backbone's prefix cache and nothing after the condition's span is fed (causal attention).
    Returns, per prompt, the embedding output and every decoder layer's output on the
    question span, a (num_layers + 1, span_len, hidden) tensor; and the number of tokens
    the backbone processed for it (its cached prefix counts only when computed now).
    readout: one more slice after the last layer, the sender's read-out at each position: the expected input
    embedding of its next token (its output head's softmax times its embedding matrix), in the embedding space
    a receiver on the same base reads.
    """
    decoder = getattr(backbone.model, backbone.model.base_model_prefix)
    dev = backbone.device
    cached = all(p.prefix_len > 0 for p in prompts)
    starts = [p.prefix_len if cached else 0 for p in prompts]
    rows = [p.input_ids[s : p.span(condition)[1]] for s, p in zip(starts, prompts)]
    ids, mask = _pad(rows, backbone.tokenizer.pad_token_id, left=False, device=dev)
    kwargs, computed = {}, [False] * len(prompts)
    if cached:
        cache, prefix_mask, computed = backbone.prefix_cache.batch(
            decoder, [tuple(p.input_ids[: p.prefix_len]) for p in prompts]
        )
        positions = torch.tensor(starts, device=dev)[:, None] + torch.arange(ids.shape[1], device=dev)
        kwargs = {"cache": cache, "position_ids": positions}
        mask = torch.cat([prefix_mask, mask], dim=1)
    out = decoder(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=cached, **kwargs)
    hidden = out.hidden_states
    if readout:
        head, embed = backbone.model.get_output_embeddings(), backbone.model.get_input_embeddings()
        probs = torch.softmax(head(out.last_hidden_state).float(), dim=-1)
        hidden = (*hidden, (probs @ embed.weight.float()).to(out.last_hidden_state.dtype))
    spans = [p.span(condition) for p in prompts]
    states = [
        torch.stack([h[i, lo - s : hi - s] for h in hidden])
        for i, (s, (lo, hi)) in enumerate(zip(starts, spans))
    ]
    return states, [len(r) + (s if new else 0) for r, s, new in zip(rows, starts, computed)]


@dataclass
class GenerationSettings:
    """Decoding settings; greedy by default so results are reproducible."""

    max_new_tokens: int = 64
    sender_max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    timeout_s: float | None = None
    ignore_eos: bool = False  # always generate the full budget (fixed-length benchmarks)
    allowed_tokens: tuple[int, ...] | None = None  # decode only these ids (benchmarks: text that re-tokenises exactly)

    MAX_NEW_TOKENS_CAP = 4096

    def __post_init__(self) -> None:
        for name in ("max_new_tokens", "sender_max_new_tokens"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= self.MAX_NEW_TOKENS_CAP:
                raise ValueError(f"{name} must be an integer from 1 to {self.MAX_NEW_TOKENS_CAP}, got {v!r}")
        if not isinstance(self.temperature, (int, float)) or not 0.0 < self.temperature <= 5.0:
            raise ValueError(f"temperature must be in (0, 5], got {self.temperature!r}")
        if not isinstance(self.top_p, (int, float)) or not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {self.timeout_s!r}")
        if self.allowed_tokens is not None and not self.allowed_tokens:
            raise ValueError("allowed_tokens must name at least one token id")


@dataclass
class Generated:
    """One sequence's generation and what it cost."""

    text: str
    token_ids: list[int]
    prompt_tokens: int
    generated_tokens: int
    stop_reason: str  # "eos" | "length" | "stopped" | "timeout"
    kv_cache_bytes: int
    first_token_s: float = 0.0  # seconds from `started` (default: the call) to the first token: the prefill
    merged: bool | None = None  # decoded on merged weight copies (True) or the low-rank path; None: no perturbation


class _CallbackStreamer(BaseStreamer):
    """Calls `on_token(step, new_ids)` for each decoding step (the first put is the prompt)."""

    def __init__(self, on_token: Callable[[int, torch.Tensor], None]):
        self.on_token, self.step = on_token, -1

    def put(self, value: torch.Tensor) -> None:
        self.step += 1
        if self.step > 0:
            self.on_token(self.step, value.reshape(-1))

    def end(self) -> None:
        pass


class _AllowOnly(LogitsProcessor):
    """Masks every id but `allowed` (hand-written: transformers' SuppressTokens runs `isin` over
    the whole vocabulary at every step, which is slow with 151k suppressed ids)."""

    def __init__(self, allowed: Sequence[int], vocab: int, device: torch.device):
        self.blocked = torch.ones(vocab, dtype=torch.bool, device=device)
        self.blocked[list(allowed)] = False

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return scores.masked_fill(self.blocked[: scores.shape[-1]], float("-inf"))


class _StopWhen(StoppingCriteria):
    """Stops decoding cleanly when the caller asks or the deadline passes."""

    def __init__(self, should_stop: Callable[[], bool] | None, deadline: float | None):
        self.should_stop, self.deadline, self.reason = should_stop, deadline, None
        self.first_at: float | None = None  # when the first token was there (the criteria run after every step)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        if self.first_at is None:
            self.first_at = time.perf_counter()
        if self.should_stop is not None and self.should_stop():
            self.reason = "stopped"
        elif self.deadline is not None and time.monotonic() > self.deadline:
            self.reason = "timeout"
        return torch.full((input_ids.shape[0],), self.reason is not None, dtype=torch.bool, device=input_ids.device)


@torch.no_grad()
def generate(backbone: Backbone, prompts: Sequence[Sequence[int]], max_new_tokens: int, settings: GenerationSettings,
             on_token: Callable[[int, torch.Tensor], None] | None = None, should_stop: Callable[[], bool] | None = None,
             started: float | None = None) -> list[Generated]:
    """Batched (left-padded) generation with per-sequence accounting. started: the perf_counter the
    first-token time counts from (a caller's stage that began before, e.g. with a merge)."""
    started = time.perf_counter() if started is None else started
    tok = backbone.tokenizer
    ids, mask = _pad(prompts, tok.pad_token_id, left=True, device=backbone.device)
    eos = backbone.eos_token_ids
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=settings.do_sample,
                              temperature=settings.temperature if settings.do_sample else None,
                              top_p=settings.top_p if settings.do_sample else None, top_k=None,
                              pad_token_id=tok.pad_token_id, eos_token_id=eos,
                              # ignore_eos: the end token is never chosen (generate fills an eos_token_id of None
                              # from the model's defaults and stops a row at it: fixed lengths were not fixed)
                              min_new_tokens=max_new_tokens if settings.ignore_eos else None)
    if settings.do_sample:
        torch.manual_seed(settings.seed)
    deadline = time.monotonic() + settings.timeout_s if settings.timeout_s else None
    stop = _StopWhen(should_stop, deadline)
    out = backbone.model.generate(
        input_ids=ids,
        attention_mask=mask,
        generation_config=config,
        streamer=_CallbackStreamer(on_token) if on_token else None,
        stopping_criteria=StoppingCriteriaList([stop]),
        logits_processor=LogitsProcessorList(
            [_AllowOnly(settings.allowed_tokens, backbone.model.config.vocab_size, backbone.device)]
            if settings.allowed_tokens
            else []
        ),
    )
    results = []
    for row, prompt in zip(out[:, ids.shape[1]:].tolist(), prompts):
        ended = None if settings.ignore_eos else next((i for i, t in enumerate(row) if t in eos), None)
        kept = row if ended is None else row[: ended + 1]
        reason = "eos" if ended is not None else (stop.reason or "length")
        results.append(finished(backbone, len(prompt), kept, reason, (stop.first_at or time.perf_counter()) - started))
    return results


def finished(backbone: Backbone, prompt_tokens: int, ids: list[int], reason: str, first_token_s: float) -> Generated:
    """A sequence's generation (`ids`: its new tokens, with the end token if it ended) and what it cost."""
    return Generated(text=backbone.tokenizer.decode(ids, skip_special_tokens=True).strip(), token_ids=ids,
                     prompt_tokens=prompt_tokens, generated_tokens=len(ids), stop_reason=reason,
                     kv_cache_bytes=backbone.kv_cache_bytes(prompt_tokens + len(ids)), first_token_s=first_token_s)
