"""Intervals of ratios of times, and the verdicts they support. No torch here.

Every ratio the harness states is a ratio of two sets of runs (seconds per call of a
block of calls each), with a percentile bootstrap interval (scipy.stats.bootstrap) of
the median, taken in log space so that it is never negative and a ratio and its
inverse get mirrored intervals:

- **paired**: the two were timed in the same interleaved rounds (a sweep's default
  algorithms at one device, d and batch; a contest; the solver A/B). Round r of one
  and round r of the other share that moment's load, so the statistic is the median of
  the per-round log ratios, resampled by round.
- **unpaired**: timed apart (two sweeps, two machines, two commits). Each side is
  resampled on its own and the statistic is the difference of the two medians of log
  times.

A verdict (faster, slower) is given only where the whole interval clears a stated
minimum effect; otherwise there is no clear difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
RESAMPLES = 2000
SEED = 0
MIN_EFFECT = 0.05  # a change smaller than 5% is not called a change
PAIRED = "paired"
UNPAIRED = "unpaired"


@dataclass(frozen=True)
class Ratio:
    """a / b: the median, its interval, how the two were timed, and over how many runs."""

    value: float
    low: float
    high: float
    how: str
    runs: int

    def show(self, digits: int = 3) -> str:
        return f"{self.value:.{digits}g} [{self.low:.{digits}g}, {self.high:.{digits}g}]"


def runs_of(text: object) -> list[float]:
    """The runs of a ``round_s`` cell (space-separated seconds per call); [] if none."""
    if not isinstance(text, str) or not text.strip():
        return []
    return [float(t) for t in text.split()]


def _interval(samples: tuple[np.ndarray, ...], statistic) -> tuple[float, float]:
    """The percentile bootstrap interval of ``statistic(*samples)``, each sample resampled
    on its own; a point where a sample has fewer than two runs, or none varies."""
    from scipy.stats import bootstrap

    if min(len(x) for x in samples) < 2 or all(np.ptp(x) == 0 for x in samples):
        value = float(statistic(*samples, axis=-1))
        return value, value
    result = bootstrap(
        samples,
        statistic,
        n_resamples=RESAMPLES,
        paired=False,
        vectorized=True,
        axis=-1,
        confidence_level=LEVEL,
        method="percentile",
        random_state=SEED,
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _median(x, axis):
    return np.median(x, axis=axis)


def _median_difference(x, y, axis):
    return np.median(x, axis=axis) - np.median(y, axis=axis)


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> Ratio:
    """a / b of runs timed in the same rounds (a[r] beside b[r]): the per-round log
    ratios, resampled by round."""
    n = min(len(a), len(b))
    if n == 0:
        return Ratio(np.nan, np.nan, np.nan, PAIRED, 0)
    logs = np.log(np.asarray(a[:n], float)) - np.log(np.asarray(b[:n], float))
    low, high = _interval((logs,), _median)
    return Ratio(float(np.exp(np.median(logs))), float(np.exp(low)), float(np.exp(high)), PAIRED, n)


def unpaired_ratio(a: Sequence[float], b: Sequence[float]) -> Ratio:
    """a / b of runs timed apart: each side's log times resampled on its own."""
    if not len(a) or not len(b):
        return Ratio(np.nan, np.nan, np.nan, UNPAIRED, 0)
    la, lb = np.log(np.asarray(a, float)), np.log(np.asarray(b, float))
    low, high = _interval((la, lb), _median_difference)
    d = float(np.median(la) - np.median(lb))
    return Ratio(float(np.exp(d)), float(np.exp(low)), float(np.exp(high)), UNPAIRED, min(len(a), len(b)))


def verdict(low: float, high: float, *, min_effect: float = 0.0, faster: str = "faster", slower: str = "slower") -> str:
    """For a ratio of times a / b: ``faster`` (a is) when the whole interval lies below
    1 / (1 + min_effect), ``slower`` above 1 + min_effect, else ``no clear difference``."""
    if high < 1 / (1 + min_effect):
        return faster
    if low > 1 + min_effect:
        return slower
    return "no clear difference"


# ---- over processes: two revisions timed in one run ---------------------------------

PROCESSES = "processes"
MIN_PROCESSES = 3  # fewer give no interval over processes worth a verdict


@dataclass(frozen=True)
class Trials:
    """b / a over trials (fresh processes), each the median of its paired rounds'
    log ratios: the mean of those medians, its t interval over processes (between- and
    within-process noise both in each process's median), and the two-sided p-value of
    "no change"."""

    value: float
    low: float
    high: float
    p: float
    processes: int
    rounds: int  # paired rounds in all

    def show(self, digits: int = 3) -> str:
        return f"{self.value:.{digits}g} [{self.low:.{digits}g}, {self.high:.{digits}g}]"


