"""A KV cache of the senders' role prefixes (system prompt + chat header), computed once.

Every sender prompt opens with its role's fixed text. Under causal attention the keys and
values at those positions depend on nothing that follows, so the sender pass computes them
once per distinct prefix and then runs only the rest of each prompt on top of them (the
prefix caching of vLLM / SGLang). Written by hand because Hugging Face's caches hold one
prefix for a whole batch, while a batch of senders holds one prefix per role, each of its
own length: here they are left-padded to a common length and masked.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache

from .lru import LRUCache

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values (1, kv_heads, P, head_dim)


class PrefixCache(LRUCache[tuple[int, ...], KV]):
    """LRU map: prefix token ids -> their per-layer keys and values."""

    def __init__(self, capacity: int = 32):
        super().__init__(capacity)

    def fetch(self, decoder: nn.Module, ids: tuple[int, ...]) -> tuple[KV, bool]:
        """The prefix's keys and values, and whether they had to be computed now."""
        kv = self.get(ids)
        if kv is not None:
            return kv, False
        out = decoder(input_ids=torch.tensor([ids], device=next(decoder.parameters()).device), use_cache=True)
        kv = [(layer.keys, layer.values) for layer in out.cache.layers]
        self.put(ids, kv)
        return kv, True

    def batch(
        self, decoder: nn.Module, prefixes: Sequence[tuple[int, ...]]
    ) -> tuple[DynamicCache, torch.Tensor, list[bool]]:
        """A fresh cache holding every row's (non-empty) prefix, left-padded to the longest,
        its attention mask (batch, longest), and per row whether its prefix was computed now
        (a prefix shared by several rows counts once)."""
        width = max(len(p) for p in prefixes)
        distinct = {p: self.fetch(decoder, p) for p in dict.fromkeys(prefixes)}  # each prefix fetched once per batch
        first = {p: prefixes.index(p) for p in distinct}
        computed = [distinct[p][1] and first[p] == i for i, p in enumerate(prefixes)]
        cache = left_padded([distinct[p][0] for p in prefixes], width, getattr(decoder, "config", None))
        mask = torch.zeros((len(prefixes), width), dtype=torch.long, device=cache.layers[0].keys.device)
        for i, p in enumerate(prefixes):
            mask[i, width - len(p):] = 1
        return cache, mask, computed


def left_padded(rows: Sequence[KV], width: int, config: object | None = None) -> DynamicCache:
    """One cache holding every row's keys and values (per layer (1, kv_heads, n, head_dim), n <= width), each row
    right-aligned in `width` positions: the layout of left-padded prompts (the padding masked by their mask)."""
    layers = [
        tuple(torch.cat([F.pad(kv[layer][j], (0, 0, width - kv[layer][j].shape[2], 0)) for kv in rows]) for j in (0, 1))
        for layer in range(len(rows[0]))
    ]
    return DynamicCache(ddp_cache_data=layers, config=config)
