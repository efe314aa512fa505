"""Statistics of the studies: mean ± std over seeds and paired differences with a t interval."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

__all__ = ["mean_std", "paired_difference"]


def mean_std(values: Sequence[float]) -> dict[str, float | int]:
    """Mean and sample standard deviation (ddof 1; NaN below two values) of the finite
    ``values``, with their count."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    return {"mean": float(x.mean()) if len(x) else math.nan,
            "std": float(x.std(ddof=1)) if len(x) > 1 else math.nan, "n": int(len(x))}


def paired_difference(treated: Sequence[float], baseline: Sequence[float],
                      confidence: float = 0.95) -> dict[str, float | int | bool]:
    """Mean of ``treated[i] - baseline[i]`` over paired runs (same seed) with a two-sided
    Student-t confidence interval: mean ± t_{n-1} sd / sqrt(n).

    ``exceeds_noise`` is True when the interval excludes 0, i.e. the difference is larger
    than the seed-to-seed variation of the pairs. Pairs with a non-finite side are dropped;
    with fewer than two pairs the interval is NaN.
    """
    a, b = np.asarray(treated, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired_difference needs two 1-D sequences of equal length, got "
                         f"{a.shape} and {b.shape}")
    d = (a - b)[np.isfinite(a) & np.isfinite(b)]
    n = len(d)
    mean = float(d.mean()) if n else math.nan
    if n < 2:
        return {"mean": mean, "std": math.nan, "n": n, "low": math.nan, "high": math.nan,
                "confidence": confidence, "exceeds_noise": False}
    sd = float(d.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "std": sd, "n": n, "low": mean - half, "high": mean + half,
            "confidence": confidence, "exceeds_noise": bool(mean - half > 0 or mean + half < 0)}
