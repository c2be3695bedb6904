"""Summary statistics shared by the evaluation and benchmark tools."""
from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least a fraction q of the sample at or
    below it. For q >= 0.5 it lies between the median and the maximum for any sample size
    (an index of int(q * (n - 1)) put the 'p90' of two queries below their median)."""
    if not values:
        raise ValueError("percentile of an empty sample")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def wilson(k: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k / n (sound at 0 and n, unlike the normal approximation)."""
    from scipy.stats import binomtest  # scipy comes with umap-learn

    if n == 0:
        return 0.0, 1.0
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def paired(a: Sequence[bool], b: Sequence[bool], resamples: int = 10_000, seed: int = 0) -> dict:
    """Mode A against mode B on the same items: the accuracy difference A - B with its paired 95% bootstrap interval
    (items resampled together, percentile method) and McNemar's exact test on the discordant items (A right and B
    wrong, and the reverse: a two-sided binomial test of those counts at 1/2)."""
    import numpy as np
    from scipy.stats import binomtest, bootstrap

    if len(a) != len(b) or not a:
        raise ValueError(f"paired comparison needs the same items on both sides, got {len(a)} and {len(b)}")
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    only_a, only_b = int(((x == 1) & (y == 0)).sum()), int(((x == 0) & (y == 1)).sum())
    diff = float(x.mean() - y.mean())
    if only_a + only_b == 0:  # every item scored alike: no resample can differ
        low = high = diff
    else:
        ci = bootstrap((x, y), lambda u, v, axis=-1: u.mean(axis=axis) - v.mean(axis=axis), paired=True,
                       vectorized=True, n_resamples=resamples, method="percentile",
                       rng=np.random.default_rng(seed)).confidence_interval
        low, high = float(ci.low), float(ci.high)
    p = binomtest(only_a, only_a + only_b).pvalue if only_a + only_b else 1.0
    return {"difference": diff, "difference_ci95": [low, high], "a_only": only_a, "b_only": only_b,
            "mcnemar_p": float(p), "n": len(a)}
