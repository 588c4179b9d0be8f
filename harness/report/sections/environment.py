"""Where and with what each sweep ran: commit, date, torch, Python, CPU, GPU, threads."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...ops import NATIVE
from ...table import Col
from .. import tables
from ..findings import Finding, Value
from ..load import Sources

TITLE = "Environment"
KEYS = (
    Col.COMMIT,
    "dirty",
    "date",
    "torch",
    "python",
    "cpu",
    "cpu_count",
    "gpu",
    "cuda",
    Col.THREADS,
    "load_start",
    "load_end",
    "harness_version",
)


def environment(meta: dict) -> pd.DataFrame:
    return pd.DataFrame([{"key": k, "value": str(meta.get(k, ""))} for k in KEYS if k in meta])


def render(src: Sources, out: Path) -> list[str]:
    if not src.sweeps:
        return []
    lines = [f"## {TITLE}", ""]
    for _, meta in src.sweeps:
        lines += [f"`{meta['path']}`: `{meta.get('command', '')}`", "", tables.markdown(environment(meta)), ""]
    return lines


def findings(src: Sources) -> list[Finding]:
    """Says so where a sweep predates the solver axis: its reference models' slow ops
    carry ``native``, the algorithm that commit had, which may be none of today's."""
    from ... import env

    found = []
    for rows, meta in src.sweeps:
        loads = [meta.get("load_start"), meta.get("load_end")]
        busy = env.overloaded(loads, meta.get("cpu_count"))
        if busy:
            peak = Value(
                "1-minute load average", max(x[0] for x in loads if x), units=f"on {meta.get('cpu_count')} cores"
            )
            text = f"`{meta.get('path', '')}`: {busy}"
            found.append(Finding("Was the machine busy?", text, TITLE, (peak,), data=dict(path=meta.get("path", ""))))
        ours = rows[tables.is_ours(rows)] if not rows.empty else rows
        if ours.empty or not (ours[Col.SOLVER] == NATIVE).any():
            continue
        commit = str(meta.get(Col.COMMIT, "unknown"))[:7]
        native = Value("rows of that commit's own algorithm", int((ours[Col.SOLVER] == NATIVE).sum()), units="rows")
        text = (
            f"`{meta.get('path', '')}` was measured at commit `{commit}` ({meta.get('date', 'date unknown')}), "
            f"before the solver and backend columns: its reference models' slow directions ({native.value} rows) "
            "read `native`, that "
            "commit's own algorithm, which need not be any solver of today's; it is compared with other sweeps "
            "only where both ran the same algorithm"
        )
        found.append(Finding("What does this report hold?", text, TITLE, (native,), data=dict(commit=commit)))
    return found
