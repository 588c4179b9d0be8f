"""Reading a source into the tidy table: a sweep folder or an asv results folder."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import store
from ..errors import UserError
from ..ops import DIRECT, NATIVE, OURS
from ..table import (
    CHECKS,
    COLUMNS,
    FIT,
    FIT_COLUMNS,
    FIT_META,
    FIT_UNITS,
    KEY,
    META,
    META_SHAPE,
    NUMERIC,
    OK,
    PAPER,
    POSTERIOR,
    POSTERIOR_COLUMNS,
    RESULTS,
    SOLVERS,
    VERSUS,
    Col,
)


def kind_of(path: Path) -> str:
    """``sweep`` (results.csv), ``fit`` (fit.csv) or ``asv`` (asv's results folder,
    machine subfolders with benchmarks.json beside them); a UserError otherwise."""
    if not path.exists():
        raise UserError(f"source {str(path)!r} does not exist; expected a sweep, fit or asv results folder")
    if (path / RESULTS).is_file():
        return "sweep"
    if (path / FIT).is_file():
        return "fit"
    if (path / "benchmarks.json").is_file():
        return "asv"
    if any((path / name).is_file() for name in SIDE_TABLES):
        return "side"
    raise UserError(
        f"source {str(path)!r} holds neither results.csv (a sweep folder), fit.csv (a fit folder), "
        f"benchmarks.json (an asv results folder) nor one of {', '.join(SIDE_TABLES)}"
    )


ORIGIN = "origin"  # the report's own column: the folder a row was read from (its settings file)
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
    df[Col.CONTEXT] = df[Col.CONTEXT].astype(object).fillna("0")  # tables from before the context axis: unconditional
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
    """(table, metadata) of one sweep or asv source; a UserError for a missing or empty one."""
    path = Path(path)
    kind = kind_of(path)
    if kind == "sweep":
        df = read_results(path / RESULTS)
        meta = store.read_json(path / META, missing={}, shape=META_SHAPE)
    else:
        from ..asv_results import read, read_machines

        df = read(path)
        meta = {"asv_machines": read_machines(path)}
    if df.empty:
        raise UserError(f"source {str(path)!r} has no rows")
    for col in NUMERIC:
        if col in df:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    if kind == "sweep":
        timeless = df[(df[Col.STATUS] == OK) & ~(df[Col.MEDIAN_S] > 0)]
        if not timeless.empty:
            r = timeless.iloc[0]
            raise UserError(
                f"{str(path / RESULTS)!r}: {len(timeless)} ok row(s) without a positive time (first: {r[Col.MODEL]} "
                f"{r[Col.OP]} d={r[Col.DIM]}): not a table this harness wrote"
            )
    df[Col.SOURCE] = df.get(Col.SOURCE, kind)
    if kind == "sweep" and df[Col.MACHINE].isna().any():  # rows from before the machine column
        cpu = f"{meta.get('cpu', 'unknown CPU')} ({meta.get('cpu_count', '?')} cores)"
        named = np.where(df[Col.DEVICE] == "cuda", meta.get("gpu") or "unknown GPU", cpu)
        df[Col.MACHINE] = df[Col.MACHINE].astype(object).where(df[Col.MACHINE].notna(), named)
    meta[Col.SOURCE], meta["path"] = kind, str(path)
    df[ORIGIN] = str(path)
    return df, meta


FIT_NUMERIC = [c for c in FIT_COLUMNS if c in FIT_UNITS or c in (Col.DIM, Col.STEPS, Col.BEST_STEP, Col.SEED)]
FIT_NUMERIC += [Col.EVALUATIONS_PER_DIM, Col.THREADS]


def load_posterior(folder: Path) -> pd.DataFrame:
    """posterior.csv of a fit folder (a conditional task judged at each fixed
    observation) with its numbers parsed; empty where the folder has none."""
    if not (folder / POSTERIOR).is_file():
        return pd.DataFrame(columns=POSTERIOR_COLUMNS)
    df = pd.DataFrame(store.read_table(folder / POSTERIOR, strict=False), columns=POSTERIOR_COLUMNS)
    numeric = [c for c in POSTERIOR_COLUMNS if c not in (Col.MODEL, Col.DATA)]
    return df.replace("", np.nan).astype({c: float for c in numeric})


def load_fit(folder: Path) -> tuple[pd.DataFrame, dict]:
    """fit.csv of ``folder`` with its numbers parsed, and fit.json."""
    df = pd.DataFrame(store.read_table(folder / FIT, strict=False), columns=FIT_COLUMNS).replace("", np.nan)
    for column in FIT_NUMERIC:
        df[column] = pd.to_numeric(df[column], errors="coerce")
    return df, store.read_json(folder / FIT_META, missing={}, shape=META_SHAPE)


SIDE_TABLES = (VERSUS, SOLVERS, CHECKS, PAPER)
# the columns each side table must hold for the report to read it
SIDE_COLUMNS = {
    VERSUS: ("contest", Col.DIM, "contender", Col.OP, Col.MEDIAN_S),
    SOLVERS: (Col.MODEL, Col.DIM, Col.OP, Col.SOLVER, Col.MEDIAN_S, "speedup", "slow_over_fast"),
    CHECKS: (Col.MODEL, "check", Col.DIM, "result"),
    PAPER: ("dataset", Col.DIM, "ratio5", "ratio10", "paper_ratio5", "paper_ratio10"),
}


def side_table(path: Path) -> pd.DataFrame:
    """A side table's rows; a UserError names the file and the columns it lacks."""
    rows = store.read_table(path, strict=False)
    missing = [c for c in SIDE_COLUMNS[path.name] if rows and c not in rows[0]]
    if missing:
        raise UserError(f"{str(path)!r} is not a {path.name} this version reads: no column {', '.join(missing)}")
    return frame(rows)


