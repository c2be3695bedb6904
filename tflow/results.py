"""What a run returns: the answer, every agent's usage (tokens processed, KV cache, the backbone it ran on), the
timings by stage, and for TFlow the perturbation and the senders' states. `RunResult.paper_tokens` is the paper's
accounting beside the full one."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import lora


@dataclass
class AgentUsage:
    prompt_tokens: int = 0
    generated_tokens: int = 0
    kv_cache_bytes: int = 0  # the agent's KV cache at the end of its turn (TFlow's senders keep none)
    parameters: int = 0  # of the backbone the agent runs on
    backbone: str = ""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.generated_tokens


@dataclass
class Usage:
    """Tokens processed per agent (role name -> usage)."""

    by_agent: dict[str, AgentUsage] = field(default_factory=dict)

    @property
    def kv_cache_bytes(self) -> int:
        return sum(u.kv_cache_bytes for u in self.by_agent.values())

    @property
    def prompt_tokens(self) -> int:
        return sum(u.prompt_tokens for u in self.by_agent.values())

    @property
    def generated_tokens(self) -> int:
        return sum(u.generated_tokens for u in self.by_agent.values())

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.generated_tokens


@dataclass
class SenderStates:
    """A sender's hidden states over the question tokens, for visualisation."""

    role: str
    tokens: list[str]
    hidden: torch.Tensor  # (L+1, T, hidden), then the read-out slice when `readout`
    readout: bool = False  # the last slice is the sender's read-out (agents.sender_states), not a layer


@dataclass
class RunResult:
    mode: str
    question: str
    answer: str
    usage: Usage
    timings: dict[str, float]  # seconds: sender_pass, generator, receiver, total (per query)
    kv_cache_bytes: int  # the receiver's KV cache at the end of generation
    stop_reason: str
    receiver_prompt_tokens: int
    messages: dict[str, str] = field(default_factory=dict)  # textmas: role -> message
    perturbation: lora.Perturbation | None = None  # tflow / static
    sender_states: list[SenderStates] | None = None  # tflow
    batch_size: int = 1
    answer_ids: list[int] = field(
        default_factory=list
    )  # the receiver's generated token ids (with the end token, if it ended)
    receiver_first_token_s: float = 0.0  # of the receiver stage: applying the perturbation + prefill (the batch's)
    engine: str = "hf"  # what generated the text (tflow.engines)
    receiver_merged: bool | None = None  # the receiver decoded on merged weights (None: no perturbation, or vLLM)

    @property
    def paper_tokens(self) -> int:
        """Tokens as the paper's release counts them, to set beside its Table 1: for TFlow only the
        receiver's prompt and completion (the senders' prefill is not counted); for every other
        mode every agent's, as in `usage.total_tokens` (ours, the default, counts TFlow's senders too)."""
        if self.mode != "tflow":
            return self.usage.total_tokens
        return self.receiver_prompt_tokens + self.usage.generated_tokens  # TFlow's senders generate nothing
