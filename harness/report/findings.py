"""The report's opening: the product's questions, each answered in one sentence with a
number and its interval, computed from the tables the report prints below it.

Intervals of ratios taken from the sweep are quartile ranges: [q1(a) / q3(b), q3(a) / q1(b)]
with q1, q3 = median -/+ IQR / 2; those from the A/B contests are their bootstrap 95%
intervals.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import pandas as pd

from ..models.base import TRAIN_STEP
from ..table import OK, Col
from . import tables

PARALLEL = "parallel"


def anchor(title: str) -> str:
    """GitHub's anchor of a markdown heading: lower case, punctuation dropped, spaces to '-'."""
    return "#" + re.sub(r"[^a-z0-9 _-]", "", title.lower()).replace(" ", "-")


def link(title: str) -> str:
    return f"[{title}]({anchor(title)})"


def time_title(device: str, batch: float) -> str:
    return f"Time on {device}, batch {int(batch)}"


def sampling_title(device: str, batch: float) -> str:
    return f"IAF against MAF sampling on {device}, batch {int(batch)}"


SLOPES = "Scaling of log_prob against sample"
PARAMETERS = "Parameters"
PAPER = "B-NAF paper, Table 1 (bottom): NAF / B-NAF parameter ratios"
CONTESTS = "A/B: ours against the fastest peer"
DEVICES = "CPU against GPU"


def _quartiles(row: pd.Series) -> tuple[float, float, float]:
    median, iqr = float(row[Col.MEDIAN_S]), float(row[Col.IQR_S]) if pd.notna(row[Col.IQR_S]) else 0.0
    return median - iqr / 2, median, median + iqr / 2


def ratio(a: pd.Series, b: pd.Series) -> tuple[float, float, float]:
    """a / b of two ok rows: (median ratio, low, high) from their quartiles."""
    a1, a2, a3 = _quartiles(a)
    b1, b2, b3 = _quartiles(b)
    return a2 / b2, a1 / b3, a3 / b1


def show(r: tuple[float, float, float]) -> str:
    """'4.23 [4.07, 4.4]': a ratio and its interval, as the tables below print them."""
    return f"{tables.fmt(r[0])} [{tables.fmt(r[1])}, {tables.fmt(r[2])}]"


def _row(df: pd.DataFrame, model: str, dim: int, op: str) -> pd.Series | None:
    hit = df[(df[Col.MODEL] == model) & (df[Col.DIM] == dim) & (df[Col.OP] == op) & (df[Col.STATUS] == OK)]
    return None if hit.empty else hit.iloc[0]


def largest_common_dim(df: pd.DataFrame, models: list[str]) -> int | None:
    """The largest d at which every model in ``models`` has both ops ok."""
    done = tables.ok(df)
    done = done[done[Col.OP].isin(["log_prob", "sample"])]
    both = done.groupby([Col.MODEL, Col.DIM])[Col.OP].nunique()
    dims = None
    for model in models:
        have = {int(d) for (m, d), n in both.items() if m == model and n == 2}
        dims = have if dims is None else dims & have
    return max(dims) if dims else None


def sampling_table(df: pd.DataFrame) -> pd.DataFrame:
    """MAF against IAF sampling on one device and batch, per d: both times and
    MAF / IAF with its quartile interval."""
    rows = []
    for dim in sorted(df[df[Col.MODEL].isin(["maf", "iaf"])][Col.DIM].unique()):
        maf, iaf = _row(df, "maf", dim, "sample"), _row(df, "iaf", dim, "sample")
        if maf is None or iaf is None:
            continue
        rows.append(
            {
                "d": int(dim),
                "maf sample ms [IQR]": tables.timed(df, "maf", dim, "sample"),
                "iaf sample ms [IQR]": tables.timed(df, "iaf", dim, "sample"),
                "maf / iaf [quartile interval]": show(ratio(maf, iaf)),
            }
        )
    return pd.DataFrame(rows)


def params_table(df: pd.DataFrame) -> pd.DataFrame:
    """NAF against B-NAF parameters with the harness defaults, per d, in both counting
    conventions: stored (numel of every tensor) and effective (non-zero entries)."""
    sizes = df.drop_duplicates([Col.MODEL, Col.DIM]).set_index([Col.MODEL, Col.DIM])
    rows = []
    for dim in sorted(df[Col.DIM].unique()):
        if ("naf", dim) not in sizes.index or ("bnaf", dim) not in sizes.index:
            continue
        naf, bnaf = sizes.loc[("naf", dim)], sizes.loc[("bnaf", dim)]
        rows.append(
            {
                "d": int(dim),
                "naf stored": tables.fmt(naf[Col.PARAMS_STORED]),
                "naf effective": tables.fmt(naf[Col.PARAMS_EFFECTIVE]),
                "bnaf stored": tables.fmt(bnaf[Col.PARAMS_STORED]),
                "bnaf effective": tables.fmt(bnaf[Col.PARAMS_EFFECTIVE]),
                "naf / bnaf, stored": tables.fmt(naf[Col.PARAMS_STORED] / bnaf[Col.PARAMS_STORED]),
                "naf / bnaf, effective": tables.fmt(naf[Col.PARAMS_EFFECTIVE] / bnaf[Col.PARAMS_EFFECTIVE]),
            }
        )
    return pd.DataFrame(rows)


