"""What each sender would say next at the positions the generator reads: its output head on its last layer's states.

The read-out slice a generator may read (`agents.sender_states(readout=True)`) is the expectation of the input
embedding under exactly this distribution; these are its most likely tokens, for a person to read. The last
layer's states the senders keep (`SenderStates.hidden`) are already normalised (a decoder's final norm), so the
head applies to them directly, and the tokens are the same whether or not the generator reads the read-out.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..agents import Backbone
from ..results import SenderStates


@dataclass(frozen=True)
class NextTokens:
    """One position: the token read there and the sender's k most likely next tokens with their probabilities."""

    role: str
    position: int
    token: str
    top: tuple[tuple[str, float], ...]


@torch.no_grad()
def next_tokens(backbone: Backbone, states: Sequence[SenderStates], k: int = 3) -> list[NextTokens]:
    """Every sender's top-k next tokens at every position it was read at (`backbone`: the senders' backbone)."""
    head = backbone.model.get_output_embeddings()
    weight = head.weight
    out = []
    for s in states:
        last = s.hidden[-2 if s.readout else -1].to(weight.device, weight.dtype)  # (T, hidden)
        probs = torch.softmax(head(last).float(), dim=-1)
        p, ids = probs.topk(k, dim=-1)
        for pos, tok in enumerate(s.tokens):
            words = backbone.tokenizer.convert_ids_to_tokens(ids[pos].tolist())
            out.append(NextTokens(s.role, pos, tok, tuple(zip(words, p[pos].tolist()))))
    return out
