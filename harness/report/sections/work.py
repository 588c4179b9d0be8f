"""The work each op does and how close it runs to this machine's roofline: FLOPs and
bytes moved per point, arithmetic intensity, the attainable bound (the smaller of the
GEMM rate and the in-cache copy rate x intensity), the achieved share of it (each sweep
against its own machine's rates, from its meta.json), peak memory, and the roofline
figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ...ops import OPS
from ...table import OK, Col
from .. import plots, tables
from ..findings import Finding, Value
from ..load import ORIGIN, Sources

TITLE = "Size and work"
CEILINGS = ("gemm_gflops", "cache_gbps", "copy_gbps")


def title(device: str, batch: int) -> str:
    return f"Size and work on {device}, batch {int(batch)}"


def ceilings(src: Sources, origin: str, device: str) -> dict[str, float]:
    """The GEMM rate (GFLOP/s) and copy rates (GB/s) the row's own sweep measured
    (meta.json, ``roofline``); those it did not measure are left out."""
    found = src.meta_of(origin).get("roofline", {}).get(device, {})
    return {k: float(found[k]) for k in CEILINGS if isinstance(found.get(k), int | float)}


def roofline(df: pd.DataFrame, src: Sources) -> pd.DataFrame:
    """Per flow, d and op (default algorithms, ok rows, counted): FLOPs and bytes per
    point, intensity (FLOP/byte), achieved GFLOP/s, the attainable bound
    min(GEMM, cache GB/s x intensity), which ceiling sets it, and % of it."""
    done = tables.main_rows(df)
    done = done[(done[Col.STATUS] == OK) & done[Col.FLOPS].notna()]
    out = []
    for _, r in done.iterrows():
        batch, secs, flops = float(r[Col.BATCH]), float(r[Col.MEDIAN_S]), float(r[Col.FLOPS])
        moved = float(r.get(Col.BYTES_MOVED, np.nan))
        rate = flops / secs / 1e9
        c = ceilings(src, r[ORIGIN], r[Col.DEVICE])
        intensity = flops / moved if moved > 0 else np.nan
        memory = c.get("cache_gbps", np.nan) * intensity
        compute = c.get("gemm_gflops", np.nan)
        bound = np.nanmin([compute, memory]) if np.isfinite([compute, memory]).any() else np.nan
        limit = "" if not np.isfinite(bound) else "compute" if bound == compute else "memory (cache)"
        out.append(
            {
                Col.MODEL: r[Col.MODEL],
                Col.DIM: int(r[Col.DIM]),
                Col.OP: r[Col.OP],
                Col.DEVICE: r[Col.DEVICE],
                "flops_per_point": flops / batch,
                "bytes_per_point": moved / batch,
                "intensity": intensity,
                "gflops": rate,
                "bound_gflops": bound,
                "limit": limit,
                "percent_of_bound": 100 * rate / bound if bound > 0 else np.nan,
                "percent_of_gemm": 100 * rate / compute if compute > 0 else np.nan,
                "peak_mib": float(r[Col.PEAK_MEM_BYTES]) / 2**20,
            }
        )
    order = {op: i for i, op in enumerate(OPS)}
    frame = pd.DataFrame(out)
    if frame.empty:
        return frame
    frame["_op"] = frame[Col.OP].map(order)
    return frame.sort_values([Col.DIM, Col.MODEL, "_op"], kind="stable").drop(columns="_op")


def work_table(roof: pd.DataFrame) -> pd.DataFrame:
    f = tables.fmt
    return pd.DataFrame(
        {
            Col.MODEL: roof[Col.MODEL],
            "d": roof[Col.DIM],
            Col.OP: roof[Col.OP],
            "FLOPs / point": roof["flops_per_point"].map(f),
            "bytes / point": roof["bytes_per_point"].map(f),
            "FLOP / byte": roof["intensity"].map(f),
            "GFLOP/s": roof["gflops"].map(f),
            "bound GFLOP/s": roof["bound_gflops"].map(f),
            "bound set by": roof["limit"],
            "% of bound": roof["percent_of_bound"].map(f),
            "% of GEMM": roof["percent_of_gemm"].map(f),
            "peak MiB": roof["peak_mib"].map(f),
        }
    )


def figure(roof: pd.DataFrame, rates: list[dict], df: pd.DataFrame, out: Path, stem: str) -> list[str]:
    """Intensity against GFLOP/s on log axes: the GEMM ceiling, the in-cache and memory
    copy ceilings of each sweep, and one point per flow, op and d (larger for larger d)."""
    fig, ax = plots.grid(1, 1, 7.5, 5.0)
    ax = np.atleast_1d(ax).ravel()[0]
    x = np.logspace(np.log10(max(roof["intensity"].min() / 2, 1e-3)), np.log10(roof["intensity"].max() * 4), 50)
    for c in {tuple(sorted(r.items())) for r in rates}:
        c = dict(c)
        if "gemm_gflops" in c:
            ax.axhline(c["gemm_gflops"], color="0.3", lw=1, label=f"GEMM ({c['gemm_gflops']:.0f} GFLOP/s)")
        for key, style, name in (("cache_gbps", "--", "in-cache copy"), ("copy_gbps", ":", "memory copy")):
            if key in c:
                y = c[key] * x
                y = np.minimum(y, c.get("gemm_gflops", np.inf))
                ax.plot(x, y, color="0.3", lw=1, linestyle=style, label=f"{name} ({c[key]:.0f} GB/s)")
    style = plots.styles(df)
    markers = dict(zip(OPS, ("o", "s", "^", "D")))
    dims = np.log2(roof[Col.DIM].astype(float))
    size = 15 + 60 * (dims - dims.min()) / max(float(dims.max() - dims.min()), 1.0)
    for (model, op), g in roof.groupby([Col.MODEL, Col.OP], sort=False):
        ax.scatter(
            g["intensity"],
            g["gflops"],
            s=size[g.index],
            color=style.get(model, {}).get("color", "C0"),
            marker=markers.get(op, "o"),
            label=f"{model} {op}",
            alpha=0.85,
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / byte moved by the ops)")
    ax.set_ylabel("achieved GFLOP/s")
    low, high = int(roof[Col.DIM].min()), int(roof[Col.DIM].max())
    ax.set_title(f"Roofline: each op at d = {low} ... {high} (larger markers: larger d)")
    plots.legend(ax)
    return plots.save(fig, out, stem, svg=False)


def _groups(src: Sources) -> list[tuple[str, int, pd.DataFrame, pd.DataFrame]]:
    """(device, batch, its rows, their roofline) of every flow's rows."""
    if src.rows.empty:
        return []
    df = tables.flows(src.rows)
    groups = [(device, batch, tables.in_group(df, device, batch)) for device, batch in tables.groups(df)]
    return [(device, batch, g, roofline(g, src)) for device, batch, g in groups]


