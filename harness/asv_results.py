"""Reading asv's results folder into the tidy table.

asv keeps one JSON file per machine, commit and environment. A parameterized
benchmark's results are flattened in ``itertools.product`` order of its parameter
lists, whose values are stored as ``repr`` strings. Skipped combinations are NaN
(written as a bare ``NaN``, which Python's json reads), failed ones are null.
"""

from __future__ import annotations

import ast
import itertools
import math
from pathlib import Path

import pandas as pd

from . import store
from .errors import UserError
from .ops import OPS
from .table import ERROR, OK, SKIPPED, Col, Status

# What to run when a folder holds no results: asv's development loop (`--python=same`)
# saves results only when given a commit hash.
HINT = (
    "run `make asv-quick` (asv run --python=same --quick --set-commit-hash $(git rev-parse HEAD)) "
    "or `asv run HEAD^!`; `asv run --python=same` without --set-commit-hash saves no results"
)

TIMED = {op.asv: name for name, op in OPS.items()}  # time_log_prob -> log_prob, for every op
COLUMNS = ["benchmark", "params", "value", "unit", Col.STATUS, Col.COMMIT, "date", Col.MACHINE, "env", "type"]


def _value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _status(value) -> Status:
    """asv's null (failed) is an error row, its NaN (skipped) a skipped one."""
    if value is None:
        return ERROR
    if isinstance(value, float) and math.isnan(value):
        return SKIPPED
    return OK


def _json(path: Path, kind: type = dict):
    """A JSON file's contents, of the expected top-level type; UserError naming the file."""
    return store.read_json(path, kind)


def read_machines(results_dir: str | Path) -> dict[str, dict]:
    """{machine: the contents of its machine.json}."""
    return {p.parent.name: _json(p) for p in sorted(Path(results_dir).glob("*/machine.json"))}


def read(results_dir: str | Path) -> pd.DataFrame:
    """The tidy table of every result in an asv results folder.

    One row per benchmark, parameter combination, commit, machine and environment,
    with the parameters also split into columns of their own (``model``, ``dim``, ...),
    ``value`` in ``unit``, and ``status`` ok, skipped (NaN) or error (asv's null: failed). Time
    benchmarks also carry ``op`` and ``median_s``, as the sweep's table does.
    """
    results_dir = Path(results_dir)
    index = results_dir / "benchmarks.json"
    if not index.is_file():
        raise UserError(f"{str(results_dir)!r} is not an asv results folder: no benchmarks.json; {HINT}")
    benchmarks = _json(index)
    rows = []
    for path in sorted(results_dir.glob("*/*.json")):
        if path.name == "machine.json":
            continue
        try:
            rows += _rows(_json(path), benchmarks, path)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            if str(path) in str(e):
                raise
            raise UserError(f"{str(path)!r} does not have asv's results structure ({type(e).__name__}: {e})") from None
    df = pd.DataFrame(rows)
    if df.empty:
        raise UserError(f"{str(results_dir)!r} holds asv's benchmark list but no results; {HINT}")
    return df[COLUMNS + [c for c in df.columns if c not in COLUMNS]]


def _rows(data: dict, benchmarks: dict, path: Path) -> list[dict]:
    """The tidy rows of one asv results file."""
    rows = []
    columns = data.get("result_columns", ["result", "params"])
    machine = data.get("params", {}).get("machine", path.parent.name)
    for name, entry in data.get("results", {}).items():
        fields = dict(zip(columns, entry))
        info = benchmarks.get(name, {})
        names = info.get("param_names", [])
        params = fields.get("params") or []
        combos = list(itertools.product(*params)) if params else [()]
        values = fields.get("result")
        values = values if isinstance(values, list) else [values] * len(combos)
        for combo, value in zip(combos, values):
            parsed = {k: _value(v) for k, v in zip(names, combo)}
            status = _status(value)
            row = {
                "benchmark": name,
                "params": ", ".join(f"{k}={v}" for k, v in parsed.items()),
                "value": float(value) if status == OK else math.nan,
                "unit": info.get("unit", ""),
                Col.STATUS: status,
                Col.COMMIT: data.get("commit_hash", ""),
                "date": pd.to_datetime(data.get("date", 0), unit="ms"),
                Col.MACHINE: machine,
                "env": data.get("env_name", ""),
                "type": info.get("type", ""),
                **parsed,
            }
            op = TIMED.get(name.split(".")[-1])
            if op is not None:  # a time benchmark of an op: the sweep's columns too
                row[Col.OP] = op
                row[Col.MEDIAN_S] = row["value"]
            rows.append(row)
    return rows
