"""Decoding protocols: `greedy` (the default: reproducible, the CPU world's) and `paper` (the paper's evaluation:
Qwen3's thinking mode where the chat template has it, sampling at temperature 0.6 / top-p 0.95, the receiver's
budget per benchmark (2048 tokens; MMLU-Redux 1024; other tasks 2048), the senders' TextMAS messages up to 1024
tokens, a seed per query). Reports and the Studio's header say which protocol ran.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from .. import tasks
from ..agents import Backbone, GenerationSettings
from ..tasks.benchmarks import BENCHMARKS


@dataclass(frozen=True)
class Protocol:
    name: str
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    thinking: bool = False  # the chat template's thinking mode, where it has one
    answer_tokens: int | None = None  # the receiver's budget (None: the task's own)
    message_tokens: int | None = None  # each TextMAS sender's budget (None: the task's own)

    def budgets(self, task: str) -> tuple[int, int]:
        """(receiver answer, sender message) token budgets of `task` under this protocol."""
        answer, message = tasks.budgets(task)
        if self.answer_tokens is not None:
            answer = max(BENCHMARKS[t].answer_tokens if t in BENCHMARKS else self.answer_tokens
                         for t in tasks.parts(task))
        return answer, self.message_tokens or message

    def settings(self, task: str, seed: int = 0) -> GenerationSettings:
        """The generation settings of one query (or batch) of `task`; `seed` fixes its sampling."""
        answer, message = self.budgets(task)
        return GenerationSettings(max_new_tokens=answer, sender_max_new_tokens=message, do_sample=self.do_sample,
                                  temperature=self.temperature, top_p=self.top_p, seed=seed)

    def apply(self, *backbones: Backbone) -> dict:
        """Set the thinking mode on the backbones' chat templates; what ran, for the report."""
        thinking = []
        for bb in backbones:
            on = self.thinking and bb.has_thinking
            bb.chat_template_kwargs = {**(bb.chat_template_kwargs or {}), "enable_thinking": on}
            thinking.append(on)
        return {**asdict(self), "thinking_applied": any(thinking),
                "plain_prompts": any(bb.plain_prompts for bb in backbones)}


PROTOCOLS = {
    "greedy": Protocol("greedy"),
    "paper": Protocol("paper", do_sample=True, temperature=0.6, top_p=0.95, thinking=True, answer_tokens=2048,
                      message_tokens=1024),
}


def get(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}: choose one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]
