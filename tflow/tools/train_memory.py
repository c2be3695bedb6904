"""What training a generator against a frozen receiver needs in memory: an estimate to
refuse, before the first step, a configuration that cannot fit (with the numbers), and the
peak actually used, to print beside it.

Measured first (`probe`): one forward + backward at batch 1 and at batch 2, and the peak after
each; the peak at the training batch is extrapolated along the line through those two, with
the analytic activations below as the abscissa. On CPU the peak is the process's resident set,
which an analytic count cannot reach: freed temporaries stay resident in the allocator's
arenas, and the first step maps libraries' scratch memory (measured on SmolLM2-135M: batch 8
grew the resident set by 1.67 GiB where its saved activations were 0.68 GiB).

The estimate counts the receiver's weights (and the senders' own backbone's, when they have
one), the generator's weights + gradients + AdamW
state, the receiver's saved activations (per token and layer: the inputs of every targeted
linear, whose LoRA factors need them for their gradients, norms, attention and MLP
intermediates; with gradient checkpointing only each layer's input plus one layer's worth),
the logits in fp32 with their gradient, and the generator's activations over its
parameter tokens. It is an order of magnitude, not an allocator model.
"""
from __future__ import annotations

import contextlib
import os
import re
import resource
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..agents import Backbone
from ..generators import Generator


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
    probed: Probe | None = None  # measured small-batch peaks (then `total` is their extrapolation)

    @property
    def activation_bytes(self) -> int:
        return self.activations + self.logits + self.generator_activations

    @property
    def to_allocate(self) -> int:
        """What training adds to the backbones, which are already loaded."""
        return self.generator + self.activations + self.logits + self.generator_activations

    @property
    def total(self) -> int:
        if self.probed is not None:
            return (
                self.probed.extrapolate(self.activation_bytes) + self.generator // 2
            )  # + AdamW's moments, not allocated yet
        steps = self.weights + self.sender_weights + self.runtime + self.to_allocate
        return max(steps, self.peak_so_far)

    def describe(self) -> str:
        senders = f"sender backbone weights {gib(self.sender_weights)}, " if self.sender_weights else ""
        probed = f"; {self.probed.describe()}" if self.probed is not None else ""
        return (
            f"~{gib(self.total)}{probed} (analytic: receiver weights {gib(self.weights)}, {senders}generator + AdamW "
            f"{gib(self.generator)}, receiver activations {gib(self.activations)}, logits {gib(self.logits)}, "
            + (f"process runtime {gib(self.runtime)}, " if self.runtime else "")
            + f"generator activations {gib(self.generator_activations)})"
        )


@dataclass(frozen=True)
class Probe:
    """Peak memory after one forward + backward at two small batch sizes, with their analytic activations."""

    sizes: tuple[int, int]
    peaks: tuple[int, int]
    activations: tuple[int, int]

    def extrapolate(self, activations: int) -> int:
        """The peak at a batch whose analytic activations are `activations` (linear through the two probes)."""
        (p1, p2), (a1, a2) = self.peaks, self.activations
        slope = max(0.0, (p2 - p1) / (a2 - a1)) if a2 > a1 else 0.0
        return int(max(p2, p2 + slope * (activations - a2)))

    def describe(self) -> str:
        return (
            "measured " + ", ".join(f"batch {n}: {gib(p)}" for n, p in zip(self.sizes, self.peaks)) + ", extrapolated"
        )


def probe(step: Callable[[int], None], activations: Callable[[int], int], device: torch.device,
          sizes: tuple[int, int] = (1, 2)) -> Probe:
    """Run `step(n)` (one forward + backward on n examples) at each size and read the peak after it;
    `activations(n)`: the analytic activation bytes at batch n."""
    peaks: dict[int, int] = {}
    for n in sizes:
        if n not in peaks:  # a batch of 1 probes once
            reset_peak(device)
            step(n)
            peaks[n] = peak_bytes(device)
    return Probe(sizes, (peaks[sizes[0]], peaks[sizes[1]]), (activations(sizes[0]), activations(sizes[1])))


def _nbytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def in_use_bytes(device: torch.device) -> int:
    """What the process holds now on `device`, in the units of `peak_bytes`: allocated on CUDA, else resident."""
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else resident_bytes()


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
    shared = {p.data_ptr() for p in backbone.model.parameters()}  # an adapter's senders share the receiver's weights
    sender_weights = (
        sum(p.numel() * p.element_size() for p in sender_backbone.model.parameters() if p.data_ptr() not in shared)
        if own
        else 0
    )
    logits = (tokens if logit_tokens is None else logit_tokens) * cfg.vocab_size * (4 * 2 + b)
    runtime = peak = 0
    if backbone.device.type == "cpu":
        runtime, peak = max(0, resident_bytes() - weights - sender_weights - gen_bytes), peak_bytes(backbone.device)
    return MemoryEstimate(
        weights, 4 * gen_bytes, acts, logits, gen_tokens * per_gen_token, sender_weights, runtime, peak
    )


def reset_peak(device: torch.device) -> None:
    """Start measuring the peak afresh: CUDA's allocator statistics; on Linux the process's
    resident high-water mark (`/proc/self/clear_refs`), elsewhere nothing (the peak then counts from start)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_bytes(device: torch.device) -> int:
    """Peak memory since `reset_peak`: allocated on the CUDA device, else the process's peak resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    try:
        return int(re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024
    except (OSError, AttributeError):
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss if sys.platform == "darwin" else rss * 1024
