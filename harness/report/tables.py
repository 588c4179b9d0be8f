"""Markdown tables from the tidy table, via pandas and tabulate (``DataFrame.to_markdown``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..models import OPS
from ..models.solvers import DEFAULT, DIRECT, NATIVE, REFERENCE
from ..table import OK, OURS, Col

# What a row's solver is to its model: the reference, the default, or neither.
ROLE = {**{s: "reference" for s in REFERENCE.values()}, **{s: "default" for s in DEFAULT.values()}}


def fmt(value: float, digits: int = 3) -> str:
    """Three significant figures below 1000, whole numbers with thousands separators
    above, '' for NaN."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return ""
    if abs(value) >= 1e3:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def ok(df: pd.DataFrame) -> pd.DataFrame:
    return df[df[Col.STATUS] == OK]


def solvers_of(df: pd.DataFrame) -> pd.Series:
    return df[Col.SOLVER] if Col.SOLVER in df else pd.Series(DIRECT, index=df.index)


def main_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of each model's default algorithm: parallel passes, default solvers and peers'
    own algorithms (tables written before solvers existed have no solver column)."""
    solver = solvers_of(df)
    return df[solver.isin([DIRECT, NATIVE, *DEFAULT.values()])]


def reference_rows(df: pd.DataFrame) -> pd.DataFrame:
    return df[solvers_of(df).isin(list(REFERENCE.values()))]


def _row(df: pd.DataFrame, model: str, dim: int, op: str) -> pd.Series | None:
    hit = df[(df[Col.MODEL] == model) & (df[Col.DIM] == dim) & (df[Col.OP] == op)]
    return None if hit.empty else hit.iloc[0]


def _cell(df: pd.DataFrame, model: str, dim: int, op: str, column: str) -> float:
    """A measured value, NaN where the row is missing or not ``ok``."""
    row = _row(df, model, dim, op)
    return float(row[column]) if row is not None and row[Col.STATUS] == OK else np.nan


NOISY = 0.20  # an IQR above this share of the median flags the row


def timed(df: pd.DataFrame, model: str, dim: int, op: str) -> str:
    """'median [IQR]' in ms, with ' noisy' where the IQR is over 20% of the median; the
    status where the row is not ok."""
    row = _row(df, model, dim, op)
    if row is None or row[Col.STATUS] != OK:
        return _status(df, model, dim, op)
    median, iqr = float(row[Col.MEDIAN_S]), float(row.get(Col.IQR_S, np.nan))
    text = f"{fmt(median * 1e3)} [{fmt(iqr * 1e3)}]"
    return text + " noisy" if iqr > NOISY * median else text


def _status(df: pd.DataFrame, model: str, dim: int, op: str) -> str:
    row = _row(df, model, dim, op)
    return "" if row is None else str(row[Col.STATUS])


def time_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per model x dim on one device and batch: times (median [IQR], flagged noisy over
    20%) with each model's default solver, their ratio and throughputs, and
    sample / log_prob with the reference solver."""
    main, ref = main_rows(df), reference_rows(df)
    rows = []
    for (model, dim), g in main.groupby([Col.MODEL, Col.DIM], sort=False):
        lp, smp = (_cell(main, model, dim, op, Col.MEDIAN_S) for op in OPS)
        slow = g[g[Col.KIND] != "parallel"]
        solver = str(slow[Col.SOLVER].iloc[0]) if len(slow) and Col.SOLVER in slow else ""
        # the reference solver's slow op over the (shared) parallel op; blank where not measured
        slow_op = str(slow[Col.OP].iloc[0]) if len(slow) else ""
        ref_slow = _cell(ref, model, dim, slow_op, Col.MEDIAN_S) if slow_op else np.nan
        times = {op: ref_slow if op == slow_op else (lp if op == "log_prob" else smp) for op in OPS}
        ref_ratio = times["sample"] / times["log_prob"]
        ref_status = _status(ref, model, dim, slow_op) if slow_op else ""
        batch = float(g[Col.BATCH].iloc[0])
        rows.append(
            {
                Col.MODEL: model,
                "d": int(dim),
                Col.SOLVER: solver,
                "log_prob ms [IQR]": timed(main, model, dim, "log_prob"),
                "sample ms [IQR]": timed(main, model, dim, "sample"),
                "sample / log_prob": fmt(smp / lp),
                "sample / log_prob, reference solver": fmt(ref_ratio) or ref_status if not ref.empty else "",
                "log_prob (points/s)": fmt(batch / lp),
                "sample (points/s)": fmt(batch / smp),
            }
        )
    out = pd.DataFrame(rows)
    if ref.empty and not out.empty:
        out = out.drop(columns="sample / log_prob, reference solver")
    return out


