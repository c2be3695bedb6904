"""Summary statistics shared by the evaluation and benchmark tools."""
from __future__ import annotations

import math


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
