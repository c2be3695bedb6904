"""Which dtype decodes faster on this CPU, fp32 or bf16: a probe measured at the model's own shapes.

Decoding one token reads every weight once (a row vector through each matrix), so it is bound by memory
bandwidth, and bf16 halves the bytes. Whether that pays depends on the CPU: with native bf16 instructions
(AVX512-BF16, AMX) PyTorch's kernels read bf16 directly; without them (many AVX2 machines) they convert and run
slower than fp32. So both are timed on this machine, at start, on one decoding step's matrix products, with more
weight bytes than a CPU's caches hold (a probe that fits in cache measures arithmetic, not memory).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .merge_cost import fastest_seconds

MARGIN = 1.15  # bf16 must be this much faster: it rounds every weight, so a near tie keeps fp32's exact answers
PROBE_BYTES = 256 * 2**20  # fp32 bytes of weights the probe streams through (more than any CPU's last-level cache)


@dataclass(frozen=True)
class DtypeChoice:
    """The dtype chosen, the seconds of one probe step in each, and why, in words (the Studio's header)."""

    dtype: torch.dtype
    fp32_s: float
    bf16_s: float

    @property
    def why(self) -> str:
        speed = self.fp32_s / self.bf16_s
        if self.dtype == torch.bfloat16:
            return f"bf16: a decoding step's matrix products ran {speed:.2f}x as fast as in fp32 on this CPU"
        return (f"fp32: bf16 ran {speed:.2f}x as fast as fp32 on this CPU, under the {MARGIN:.2f}x that would pay for "
                "its rounding")


def _weights(shapes: Sequence[tuple[int, int]], dtype: torch.dtype, budget: int) -> list[torch.Tensor]:
    """The shapes repeated (like a model's layers) until their fp32 bytes reach `budget`."""
    out, total = [], 0
    while total < budget:
        for rows, cols in shapes:
            out.append(torch.randn(rows, cols).to(dtype))
            total += rows * cols * 4
    return out


def _step_seconds(weights: list[torch.Tensor], repeats: int) -> float:
    """The fastest of `repeats` passes of a row through every weight (after an untimed one that pages them in)."""
    x = {w.shape[1]: torch.randn(1, w.shape[1]).to(w.dtype) for w in weights}
    return fastest_seconds(lambda: [x[w.shape[1]] @ w.T for w in weights], weights[0].device, repeats)


def probe(shapes: Sequence[tuple[int, int]], repeats: int = 3, budget: int = PROBE_BYTES) -> DtypeChoice:
    """Time one decoding step's products (a row through weights of `shapes`, (out, in) like nn.Linear's, repeated
    to `budget` fp32 bytes) in fp32 and in bf16, the fastest of `repeats`; bf16 when it is at least MARGIN faster."""
    if not shapes:
        raise ValueError("the probe needs at least one weight shape")
    with torch.inference_mode():
        fp32 = _step_seconds(_weights(shapes, torch.float32, budget), repeats)
        bf16 = _step_seconds(_weights(shapes, torch.bfloat16, budget), repeats)
    return DtypeChoice(torch.bfloat16 if fp32 >= MARGIN * bf16 else torch.float32, fp32, bf16)


def model_shapes(config) -> list[tuple[int, int]]:
    """The (out, in) shapes of one decoder layer's linears from a transformers config (Llama, Qwen, Mistral layout)."""
    hidden = config.hidden_size
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    inter = config.intermediate_size
    return [(heads * head_dim, hidden), (kv * head_dim, hidden), (kv * head_dim, hidden), (hidden, heads * head_dim),
            (inter, hidden), (inter, hidden), (hidden, inter)]
