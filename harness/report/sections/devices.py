"""CPU against GPU: the same configuration on both devices, compared only where both
ran the same algorithm (a slow direction's solver, or one parallel pass)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...table import Col
from .. import plots, tables
from ..findings import Finding, note, ratio
from ..load import Sources

TITLE = "CPU against GPU"
DEVICE_LINE = {"cpu": "-", "cuda": "--"}


def _done(src: Sources) -> pd.DataFrame:
    rows = src.rows
    if rows.empty:
        return rows
    return tables.ok(tables.main_rows(tables.flows(rows)))


def devices_table(done: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Per flow, op, batch and solver measured on the CPU and another device, at the
    largest d both reached: each time and CPU / other with its interval; and how many
    configurations were left out because the devices ran different algorithms."""
    devices = list(dict.fromkeys(done[Col.DEVICE])) if not done.empty else []
    if "cpu" not in devices or len(devices) < 2:
        return pd.DataFrame(), 0
    rows, differing = [], 0
    for (model, op, batch), g in done.groupby([Col.MODEL, Col.OP, Col.BATCH], sort=False):
        for dev in (d for d in devices if d != "cpu"):
            pair = g[g[Col.DEVICE].isin(["cpu", dev])]
            same = pair.groupby(Col.SOLVER).filter(lambda h: h[Col.DEVICE].nunique() == 2)
            if same.empty:
                differing += int(pair[Col.DEVICE].nunique() == 2)
                continue
            for solver, h in same.groupby(Col.SOLVER, sort=False):
                dims = set(h[h[Col.DEVICE] == "cpu"][Col.DIM]) & set(h[h[Col.DEVICE] == dev][Col.DIM])
                if not dims:
                    continue
                dim = max(dims)
                cpu = h[(h[Col.DEVICE] == "cpu") & (h[Col.DIM] == dim)].iloc[0]
                other = h[(h[Col.DEVICE] == dev) & (h[Col.DIM] == dim)].iloc[0]
                value = ratio(cpu, other, f"{model} {op}", f"cpu time / {dev} time")
                rows.append(
                    {
                        Col.MODEL: model,
                        Col.OP: op,
                        Col.SOLVER: solver,
                        Col.BATCH: int(batch),
                        "d": int(dim),
                        "cpu ms": tables.fmt(cpu[Col.MEDIAN_S] * 1e3),
                        f"{dev} ms": tables.fmt(other[Col.MEDIAN_S] * 1e3),
                        f"cpu / {dev} [interval]": value.show(),
                        "value": value,
                    }
                )
    return pd.DataFrame(rows), differing


def figure(done: pd.DataFrame, table: pd.DataFrame, out: Path) -> list[str]:
    """A panel per flow (rows) and op (columns): the series of each device and batch
    whose algorithm both devices ran; solid on the CPU, dashed on CUDA."""
    keep = set(zip(table[Col.MODEL], table[Col.OP], table[Col.SOLVER]))
    d = done[[k in keep for k in zip(done[Col.MODEL], done[Col.OP], done[Col.SOLVER])]]
    models, ops = list(dict.fromkeys(d[Col.MODEL])), list(dict.fromkeys(d[Col.OP]))
    if not models:
        return []
    style, markers = plots.styles(done), dict(zip(sorted(set(d[Col.BATCH])), "os^Dv"))
    fig, axes = plots.grid(len(models), len(ops), 7.0, 3.4)
    for i, model in enumerate(models):
        for j, op in enumerate(ops):
            ax = axes[i][j]
            here = d[(d[Col.MODEL] == model) & (d[Col.OP] == op)]
            for (device, batch, solver), g in here.groupby([Col.DEVICE, Col.BATCH, Col.SOLVER]):
                line = dict(color=style[model]["color"], linestyle=DEVICE_LINE.get(device, ":"))
                plots.curve(ax, g, f"{device}, batch {int(batch)}, {solver}", marker=markers.get(batch, "o"), **line)
            plots.log_axes(ax, f"{model} {op}: CPU against GPU")
            plots.legend(ax)
    return plots.save(fig, out, "devices")


def render(src: Sources, out: Path) -> list[str]:
    done = _done(src)
    table, differing = devices_table(done)
    if table.empty:
        return []
    lines = [f"## {TITLE}", ""]
    lines += [
        "Each flow's default algorithm at the largest d measured on both devices, per batch, only where both "
        "devices ran the same algorithm (the `solver` column)"
        + (
            f"; {differing} configurations ran different algorithms on the two devices and are left out"
            if differing
            else ""
        )
        + ". The devices' sweeps ran on different machines and possibly different commits (see Environment).",
        "",
    ]
    for name in figure(done, table, out)[:1]:
        lines += [f"![devices]({name})", ""]
    return [*lines, tables.markdown(table.drop(columns="value")), ""]


def findings(src: Sources) -> list[Finding]:
    table, _ = devices_table(_done(src))
    if table.empty:
        return []
    top = table[table["d"] == table["d"].max()]
    values = tuple(top["value"])
    batches = ", ".join(str(b) for b in sorted(set(top[Col.BATCH])))
    ratio_name = [c for c in table.columns if c.startswith("cpu / ")][0].removesuffix(" [interval]")
    text = (
        f"({ratio_name}) at d={int(top['d'].iloc[0])}, batch {batches}, where both ran the same algorithm: "
        + ", ".join(f"{v.label} {v.show()}" for v in values)
    )
    return [Finding("CPU against GPU", text, TITLE, values, note(values), dict(d=int(top["d"].iloc[0])))]
