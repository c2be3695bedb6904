"""When merging a perturbation into weight copies pays: a cost model measured on the model itself.

A single query can decode with its fused dW merged into per-request copies of the targeted
weights (`W + B A`: one write of every targeted weight, then plain matmuls) or on the low-rank
path (`W x + B (A x)`: nothing to write, two small matmuls more per linear per forward step).
Which is cheaper depends on how many steps follow: at Qwen3-0.6B's shape on a 2-core CPU the
merge writes 1.76 GB once (about half a second), which 32 answer tokens do not earn back, while
128 do. So both costs are measured once per (model, rank) on the model's own device and dtype,
on the model's own forward (a few of its one-token steps).
"""
from __future__ import annotations

import statistics
import time
import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class MergeCosts:
    """Seconds to merge every targeted weight once, and the low-rank path's extra seconds per step."""

    merge_s: float
    lowrank_step_s: float

    def merge_pays(self, steps: int) -> bool:
        """Whether merging costs less than `steps` forward steps on the low-rank path."""
        return self.merge_s < steps * self.lowrank_step_s


def add_low_rank(y: torch.Tensor, x: torch.Tensor, a_t: torch.Tensor, b_t: torch.Tensor) -> torch.Tensor:
    """y += (x A^T) B^T for factors shared by every row of x (a_t: (in, R), b_t: (R, out)), as two 2-D
    GEMMs with the add fused into the second, in place: y is the linear's fresh output, which its backward
    does not read (an out-of-place addmm first copies y, one more op per linear per step). A third of the
    broadcasting batched form's overhead on a 2-core CPU at SmolLM2's widths (13 vs 37 us per linear per
    decoding step). The low-rank path's op (`lora`) and what `measure` times."""
    y.view(-1, y.shape[-1]).addmm_(x.reshape(-1, x.shape[-1]) @ a_t, b_t)
    return y


_MEASURED: weakref.WeakKeyDictionary[nn.Module, dict[int, MergeCosts]] = weakref.WeakKeyDictionary()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn: Callable[[], object], device: torch.device) -> float:
    """One timed call (the device synchronised before and after)."""
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def fastest_seconds(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """The fastest of `repeats` timed calls (after one untimed call): the steady-state cost."""
    fn()
    return min(seconds(fn, device) for _ in range(repeats))


ROUNDS = 7  # paired plain / low-rank steps the low-rank cost is the median difference of


@torch.no_grad()
def measure(model: nn.Module, rank: int, applied: Callable[[bool], AbstractContextManager]) -> MergeCosts:
    """Both costs for perturbations of stacked rank `rank` on `model` (measured once, then cached).

    `applied(merge)` applies a perturbation of that rank merged or low rank, as a request does. The
    low-rank step is the median difference of one-token forwards of the whole model without and with it, in
    `ROUNDS` back-to-back pairs after a warm-up of each: timing the op alone missed the patched forwards' own
    overhead (SmolLM2 on 2 CPU cores: 7.8 ms per step from the op, 14 ms in the model), and the fastest of 3 of
    each, timed one after the other, read SmolLM2's 3.4 ms as 15 ms in a fresh process (the merge then chosen for
    4-token answers, at 65 ms each). The merge is timed as a request pays it (its factors stacked, the copies
    written into pooled buffers, the patches installed)."""
    per_model = _MEASURED.setdefault(model, {})
    if rank in per_model:
        return per_model[rank]
    device = next(model.parameters()).device
    token = torch.zeros(1, 1, dtype=torch.long, device=device)

    def step() -> None:
        model(input_ids=token, use_cache=False)

    def merge() -> None:
        with applied(True):
            pass

    extra = []
    for i in range(ROUNDS + 1):
        plain = seconds(step, device)
        with applied(False):
            lowrank = seconds(step, device)
        if i:  # the first pair warms both up
            extra.append(lowrank - plain)
    # a noisy machine can time the low-rank step below the plain one: never call it free
    costs = MergeCosts(fastest_seconds(merge, device, 2), max(statistics.median(extra), 1e-6))
    per_model[rank] = costs
    return costs
