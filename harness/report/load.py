"""Reading a source into the tidy table: a sweep folder or an asv results folder."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ..models.solvers import DIRECT, NATIVE
from ..table import COLUMNS, KEY, META, NUMERIC, OURS, RESULTS, Col


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


REQUIRED = (Col.MODEL, Col.DIM, Col.OP, Col.DEVICE, Col.BATCH, Col.STATUS)


def read_results(path: Path) -> pd.DataFrame:
    """A sweep's results.csv. Rows that cannot be read (a torn or foreign line) are left
    out with a warning naming file and line; duplicate keys keep their first row, with a
    warning; missing columns are an error naming them."""
    with path.open(newline="") as f:
        lines = list(csv.reader(f))
    if not lines:
        raise ValueError(f"source {str(path)!r} is empty")
    header, body = lines[0], lines[1:]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise ValueError(f"{str(path)!r} is not a sweep table: no column {', '.join(missing)}")
    rows = []
    for number, row in enumerate(body, start=2):
        if len(row) != len(header):
            warnings.warn(f"{path}:{number}: {len(row)} fields, not {len(header)}; row left out", stacklevel=2)
        else:
            rows.append(row)
    df = pd.DataFrame(rows, columns=header).replace("", np.nan)
    if Col.SOLVER not in df:  # a table from before the solvers: the slow op ran that commit's own algorithm
        df[Col.SOLVER] = np.where(df[Col.KIND] == "parallel", DIRECT, NATIVE) if Col.KIND in df else DIRECT
    for column in COLUMNS:
        if column not in df:
            df[column] = np.nan
    # tables from before the family and library columns named peers library.family and
    # ours plainly: blank cells take those names apart (rows written since carry both)
    blank = df[Col.LIBRARY].isna()
    if blank.any():
        df[[Col.LIBRARY, Col.FAMILY]] = df[[Col.LIBRARY, Col.FAMILY]].astype(object)
        named = df[Col.MODEL].astype(str).str.rpartition(".")
        df.loc[blank, Col.LIBRARY] = np.where(named[0] == "", OURS, named[0])[blank.to_numpy()]
        df.loc[blank, Col.FAMILY] = named[2][blank]
    key = [k for k in KEY if k in df]
    dup = df.duplicated(key)
    if dup.any():
        warnings.warn(
            f"{path}: {int(dup.sum())} rows repeat a key ({', '.join(key)}); the first of each kept", stacklevel=2
        )
        df = df[~dup]
    return df


def load(path: str | Path) -> tuple[pd.DataFrame, dict]:
    """(table, metadata) of one source; ValueError for a missing or empty source."""
    path = Path(path)
    kind = kind_of(path)
    if kind == "sweep":
        df = read_results(path / RESULTS)
        meta_path = path / META
        try:
            meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        except json.JSONDecodeError as e:
            raise ValueError(f"{str(meta_path)!r} is not valid JSON ({e})") from None
    else:
        from ..asv_results import read, read_machines

        df = read(path)
        meta = {"asv_machines": read_machines(path)}
    if df.empty:
        raise ValueError(f"source {str(path)!r} has no rows")
    for col in NUMERIC:
        if col in df:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    df[Col.SOURCE] = df.get(Col.SOURCE, kind)
    if kind == "sweep" and df[Col.MACHINE].isna().any():  # rows from before the machine column
        cpu = f"{meta.get('cpu', 'unknown CPU')} ({meta.get('cpu_count', '?')} cores)"
        named = np.where(df[Col.DEVICE] == "cuda", meta.get("gpu") or "unknown GPU", cpu)
        df[Col.MACHINE] = df[Col.MACHINE].astype(object).where(df[Col.MACHINE].notna(), named)
    meta[Col.SOURCE], meta["path"] = kind, str(path)
    return df, meta
