"""How time grows with d: every flow's curves per op (the overview), the fitted
exponents, and each flow's ops side by side labelled with their cost."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ...ops import OPS
from ...table import Col
from .. import plots, tables
from ..findings import Finding, Value
from ..load import Sources

TITLE = "Scaling with d"


def slope_values(df: pd.DataFrame) -> pd.DataFrame:
    """Fitted exponent k in time ~ d^k per device, batch, model and op (default
    algorithms), with the dims it was fitted over."""
    rows = []
    groups = tables.ok(tables.main_rows(df)).groupby([Col.DEVICE, Col.BATCH, Col.MODEL, Col.OP], sort=False)
    for (device, batch, model, op), g in groups:
        k, low, high = tables.fit_slope_interval(g[Col.DIM].to_numpy(), g[Col.MEDIAN_S].to_numpy())
        rows.append(
            {
                Col.DEVICE: device,
                Col.BATCH: int(batch),
                Col.MODEL: model,
                Col.OP: op,
                Col.KIND: g[Col.KIND].iloc[0],
                "k": k,
                "low": low,
                "high": high,
                "dims fitted": tables.fitted_dims(g[Col.DIM].to_numpy(), k),
            }
        )
    return pd.DataFrame(rows)


def overview(df: pd.DataFrame, out: Path) -> list[str]:
    """Every flow's curve (default algorithms), a panel per op (columns) and (device,
    batch) (rows)."""
    d = tables.main_rows(df)
    groups, measured = tables.groups(tables.ok(d)), [op for op in OPS if (d[Col.OP] == op).any()]
    if not groups or not measured:
        return []
    style = plots.styles(df)
    fig, axes = plots.grid(len(groups), len(measured), 7.2, 4.6)
    for i, (device, batch) in enumerate(groups):
        for j, op in enumerate(measured):
            ax = axes[i][j]
            here = tables.in_group(d, device, batch)
            for model, g in here[here[Col.OP] == op].groupby(Col.MODEL, sort=False):
                plots.curve(ax, g, model, **style[model])
            plots.log_axes(ax, f"{op} on {device}, batch {batch}")
            plots.legend(ax)
    return plots.save(fig, out, "overview")


def per_flow(df: pd.DataFrame, out: Path) -> list[str]:
    """One panel per flow (rows) and (device, batch) (columns): each op's time against d,
    labelled with its cost kind and fitted slope."""
    d = tables.main_rows(df)
    models, groups = list(dict.fromkeys(tables.ok(d)[Col.MODEL])), tables.groups(tables.ok(d))
    if not models:
        return []
    style = plots.styles(df)
    fig, axes = plots.grid(len(models), len(groups), 8.4, 3.4)
    for i, model in enumerate(models):
        for j, (device, batch) in enumerate(groups):
            ax = axes[i][j]
            here = tables.in_group(d[d[Col.MODEL] == model], device, batch)
            for op, g in here.groupby(Col.OP, sort=False):
                plots.curve(ax, g, op, color=style[model]["color"], marker=style[model]["marker"], **plots.OP_STYLE[op])
            plots.log_axes(ax, f"{model} on {device}, batch {batch}")
            plots.legend(ax)
    return plots.save(fig, out, "scaling")


def render(src: Sources, out: Path) -> list[str]:
    rows = src.rows
    if rows.empty:
        return []
    values = slope_values(tables.flows(rows))
    if values.empty:
        return []
    lines = [f"## {TITLE}", ""]
    for name in overview(rows, out)[:1]:
        lines += [
            "Every flow's time against d, peers included, each op in its panel; an x is a point not timed: "
            "at the seconds of its one call where it was skipped as over budget after that call, else at the "
            "top of the panel (the reason: the tables):",
            "",
            f"![overview]({name})",
            "",
        ]
    shown = values.assign(k=[_k(r) for _, r in values.iterrows()]).drop(columns=["low", "high"])
    shown = shown.rename(columns={"k": "slope k [95% CI]"})
    lines += [
        f"Fitted exponent k of time ~ d^k over the upper half of the dims (at least {tables.MIN_FIT_DIMS}), per "
        "device and batch, with the fit's 95% interval (Student's t over its residuals); parallel passes "
        "grow with the networks' widths, sequential ones make d passes:",
        "",
        tables.markdown(shown),
        "",
    ]
    for name in per_flow(tables.flows(rows), out)[:1]:
        lines += ["Per flow, each op labelled with its cost:", "", f"![scaling]({name})", ""]
    return lines


def _k(r: pd.Series) -> str:
    """'1.02 [0.97, 1.07]', or why there is no exponent."""
    if not np.isfinite(r["k"]):
        return "too few dims"
    return f"{tables.fmt(r['k'])} [{tables.fmt(r['low'])}, {tables.fmt(r['high'])}]"


def _span(g: pd.DataFrame) -> str:
    """The smallest and largest exponent of a set of series, each named with its interval;
    one value where they print the same."""
    lo, hi = g.loc[g["k"].idxmin()], g.loc[g["k"].idxmax()]
    if tables.fmt(lo["k"]) == tables.fmt(hi["k"]):
        return f"k = {_k(lo)} for all {len(g)}"
    return f"k from {_k(lo)} ({lo[Col.MODEL]} {lo[Col.OP]}) to {_k(hi)} ({hi[Col.MODEL]} {hi[Col.OP]})"


def findings(src: Sources) -> list[Finding]:
    rows = src.rows
    if rows.empty:
        return []
    values = slope_values(tables.flows(rows))  # the reference models and users' flows
    found = []
    for (device, batch), g in values.groupby([Col.DEVICE, Col.BATCH], sort=False) if not values.empty else []:
        fitted = g[np.isfinite(g["k"])]
        keys = dict(device=device, batch=int(batch))
        if fitted.empty:  # the statement is left out, and the reader told why in one line
            dims = sorted(set(tables.in_group(tables.ok(tables.flows(rows)), device, batch)[Col.DIM].astype(int)))
            text = (
                f"on {device}, batch {batch}: no exponent stated: a fit needs {tables.MIN_FIT_DIMS} dims "
                f"(measured: {', '.join(map(str, dims)) or 'none'})"
            )
            found.append(Finding("Scaling", text, TITLE, (), "", keys))
            continue
        par, seq = fitted[fitted[Col.KIND] == "parallel"], fitted[fitted[Col.KIND] != "parallel"]
        spans = [f"{_span(par)} for the parallel ops"] if not par.empty else []
        spans += [f"{_span(seq)} for the sequential and iterative ones"] if not seq.empty else []
        text = (
            f"on {device}, batch {batch}, over the upper half of the dims (95% intervals of each fit): "
            f"{', '.join(spans)}, with the default solvers"
        )
        values_ = tuple(
            Value(f"{r[Col.MODEL]} {r[Col.OP]}", float(r["k"]), float(r["low"]), float(r["high"]), "exponent")
            for _, r in fitted.iterrows()
        )
        found.append(Finding("Scaling", text, TITLE, values_, "", keys))
    return found
