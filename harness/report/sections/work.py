"""The work each op does and how fast it does it: FLOPs per point, the achieved rate
and its share of this machine's GEMM rate (each sweep against its own machine's rate),
and peak memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ...ops import OPS
from ...table import OK, Col
from .. import tables
from ..findings import Finding
from ..load import ORIGIN, Sources

TITLE = "Size and work"


def title(device: str, batch: int) -> str:
    return f"Size and work on {device}, batch {int(batch)}"


def gemm_rate(src: Sources, origin: str, device: str) -> float | None:
    """GFLOP/s of torch.mm measured by the sweep that wrote the row (its meta.json)."""
    return src.meta_of(origin).get("roofline", {}).get(device, {}).get("gemm_gflops")


def work_table(df: pd.DataFrame, src: Sources) -> pd.DataFrame:
    """Per flow, d and op (default algorithms, ok rows): FLOPs per point, GFLOP/s, % of
    the GEMM rate of the sweep's own machine, and peak memory."""
    done = tables.main_rows(df)
    done = done[done[Col.STATUS] == OK]
    order = {op: i for i, op in enumerate(OPS)}
    done = done.sort_values([Col.DIM], kind="stable")
    rows = []
    for (model, dim), g in done.groupby([Col.MODEL, Col.DIM], sort=False):
        for _, r in g.sort_values(Col.OP, key=lambda s: s.map(order)).iterrows():
            batch, secs, flops = float(r[Col.BATCH]), float(r[Col.MEDIAN_S]), float(r[Col.FLOPS])
            rate = flops / secs / 1e9 if np.isfinite(flops) else np.nan
            gemm = gemm_rate(src, r[ORIGIN], r[Col.DEVICE])
            rows.append(
                {
                    Col.MODEL: model,
                    "d": int(dim),
                    Col.OP: r[Col.OP],
                    "FLOPs / point": tables.fmt(flops / batch),
                    "GFLOP/s": tables.fmt(rate),
                    "% of GEMM": tables.fmt(100 * rate / gemm) if gemm else "",
                    "peak MiB": tables.fmt(float(r[Col.PEAK_MEM_BYTES]) / 2**20),
                }
            )
    return pd.DataFrame(rows)


def render(src: Sources, out: Path) -> list[str]:
    rows = src.rows
    if rows.empty:
        return []
    df = tables.flows(rows)
    lines = []
    for device, batch in tables.groups(df):
        g = tables.in_group(df, device, batch)
        table = work_table(g, src)
        if table.empty:
            continue
        found = {gemm_rate(src, o, device) for o in set(g[ORIGIN])}
        rates = ", ".join(f"{r:.1f}" for r in sorted(r for r in found if r))
        lines += [f"## {title(device, batch)}", ""]
        if rates:
            lines += [
                "FLOPs are counted op by op as dispatched (2 per multiply-add, element-wise ops 1 per element); "
                "memory is the peak of tensor bytes allocated during one call. `% of GEMM`: achieved GFLOP/s over "
                f"the `torch.mm` rate the row's own sweep measured at its threads and dtype ({rates} GFLOP/s; "
                "meta.json, `roofline`).",
                "",
            ]
        lines += [tables.markdown(table), ""]
        uncounted = tables.main_rows(g)
        uncounted = uncounted[(uncounted[Col.STATUS] == OK) & uncounted[Col.FLOPS].isna()]
        if not uncounted.empty:
            notes = uncounted[Col.FLOPS_NOTE].fillna("not counted")
            lines += ["FLOPs left blank:", ""]
            lines += [f"- {r.model} d={int(r.dim)} {r.op}: {n}" for r, n in zip(uncounted.itertuples(), notes)]
            lines += [""]
    return lines


def findings(src: Sources) -> list[Finding]:
    return []
