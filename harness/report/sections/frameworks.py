"""JAX against PyTorch: every contest a JAX peer (flowjax, numpyro) joined, our PyTorch
flow against it in the same interleaved rounds, and the calls after which the JAX flow's
jit compile has paid for itself against ours."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ...ops import FRAMEWORK_NAMES, framework
from ...table import OK, Col
from .. import tables
from ..findings import Finding, Value
from ..load import Sources
from .peers import BOOTSTRAP, NAF_CONTEST, bound, interval

TITLE = "JAX against PyTorch"
QUESTION = "JAX against PyTorch"
NEVER = "never: slower per call"
UNDECIDED = "not decided: no clear difference"
ONE_CALL = "not decided: timed by one call, no interval"


def jax_rows(vs: pd.DataFrame) -> pd.DataFrame:
    """The contest rows of JAX contenders (their framework read from their library)."""
    if vs.empty or Col.LIBRARY not in vs:
        return vs.iloc[0:0]
    jax = vs[Col.LIBRARY].fillna("").map(framework) == "jax"
    return vs[jax & (vs["contest"] != NAF_CONTEST)]


def compile_of(r: pd.Series, rows: pd.DataFrame) -> float:
    """A JAX contender's compile seconds for the contest's op and shape: the contest's
    own (its compile_s column), else the sweep's row of the same model, d, op and batch."""
    own = bound(r.get(Col.COMPILE_S))
    if own is not None:
        return own
    if rows.empty:
        return math.nan
    same_batch = rows[rows[Col.BATCH] == r[Col.BATCH]]
    return tables.cell(same_batch, r["contender"], r[Col.DIM], r[Col.OP], Col.COMPILE_S)


def break_even(ours_s: float, jax_s: float, compile_s: float, verdict: str) -> str:
    """After how many calls the JAX flow, its compile included, is ahead of ours: the
    smallest n with compile_s + n * jax_s < n * ours_s, where its per-call time is
    faster by an interval that excludes parity (``verdict``: ours ``slower``); never
    where ours is faster; undecided otherwise. Ours compiles nothing per shape (the
    numba loops are compiled once into numba's cache: make kernels)."""
    if verdict == "faster":
        return NEVER
    if not verdict:
        return ONE_CALL
    if verdict != "slower" or not (ours_s > jax_s):
        return UNDECIDED
    if not np.isfinite(compile_s):
        return "compile time not recorded"
    return f"{math.floor(compile_s / (ours_s - jax_s)) + 1:,} calls"


def table(src: Sources) -> pd.DataFrame:
    vs = src.contests()
    rows = []
    for _, r in jax_rows(vs).iterrows():
        g = vs[(vs["contest"] == r["contest"]) & (vs[Col.DIM] == r[Col.DIM])]
        ours = g[g["role"] == "ours"].iloc[0]
        if r[Col.STATUS] != OK:
            rows.append(
                {"contest": r["contest"], "d": int(r[Col.DIM]), "JAX": r["contender"], "not timed": r[Col.REASON]}
            )
            continue
        compile_s = compile_of(r, src.rows)
        verdict = r.get("verdict") if isinstance(r.get("verdict"), str) else ""
        rows.append(
            {
                "contest": r["contest"],
                "d": int(r[Col.DIM]),
                "JAX": r["contender"],
                "JAX (ms)": tables.fmt(r[Col.MEDIAN_S] * 1e3) + (" (1 call)" if bound(r["rounds"]) == 1 else ""),
                "its compile (s)": tables.fmt(compile_s),
                "ours, PyTorch (ms)": tables.fmt(ours[Col.MEDIAN_S] * 1e3),
                "ours / JAX [95% CI]": interval(r),
                "faster": {"faster": "ours (PyTorch)", "slower": f"{r['contender']} (JAX)"}.get(verdict, ""),
                "JAX ahead of ours after": break_even(ours[Col.MEDIAN_S], r[Col.MEDIAN_S], compile_s, verdict),
            }
        )
    out = pd.DataFrame(rows)
    if "not timed" in out:
        out["not timed"] = out["not timed"].fillna("")
    return out.fillna("")


def render(src: Sources, out: Path) -> list[str]:
    found = table(src)
    if found.empty:
        return []
    return [
        f"## {TITLE}",
        "",
        "The contests that a JAX peer joined (the jax extra: flowjax and numpyro, on the CPU, XLA on one thread), "
        "read from the contests' rows: ours is PyTorch. `its compile`: the seconds its jit spent on this op and "
        "shape, before and apart from every timing. `JAX ahead of ours after`: the calls n after which its "
        "compile is repaid, the smallest n with compile + n x JAX < n x ours, given only where it is faster per "
        "call by an interval that excludes 1; `never` where ours is faster per call. A JAX flow's training step "
        "is not timed (torch's autograd cannot see into JAX).",
        "",
        tables.markdown(found),
        "",
    ]


def findings(src: Sources) -> list[Finding]:
    found = table(src)
    if found.empty or "ours / JAX [95% CI]" not in found:
        return []
    vs = jax_rows(src.contests())
    parts, values = [], []
    decided = found[found["faster"] != ""]
    counts = decided["faster"].str.endswith("(JAX)").sum(), (decided["faster"] == "ours (PyTorch)").sum()
    for contest, g in found[found["ours / JAX [95% CI]"] != ""].groupby("contest", sort=False):
        top = g[g["d"] == g["d"].max()]
        for _, r in top.iterrows():
            who, d = r["JAX"], r["d"]
            row = vs[(vs["contest"] == contest) & (vs[Col.DIM] == d) & (vs["contender"] == who)].iloc[0]
            low, high = bound(row["ratio_low"]), bound(row["ratio_high"])
            value = Value(f"ours / {who}, {contest} at d={d}", float(row["ratio"]), low, high)
            values.append(value)
            said, compile_s = f"{contest} at d={d}: ours / {who} {value.show()}", r["its compile (s)"]
            if low is None:
                parts.append(f"{said} ({who} timed by one call: no verdict)")
            elif r["faster"].endswith("(JAX)"):
                parts.append(
                    f"{said}, {who} faster; its {compile_s} s compile repaid after {r['JAX ahead of ours after']}"
                )
            elif r["faster"]:
                parts.append(f"{said}, ours faster: the {compile_s} s compile never repaid")
            else:
                parts.append(f"{said}, no clear difference")
    if not parts:
        return []
    text = (
        f"per contest and d, JAX faster than ours in {counts[0]} and ours in {counts[1]} of {len(found)} "
        f"({FRAMEWORK_NAMES['jax']} peers on one thread); at the largest d: " + "; ".join(parts)
    )
    return [Finding(QUESTION, text, TITLE, tuple(values), BOOTSTRAP)]
