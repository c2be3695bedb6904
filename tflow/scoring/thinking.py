"""Thinking output (`<think>...</think>`, Qwen3's thinking mode): split off before an answer is scored.

An unclosed `<think>` (the token budget ran out while thinking) leaves no answer: everything is thinking.
"""
from __future__ import annotations

import re

_BLOCK = re.compile(r"<think>(.*?)</think>", re.S)


def split_thinking(text: str) -> tuple[str, str]:
    """(thinking, answer): the text of every thinking block, and what is left once they are removed."""
    thoughts = _BLOCK.findall(text)
    answer = _BLOCK.sub("", text)
    if "<think>" in answer:  # never closed: the rest is thinking
        answer, _, tail = answer.partition("<think>")
        thoughts.append(tail)
    # a template that opens the block itself leaves a lone closing tag in the completion
    if "</think>" in answer:
        head, _, answer = answer.rpartition("</think>")
        thoughts.insert(0, head)
    return "\n".join(t.strip() for t in thoughts), answer.lstrip("\n").rstrip()  # code keeps its indentation


def strip_thinking(text: str) -> str:
    """The answer part of a completion (thinking removed)."""
    return split_thinking(text)[1]
