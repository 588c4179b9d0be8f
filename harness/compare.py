"""Two runs measured apart: ``python -m harness compare A B``.

A and B are two sweep folders (two commits, two machines, two settings) or two commits
of an asv results folder (``DIR@COMMIT``). Per configuration measured ok in both: the
ratio of times B / A with a 95% bootstrap interval from both sides' runs (unpaired:
they were timed apart). That interval covers the noise within each run, not the drift
between runs: two runs of identical code on a shared machine differ by more than it
says (reports/cpu/two-runs.md). So a verdict needs, beside an interval that clears 1,
an estimate past the *drift bound*: the change that A/A pairs of ``make report`` runs
stayed within in 95% of their configurations (reports/cpu/ab/drift.json, made by
``tools/calibrate_ab.py --drift``). Without one, or across machines, only the ratios are
stated. To see a small change, time both revisions in one run: ``compare --run``
(harness.ab). The exit code is 1 when any configuration is judged slower.

Each side's commit, machine, CPU, load and settings are printed; sides that share no
configuration are told apart by the settings that differ.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from . import calibration, env
from .errors import UserError
from .intervals import MIN_EFFECT, MIN_SAMPLES, PAIRED, RERUN, Ratio, apart_verdict, runs_of, unpaired_ratio
from .ops import LOG_PROB
from .table import KEY, OK, Col

ASV_KEY = ("benchmark", "params", Col.MACHINE)
CI99 = "asv 99% intervals"
SETTINGS = (Col.BATCH, Col.DEVICE, Col.DIM, Col.MODEL, Col.OP, Col.SOLVER, Col.BACKEND)


def drift_bound(path: Path | None = None) -> tuple[float | None, str]:
    """(bound, where it comes from) of the committed A/A calibration, or (None, why not)."""
    found = calibration.load(path)
    if "drift" not in found:
        return None, calibration.describe({}, path)
    return float(found["drift"]), (
        f"±{found['drift']:.0%}, which {found.get('quantile', 0.95):.0%} of the configurations of "
        + calibration.describe(found, path)
        + " stayed within"
    )


def change(a: pd.Series, b: pd.Series) -> Ratio:
    """B / A of one configuration: from both sides' runs where kept, else from asv's
    99% intervals (low: B's lowest over A's highest), else the ratio of medians. A side
    with fewer than :data:`MIN_SAMPLES` runs gives no interval."""
    ra, rb = runs_of(a.get(Col.ROUND_S)), runs_of(b.get(Col.ROUND_S))
    if min(len(ra), len(rb)) >= MIN_SAMPLES:
        return unpaired_ratio(rb, ra)
    value = float(b[Col.MEDIAN_S]) / float(a[Col.MEDIAN_S])
    ca, cb = (a.get("ci_low"), a.get("ci_high")), (b.get("ci_low"), b.get("ci_high"))
    if all(v is not None and not pd.isna(v) and v > 0 for v in (*ca, *cb)) and ca[1] > ca[0] and cb[1] > cb[0]:
        # the widest ratio asv's intervals allow: B's lowest over A's highest, B's highest over A's lowest
        return Ratio(value, float(cb[0]) / float(ca[1]), float(cb[1]) / float(ca[0]), CI99, MIN_SAMPLES)
    return Ratio(value, math.nan, math.nan, "too few samples", min(len(ra), len(rb)))


def _side(spec: str) -> tuple[pd.DataFrame, tuple[str, ...], str, dict]:
    """(ok rows with median_s, their key columns, a label, metadata) of ``FOLDER`` or ``DIR@COMMIT``."""
    from .report.load import load

    folder, _, commit = spec.partition("@")
    df, meta = load(folder)
    if meta.get(Col.SOURCE) == "asv":
        if not commit:
            raise UserError(f"{spec!r} is an asv results folder: name a commit, {folder}@COMMIT")
        if not all(c in "0123456789abcdef" for c in commit.lower()):  # a git revision: HEAD~1, a tag
            commit = env.resolve_revision(commit)
        found = sorted(set(df.loc[df[Col.COMMIT].astype(str).str.startswith(commit), Col.COMMIT].astype(str)))
        if not found:
            raise UserError(f"{folder!r} holds no asv results of a commit starting {commit!r}")
        if len(found) > 1:
            raise UserError(f"{commit!r} starts {len(found)} commits of {folder!r} ({', '.join(found)}): give more")
        df = df[df[Col.COMMIT].astype(str) == found[0]].assign(median_s=lambda x: x["value"])
        if "unit" in df:  # only timings are ratios of seconds; counts (asv's track_) are not times
            df = df[df["unit"].astype(str) == "seconds"]
        meta = {**meta, Col.COMMIT: found[0]}
        return df[df[Col.STATUS] == OK], ASV_KEY, f"{folder}@{found[0][:12]}", meta
    if commit:
        raise UserError(f"{folder!r} is a sweep folder; {spec!r} names a commit only for asv results folders")
    ok = df[(df[Col.STATUS] == OK) & (df[Col.MEDIAN_S] > 0)]
    return ok.drop_duplicates(list(KEY)), KEY, folder, meta


def describe(label: str, meta: dict, rows: pd.DataFrame) -> str:
    """One side in a line: commit, machine, load, threads, batches."""
    loads = [meta.get("load_start"), meta.get("load_end")]
    load = " -> ".join(f"{x[0]:.2f}" for x in loads if x)
    batches = ",".join(map(str, sorted(rows[Col.BATCH].dropna().unique()))) if Col.BATCH in rows else ""
    machines = ", ".join(sorted(rows[Col.MACHINE].dropna().astype(str).unique()))
    busy = env.overloaded(loads, meta.get("cpu_count"))
    return (
        f"{label}: commit {meta.get(Col.COMMIT, '?')}{' (dirty)' if meta.get('dirty') else ''}, {machines or '?'}; "
        f"load {load or '?'}{f' ({busy})' if busy else ''}; "
        f"threads {meta.get('threads', '?')}" + (f"; batch {batches}" if batches else "")
    )


def _text(column: pd.Series) -> pd.Series:
    """A column as text, a missing value as '' (pandas keeps NaN through astype(str))."""
    return column.map(lambda v: "" if pd.isna(v) else str(v))


def unmatched(da: pd.DataFrame, db: pd.DataFrame, key: tuple[str, ...]) -> str:
    """Why two sides share no configuration: the settings whose values differ."""
    said = []
    for c in (c for c in SETTINGS if c in key and c in da and c in db):
        va, vb = set(_text(da[c])), set(_text(db[c]))
        if not va & vb and va and vb:
            said.append(f"A has {c} {', '.join(sorted(va))}, B has {', '.join(sorted(vb))}")
    return "; ".join(said) or "no configuration is ok in both (the same settings, other models, dims or solvers)"


def compare(
    a: str, b: str, min_effect: float = MIN_EFFECT, drift: float | None = None, across_machines: bool = False
) -> pd.DataFrame:
    """One row per configuration measured ok in both A and B, with B / A and a verdict
    (:func:`harness.intervals.apart_verdict` at the drift bound; none without one)."""
    (da, key, la, ma), (db, key_b, lb, mb) = _side(a), _side(b)
    if key != key_b:
        raise UserError("compare two sweep folders, or two commits of asv results: not one of each")
    for c in key:  # a column one schema left empty (NaN, float) is text in the other: compare as text
        if da[c].dtype != db[c].dtype:
            da, db = da.assign(**{c: _text(da[c])}), db.assign(**{c: _text(db[c])})
    both = da.merge(db, on=list(key), suffixes=("_a", "_b"))
    if both.empty:
        raise UserError(f"{a!r} and {b!r} share no configuration measured ok in both: {unmatched(da, db, key)}")
    sides = [describe(f"A = {la}", ma, da), describe(f"B = {lb}", mb, db)]
    rows = []
    for _, r in both.iterrows():
        one = pd.Series({c.removesuffix("_a"): r[c] for c in r.index if c.endswith("_a")})
        two = pd.Series({c.removesuffix("_b"): r[c] for c in r.index if c.endswith("_b")})
        found = change(one, two)
        machines_differ = Col.MACHINE not in key and one.get(Col.MACHINE) != two.get(Col.MACHINE)
        rows.append(
            {
                **{k: r[k] for k in key},
                "A ms": float(one[Col.MEDIAN_S]) * 1e3,
                "B ms": float(two[Col.MEDIAN_S]) * 1e3,
                "B / A": found.value,
                "low": found.low,
                "high": found.high,
                "interval": found.how,
                "verdict": "other machines"
                if machines_differ and not across_machines
                else apart_verdict(found, drift, min_effect),
            }
        )
    found = pd.DataFrame(rows)
    found.attrs["sides"] = sides
    return found


def paired_ratios(a: str, b: str, rerun: bool = True) -> list[tuple[object, object]]:
    """(A's, B's) paired ratio of each op over log_prob, per flow, d, device and batch
    that both runs timed in interleaved rounds (harness.report.findings.Value each)."""
    from .report.findings import ratio
    from .report.tables import main_rows

    (da, key, _, _), (db, _, _, _) = _side(a), _side(b)
    if key != KEY:
        return []
    da, db = main_rows(da), main_rows(db)
    found = []
    problem = [Col.MODEL, Col.DIM, Col.DEVICE, Col.BATCH]
    for at, g in da.groupby(problem):
        h = db[np.logical_and.reduce([db[c] == v for c, v in zip(problem, at)])]
        for op in sorted(set(g[Col.OP]) - {LOG_PROB}):
            pairs = [(x[x[Col.OP] == op], x[(x[Col.OP] == LOG_PROB)]) for x in (g, h) if (x[Col.OP] == op).any()]
            if len(pairs) < 2 or any(p[1].empty for p in pairs):
                continue
            first = ratio(pairs[0][0].iloc[0], pairs[0][1].iloc[0], rerun=rerun)
            second = ratio(pairs[1][0].iloc[0], pairs[1][1].iloc[0], rerun=rerun)
            if first.low is not None and first.how in (PAIRED, RERUN):
                found.append((first, second))
    return found


def coverage(a: str, b: str) -> tuple[int, int]:
    """(inside, total): B's paired ratios that fall inside A's 95% interval of the same
    ratio (for a rerun, where the between-run spread is calibrated)."""
    pairs = paired_ratios(a, b)
    return sum(f.low <= s.value <= f.high for f, s in pairs), len(pairs)


def shown(rows: pd.DataFrame) -> dict[str, list[str]]:
    """The columns every comparison prints: A and B ms per call and B / A [95% CI]."""
    from .report.tables import fmt

    return {
        "A ms": [fmt(v) for v in rows["A ms"]],
        "B ms": [fmt(v) for v in rows["B ms"]],
        "B / A [95% CI]": [
            f"{fmt(v)} [{fmt(lo)}, {fmt(hi)}]" if not math.isnan(lo) else fmt(v)
            for v, lo, hi in zip(rows["B / A"], rows["low"], rows["high"])
        ],
    }


def table(rows: pd.DataFrame) -> str:
    from .report.tables import markdown

    shown_rows = rows.assign(**shown(rows)).drop(columns=["B / A", "low", "high"])
    first = [c for c in shown_rows.columns if c not in ("B / A [95% CI]", "interval", "verdict")]
    return markdown(shown_rows[[*first, "B / A [95% CI]", "interval", "verdict"]])


def main(
    a: str,
    b: str,
    min_effect: float = MIN_EFFECT,
    out: Path | None = None,
    drift_file: Path | None = None,
    across_machines: bool = False,
) -> tuple[pd.DataFrame, str]:
    """Compares, prints each side, the table and a summary; returns the rows and the summary."""
    drift, source = drift_bound(drift_file)
    rows = compare(a, b, min_effect, drift, across_machines)
    counts = rows["verdict"].value_counts()
    summary = (
        f"B = {b} against A = {a}: {len(rows)} configurations measured apart; "
        + ", ".join(f"{n} {v}" for v, n in counts.items())
        + f". Intervals: 95% bootstrap of each side's runs, unpaired: they cover each run's noise, not the drift "
        f"between runs. Drift bound: {source}"
        + (
            f"; a verdict needs the interval to clear 1 and the estimate to clear {max(min_effect, drift):.0%}"
            if drift is not None
            else "; without it no verdict is given"
        )
        + ". For a small change, time both revisions in one run: compare --run BASE HEAD."
    )
    inside, total = coverage(a, b)
    if total:
        summary += f" {inside} of {total} of B's paired ratios fall inside A's 95% intervals ({inside / total:.0%})."
    text = "\n".join(rows.attrs["sides"]) + "\n\n" + table(rows) + "\n\n" + summary
    print(text)
    if out is not None:
        from . import store

        store.write_text(Path(out), text + "\n")
    return rows, summary
