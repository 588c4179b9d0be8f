"""Reading a source into the tidy table: a sweep folder or an asv results folder."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .. import store
from ..errors import UserError
from ..models.solvers import DIRECT, NATIVE
from ..table import COLUMNS, KEY, META, NUMERIC, OURS, RESULTS, Col


def kind_of(path: Path) -> str:
    """``sweep`` (results.csv) or ``asv`` (asv's results folder, machine subfolders with
    benchmarks.json beside them); ValueError otherwise."""
    if not path.exists():
        raise UserError(f"source {str(path)!r} does not exist; expected a sweep folder or an asv results folder")
    if (path / RESULTS).is_file():
        return "sweep"
    if (path / "benchmarks.json").is_file():
        return "asv"
    raise UserError(
        f"source {str(path)!r} holds neither results.csv (a sweep folder) nor benchmarks.json (an asv results folder)"
    )


REQUIRED = (Col.MODEL, Col.DIM, Col.OP, Col.DEVICE, Col.BATCH, Col.STATUS)


def frame(rows: list[dict]) -> pd.DataFrame:
    """A table's rows (strings, as the store reads them) as a DataFrame: columns whose
    every non-blank value is a number become numbers (blanks NaN), the rest stay text."""
    df = pd.DataFrame(rows)
    for column in df.columns:
        values = df[column].replace("", np.nan)
        numbers = pd.to_numeric(values, errors="coerce")
        if values.notna().any() and numbers.notna().sum() == values.notna().sum():
            df[column] = numbers
    return df


def read_results(path: Path) -> pd.DataFrame:
    """A sweep's results.csv. Rows that cannot be read (a torn or foreign line) are left
    out with a warning naming file and line; duplicate keys keep their first row, with a
    warning; missing columns are an error naming them."""
    rows = store.read_table(path, strict=False)
    missing = [c for c in REQUIRED if rows and c not in rows[0]]
    if missing:
        raise UserError(f"{str(path)!r} is not a sweep table: no column {', '.join(missing)}")
    if not rows:
        return pd.DataFrame(columns=COLUMNS)
    df = pd.DataFrame(rows).replace("", np.nan)
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
        meta = store.read_json(path / META, missing={})
    else:
        from ..asv_results import read, read_machines

        df = read(path)
        meta = {"asv_machines": read_machines(path)}
    if df.empty:
        raise UserError(f"source {str(path)!r} has no rows")
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
