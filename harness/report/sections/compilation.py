"""Compiling: each configuration swept in more than one backend (``--backends``), every
compiled backend (torch.compile, the numba loop) against torch's eager ops, with what
compiling cost and after how many calls it pays."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ...intervals import MIN_EFFECT, verdict
from ...ops import COMPILE, EAGER
from ...table import Col
from .. import plots, tables
from ..findings import Finding, Value, note, ratio
from ..load import Sources

TITLE = "Compiling: torch.compile and the numba loop against eager"
CONFIG = [Col.DEVICE, Col.BATCH, Col.MODEL, Col.OP, Col.DIM, Col.SOLVER]


def pays_after(eager_s: float, compiled_s: float, compile_s: float) -> float:
    """Calls after which compiling has paid for itself: its one-off seconds over the
    seconds it saves per call (infinite where it saves none)."""
    saved = eager_s - compiled_s
    return math.ceil(compile_s / saved - 1e-9) if saved > 0 and not math.isnan(compile_s) else math.inf  # float noise


def comparisons(src: Sources) -> list[tuple[pd.Series, pd.Series, Value, str]]:
    """(eager row, compiled row, eager / compiled with its interval, verdict) for every
    configuration measured both eagerly and compiled, both ok."""
    if src.rows.empty:
        return []
    rows = tables.ok(tables.flows(src.rows))
    if rows.empty or rows[Col.BACKEND].nunique() < 2:
        return []
    found = []
    for _, g in rows.groupby(CONFIG, sort=False):
        eager = g[g[Col.BACKEND] == EAGER]
        if eager.empty:
            continue
        for _, compiled in g[g[Col.BACKEND] != EAGER].iterrows():
            e = eager.iloc[0]
            value = ratio(e, compiled, f"{compiled[Col.MODEL]} {compiled[Col.OP]} d={int(compiled[Col.DIM])}", "x")
            said = "no interval"
            if value.low is not None:
                said = verdict(1 / value.high, 1 / value.low, min_effect=MIN_EFFECT, faster="pays", slower="slower")
            found.append((e, compiled, value, said))
    return found


def table(found: list) -> pd.DataFrame:
    out = []
    for eager, compiled, value, said in found:
        compile_s = float(compiled.get(Col.COMPILE_S, math.nan))
        n = pays_after(float(eager[Col.MEDIAN_S]), float(compiled[Col.MEDIAN_S]), compile_s)
        out.append(
            {
                Col.DEVICE: compiled[Col.DEVICE],
                Col.MODEL: compiled[Col.MODEL],
                Col.OP: compiled[Col.OP],
                Col.SOLVER: compiled[Col.SOLVER],
                "d": int(compiled[Col.DIM]),
                Col.BACKEND: compiled[Col.BACKEND],
                "eager ms": tables.fmt(float(eager[Col.MEDIAN_S]) * 1e3),
                "compiled ms": tables.fmt(float(compiled[Col.MEDIAN_S]) * 1e3),
                "speed-up over eager [95% CI]": value.show(),
                "verdict": said,
                "compiling (s)": tables.fmt(compile_s),
                "pays after (calls)": tables.fmt(float(n)) if said == "pays" else "",
            }
        )
    return pd.DataFrame(out)


SAID_COLORS = {"pays": "C2", "slower": "C3"}  # anything else: no clear difference, grey


def figure(found: list, out: Path) -> list[str]:
    """Each compiled configuration's speed-up over eager as a forest plot (95% intervals,
    parity at 1), coloured by its verdict, each label naming the backend and the calls
    after which compiling has paid."""
    rows = []
    for eager, compiled, value, said in found:
        n = pays_after(float(eager[Col.MEDIAN_S]), float(compiled[Col.MEDIAN_S]), float(compiled[Col.COMPILE_S]))
        paid = f", pays after {tables.fmt(float(n))} calls" if said == "pays" else ""
        label = f"{value.label} {compiled[Col.BACKEND]}{paid}"
        rows.append((label, value.value, value.low, value.high, SAID_COLORS.get(said, "0.5")))
    colors = {"pays": SAID_COLORS["pays"], "slower": SAID_COLORS["slower"], "no clear difference": "0.5"}
    xlabel = "eager / compiled (95% interval; > 1: compiling is faster per call)"
    return plots.forest(rows, out, "compiling", "Speed-up over eager, per configuration", xlabel, colors)


def render(src: Sources, out: Path) -> list[str]:
    found = comparisons(src)
    if not found:
        return []
    figures = [f"![compiling]({name})" for name in figure(found, out)[:1]]
    return [
        f"## {TITLE}",
        "",
        "Each configuration timed in torch's eager ops and compiled, in the same interleaved rounds where one "
        f"sweep ran both. A verdict is printed only where the whole interval lies beyond {MIN_EFFECT:.0%}. "
        "Compiling seconds are once per process and configuration for torch.compile (the calls that made "
        "graphs, less one call each); for the numba loop, once per process for every configuration. "
        "Calls to pay = compiling seconds / seconds saved per call. A compiled call that made new graphs while "
        "timed (a branch or loop count that depends on the data) is an error row, not a time.",
        "",
        tables.markdown(table(found)),
        "",
        *(line for name in figures for line in (name, "")),
    ]


def findings(src: Sources) -> list[Finding]:
    found = comparisons(src)
    if not found:
        return []
    result = []
    for backend in dict.fromkeys(c[Col.BACKEND] for _, c, _, _ in found):
        mine = [f for f in found if f[1][Col.BACKEND] == backend]
        pays = [f for f in mine if f[3] == "pays"]
        slower = [f for f in mine if f[3] == "slower"]
        name = "torch.compile" if backend == COMPILE else f"the {backend} loop"
        text = f"{name} is faster than eager in {len(pays)} of {len(mine)} configurations"
        text += f" and slower in {len(slower)}" if slower else ""
        values: tuple[Value, ...] = ()
        if pays:
            best_e, best_c, best, _ = max(pays, key=lambda f: f[2].value)
            n = pays_after(float(best_e[Col.MEDIAN_S]), float(best_c[Col.MEDIAN_S]), float(best_c[Col.COMPILE_S]))
            text += f"; most for {best.label}: {best.show()} times as fast, paying for its compiling after {n:,} calls"
            values = (best,)
        result.append(Finding(f"Does {name} pay?", text, TITLE, values, note(values), dict(backend=backend)))
    return result
