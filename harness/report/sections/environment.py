"""Where and with what each sweep ran: commit, date, torch, Python, CPU, GPU, threads."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...table import Col
from .. import tables
from ..findings import Finding
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
    return []
