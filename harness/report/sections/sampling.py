"""IAF against MAF sampling: the question the two papers settle in opposite directions,
per d on each device and batch."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...ops import SAMPLE
from ...table import Col
from .. import tables
from ..findings import Finding, note, ratio
from ..load import Sources

TITLE = "IAF against MAF sampling"


def title(device: str, batch: int) -> str:
    return f"IAF against MAF sampling on {device}, batch {int(batch)}"


def _groups(src: Sources) -> list[tuple[str, int, pd.DataFrame]]:
    rows = src.rows
    if rows.empty or not {"maf", "iaf"} <= set(rows[Col.MODEL]):
        return []
    main = tables.main_rows(rows[rows[Col.MODEL].isin(["maf", "iaf"])])
    return [(d, b, tables.in_group(main, d, b)) for d, b in tables.groups(main)]


def sampling_table(df: pd.DataFrame) -> tuple[pd.DataFrame, list]:
    """MAF against IAF sampling per d: both times and MAF / IAF with its interval; and
    the ratios as values."""
    rows, values = [], []
    for dim in sorted(df[Col.DIM].unique()):
        maf, iaf = tables.ok_row(df, "maf", dim, SAMPLE), tables.ok_row(df, "iaf", dim, SAMPLE)
        if maf is None or iaf is None:
            continue
        value = ratio(maf, iaf, f"d={int(dim)}", "maf sample time / iaf sample time")
        values.append(value)
        rows.append(
            {
                "d": int(dim),
                "maf sample ms [IQR]": tables.timed(df, "maf", dim, SAMPLE),
                "iaf sample ms [IQR]": tables.timed(df, "iaf", dim, SAMPLE),
                "maf / iaf [95% CI]": value.show(),
            }
        )
    return pd.DataFrame(rows), values


def render(src: Sources, out: Path) -> list[str]:
    lines = []
    for device, batch, g in _groups(src):
        table, _ = sampling_table(g)
        if not table.empty:
            lines += [f"## {title(device, batch)}", "", tables.markdown(table), ""]
    return lines


def findings(src: Sources) -> list[Finding]:
    found = []
    for device, batch, g in _groups(src):
        _, values = sampling_table(g)
        if not values:
            continue
        last = values[-1]
        others = ", ".join(f"{tables.fmt(v.value)} at {v.label}" for v in values[:-1])
        text = f"on {device}, batch {batch}: IAF samples {last.show()} times as fast as MAF at {last.label}" + (
            f" ({others})" if others else ""
        )
        found.append(
            Finding(
                "IAF against MAF sampling",
                text,
                title(device, batch),
                tuple(values),
                note(values),
                dict(device=device, batch=batch),
            )
        )
    return found
