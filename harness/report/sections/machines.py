"""The same configuration on several machines, side by side: a table and a figure per op.

A machine is named by its hardware (the ``machine`` column: the GPU's name for CUDA
rows, the CPU model and its cores for CPU rows), whichever folder or job its rows came
from, so a distributed sweep's merged table and separate sweep folders read alike.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...table import OK, Col
from .. import plots
from ..findings import Finding
from ..load import Sources
from ..tables import flows, fmt, main_rows, markdown

TITLE = "Machines side by side"
MACHINE_LINES = ("-", "--", ":", "-.")
CONFIG = [Col.MODEL, Col.DIM, Col.BATCH, Col.SOLVER]


def machines(df: pd.DataFrame) -> list[str]:
    """The machines of the table, in order of appearance."""
    return list(dict.fromkeys(df[Col.MACHINE].dropna())) if Col.MACHINE in df else []


def table(df: pd.DataFrame, op: str) -> pd.DataFrame:
    """Medians in ms of ``op`` per configuration (rows) and machine (columns), for the
    configurations measured ok on at least two machines; the last column is the
    slowest over the fastest machine."""
    done = main_rows(df)
    done = done[(done[Col.OP] == op) & (done[Col.STATUS] == OK)]
    wide = done.pivot_table(index=CONFIG, columns=Col.MACHINE, values=Col.MEDIAN_S, aggfunc="median", sort=False)
    wide = wide[wide.notna().sum(axis=1) >= 2]
    if wide.empty:
        return pd.DataFrame()
    ratio = wide.max(axis=1) / wide.min(axis=1)
    shown = (wide * 1e3).map(fmt)
    shown.columns = [f"{m} ms" for m in shown.columns]
    shown["slowest / fastest"] = ratio.map(lambda v: f"{v:.3g}")
    shown = shown.reset_index()
    shown[Col.DIM] = shown[Col.DIM].astype(int)
    shown[Col.BATCH] = shown[Col.BATCH].astype(int)
    return shown.rename(columns={Col.DIM: "d"})


def render(src: Sources, out: Path) -> list[str]:
    """Per op, the configurations measured on two or more machines; empty with one machine."""
    df = flows(src.rows) if not src.rows.empty else src.rows
    names = machines(df)
    if len(names) < 2:
        return []
    lines = [f"## {TITLE}", ""]
    lines += [
        "The same configuration (model, d, batch, solver) measured on each machine; machines are named by "
        f"their hardware ({'; '.join(names)}). Each machine's environment is in Environment.",
        "",
    ]
    for op in dict.fromkeys(main_rows(df)[Col.OP]):
        t = table(df, op)
        if t.empty:
            continue
        lines += [f"### {op}", ""]
        for name in figure(df, op, out)[:1]:
            lines += [f"![machines {op}]({name})", ""]
        lines += [markdown(t), ""]
    return lines


def figure(df: pd.DataFrame, op: str, out: Path) -> list[str]:
    """``op``'s median time against d for each model on each machine (one line style
    per machine, one colour per model), at the first batch measured on two machines."""
    done = main_rows(df)
    done = done[(done[Col.OP] == op) & (done[Col.STATUS] == OK)]
    shared = [b for b, g in done.groupby(Col.BATCH, sort=False) if g[Col.MACHINE].nunique() >= 2]
    if not shared:
        return []
    done = done[done[Col.BATCH] == shared[0]]
    names = list(dict.fromkeys(done[Col.MACHINE]))
    style = plots.styles(df)
    fig, axes = plots.grid(1, 1, 8.6, 4.8)
    ax = axes[0][0]
    for (model, machine), g in done.groupby([Col.MODEL, Col.MACHINE], sort=False):
        g = g.sort_values(Col.DIM)
        line = MACHINE_LINES[names.index(machine) % len(MACHINE_LINES)]
        shape = dict(style[model], linestyle=line)  # the line style says the machine here
        ax.plot(g[Col.DIM], g[Col.MEDIAN_S], label=f"{model}, {machine}", **shape)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("dimension d")
    ax.set_ylabel("seconds per call")
    ax.set_title(f"{op} on each machine, batch {int(shared[0])} (line style: machine)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    plots.legend(ax)
    return plots.save(fig, out, f"machines_{op}")


def findings(src: Sources) -> list[Finding]:
    return []
