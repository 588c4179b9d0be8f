"""The fits' numbers with their uncertainty: means over seeds, and paired comparisons of
two flows on the same test points (each fit's per-point NLLs, ``nll/``).

A flow is called the best on a data set only where its paired difference to the
runner-up is clear: per seed, the mean over the test points of runner-up NLL - best
NLL (both fits of that seed saw the same points); over the seeds, a t interval of the
mean of those differences (a normal interval from the points' standard error with one
seed). Otherwise the two are a tie.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..table import OK, Col

LEVEL = 0.95


@dataclass(frozen=True)
class Paired:
    """runner-up - best over the seeds both fitted: the mean difference and its interval."""

    best: str
    runner_up: str
    diff: float
    low: float
    high: float
    seeds: int
    how: str  # "paired" on the same points, or "unpaired" (no per-point NLLs kept)

    @property
    def clear(self) -> bool:
        """A verdict needs the spread over trainings: two seeds or more, the interval above 0."""
        return self.seeds >= 2 and self.low > 0

    @property
    def covers(self) -> str:
        """What the interval is over."""
        if self.seeds >= 2:
            return f"t interval over {self.seeds} seeds"
        return "normal interval over the test points of one seed's fits: the spread over seeds unknown"


def done(df: pd.DataFrame) -> pd.DataFrame:
    return df[df[Col.STATUS] == OK]


DIVERGED = 10.0  # a test NLL this many times |N(0, I)'s| past N(0, I)'s: the training diverged


def diverged(nll: pd.Series, baseline: pd.Series) -> pd.Series:
    """Seeds whose test NLL is not finite or lies far past the standard normal's
    (:data:`DIVERGED`): a training that blew up, flagged and kept out of the summaries."""
    return ~np.isfinite(nll) | (nll > baseline + DIVERGED * baseline.abs().clip(lower=1.0))


def over_seeds(df: pd.DataFrame) -> pd.DataFrame:
    """Per data set and model: seeds, the median, min and max of the test NLL over the
    seeds that did not diverge (mean and sd too), the diverged seeds' values, the mean of
    the fits' standard errors, the same for the paired gap, and any flag raised."""
    rows = []
    for (data, model), every in done(df).groupby([Col.DATA, Col.MODEL], sort=False):
        blown = diverged(every[Col.TEST_NLL].astype(float), every[Col.BASELINE_NLL].astype(float))
        g = every[~blown] if (~blown).any() else every
        nll = g[Col.TEST_NLL].astype(float)
        gap = g[Col.GAP].astype(float) if Col.GAP in g else pd.Series(dtype=float)
        rows.append(
            {
                Col.DATA: data,
                Col.MODEL: model,
                "seeds": len(every),
                "nll": nll.mean(),
                "nll_median": nll.median(),
                "nll_min": nll.min(),
                "nll_max": nll.max(),
                "diverged": tuple(float(v) for v in every[blown][Col.TEST_NLL].astype(float)),
                "nll_sd": nll.std() if len(g) > 1 else math.nan,
                "nll_se": g[Col.TEST_NLL_SE].astype(float).mean(),
                Col.GAP: gap.mean() if gap.notna().any() else math.nan,
                "gap_sd": gap.std() if gap.notna().sum() > 1 else math.nan,
                Col.GAP_SE: g[Col.GAP_SE].astype(float).mean() if Col.GAP_SE in g else math.nan,
                "worse": bool(g[Col.WORSE_THAN_BASELINE].astype(str).isin(["True", "true", "1"]).any()),
                "disagree": bool(g[Col.VAL_TEST_DISAGREE].astype(str).isin(["True", "true", "1"]).any()),
                "params": float(g[Col.PARAMS_EFFECTIVE].iloc[0]),
                Col.TRAIN_S: float(g[Col.TRAIN_S].astype(float).mean()),
                "baseline": float(g[Col.BASELINE_NLL].iloc[0]),
                "units": str(g[Col.NLL_UNITS].iloc[0]),
                Col.DIM: int(g[Col.DIM].iloc[0]),
                Col.ENTROPY: float(g[Col.ENTROPY].iloc[0]) if g[Col.ENTROPY].notna().any() else math.nan,
            }
        )
    return pd.DataFrame(rows)


def show_median(
    median: float, low: float, high: float, se: float, seeds: int, blown: tuple = (), digits: int = 3
) -> str:
    """'2.475 [2.470, 2.481] (SE 0.006)': the median over seeds [their min, max] and the
    fits' mean standard error; the diverged seeds' values after, never in the summary."""
    if math.isnan(median):
        return ""
    if seeds - len(blown) <= 1:
        text = f"{median:.{digits}f} ± {se:.{digits}f} (SE, one seed)"
    else:
        text = f"{median:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}] (SE {se:.{digits}f})"
    if blown:
        text += f"; diverged: {', '.join(f'{v:.3g}' for v in blown)}"
    return text


def show(mean: float, sd: float, se: float, digits: int = 3) -> str:
    """'2.475 ± 0.004 (SE 0.006)': the mean over seeds ± their sd, and the fits' mean
    standard error; with one seed the standard error alone."""
    if math.isnan(mean):
        return ""
    if math.isnan(sd):
        return f"{mean:.{digits}f} ± {se:.{digits}f} (SE, one seed)"
    return f"{mean:.{digits}f} ± {sd:.{digits}f} (SE {se:.{digits}f})"


def _points(folder: Path, row: pd.Series) -> np.ndarray | None:
    from ..records import inside

    name = row.get(Col.NLL_FILE)
    path = inside(folder, name, Col.NLL_FILE) if isinstance(name, str) and name else None
    return np.load(path, allow_pickle=False).astype(np.float64) if path is not None and path.is_file() else None


def paired(folder: Path, df: pd.DataFrame, data: str, best: str, runner_up: str) -> Paired:
    """runner-up - best on ``data`` over the seeds both fitted (see the module)."""
    from scipy import stats

    g = done(df)[done(df)[Col.DATA] == data]
    diffs, ses, how = [], [], "paired"
    for _, h in g.groupby(Col.SEED):
        one, two = h[h[Col.MODEL] == best], h[h[Col.MODEL] == runner_up]
        if one.empty or two.empty:
            continue
        a, b = _points(folder, one.iloc[0]), _points(folder, two.iloc[0])
        if a is None or b is None or a.shape != b.shape:  # no per-point NLLs: the means and their SEs
            how = "unpaired"
            d = float(two[Col.TEST_NLL].iloc[0]) - float(one[Col.TEST_NLL].iloc[0])
            se = math.hypot(float(one[Col.TEST_NLL_SE].iloc[0]), float(two[Col.TEST_NLL_SE].iloc[0]))
        else:
            per = b - a
            d, se = float(per.mean()), float(per.std(ddof=1) / math.sqrt(len(per)))
        diffs.append(d)
        ses.append(se)
    if not diffs:
        return Paired(best, runner_up, math.nan, math.nan, math.nan, 0, how)
    mean = float(np.mean(diffs))
    if len(diffs) >= 2:
        half = stats.t.ppf(0.5 + LEVEL / 2, len(diffs) - 1) * float(np.std(diffs, ddof=1)) / math.sqrt(len(diffs))
    else:
        half = stats.norm.ppf(0.5 + LEVEL / 2) * ses[0]
    return Paired(best, runner_up, mean, mean - half, mean + half, len(diffs), how)