def devices_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per model, op and batch at the largest d measured on every device: each device's
    time and CPU / GPU with its quartile interval."""
    done = tables.ok(tables.main_rows(df))
    devices = list(dict.fromkeys(done[Col.DEVICE]))
    if "cpu" not in devices or len(devices) < 2:
        return pd.DataFrame()
    rows = []
    for (model, op, batch), g in done.groupby([Col.MODEL, Col.OP, Col.BATCH], sort=False):
        common = set.intersection(*(set(g[g[Col.DEVICE] == dev][Col.DIM]) for dev in devices))
        if not common:
            continue
        dim = max(common)
        cpu = g[(g[Col.DEVICE] == "cpu") & (g[Col.DIM] == dim)].iloc[0]
        for dev in devices[1:] if devices[0] == "cpu" else [d for d in devices if d != "cpu"]:
            other = g[(g[Col.DEVICE] == dev) & (g[Col.DIM] == dim)].iloc[0]
            rows.append(
                {
                    Col.MODEL: model,
                    Col.OP: op,
                    Col.BATCH: int(batch),
                    "d": int(dim),
                    "cpu solver": cpu[Col.SOLVER],
                    f"{dev} solver": other[Col.SOLVER],
                    "cpu ms": tables.fmt(cpu[Col.MEDIAN_S] * 1e3),
                    f"{dev} ms": tables.fmt(other[Col.MEDIAN_S] * 1e3),
                    f"cpu / {dev} [quartile interval]": show(ratio(cpu, other)),
                }
            )
    return pd.DataFrame(rows)


def _per_family(df: pd.DataFrame, device: str, batch: float) -> str | None:
    models = list(dict.fromkeys(df[Col.MODEL]))
    dim = largest_common_dim(df, models)
    if dim is None:
        return None
    parts = []
    for model in models:
        lp, smp = _row(df, model, dim, "log_prob"), _row(df, model, dim, "sample")
        solver = smp[Col.SOLVER] if smp[Col.KIND] != PARALLEL else lp[Col.SOLVER]
        parts.append(f"{model} {show(ratio(smp, lp))} ({solver})")
    return (
        f"**Sampling against density evaluation** on {device}, batch {int(batch)}, at d={dim} (the largest d "
        f"every model reached), sample / log_prob, each slow direction's solver in brackets: {', '.join(parts)} "
        f"({link(time_title(device, batch))})."
    )


def _train_step(df: pd.DataFrame, device: str, batch: float) -> str | None:
    """train_step / log_prob per model at the largest d every model has both."""
    done = tables.ok(df)
    models = list(dict.fromkeys(done[done[Col.OP] == TRAIN_STEP][Col.MODEL]))
    if not models:
        return None
    have = None
    for model in models:
        mine = done[done[Col.MODEL] == model]
        dims = set(mine[mine[Col.OP] == TRAIN_STEP][Col.DIM]) & set(mine[mine[Col.OP] == "log_prob"][Col.DIM])
        have = dims if have is None else have & dims
    if not have:
        return None
    dim = int(max(have))
    parts = [f"{m} {show(ratio(_row(df, m, dim, TRAIN_STEP), _row(df, m, dim, 'log_prob')))}" for m in models]
    return (
        f"**A training step against density evaluation** on {device}, batch {int(batch)}, at d={dim}: "
        f"train_step (log_prob, backward, Adam) / log_prob: {', '.join(parts)} ({link(SLOPES)})."
    )


def _iaf_maf(df: pd.DataFrame, device: str, batch: float) -> str | None:
    table = sampling_table(df)
    if table.empty:
        return None
    last = table.iloc[-1]
    others = ", ".join(
        f"{r['maf / iaf [quartile interval]'].split(' [')[0]} at d={r['d']}" for _, r in table.iloc[:-1].iterrows()
    )
    return (
        f"**IAF against MAF sampling** on {device}, batch {int(batch)}: IAF samples "
        f"{last['maf / iaf [quartile interval]']} times as fast as MAF at d={last['d']}"
        + (f" ({others})" if others else "")
        + f" ({link(sampling_title(device, batch))})."
    )


def _params(df: pd.DataFrame, paper: bool) -> str | None:
    table = params_table(df)
    if table.empty:
        return None
    last = table.iloc[-1]
    text = (
        f"**B-NAF against NAF parameters.** With the harness defaults (`python -m harness models`) at d={last['d']}, "
        f"NAF holds {last['naf / bnaf, effective']} times B-NAF's parameters counted as non-zero entries "
        f"(effective) and {last['naf / bnaf, stored']} times counted as numel (stored) ({link(PARAMETERS)})"
    )
    if paper:
        from ..paper import table1

        t1 = table1()
        text += (
            f"; with the papers' configurations and each author's convention (NAF numel, B-NAF non-zero), "
            f"NAF(5) holds {tables.fmt(t1['ratio5'].min())} to {tables.fmt(t1['ratio5'].max())} times B-NAF's "
            f"parameters on the five UCI sets ({link(PAPER)}). The answer depends on the configuration: the "
            f"defaults and the papers' UCI presets size B-NAF's blocks and NAF's conditioner differently."
        )
    else:
        text += "."
    return text


def _contests(versus: pd.DataFrame) -> str | None:
    if versus is None or versus.empty:
        return None
    parts = []
    vs = versus[versus["contest"] != "naf.sample/log_prob"]
    for contest, g in vs.groupby("contest", sort=False):
        ours = g[(g["contender"] == "ours") & (g[Col.DIM] == g[Col.DIM].max())].iloc[0]
        winner = "ours" if ours["ratio"] < 1 else ours["fastest"]
        parts.append(
            f"{contest} at d={int(ours[Col.DIM])}: {winner} (ours / {ours['fastest']} "
            f"{tables.ratio_ci(ours)}, {ours.get('verdict', '')})"
        )
    return (
        f"**Fastest implementation per family** (A/B contests, 95% intervals): {'; '.join(parts)} ({link(CONTESTS)})."
    )


def _slopes(df: pd.DataFrame) -> list[str]:
    slopes = tables.slope_values(df)
    if slopes.empty:
        return []
    lines = []
    for (device, batch), g in slopes.groupby([Col.DEVICE, Col.BATCH], sort=False):
        par = g[g[Col.KIND] == PARALLEL]["k"].dropna()
        seq = g[g[Col.KIND] != PARALLEL]["k"].dropna()
        if par.empty or seq.empty:
            continue
        lines.append(
            f"**Scaling** on {device}, batch {int(batch)}: time grows as d^k with k from "
            f"{tables.fmt(par.min(), 2)} to {tables.fmt(par.max(), 2)} for the parallel directions and "
            f"{tables.fmt(seq.min(), 2)} to {tables.fmt(seq.max(), 2)} for the sequential and iterative ones "
            f"with the default solvers ({link(SLOPES)})."
        )
    return lines


def _devices(df: pd.DataFrame) -> str | None:
    table = devices_table(df)
    if table.empty:
        return None
    interval = [c for c in table.columns if c.endswith("[quartile interval]")][0]
    solvers = [c for c in table.columns if c.endswith(" solver")]
    same = table[table[solvers[0]] == table[solvers[1]]]  # the same algorithm on both devices
    top = same[same["d"] == same["d"].max()]
    if top.empty:
        return None
    parts = [f"{r[Col.MODEL]} {r[Col.OP]} {r[interval]}" for _, r in top.iterrows()]
    batches = ", ".join(str(b) for b in sorted(set(top[Col.BATCH])))
    return (
        f"**CPU against GPU** ({interval.split(' [')[0]}) at d={int(top['d'].iloc[0])}, batch {batches}, "
        f"where both ran the same algorithm: {', '.join(parts)}; rows whose solvers differ are in "
        f"{link(DEVICES)}."
    )


def findings(df: pd.DataFrame, versus: pd.DataFrame | None, paper: bool, fitted: Sequence[str] = ()) -> list[str]:
    """The Findings section's lines, from the reference models' rows ``df`` (all devices
    and batches), the contests ``versus`` and the fits' answers ``fitted``."""
    answers: list[str | None] = []
    if not df.empty:
        main = tables.main_rows(df)
        for (device, batch), g in main.groupby([Col.DEVICE, Col.BATCH], sort=False):
            answers += [_per_family(g, device, batch), _iaf_maf(g, device, batch), _train_step(g, device, batch)]
        answers += [_params(df, paper), _contests(versus), *_slopes(df), _devices(df)]
    answers += list(fitted)
    answers = [a for a in answers if a]
    if not answers:
        return []
    return [
        "## Findings",
        "",
        *[f"- {a}" for a in answers],
        "",
        "Ratios from the sweep carry quartile intervals ([q1/q3, q3/q1] of the two timings); ratios from "
        "the A/B contests carry bootstrap 95% intervals over interleaved rounds.",
        "",
    ]
