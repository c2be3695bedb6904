"""When merging a perturbation into weight copies pays: a cost model measured on the model itself.

A single query can decode with its fused dW merged into per-request copies of the targeted
weights (`W + B A`: one write of every targeted weight, then plain matmuls) or on the low-rank
path (`W x + B (A x)`: nothing to write, two small matmuls more per linear per forward step).
Which is cheaper depends on how many steps follow: at Qwen3-0.6B's shape on a 2-core CPU the
merge writes 1.76 GB once (about half a second), which 32 answer tokens do not earn back, while
128 do. So both costs are measured once per (model, rank) on the model's own device and dtype,
on one layer's linears (a few milliseconds), and scaled to every layer.
"""
from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:  # lora imports this module
    from .lora import TargetSpec


@dataclass(frozen=True)
class MergeCosts:
    """Seconds to merge every targeted weight once, and the low-rank path's extra seconds per step."""

    merge_s: float
    lowrank_step_s: float

    def merge_pays(self, steps: int) -> bool:
        """Whether merging costs less than `steps` forward steps on the low-rank path."""
        return self.merge_s < steps * self.lowrank_step_s


def add_low_rank(y: torch.Tensor, x: torch.Tensor, a_t: torch.Tensor, b_t: torch.Tensor) -> torch.Tensor:
    """y + (x A^T) B^T for factors shared by every row of x (a_t: (in, R), b_t: (R, out)), as two 2-D
    GEMMs with the add fused into the second: a third of the broadcasting batched form's overhead on
    a 2-core CPU at SmolLM2's widths (13 vs 37 us per linear per decoding step). The low-rank path's op
    (`lora`) and what `measure` times."""
    return torch.addmm(y.reshape(-1, y.shape[-1]), x.reshape(-1, x.shape[-1]) @ a_t, b_t).view(y.shape)


_MEASURED: weakref.WeakKeyDictionary[nn.Module, dict[int, MergeCosts]] = weakref.WeakKeyDictionary()


def _fastest(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """The fastest of `repeats` timed calls (after one untimed call): the steady-state cost."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    fn()
    best = float("inf")
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


@torch.no_grad()
def measure(model: nn.Module, spec: "TargetSpec", rank: int) -> MergeCosts:
    """Both costs for perturbations of stacked rank `rank` on `model` (measured once, then cached)."""
    per_model = _MEASURED.setdefault(model, {})
    if rank in per_model:
        return per_model[rank]
    merge_s = lowrank_s = 0.0
    layer0 = [mod for layer, _, mod in spec.linears(model) if layer == 0]
    for mod in layer0:
        w = mod.weight
        out_f, in_f = w.shape
        a = torch.randn(rank, in_f, device=w.device, dtype=w.dtype) * 0.01
        b = torch.randn(out_f, rank, device=w.device, dtype=w.dtype) * 0.01
        copy = torch.empty_like(w)  # merges write into pooled, already-mapped buffers (lora._BufferPool)
        merge_s += _fastest(lambda: torch.addmm(w, b, a, out=copy), w.device, 3)
        x = torch.randn(1, 1, in_f, device=w.device, dtype=w.dtype)
        y = F.linear(x, w)
        a_t, b_t = a.t().contiguous(), b.t().contiguous()
        lowrank_s += _fastest(lambda: add_low_rank(y, x, a_t, b_t), w.device, 5)
    costs = MergeCosts(merge_s * spec.num_layers, lowrank_s * spec.num_layers)
    per_model[rank] = costs
    return costs