def solver_table(df: pd.DataFrame, model: str) -> pd.DataFrame:
    """One model's slow direction on one device and batch: per d and solver, time,
    evaluations per dimension, iterations, speed-up over the reference solver (same
    sweep, configurations timed one after another) and deviation from it."""
    g = df[(df[Col.MODEL] == model) & (df[Col.KIND] != "parallel") & (solvers_of(df) != NATIVE)]
    rows = []
    for (dim, solver), h in g.groupby([Col.DIM, Col.SOLVER], sort=True):
        r = h.iloc[0]
        ref = g[(g[Col.DIM] == dim) & (g[Col.SOLVER].map(ROLE) == "reference")]
        ref_t = float(ref[Col.MEDIAN_S].iloc[0]) if len(ref) and ref[Col.STATUS].iloc[0] == OK else np.nan
        t = float(r[Col.MEDIAN_S]) if r[Col.STATUS] == OK else np.nan
        rows.append(
            {
                "d": int(dim),
                Col.SOLVER: f"{solver} ({ROLE[solver]})" if solver in ROLE else solver,
                "time (ms)": fmt(t * 1e3) or f"{r[Col.STATUS]}",
                "evaluations / dim": fmt(r[Col.EVALUATIONS_PER_DIM]),
                Col.ITERATIONS: fmt(r[Col.ITERATIONS]),
                "speed-up over reference": fmt(ref_t / t),
                "max rel. deviation from reference": fmt(r.get(Col.MAX_REL_DEV, np.nan)),
            }
        )
    return pd.DataFrame(rows)


def size_table(df: pd.DataFrame, roofline: float | None = None) -> pd.DataFrame:
    """Per model x dim (default solvers): parameters, FLOPs per point, achieved GFLOP/s,
    its share of the GEMM ``roofline`` (GFLOP/s) where given, and peak memory."""
    df = main_rows(df)
    rows = []
    for (model, dim), g in df.groupby([Col.MODEL, Col.DIM], sort=False):
        batch = float(g[Col.BATCH].iloc[0])
        row = {
            Col.MODEL: model,
            "d": int(dim),
            Col.PARAMS_STORED: fmt(float(g[Col.PARAMS_STORED].iloc[0])),
            Col.PARAMS_EFFECTIVE: fmt(float(g[Col.PARAMS_EFFECTIVE].iloc[0])),
        }
        for op in OPS:
            flops, secs = _cell(df, model, dim, op, Col.FLOPS), _cell(df, model, dim, op, Col.MEDIAN_S)
            row[f"{op} FLOPs/point"] = fmt(flops / batch)
            row[f"{op} GFLOP/s"] = fmt(flops / secs / 1e9)
            if roofline:
                row[f"{op} % of GEMM"] = fmt(100 * flops / secs / 1e9 / roofline)
        for op in OPS:
            row[f"{op} peak MiB"] = fmt(_cell(df, model, dim, op, Col.PEAK_MEM_BYTES) / 2**20)
        rows.append(row)
    return pd.DataFrame(rows)


def param_ratios(df: pd.DataFrame, reference: str = "bnaf", column: str = Col.PARAMS_EFFECTIVE) -> pd.DataFrame:
    """Each model's parameters over ``reference``'s at each d (B-NAF paper, Table 1 style)."""
    sizes = df.drop_duplicates([Col.MODEL, Col.DIM])[[Col.MODEL, Col.DIM, column]].pivot(
        index=Col.DIM, columns=Col.MODEL, values=column
    )
    if reference not in sizes:
        return pd.DataFrame()
    ratios = sizes.div(sizes[reference], axis=0).drop(columns=reference)
    out = ratios.map(fmt).reset_index().rename(columns={Col.DIM: "d"})
    out.columns = ["d"] + [f"{m} / {reference}" for m in ratios.columns]
    return out


