"""Splines against affine: what a rational-quadratic spline flow (NSF) costs beside a MAF
of the same conditioner and depth, per op and per d, and how its sampling scales with
the incremental solve against the d-pass inverse the libraries use."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...ops import LOG_PROB, SAMPLE, TRAIN_STEP
from ...table import Col
from .. import fits, tables
from ..findings import Finding, Value, note, ratio
from ..load import Sources
from . import time

TITLE = "Splines against affine: NSF and MAF"
SPLINE, AFFINE = "nsf", "maf"


def _pair(df: pd.DataFrame, dim: int, op: str, top: str, bottom: str, label: str) -> Value | None:
    a, b = tables.ok_row(df, top, dim, op), tables.ok_row(df, bottom, dim, op)
    return ratio(a, b, label) if a is not None and b is not None else None


def _params(df: pd.DataFrame, dim: int) -> str:
    sizes = df[df[Col.DIM] == dim].dropna(subset=[Col.PARAMS_EFFECTIVE]).drop_duplicates(Col.MODEL)
    at = sizes.set_index(Col.MODEL)[Col.PARAMS_EFFECTIVE]
    if SPLINE not in at or AFFINE not in at:
        return ""
    return f"{tables.fmt(at[SPLINE])} / {tables.fmt(at[AFFINE])} = {at[SPLINE] / at[AFFINE]:.3g}"


def comparison(df: pd.DataFrame, ref: pd.DataFrame) -> pd.DataFrame:
    """Per d where both flows ran: NSF over MAF for each op (default solvers, paired
    intervals where timed in the same rounds), their parameters, and NSF's sample /
    log_prob by the incremental solve and by the reference's d passes."""
    rows = []
    dims = sorted(set(df[df[Col.MODEL] == SPLINE][Col.DIM]) & set(df[df[Col.MODEL] == AFFINE][Col.DIM]))
    for dim in dims:
        row: dict[str, object] = {"d": int(dim)}
        for op in (LOG_PROB, SAMPLE, TRAIN_STEP):
            v = _pair(df, dim, op, SPLINE, AFFINE, "")
            row[f"{op}: nsf / maf"] = v.show() if v is not None else ""
        row["parameters: nsf / maf"] = _params(df, dim)
        row["nsf sample / log_prob (incremental)"] = time.over_log_prob_text(df, df, SPLINE, dim, SAMPLE)
        row["nsf sample / log_prob (sequential: d passes)"] = time.over_log_prob_text(ref, df, SPLINE, dim, SAMPLE)
        rows.append(row)
    return pd.DataFrame(rows)


def peers_d_pass(df: pd.DataFrame) -> pd.DataFrame:
    """The spline peers' own sample / log_prob per d (the peers of NSF's family in the
    rows): each samples by d full passes."""
    spline_peers = df[tables.is_peer(df) & (df[Col.FAMILY] == SPLINE)]
    rows = []
    for (model, dim), _ in spline_peers.groupby([Col.MODEL, Col.DIM], sort=True):
        shown = time.over_log_prob_text(df, df, model, dim, SAMPLE)
        if shown:
            rows.append({Col.MODEL: model, "d": int(dim), "sample / log_prob": shown})
    return pd.DataFrame(rows)


def quality(src: Sources) -> pd.DataFrame:
    """Test NLL of NSF and MAF per data set, the median over seeds [min, max], from the fits."""
    rows = []
    for _, df, _ in src.fits:
        agg = fits.over_seeds(df)
        if agg.empty:
            continue
        for data, g in agg.groupby(Col.DATA, sort=False):
            at = g.set_index(Col.MODEL)
            if SPLINE in at.index and AFFINE in at.index:
                row = {Col.DATA: data}
                for model in (SPLINE, AFFINE):
                    r = at.loc[model]
                    shown = fits.show_median(r.nll_median, r.nll_min, r.nll_max, r.nll_se, r.seeds, r.diverged)
                    row[f"{model} test NLL"] = shown
                row["parameters: nsf / maf"] = f"{at.loc[SPLINE, 'params'] / at.loc[AFFINE, 'params']:.3g}"
                rows.append(row)
    return pd.DataFrame(rows)


def _groups(src: Sources):
    rows = src.rows
    if rows.empty:
        return
    flows = tables.flows(rows)
    for device, batch in tables.groups(flows):
        g = tables.in_group(flows, device, batch)
        yield device, batch, tables.main_rows(g), tables.reference_rows(g), tables.in_group(rows, device, batch)


def render(src: Sources, out: Path) -> list[str]:
    lines: list[str] = []
    for device, batch, main, ref, everything in _groups(src):
        table = comparison(main, ref)
        if table.empty:
            continue
        lines += [
            f"### NSF against MAF on {device}, batch {int(batch)}",
            "",
            "Both with the same MADE conditioner and depth; an NSF layer's MADE emits 3K - 1 numbers per "
            "dimension (K bins, 8 by default) where MAF's emits 2. Ratios of medians with their 95% intervals "
            "(paired by round where both were timed in the same rounds); NSF's sample / log_prob by its default "
            "(incremental) solve and by its reference, d sequential passes per layer:",
            "",
            tables.markdown(table),
            "",
        ]
        peers = peers_d_pass(everything)
        if not peers.empty:
            lines += [
                "The spline peers sample by d full conditioner passes per layer (their inverse iterated d times); "
                "their own sample / log_prob where the sweep reached them:",
                "",
                tables.markdown(peers),
                "",
            ]
    q = quality(src)
    if not q.empty:
        lines += ["Test NLL of NSF and MAF on the fit's data sets (lower is better):", "", tables.markdown(q), ""]
    return [f"## {TITLE}", "", *lines] if lines else []


def findings(src: Sources) -> list[Finding]:
    found = []
    for device, batch, main, _, _ in _groups(src):
        dims = sorted(set(main[main[Col.MODEL] == SPLINE][Col.DIM]) & set(main[main[Col.MODEL] == AFFINE][Col.DIM]))
        values = []
        for dim in reversed(dims):  # the largest d where both have log_prob and sample
            values = [_pair(main, dim, op, SPLINE, AFFINE, f"{op} nsf / maf") for op in (LOG_PROB, SAMPLE)]
            own = time.over_log_prob(main, main, SPLINE, dim, SAMPLE, "nsf sample / log_prob")
            if all(v is not None for v in values) and own is not None:
                values.append(own)
                break
            values = []
        if not values:
            continue
        params = _params(main, dim)
        text = f"on {device}, batch {int(batch)}, at d={int(dim)}: " + ", ".join(
            f"{v.label} {v.show()}" for v in values
        )
        text += f"; parameters nsf / maf {params}" if params else ""
        found.append(
            Finding(
                "A spline flow against an affine one",
                text,
                TITLE,
                tuple(values),
                note(values),
                dict(device=device, batch=int(batch), d=int(dim)),
            )
        )
    return found
