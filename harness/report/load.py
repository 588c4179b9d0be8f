"""Reading a source into the tidy table: a sweep folder or an asv results folder."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..table import META, NUMERIC, RESULTS


def kind_of(path: Path) -> str:
    """``sweep`` (results.csv) or ``asv`` (asv's results folder, machine subfolders with
    benchmarks.json beside them); ValueError otherwise."""
    if not path.exists():
        raise ValueError(f"source {str(path)!r} does not exist; expected a sweep folder or an asv results folder")
    if (path / RESULTS).is_file():
        return "sweep"
    if (path / "benchmarks.json").is_file():
        return "asv"
    raise ValueError(
        f"source {str(path)!r} holds neither results.csv (a sweep folder) nor benchmarks.json (an asv results folder)"
    )


def load(path: str | Path) -> tuple[pd.DataFrame, dict]:
    """(table, metadata) of one source; ValueError for a missing or empty source."""
    path = Path(path)
    kind = kind_of(path)
    if kind == "sweep":
        df = pd.read_csv(path / RESULTS, keep_default_na=True)
        meta_path = path / META
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    else:
        from ..asv_results import read, read_machines

        df = read(path)
        meta = {"asv_machines": read_machines(path)}
    if df.empty:
        raise ValueError(f"source {str(path)!r} has no rows")
    for col in NUMERIC:
        if col in df:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    df["source"] = df.get("source", kind)
    meta["kind"], meta["path"] = kind, str(path)
    return df, meta
