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
from asv.results import Results

from . import store
from .errors import UserError
from .ops import OPS
from .records import NUMBER, OBJECT, STRING, Shape, fields
from .table import ERROR, OK, SKIPPED, Col, Status

# What to run when a folder holds no results: asv's development loop (`--python=same`)
# saves results only when given a commit hash.
HINT = (
    "run `make asv-quick` (asv run --python=same --quick --set-commit-hash $(git rev-parse HEAD)) "
    "or `asv run HEAD^!`; `asv run --python=same` without --set-commit-hash saves no results"
)

TIMED = {op.asv: name for name, op in OPS.items()}  # time_log_prob -> log_prob, for every op
COLUMNS = ["benchmark", "params", "value", "unit", Col.STATUS, Col.COMMIT, "date", Col.MACHINE, "env", "type"]


def _strings(v: object) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


# What this reader relies on in asv's files (another shape is one line naming the file)
NAMES = Shape("a list of text", _strings)
BENCHMARKS = Shape(
    "asv's benchmark list",
    keys={"version": NUMBER},
    each=fields(
        "a benchmark",
        params=Shape("a list of lists of text", lambda v: isinstance(v, list) and all(map(_strings, v))),
        param_names=NAMES,
        unit=STRING,
        type=STRING,
    ),
)
RESULT = fields("asv's results of one commit", commit_hash=STRING, date=NUMBER, env_name=STRING, params=OBJECT)


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


def _json(path: Path, kind: type = dict, shape: Shape | None = None):
    """A JSON file's contents, of the expected shape; UserError naming the file."""
    return store.read_json(path, kind, shape=shape)


def read_machines(results_dir: str | Path) -> dict[str, dict]:
    """{machine: the contents of its machine.json}."""
    return {p.parent.name: _json(p) for p in sorted(Path(results_dir).glob("*/machine.json"))}


def read(results_dir: str | Path) -> pd.DataFrame:
    """The tidy table of every result in an asv results folder, read by asv's own
    ``asv.results.Results``.

    One row per benchmark, parameter combination, commit, machine and environment,
    with the parameters also split into columns of their own (``model``, ``dim``, ...),
    ``value`` in ``unit``, asv's 99% interval of it (``ci_low``, ``ci_high``) and its
    samples where asv recorded them (``round_s``, with ``asv run --record-samples``), and
    ``status`` ok, skipped (NaN) or error (asv's null: failed). Time benchmarks also
    carry ``op`` and ``median_s``, as the sweep's table does.
    """
    results_dir = Path(results_dir)
    index = results_dir / "benchmarks.json"
    if not index.is_file():
        raise UserError(f"{str(results_dir)!r} is not an asv results folder: no benchmarks.json; {HINT}")
    benchmarks = _json(index, shape=BENCHMARKS)
    for name, info in benchmarks.items():
        if isinstance(info, dict) and len(info.get("params", [])) != len(info.get("param_names", [])):
            raise UserError(
                f"{str(index)!r}: {name} names {len(info.get('param_names', []))} parameters for "
                f"{len(info.get('params', []))} lists of values: not asv's benchmark list"
            )
    rows = []
    for path in sorted(results_dir.glob("*/*.json")):
        if path.name == "machine.json":
            continue
        _json(path, shape=RESULT)  # a file of another shape is named before asv reads it
        try:
            rows += _rows(Results.load(str(path)), benchmarks, path)
        except Exception as e:  # asv's loader raises many kinds on a malformed file
            raise UserError(f"{str(path)!r} does not have asv's results structure ({type(e).__name__}: {e})") from None
    df = pd.DataFrame(rows)
    if df.empty:
        raise UserError(f"{str(results_dir)!r} holds asv's benchmark list but no results; {HINT}")
    return df[COLUMNS + [c for c in df.columns if c not in COLUMNS]]


def _rows(res: Results, benchmarks: dict, path: Path) -> list[dict]:
    """The tidy rows of one asv results file."""
    rows = []
    machine = res.params.get("machine", path.parent.name)
    for name in res.get_all_result_keys():
        info = benchmarks.get(name, {})
        names = info.get("param_names", [])
        params = res.get_result_params(name)
        if len(names) != len(params or []):
            raise ValueError(f"{name} has {len(params or [])} parameters here, {len(names)} in benchmarks.json")
        combos = list(itertools.product(*params)) if params else [()]
        values, stats = res.get_result_value(name, params), res.get_result_stats(name, params)
        samples = res.get_result_samples(name, params)
        for combo, value, stat, sample in zip(combos, values, stats, samples):
            parsed = {k: _value(v) for k, v in zip(names, combo)}
            status = _status(value)
            row = {
                "benchmark": name,
                "params": ", ".join(f"{k}={v}" for k, v in parsed.items()),
                "value": float(value) if status == OK else math.nan,
                "unit": info.get("unit", ""),
                Col.STATUS: status,
                Col.COMMIT: res.commit_hash or "",
                "date": pd.to_datetime(res.date or 0, unit="ms"),
                Col.MACHINE: machine,
                "env": res.env_name or "",
                "type": info.get("type", ""),
                "ci_low": (stat or {}).get("ci_99_a", math.nan),
                "ci_high": (stat or {}).get("ci_99_b", math.nan),
                Col.ROUND_S: " ".join(f"{t:.6g}" for t in sample) if sample else "",
                **parsed,
            }
            op = TIMED.get(name.split(".")[-1])
            if op is not None:  # a time benchmark of an op: the sweep's columns too
                row[Col.OP] = op
                row[Col.MEDIAN_S] = row["value"]
            rows.append(row)
    return rows