def upper_half(dims: np.ndarray) -> np.ndarray:
    """Mask of the dims at or above their median (at least the two largest)."""
    dims = np.asarray(dims, float)
    upper = dims >= np.median(np.unique(dims)) if len(dims) else np.zeros(0, bool)
    if upper.sum() < 2:
        upper = dims >= np.sort(np.unique(dims))[-2:].min() if len(np.unique(dims)) >= 2 else upper
    return upper


def fit_slope(dims: np.ndarray, seconds: np.ndarray) -> float:
    """Least-squares slope of log(time) against log(d) over the upper half of the dims."""
    dims, seconds = np.asarray(dims, float), np.asarray(seconds, float)
    keep = np.isfinite(seconds) & (seconds > 0)
    dims, seconds = dims[keep], seconds[keep]
    upper = upper_half(dims)
    if len(np.unique(dims[upper])) < 2:
        return np.nan
    return float(np.polyfit(np.log(dims[upper]), np.log(seconds[upper]), 1)[0])


def slope_values(df: pd.DataFrame) -> pd.DataFrame:
    """Fitted scaling exponent k in time ~ d^k per device, batch, model and op (default
    solvers), with the dims it was fitted over."""
    rows = []
    groups = ok(main_rows(df)).groupby([Col.DEVICE, Col.BATCH, Col.MODEL, Col.OP], sort=False)
    for (device, batch, model, op), g in groups:
        k = fit_slope(g[Col.DIM].to_numpy(), g[Col.MEDIAN_S].to_numpy())
        rows.append(
            {
                Col.DEVICE: device,
                Col.BATCH: batch,
                Col.MODEL: model,
                Col.OP: op,
                Col.KIND: g[Col.KIND].iloc[0],
                "k": k,
                "dims fitted": _fitted(g[Col.DIM].to_numpy(), k),
            }
        )
    return pd.DataFrame(rows)


def slopes(df: pd.DataFrame) -> pd.DataFrame:
    """:func:`slope_values` as printed: k to two digits, batch as an int."""
    values = slope_values(df)
    if values.empty:
        return values
    out = values.assign(batch=values[Col.BATCH].astype(int), k=values["k"].map(lambda k: fmt(k, 2)))
    return out.rename(columns={"k": "slope k"})


def _fitted(dims: np.ndarray, k: float) -> str:
    if not np.isfinite(k):
        return "too few dims"
    used = np.unique(dims[upper_half(dims)])
    return ", ".join(str(int(d)) for d in used)


def environment(meta: dict) -> pd.DataFrame:
    keys = [
        Col.COMMIT,
        "date",
        "torch",
        "python",
        "cpu",
        "cpu_count",
        "gpu",
        "cuda",
        Col.THREADS,
        "harness_version",
    ]
    return pd.DataFrame([{"key": k, "value": str(meta.get(k, ""))} for k in keys if k in meta])


def markdown(df: pd.DataFrame) -> str:
    if df.empty:
        return "_(no rows)_"
    return df.to_markdown(index=False, disable_numparse=True)


def is_peer(df: pd.DataFrame) -> pd.Series:
    """Rows of flows that are not ours: a library's peers and users' flows."""
    return df[Col.LIBRARY] != OURS


def family_peers(df: pd.DataFrame, family: str) -> list[str]:
    """The peers of reference model ``family`` in the table (``''``: flows matching no
    reference model), in order of appearance."""
    return list(dict.fromkeys(df[is_peer(df) & (df[Col.FAMILY].fillna("") == family)][Col.MODEL]))


def peer_table(df: pd.DataFrame, family: str) -> pd.DataFrame:
    """One family on one device and batch: per d and op (where a peer was measured), our
    time and each peer's. Absolute times only: the sweep times them minutes apart, not
    interleaved, so ratios come from the A/B contests alone."""
    peers = family_peers(df, family)
    dims = df[df[Col.MODEL].isin(peers)][Col.DIM].unique()  # where a peer was measured
    rows = []
    for (dim, op), _ in df[df[Col.MODEL].isin([family, *peers]) & df[Col.DIM].isin(dims)].groupby([Col.DIM, Col.OP]):
        row = {"d": int(dim), Col.OP: op}
        if family in set(df[Col.MODEL]):  # flows of no family have no reference model beside them
            row[f"{family} ms [IQR]"] = timed(df, family, dim, op)
        for p in peers:
            r = _row(df, p, dim, op)
            why = "" if r is None or r[Col.STATUS] == OK else f"{r[Col.STATUS]}: {r[Col.REASON]}"
            row[f"{p} ms [IQR]"] = timed(df, p, dim, op) if not why else why
        rows.append(row)
    return pd.DataFrame(rows)


