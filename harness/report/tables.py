"""What every section's tables share: number formats, markdown, and picking rows out
of the tidy table (pandas + tabulate, via ``DataFrame.to_markdown``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..ops import DIRECT, FAMILIES, NATIVE, OURS, PEER_LIBRARIES, default_backend, role
from ..table import OK, Col


def fmt(value: float | None, digits: int = 3) -> str:
    """Three significant figures below 1000, whole numbers with thousands separators
    above, '' for NaN."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return ""
    if abs(value) >= 1e3:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def markdown(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False, disable_numparse=True)


def ok(df: pd.DataFrame) -> pd.DataFrame:
    return df[df[Col.STATUS] == OK]


def is_peer(df: pd.DataFrame) -> pd.Series:
    """Rows of a peer library's flows (zuko, pyro, nflows)."""
    return df[Col.LIBRARY].isin(list(PEER_LIBRARIES))


def is_ours(df: pd.DataFrame) -> pd.Series:
    """Rows of the reference models."""
    return (df[Col.LIBRARY] == OURS) & df[Col.MODEL].isin(list(FAMILIES))


def flows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of every flow but the peers: the reference models and users' flows."""
    return df[~is_peer(df)]


def default_backend_rows(df: pd.DataFrame) -> pd.Series:
    """Rows run the way each configuration runs by default (harness.ops.default_backend),
    or from before the backend column (blank)."""
    if df.empty:
        return pd.Series(False, index=df.index)
    columns = (df[Col.MODEL], df[Col.SOLVER], df[Col.OP], df[Col.DEVICE])
    wanted = [default_backend(m, s, o, d) for m, s, o, d in zip(*columns)]
    backend = df[Col.BACKEND]
    return backend.isna() | (backend == pd.Series(wanted, index=df.index))


def main_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of each model's default algorithm in its default backend: parallel passes,
    default solvers and peers' or users' own algorithms."""
    solver = df[Col.SOLVER]
    return df[(solver.isin([DIRECT, NATIVE]) | solver.map(role).eq("default")) & default_backend_rows(df)]


def reference_rows(df: pd.DataFrame) -> pd.DataFrame:
    return df[df[Col.SOLVER].map(role).eq("reference") & default_backend_rows(df)]


def row(df: pd.DataFrame, model: str, dim: int, op: str) -> pd.Series | None:
    hit = df[(df[Col.MODEL] == model) & (df[Col.DIM] == dim) & (df[Col.OP] == op)]
    return None if hit.empty else hit.iloc[0]


def ok_row(df: pd.DataFrame, model: str, dim: int, op: str) -> pd.Series | None:
    r = row(df, model, dim, op)
    return r if r is not None and r[Col.STATUS] == OK else None


def cell(df: pd.DataFrame, model: str, dim: int, op: str, column: str) -> float:
    """A measured value, NaN where the row is missing or not ``ok``."""
    r = ok_row(df, model, dim, op)
    return float(r[column]) if r is not None else np.nan


def status(df: pd.DataFrame, model: str, dim: int, op: str) -> str:
    r = row(df, model, dim, op)
    return "" if r is None else str(r[Col.STATUS])


NOISY = 0.20  # an IQR above this share of the median flags the row


def timed(df: pd.DataFrame, model: str, dim: int, op: str) -> str:
    """'median [IQR]' in ms, with ' noisy' where the IQR is over 20% of the median; the
    status where the row is not ok."""
    r = ok_row(df, model, dim, op)
    if r is None:
        return status(df, model, dim, op)
    median, iqr = float(r[Col.MEDIAN_S]), float(r.get(Col.IQR_S, np.nan))
    text = f"{fmt(median * 1e3)} [{fmt(iqr * 1e3)}]"
    return text + " noisy" if iqr > NOISY * median else text


def groups(df: pd.DataFrame) -> list[tuple[str, int]]:
    """The (device, batch) pairs of the table, in order of appearance."""
    return [(d, int(b)) for d, b in dict.fromkeys(zip(df[Col.DEVICE], df[Col.BATCH]))]


def in_group(df: pd.DataFrame, device: str, batch: int) -> pd.DataFrame:
    return df[(df[Col.DEVICE] == device) & (df[Col.BATCH] == batch)]


MIN_FIT_DIMS = 3  # a power law through two dims has no residual to say how well it fits


def upper_half(dims: np.ndarray) -> np.ndarray:
    """Mask of the dims at or above their median (at least the :data:`MIN_FIT_DIMS` largest)."""
    dims = np.asarray(dims, float)
    unique = np.unique(dims)
    upper = dims >= np.median(unique) if len(dims) else np.zeros(0, bool)
    if len(np.unique(dims[upper])) < MIN_FIT_DIMS and len(unique) >= MIN_FIT_DIMS:
        upper = dims >= np.sort(unique)[-MIN_FIT_DIMS:].min()
    return upper


def fit_slope_interval(dims: np.ndarray, seconds: np.ndarray) -> tuple[float, float, float]:
    """(k, low, high): the least-squares slope of log(time) against log(d) over the upper
    half of the dims and its 95% interval from the fit's residuals (Student's t, n - 2
    degrees of freedom); nan below :data:`MIN_FIT_DIMS` distinct dims."""
    dims, seconds = np.asarray(dims, float), np.asarray(seconds, float)
    keep = np.isfinite(seconds) & (seconds > 0)
    dims, seconds = dims[keep], seconds[keep]
    upper = upper_half(dims)
    if len(np.unique(dims[upper])) < MIN_FIT_DIMS:
        return np.nan, np.nan, np.nan
    from scipy import stats

    fit = stats.linregress(np.log(dims[upper]), np.log(seconds[upper]))
    half = float(stats.t.ppf(0.975, upper.sum() - 2)) * fit.stderr
    return float(fit.slope), float(fit.slope - half), float(fit.slope + half)


def fit_slope(dims: np.ndarray, seconds: np.ndarray) -> float:
    """The slope of :func:`fit_slope_interval` alone."""
    return fit_slope_interval(dims, seconds)[0]


def fitted_dims(dims: np.ndarray, k: float) -> str:
    if not np.isfinite(k):
        return "too few dims"
    return ", ".join(str(int(d)) for d in np.unique(dims[upper_half(dims)]))
