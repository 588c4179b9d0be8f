"""Algorithms for the slow direction: each family's solvers against d (the sweep's rows,
a figure per model and op), and the interleaved A/B of ``harness solvers``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ...ops import FAMILIES, SOLVER_FAMILIES, SOLVERS, role, solvers_of
from ...table import OK, Col
from ...table import SOLVERS as SOLVERS_CSV
from .. import plots, tables
from ..findings import Finding, ratio
from ..load import Sources

TITLE = "Algorithms for the slow direction"
AB_TITLE = "A/B: every solver against the reference, interleaved"


def slow_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of the reference models' slow direction (the family's op, one of its solvers)."""
    if df.empty:
        return df
    family = df[Col.MODEL].map(lambda m: FAMILIES.get(m))
    slow = family.map(lambda f: f.slow if f else None)
    solves = pd.Series([bool(f) and (f.solvers, s) in SOLVERS for f, s in zip(family, df[Col.SOLVER])], index=df.index)
    return df[tables.is_ours(df) & (df[Col.OP] == slow) & solves & tables.default_backend_rows(df)]


def label(solver: str) -> str:
    return f"{solver} ({role(solver)})" if role(solver) else solver


def solver_table(g: pd.DataFrame) -> pd.DataFrame:
    """One model's slow direction on one device and batch: per d and solver, time,
    evaluations per dimension, iterations, speed-up over the reference solver (same
    sweep, configurations timed one after another) and deviation from it."""
    rows = []
    for (dim, solver), h in g.groupby([Col.DIM, Col.SOLVER], sort=True):
        r = h.iloc[0]
        ref = g[(g[Col.DIM] == dim) & (g[Col.SOLVER].map(role) == "reference")]
        ref_ok = len(ref) and ref[Col.STATUS].iloc[0] == OK and r[Col.STATUS] == OK
        if role(solver) == "reference":  # against itself: 1 by definition, no interval to state
            speedup = "1 (reference)"
        else:
            speedup = ratio(ref.iloc[0], r).show() if ref_ok else ""
        t = float(r[Col.MEDIAN_S]) if r[Col.STATUS] == OK else np.nan
        rows.append(
            {
                "d": int(dim),
                Col.SOLVER: label(solver),
                "time (ms)": tables.fmt(t * 1e3) or f"{r[Col.STATUS]}",
                "evaluations / dim": tables.fmt(r[Col.EVALUATIONS_PER_DIM]),
                Col.ITERATIONS: tables.fmt(r[Col.ITERATIONS]),
                "speed-up over reference [95% CI, unpaired]": speedup,
                "max rel. deviation from reference": tables.fmt(r.get(Col.MAX_REL_DEV, np.nan)),
            }
        )
    return pd.DataFrame(rows)


def figure(slow: pd.DataFrame, out: Path) -> list[str]:
    """Per model, op, device and batch (rows): time against d for each solver, and the
    evaluations per dimension each spends."""
    d = tables.ok(slow)
    panels = list(dict.fromkeys(zip(d[Col.MODEL], d[Col.OP], d[Col.DEVICE], d[Col.BATCH])))
    if not panels:
        return []
    fig, axes = plots.grid(len(panels), 2, 7.5, 3.4)
    for i, (model, op, device, batch) in enumerate(panels):
        g = d[(d[Col.MODEL] == model) & (d[Col.OP] == op) & (d[Col.DEVICE] == device) & (d[Col.BATCH] == batch)]
        for solver, h in g.groupby(Col.SOLVER, sort=False):
            h = h.sort_values(Col.DIM)
            style = dict(marker="o", linestyle="--" if role(solver) == "reference" else "-")
            k = tables.fit_slope(h[Col.DIM].to_numpy(), h[Col.MEDIAN_S].to_numpy())
            axes[i][0].plot(h[Col.DIM], h[Col.MEDIAN_S], label=f"{label(solver)}, slope {k:.2f}", **style)
            counted = h[h[Col.EVALUATIONS_PER_DIM] > 0]
            if not counted.empty:
                axes[i][1].plot(counted[Col.DIM], counted[Col.EVALUATIONS_PER_DIM], label=label(solver), **style)
        where = f"{model} {op} on {device}, batch {int(batch)}"
        plots.log_axes(axes[i][0], f"{where}: time per call")
        plots.log_axes(axes[i][1], f"{where}: evaluations per dimension and layer", ylabel="evaluations per dimension")
        if not axes[i][1].lines:
            axes[i][1].set_yscale("linear")
        for ax in axes[i]:
            plots.legend(ax)
    return plots.save(fig, out, "solvers")


