"""Statistics of measured outputs and times: a solver's deviation from the reference,
and the paired ratio intervals of A/B timing (harness.intervals)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..intervals import paired_ratio, verdict

__all__ = ["ratio_interval", "relative_deviation", "verdict"]


def relative_deviation(out: torch.Tensor, reference: torch.Tensor) -> float:
    """max |out - reference| / (1 + |reference|): a solver's deviation from the reference
    solver, relative where values are large (a flat map turns a residual within tolerance
    into an x error that grows with |x|)."""
    return float(((out - reference).abs() / (1 + reference.abs())).max())


def ratio_interval(a: Sequence[float], b: Sequence[float], **_: object) -> tuple[float, float, float]:
    """Median over rounds of a[r] / b[r] with a 95% bootstrap interval, in log space
    (a and b timed in the same alternating rounds). Returns (median, low, high)."""
    r = paired_ratio(a, b)
    return r.value, r.low, r.high