def over_processes(logs: Sequence[Sequence[float]], level: float = LEVEL) -> Trials:
    """``logs[p]``: process p's per-round log(b / a). Each process is one estimate (the
    median of its rounds); the interval is Student's t over those estimates, so a
    process-level offset (code layout, allocation, a busy neighbour for a while) widens
    it instead of passing for a change."""
    from scipy import stats

    medians = np.array([np.median(x) for x in logs if len(x)], float)
    rounds = sum(len(x) for x in logs)
    n = len(medians)
    if n == 0:
        return Trials(np.nan, np.nan, np.nan, np.nan, 0, 0)
    mean = float(medians.mean())
    if n < 2:
        return Trials(float(np.exp(mean)), np.nan, np.nan, np.nan, n, rounds)
    se = float(medians.std(ddof=1) / np.sqrt(n))
    if se == 0:
        return Trials(float(np.exp(mean)), float(np.exp(mean)), float(np.exp(mean)), 0.0 if mean else 1.0, n, rounds)
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * se
    p = float(2 * stats.t.sf(abs(mean) / se, n - 1))
    return Trials(float(np.exp(mean)), float(np.exp(mean - half)), float(np.exp(mean + half)), p, n, rounds)


def change_verdict(t: Trials, min_effect: float = MIN_EFFECT) -> str:
    """``slower`` (b is) when the interval clears 1 (a change) and the estimate clears the
    minimum effect (a change worth calling one); ``faster`` likewise below; ``too few
    processes`` under :data:`MIN_PROCESSES`; else ``no clear difference``."""
    if t.processes < MIN_PROCESSES or np.isnan(t.low):
        return "too few processes"
    if t.low > 1 and t.value > 1 + min_effect:
        return "slower"
    if t.high < 1 and t.value < 1 / (1 + min_effect):
        return "faster"
    return "no clear difference"


def holm(pvalues: Sequence[float], alpha: float = 1 - LEVEL) -> list[bool]:
    """Holm's step-down rule: which hypotheses are rejected at family-wise error
    ``alpha`` over all of them (NaN p-values are never rejected)."""
    p = np.asarray(pvalues, float)
    order = [i for i in np.argsort(p) if not np.isnan(p[i])]
    rejected = [False] * len(p)
    m = len(order)
    for rank, i in enumerate(order):
        if p[i] > alpha / (m - rank):
            break
        rejected[i] = True
    return rejected


# ---- measured apart: two folders, two asv commits -----------------------------------

MIN_SAMPLES = 3  # runs a side needs before its interval means anything
NOT_JUDGED = "not judged"


def apart_verdict(r: Ratio, drift: float | None, min_effect: float = MIN_EFFECT) -> str:
    """A verdict on a ratio of two runs measured apart, whose interval covers neither
    side's drift between runs: ``slower`` / ``faster`` only where the interval clears
    1 and the estimate clears both the minimum effect and ``drift``, the largest change
    (as a factor - 1) that A/A pairs of runs showed in 95% of configurations. Without
    a drift bound there is no verdict: compare --run measures both in one run."""
    if r.runs < MIN_SAMPLES or np.isnan(r.low):
        return "too few samples"
    if drift is None:
        return NOT_JUDGED
    bound = 1 + max(min_effect, drift)
    if r.low > 1 and r.value > bound:
        return "slower"
    if r.high < 1 and r.value < 1 / bound:
        return "faster"
    return "no clear difference"


# ---- what a rerun will show ---------------------------------------------------------

RERUN = "rerun"  # a paired interval widened into a prediction of a rerun's estimate


def for_rerun(r: Ratio, between: float, level: float = LEVEL) -> Ratio:
    """The interval a rerun's estimate of the same ratio falls in: this run's noise
    (its interval read as z standard errors), the rerun's (taken alike) and ``between``,
    the standard deviation in log space of the drift between runs beyond both, as two
    runs of one commit showed it (calibrated, not assumed)."""
    from scipy.stats import norm

    if r.runs < 2 or np.isnan(r.low) or r.value <= 0:
        return r
    z = float(norm.ppf(0.5 + level / 2))
    se = (np.log(r.high) - np.log(r.low)) / (2 * z)
    half = z * float(np.sqrt(2 * se**2 + between**2))
    return Ratio(r.value, float(r.value * np.exp(-half)), float(r.value * np.exp(half)), RERUN, r.runs)


def between_runs(first: Sequence[Ratio], second: Sequence[Ratio], target: float = LEVEL) -> float:
    """The smallest between-run spread with which :func:`for_rerun` of ``first`` covers
    ``second``'s estimates in ``target`` of the pairs (0 if their own noise does)."""
    pairs = [(a, b) for a, b in zip(first, second) if a.runs >= 2 and not np.isnan(a.low) and b.value > 0]
    if not pairs:
        return 0.0

    def covered(sd: float) -> float:
        return float(np.mean([(w := for_rerun(a, sd)).low <= b.value <= w.high for a, b in pairs]))

    low, high = 0.0, 2.0
    if covered(low) >= target:
        return 0.0
    for _ in range(40):
        mid = (low + high) / 2
        low, high = (low, mid) if covered(mid) >= target else (mid, high)
    return high
