"""Did this commit slow down log_prob? ``python -m harness compare A B``.

A and B are two sweep folders (two commits, two machines, two settings) or two commits
of an asv results folder (``DIR@COMMIT``). Per configuration measured ok in both: the
ratio of times B / A with a 95% bootstrap interval from both sides' runs (unpaired:
they were timed apart), and a verdict, ``slower`` or ``faster``, only where the whole
interval clears the minimum effect (default 5%); otherwise ``no clear difference``.
asv results without recorded samples are compared by asv's own 99% intervals (the
widest ratio they allow). The exit code is 1 when any configuration is slower, for CI.

For two sweeps it also measures the coverage of their stated intervals: how often a
paired ratio of B (sample / log_prob, train_step / log_prob) falls inside A's interval.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from . import env
from .errors import UserError
from .intervals import MIN_EFFECT, Ratio, runs_of, unpaired_ratio, verdict
from .ops import LOG_PROB
from .table import KEY, OK, Col

ASV_KEY = ("benchmark", "params", Col.MACHINE)
CI99 = "asv 99% intervals"


def change(a: pd.Series, b: pd.Series) -> Ratio:
    """B / A of one configuration: from both sides' runs where kept, else from asv's
    99% intervals (low: B's lowest over A's highest), else the ratio of medians."""
    ra, rb = runs_of(a.get(Col.ROUND_S)), runs_of(b.get(Col.ROUND_S))
    if ra and rb:
        return unpaired_ratio(rb, ra)
    value = float(b[Col.MEDIAN_S]) / float(a[Col.MEDIAN_S])
    lows, highs = (a.get("ci_low"), a.get("ci_high")), (b.get("ci_low"), b.get("ci_high"))
    if all(v is not None and not pd.isna(v) and v > 0 for v in (*lows, *highs)):
        return Ratio(value, float(highs[0]) / float(lows[1]), float(highs[1]) / float(lows[0]), CI99, 0)
    return Ratio(value, math.nan, math.nan, "medians only", 0)


def _side(spec: str) -> tuple[pd.DataFrame, tuple[str, ...], str]:
    """(ok rows with median_s, their key columns, a label) of ``FOLDER`` or ``DIR@COMMIT``."""
    from .report.load import load

    folder, _, commit = spec.partition("@")
    df, meta = load(folder)
    if meta.get(Col.SOURCE) == "asv":
        if not commit:
            raise UserError(f"{spec!r} is an asv results folder: name a commit, {folder}@COMMIT")
        if not all(c in "0123456789abcdef" for c in commit.lower()):  # a git revision: HEAD~1, a tag
            commit = env.resolve_revision(commit)
        df = df[df[Col.COMMIT].astype(str).str.startswith(commit)]
        if df.empty:
            raise UserError(f"{folder!r} holds no asv results of a commit starting {commit!r}")
        df = df.assign(median_s=df["value"])
        return df[df[Col.STATUS] == OK], ASV_KEY, f"{folder}@{commit}"
    if commit:
        raise UserError(f"{folder!r} is a sweep folder; {spec!r} names a commit only for asv results folders")
    return df[df[Col.STATUS] == OK], KEY, folder


def compare(a: str, b: str, min_effect: float = MIN_EFFECT) -> pd.DataFrame:
    """One row per configuration measured ok in both A and B, with B / A and a verdict."""
    (da, key, _), (db, key_b, _) = _side(a), _side(b)
    if key != key_b:
        raise UserError("compare two sweep folders, or two commits of asv results: not one of each")
    both = da.merge(db, on=list(key), suffixes=("_a", "_b"))
    if both.empty:
        raise UserError(f"{a!r} and {b!r} share no configuration measured ok in both")
    rows = []
    for _, r in both.iterrows():
        one = pd.Series({c.removesuffix("_a"): r[c] for c in r.index if c.endswith("_a")})
        two = pd.Series({c.removesuffix("_b"): r[c] for c in r.index if c.endswith("_b")})
        found = change(one, two)
        rows.append(
            {
                **{k: r[k] for k in key},
                "A ms": float(one[Col.MEDIAN_S]) * 1e3,
                "B ms": float(two[Col.MEDIAN_S]) * 1e3,
                "B / A": found.value,
                "low": found.low,
                "high": found.high,
                "interval": found.how,
                "verdict": verdict(found.low, found.high, min_effect=min_effect, faster="faster", slower="slower")
                if not math.isnan(found.low)
                else "no interval",
            }
        )
    return pd.DataFrame(rows)


def coverage(a: str, b: str) -> tuple[int, int]:
    """(inside, total): B's paired ratios (each op over log_prob, per flow, d, device and
    batch) that fall inside A's 95% interval of the same ratio."""
    from .report.findings import ratio
    from .report.tables import main_rows

    (da, key, _), (db, _, _) = _side(a), _side(b)
    if key != KEY:
        return 0, 0
    da, db = main_rows(da), main_rows(db)
    inside = total = 0
    problem = [Col.MODEL, Col.DIM, Col.DEVICE, Col.BATCH]
    for at, g in da.groupby(problem):
        h = db[np.logical_and.reduce([db[c] == v for c, v in zip(problem, at)])]
        for op in set(g[Col.OP]) - {LOG_PROB}:
            pairs = [(x[x[Col.OP] == op], x[(x[Col.OP] == LOG_PROB)]) for x in (g, h) if (x[Col.OP] == op).any()]
            if len(pairs) < 2 or any(p[1].empty for p in pairs):
                continue
            first = ratio(pairs[0][0].iloc[0], pairs[0][1].iloc[0])
            second = ratio(pairs[1][0].iloc[0], pairs[1][1].iloc[0])
            if first.low is None or first.how != "paired":
                continue
            total += 1
            inside += first.low <= second.value <= first.high
    return inside, total


def table(rows: pd.DataFrame) -> str:
    from .report.tables import fmt, markdown

    shown = rows.assign(
        **{
            "A ms": rows["A ms"].map(fmt),
            "B ms": rows["B ms"].map(fmt),
            "B / A [95% CI]": [
                f"{fmt(v)} [{fmt(lo)}, {fmt(hi)}]" if not math.isnan(lo) else fmt(v)
                for v, lo, hi in zip(rows["B / A"], rows["low"], rows["high"])
            ],
        }
    ).drop(columns=["B / A", "low", "high"])
    first = [c for c in shown.columns if c not in ("B / A [95% CI]", "interval", "verdict")]
    return markdown(shown[[*first, "B / A [95% CI]", "interval", "verdict"]])


def main(a: str, b: str, min_effect: float = MIN_EFFECT, out: Path | None = None) -> tuple[pd.DataFrame, str]:
    """Compares, prints the table and a summary; returns the rows and the summary."""
    rows = compare(a, b, min_effect)
    counts = rows["verdict"].value_counts()
    summary = (
        f"B = {b} against A = {a}: {len(rows)} configurations; {counts.get('slower', 0)} slower, "
        f"{counts.get('faster', 0)} faster (95% interval beyond {min_effect:.0%}), "
        f"{counts.get('no clear difference', 0)} no clear difference"
        + (f", {counts.get('no interval', 0)} without runs to judge" if counts.get("no interval", 0) else "")
    )
    inside, total = coverage(a, b)
    if total:
        summary += f"; {inside} of {total} of B's paired ratios fall inside A's 95% intervals ({inside / total:.0%})"
    text = table(rows) + "\n\n" + summary
    print(text)
    if out is not None:
        from . import store

        store.write_text(Path(out), text + "\n")
    return rows, summary
