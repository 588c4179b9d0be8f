"""Correctness: the exactness suite (``python -m harness check --out``) for every checked
flow, the worst error over the dims against each check's tolerance, failures spelled out."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...table import CHECKS, Col
from .. import tables
from ..findings import Finding, Value
from ..load import Sources

TITLE = "Correctness"


def correctness_table(checks: pd.DataFrame) -> pd.DataFrame:
    """Per model (rows) and check (columns): ``pass``/``FAIL`` and the worst error over
    the dims where measured, ``-`` where the check does not apply."""
    rows = []
    for model, g in checks.groupby(Col.MODEL, sort=False):
        row = {Col.MODEL: model, Col.LIBRARY: g[Col.LIBRARY].iloc[0]}
        for check, h in g.groupby("check", sort=False):
            measured = pd.to_numeric(h["measured"], errors="coerce")
            worst = tables.fmt(float(measured.max())) if measured.notna().any() else ""
            results = set(h["result"])
            verdict = "FAIL" if "FAIL" in results else "pass" if "pass" in results else "-"
            row[check] = f"{verdict} {worst}".strip() if verdict != "-" else f"({worst})" if worst else "-"
        rows.append(row)
    return pd.DataFrame(rows).fillna("")


def _checks(src: Sources) -> pd.DataFrame:
    checks = src.side[CHECKS]
    return checks.drop_duplicates([Col.MODEL, "check", Col.DIM], keep="last") if not checks.empty else checks


def render(src: Sources, out: Path) -> list[str]:
    checks = _checks(src)
    if checks.empty:
        return []
    lines = [f"## {TITLE}", ""]
    lines += [
        "`python -m harness check` on every model, in float64 with seed 0 (see `harness/check.py`): the worst "
        "error over the dims against each check's tolerance; `structure` reports whether the Jacobian is "
        "triangular in the given order (reported in brackets, not required: 0 is triangular); `-`: the "
        "check does not apply.",
        "",
        tables.markdown(correctness_table(checks)),
        "",
    ]
    failed = checks[checks["result"] == "FAIL"]
    if not failed.empty:
        lines += ["Failed checks:", ""]
        for r in failed.itertuples():
            error, tolerance = tables.fmt(float(r.measured)), tables.fmt(float(r.tolerance))
            lines += [f"- {r.model} {r.check} at d={r.dim}: {error} > {tolerance} ({r.note})"]
        lines += [""]
    return lines


def _named(checks: pd.Series, most: int = 3) -> str:
    """A flow's failed checks, each once: the first ``most`` by name, then how many more
    (the section's table lists them all)."""
    names = list(dict.fromkeys(checks))
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def findings(src: Sources) -> list[Finding]:
    checks = _checks(src)
    if checks.empty:
        return []
    ran = checks[checks["result"].isin(["pass", "FAIL"])]
    failed = ran[ran["result"] == "FAIL"]
    by_model = failed.groupby(Col.MODEL)["check"].apply(_named)
    text = f"{len(ran) - len(failed)} of {len(ran)} checks pass over {checks[Col.MODEL].nunique()} flows" + (
        "; failing: " + "; ".join(f"{m} ({c})" for m, c in by_model.items()) if len(by_model) else ""
    )
    return [Finding("Correctness", text, TITLE, (Value("checks passed", float(len(ran) - len(failed))),))]