def render(src: Sources, out: Path) -> list[str]:
    lines = []
    for device, batch, g, roof in _groups(src):
        if roof.empty:
            continue
        rates = [ceilings(src, o, device) for o in dict.fromkeys(g[ORIGIN])]
        distinct = {tuple(sorted(r.items())): r for r in rates}.values()
        said = "; ".join(", ".join(f"{k} {v:.1f}" for k, v in r.items()) for r in distinct)
        lines += [f"## {title(device, batch)}", ""]
        lines += [
            "FLOPs are counted op by op as dispatched (2 per multiply-add, element-wise ops 1 per element); bytes "
            "are what each op reads and writes, op by op as eager execution runs them (views none); peak memory "
            "is of tensor bytes allocated during one call; a compiled loop's work is that of the same arithmetic "
            "in eager ops. `bound`: the smaller of the GEMM rate and the in-cache copy rate x intensity, the "
            "rates the row's own sweep measured (" + (said or "none recorded") + "; GFLOP/s and GB/s, meta.json "
            "`roofline`). `% of bound` is how much of the best this machine could do at that intensity a call "
            "achieves; 100 would be at the roofline.",
            "",
        ]
        stem = f"roofline_{device}_b{int(batch)}"
        points = roof[(roof["intensity"] > 0) & (roof["gflops"] > 0)]  # none in a sweep without bytes counted
        if any(rates) and not points.empty:
            lines += [f"![roofline]({name})" for name in figure(points, rates, g, out, stem)] + [""]
        lines += [tables.markdown(work_table(roof)), ""]
        uncounted = tables.main_rows(g)
        uncounted = uncounted[(uncounted[Col.STATUS] == OK) & uncounted[Col.FLOPS].isna()]
        if not uncounted.empty:
            notes = uncounted[Col.FLOPS_NOTE].fillna("not counted")
            lines += ["FLOPs left blank:", ""]
            lines += [f"- {r.model} d={int(r.dim)} {r.op}: {n}" for r, n in zip(uncounted.itertuples(), notes)]
            lines += [""]
    return lines


def findings(src: Sources) -> list[Finding]:
    found = []
    for device, batch, _, roof in _groups(src):
        roof = roof[roof["percent_of_bound"].notna()] if not roof.empty else roof
        if roof.empty:
            continue
        top = roof[roof[Col.DIM] == roof[Col.DIM].max()]
        values = tuple(
            Value(f"{r[Col.MODEL]} {r[Col.OP]} d={int(r[Col.DIM])}", float(r["percent_of_bound"]), units="% of bound")
            for _, r in top.iterrows()
        )
        low, high = top.loc[top["percent_of_bound"].idxmin()], top.loc[top["percent_of_bound"].idxmax()]
        text = (
            f"on {device}, batch {int(batch)}, at d={int(top[Col.DIM].iloc[0])} the ops run at "
            f"{tables.fmt(float(low['percent_of_bound']))}% ({low[Col.MODEL]} {low[Col.OP]}) to "
            f"{tables.fmt(float(high['percent_of_bound']))}% ({high[Col.MODEL]} {high[Col.OP]}) of the bound "
            "this machine's GEMM and in-cache copy rates set at their intensity"
        )
        found.append(Finding("How close to the roofline?", text, title(device, batch), values, "", dict(device=device)))
    return found
