"""The learning-rate schedule the training tools share (generators, static adapters, specialists, pretraining)."""
from __future__ import annotations

import math


def cosine_lr(step: int, total: int, warmup: int, peak: float, floor: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to `floor * peak` at the last step (decaying all the
    way mattered: the prototype gained most of its split accuracy in the final steps)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))
