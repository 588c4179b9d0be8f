"""Intervals for A/B comparisons: per-round ratios, their median and a bootstrap interval."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def relative_deviation(out: torch.Tensor, reference: torch.Tensor) -> float:
    """max |out - reference| / (1 + |reference|): a solver's deviation from the reference
    solver, relative where values are large (a flat map turns a residual within tolerance
    into an x error that grows with |x|)."""
    return float(((out - reference).abs() / (1 + reference.abs())).max())


def ratio_interval(
    a: Sequence[float], b: Sequence[float], *, level: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Median over rounds of a[r] / b[r], with a percentile-bootstrap interval of that median.

    a and b are timed in the same rounds (alternating), so each round's ratio shares its
    drift; the interval is over rounds. Returns (median, low, high).
    """
    ratios = np.asarray(a, float) / np.asarray(b, float)
    if len(ratios) == 0:
        return np.nan, np.nan, np.nan
    rng = np.random.default_rng(seed)
    boot = np.median(rng.choice(ratios, size=(resamples, len(ratios)), replace=True), axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(boot, [tail, 1 - tail])
    return float(np.median(ratios)), float(low), float(high)


def verdict(low: float, high: float, *, faster: str = "faster", slower: str = "slower") -> str:
    """For a ratio of times a / b: ``faster`` (a is) when the interval lies below 1,
    ``slower`` above it, else ``no clear difference``."""
    if high < 1:
        return faster
    if low > 1:
        return slower
    return "no clear difference"