def ab_table(rows: pd.DataFrame) -> str:
    """The A/B of ``harness solvers`` (solvers.csv), as markdown."""

    def interval(r: pd.Series) -> str:
        if str(r["reference"]) in ("True", "1", "1.0"):
            return "1 (reference)"
        if pd.isna(r.get("speedup_low", np.nan)):
            return f"{r['speedup']:.3g} (single calls)"
        return f"{r['speedup']:.3g} [{r['speedup_low']:.3g}, {r['speedup_high']:.3g}]"

    failed = rows[rows[Col.STATUS] != OK]
    rows = rows[rows[Col.STATUS] == OK]
    notes = "".join(
        f"\n\n{r[Col.MODEL]} {r[Col.OP]} at d={int(r[Col.DIM])}: not measured ({r[Col.STATUS]}: {r[Col.REASON]})"
        for _, r in failed.iterrows()
    )
    body = pd.DataFrame(
        {
            Col.MODEL: rows[Col.MODEL],
            Col.OP: rows[Col.OP],
            "d": rows[Col.DIM].astype(int),
            Col.SOLVER: rows[Col.SOLVER],
            "time (ms)": (rows[Col.MEDIAN_S] * 1e3).map(lambda v: f"{v:.4g}"),
            "speed-up over reference [95% CI]": [interval(r) for _, r in rows.iterrows()],
            "evaluations / dim": rows[Col.EVALUATIONS_PER_DIM].map(lambda v: f"{v:.3g}"),
            Col.ITERATIONS: rows[Col.ITERATIONS].astype(int),
            "max rel. deviation from reference": rows[Col.MAX_REL_DEV].map(lambda v: f"{v:.2g}"),
            "slow op / fast op": rows["slow_over_fast"].map(lambda v: f"{v:.3g}"),
        }
    )
    return (tables.markdown(body) if len(rows) else "(no solver was timed)") + notes


def prose() -> str:
    """What each solver does, from the vocabulary (harness.ops)."""
    parts = []
    for family in SOLVER_FAMILIES:
        members = [f"`{n}` ({role(n) or 'alternative'}: {SOLVERS[family, n].about})" for n in solvers_of(family)]
        models = ", ".join(f.name for f in FAMILIES.values() if f.solvers == family)
        parts.append(f"The {family} systems of {models}: {'; '.join(members)}.")
    return " ".join(parts) + " `evaluations / dim`: evaluations of one dimension's output per dimension and layer."


def render(src: Sources, out: Path) -> list[str]:
    slow = slow_rows(src.rows)
    ab = src.side[SOLVERS_CSV]
    if slow.empty and ab.empty:
        return []
    lines = [f"## {TITLE}", "", prose(), ""]
    for name in (figure(slow, out) if not slow.empty else [])[:1]:
        lines += [f"![solvers]({name})", ""]
    for (model, op, device, batch), g in slow.groupby([Col.MODEL, Col.OP, Col.DEVICE, Col.BATCH], sort=False):
        if g[Col.SOLVER].nunique() < 2:
            continue
        lines += [f"### {model} {op} on {device}, batch {int(batch)}", ""]
        lines += [
            "Speed-ups here compare configurations timed one after another in the sweep; the A/B table below "
            "times them interleaved.",
            "",
            tables.markdown(solver_table(g)),
            "",
        ]
    if not ab.empty:
        lines += [f"### {AB_TITLE}", ""]
        lines += [
            "`python -m harness solvers`: one process, float32, one thread, the same weights and inputs for every "
            "solver; the speed-up is the median over rounds of reference / solver with a bootstrap 95% interval "
            "over rounds (it covers rounds in that process, not a rerun); "
            "`slow op / fast op` divides by the model's parallel op in the same rounds.",
            "",
            ab_table(ab),
            "",
        ]
    return lines


def findings(src: Sources) -> list[Finding]:
    return []
