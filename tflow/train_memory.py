"""What training a generator against a frozen receiver needs in memory: a rough estimate to
refuse, before the first step, a configuration that cannot fit (with the numbers), and the
peak actually used, to print beside it.

The estimate counts the receiver's weights (and the senders' own backbone's, when they have
one), the generator's weights + gradients + AdamW
state, the receiver's saved activations (per token and layer: the inputs of every targeted
linear, whose LoRA factors need them for their gradients, norms, attention and MLP
intermediates; with gradient checkpointing only each layer's input plus one layer's worth),
the logits in fp32 with their gradient, and the generator's activations over its
parameter tokens. It is an order of magnitude, not an allocator model.
"""
from __future__ import annotations

import os
import resource
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from .agents import Backbone
from .generators import Generator


def gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


@dataclass
class MemoryEstimate:
    weights: int
    generator: int
    activations: int
    logits: int
    generator_activations: int
    sender_weights: int = 0  # the senders' own backbone, when it is not the receiver
    runtime: int = 0  # CPU: the process's resident memory beyond the weights (interpreter, libraries), measured
    peak_so_far: int = 0  # CPU: the process's peak resident set before training (loading may pass the steps' peak)

    @property
    def to_allocate(self) -> int:
        """What training adds to the backbones, which are already loaded."""
        return self.generator + self.activations + self.logits + self.generator_activations

    @property
    def total(self) -> int:
        steps = self.weights + self.sender_weights + self.runtime + self.to_allocate
        return max(steps, self.peak_so_far)

    def describe(self) -> str:
        senders = f"sender backbone weights {gib(self.sender_weights)}, " if self.sender_weights else ""
        return (f"~{gib(self.total)} (receiver weights {gib(self.weights)}, {senders}generator + AdamW {gib(self.generator)}, "
                f"receiver activations {gib(self.activations)}, logits {gib(self.logits)}, "
                + (f"process runtime {gib(self.runtime)}, " if self.runtime else "")
                + f"generator activations {gib(self.generator_activations)})")


def _nbytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def resident_bytes() -> int:
    """The process's resident memory now (Linux /proc; 0 where it cannot be read)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def estimate(backbone: Backbone, gen: Generator, batch: int, seq_len: int, checkpointing: bool, senders: int = 2,
             sender_backbone: Backbone | None = None, logit_tokens: int | None = None) -> MemoryEstimate:
    """For `batch` receiver sequences of `seq_len` tokens and their `senders` conditions each
    (sender_backbone: the senders' own model, when it is not the receiver; logit_tokens: the positions the
    LM head runs on, default every token). On CPU the peak is the process's resident set, so what the
    process holds besides the weights is measured and counted."""
    cfg = backbone.model.config
    b = backbone.dtype.itemsize
    hidden, layers, inter = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size
    head_dim = getattr(cfg, "head_dim", None) or hidden // cfg.num_attention_heads
    q_dim, kv_dim = cfg.num_attention_heads * head_dim, (cfg.num_key_value_heads or cfg.num_attention_heads) * head_dim
    per_layer = b * (4 * hidden + 4 * q_dim + 2 * kv_dim + 4 * inter)  # per token
    tokens = batch * seq_len
    acts = tokens * (b * hidden * layers + per_layer) if checkpointing else tokens * per_layer * layers
    gen_bytes = _nbytes(gen)
    c = gen.config
    gen_tokens = batch * senders * gen.param_tokens
    mlp = getattr(c, "mlp_ratio", None) or getattr(c, "ffn_ratio", 4)  # grid / release
    # per parameter token and block: 5 norms, q/k/v/out of 3 attentions, the MLP's hidden
    per_gen_token = next(gen.parameters()).element_size() * c.d_model * c.n_blocks * (19 + 2 * mlp)
    weights = _nbytes(backbone.model)
    # weights + gradients + AdamW's two moments, all in the generator's dtype
    own = sender_backbone is not None and sender_backbone is not backbone
    sender_weights = _nbytes(sender_backbone.model) if own else 0
    logits = (tokens if logit_tokens is None else logit_tokens) * cfg.vocab_size * (4 * 2 + b)
    runtime = peak = 0
    if backbone.device.type == "cpu":
        runtime, peak = max(0, resident_bytes() - weights - sender_weights - gen_bytes), peak_bytes(backbone.device)
    return MemoryEstimate(weights, 4 * gen_bytes, acts, logits, gen_tokens * per_gen_token, sender_weights, runtime, peak)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_bytes(device: torch.device) -> int:
    """Peak memory so far: allocated on the CUDA device, else the process's peak resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024