def peer_params(df: pd.DataFrame, family: str) -> pd.DataFrame:
    """Effective (stored) parameters of a family and its peers at each d."""
    peers = family_peers(df, family)
    models = [family, *peers] if family in set(df[Col.MODEL]) else peers
    rows = []
    for dim in sorted(df[df[Col.MODEL].isin(peers)][Col.DIM].unique()):
        row = {"d": int(dim)}
        for m in models:
            hit = df[(df[Col.MODEL] == m) & (df[Col.DIM] == dim)].dropna(subset=[Col.PARAMS_EFFECTIVE])
            row[m] = (
                "" if hit.empty else f"{fmt(hit[Col.PARAMS_EFFECTIVE].iloc[0])} ({fmt(hit[Col.PARAMS_STORED].iloc[0])})"
            )
        rows.append(row)
    return pd.DataFrame(rows)


def versus_table(vs: pd.DataFrame) -> pd.DataFrame:
    """The A/B contests (harness.versus): times of each contender and the ratio."""
    rows = []
    for (contest, dim), g in vs[vs["contest"] != "naf.sample/log_prob"].groupby(["contest", Col.DIM], sort=False):
        ours = g[g["contender"] == "ours"].iloc[0]
        rivals = g[g["contender"] != "ours"]
        rows.append(
            {
                "ours": contest,
                "d": int(dim),
                "ours (ms)": fmt(ours[Col.MEDIAN_S] * 1e3),
                "peers (ms)": ", ".join(f"{r.contender} {r.op} {fmt(r.median_s * 1e3)}" for r in rivals.itertuples()),
                "fastest peer": ours["fastest"],
                "ours / fastest [95% CI]": ratio_ci(ours),
                "rounds": fmt(ours["rounds"]),
                "ours is": ours.get("verdict", ""),
            }
        )
    return pd.DataFrame(rows)


def ratio_ci(r: pd.Series) -> str:
    """A contest row's ratio with its 95% interval, as text."""
    if "ratio_low" not in r or pd.isna(r["ratio_low"]):  # contests run before intervals were kept
        return f"{float(r['ratio']):.3f}"
    return f"{float(r['ratio']):.3f} [{float(r['ratio_low']):.3f}, {float(r['ratio_high']):.3f}]"


def naf_ratio_table(vs: pd.DataFrame) -> pd.DataFrame:
    g = vs[vs["contest"] == "naf.sample/log_prob"]
    rows = []
    for (model, dim), h in g.groupby(["contender", Col.DIM], sort=False):
        t = dict(zip(h[Col.OP], h[Col.MEDIAN_S]))
        rows.append(
            {
                Col.MODEL: model,
                "d": int(dim),
                "log_prob (ms)": fmt(t["log_prob"] * 1e3),
                "sample (ms)": fmt(t["sample"] * 1e3),
                "sample / log_prob": fmt(t["sample"] / t["log_prob"]),
            }
        )
    return pd.DataFrame(rows)


def correctness_table(checks: pd.DataFrame) -> pd.DataFrame:
    """Per model (rows) and check (columns): ``pass``/``FAIL`` and the worst error over
    the dims where measured, ``-`` where the check does not apply."""
    rows = []
    for model, g in checks.groupby(Col.MODEL, sort=False):
        row = {Col.MODEL: model, Col.LIBRARY: g[Col.LIBRARY].iloc[0]}
        for check, h in g.groupby("check", sort=False):
            measured = pd.to_numeric(h["measured"], errors="coerce")
            worst = fmt(float(measured.max())) if measured.notna().any() else ""
            results = set(h["result"])
            verdict = "FAIL" if "FAIL" in results else "pass" if "pass" in results else "-"
            row[check] = f"{verdict} {worst}".strip() if verdict != "-" else f"({worst})" if worst else "-"
        rows.append(row)
    return pd.DataFrame(rows).fillna("")