def context_of(table: pd.DataFrame) -> pd.Series:
    """The context column of a table as ints: 0 where it is empty or absent (a table
    written before contexts: unconditional)."""
    context = table[Col.CONTEXT] if Col.CONTEXT in table else pd.Series(0, index=table.index)
    return pd.to_numeric(context, errors="coerce").fillna(0).astype(int)


@dataclass
class Sources:
    """Everything a report reads: each sweep folder's rows and settings, the fits, asv's
    results, and the side tables (contests, solver A/B, checks, the paper's Table 1) of
    the sweep folders, concatenated per table (empty where none holds one)."""

    sweeps: list[tuple[pd.DataFrame, dict]]
    fits: list[tuple[Path, pd.DataFrame, dict]]
    asv: list[tuple[pd.DataFrame, dict]]
    side: dict[str, pd.DataFrame]

    @property
    def all_rows(self) -> pd.DataFrame:
        """Every sweep row of every folder, conditional flows' too."""
        if not self.sweeps:
            return pd.DataFrame(columns=COLUMNS)
        return pd.concat([d for d, _ in self.sweeps], ignore_index=True)

    def _swept_contexts(self, rows: pd.DataFrame) -> pd.Series:
        """Rows of the folders that swept a context (any row with context > 0)."""
        conditional = set(rows.loc[rows[Col.CONTEXT] > 0, ORIGIN])
        return rows[ORIGIN].isin(conditional)

    @property
    def rows(self) -> pd.DataFrame:
        """The sweep rows of every folder that swept no context: what every section but
        the conditional flows' reads (a context sweep's unconditional rows are its
        baselines, at its own shapes)."""
        rows = self.all_rows
        return rows[~self._swept_contexts(rows)].reset_index(drop=True) if not rows.empty else rows

    @property
    def conditional(self) -> pd.DataFrame:
        """The rows of the folders that swept a context, their unconditional baselines
        (context 0) with them."""
        rows = self.all_rows
        return rows[self._swept_contexts(rows)].reset_index(drop=True) if not rows.empty else rows

    def contests(self, conditional: bool = False) -> pd.DataFrame:
        """The rows of ``versus`` contests: those without a context (what the peers'
        sections read; a table from before contexts holds only those), or with
        ``conditional`` those whose contenders had one."""
        vs = self.side[VERSUS]
        if vs.empty:
            return vs
        return vs[(context_of(vs) > 0) == conditional].reset_index(drop=True)

    @property
    def folders(self) -> list[Path]:
        return [Path(m["path"]) for _, m in self.sweeps]

    def meta_of(self, origin: str) -> dict:
        """The settings file of the folder a row was read from."""
        return next((m for _, m in self.sweeps if m["path"] == origin), {})

    def names(self) -> list[str]:
        named = [f"`{m['path']}` (sweep)" for _, m in self.sweeps] + [f"`{p}` (fit)" for p, _, _ in self.fits]
        return named + [f"`{m['path']}` (asv)" for _, m in self.asv]


def _refuse_overlap(sweeps: list[tuple[pd.DataFrame, dict]]) -> None:
    """Two sweep folders holding the same configuration of the same machine are two
    measurements of one thing: a report would have to keep one and drop the other, so
    it refuses and points to ``harness compare``."""
    seen: dict[tuple, str] = {}
    for df, meta in sweeps:
        for key in df[[*KEY, Col.MACHINE]].astype(str).itertuples(index=False, name=None):
            if key in seen and seen[key] != meta["path"]:
                raise UserError(
                    f"{seen[key]!r} and {meta['path']!r} both hold {key[0]} d={key[1]} {key[2]} on {key[-1]}: "
                    f"report one of them, or compare them with `python -m harness compare {seen[key]} {meta['path']}`"
                )
            seen.setdefault(key, meta["path"])


def load_sources(paths: list[str | Path]) -> Sources:
    """Reads every source (sweep, fit or asv results folder, or a folder of side tables:
    contests, solver A/B, checks); a UserError names a bad one."""
    if not paths:
        raise UserError("no source given; pass a sweep folder, a fit folder or an asv results folder")
    sweeps, fits, asv, sides = [], [], [], []
    seen: set[Path] = set()
    for path in map(Path, paths):
        if path.resolve() in seen:  # a folder named twice is read once
            continue
        seen.add(path.resolve())
        kind = kind_of(path)
        if kind == "fit":
            fits.append((path, *load_fit(path)))
        elif kind == "side":  # contests, solver A/B or checks of their own (make solvers, make checks)
            sides.append(path)
        else:
            (sweeps if kind == "sweep" else asv).append(load(path))
            if kind == "sweep" and (path / FIT).is_file():  # a fit written beside a sweep is read too
                fits.append((path, *load_fit(path)))
    _refuse_overlap(sweeps)
    folders = [Path(m["path"]) for _, m in sweeps] + sides
    side = {}
    for name in SIDE_TABLES:
        frames = [side_table(f / name) for f in folders if (f / name).is_file()]
        side[name] = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if not side[VERSUS].empty and "role" not in side[VERSUS]:  # contests from before roles: every rival a peer
        vs = side[VERSUS]
        side[VERSUS] = vs.assign(role=np.where(vs["contender"] == "ours", "ours", "peer"), status=OK, reason="")
    return Sources(sweeps, fits, asv, side)
