"""The B-NAF paper's Table 1 (bottom): NAF / B-NAF parameter ratios with the papers'
presets, beside the paper's (``paper.csv``, written by ``python -m harness paper-table
--out DIR``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...table import PAPER, Col
from .. import tables
from ..findings import Finding
from ..load import Sources

TITLE = "B-NAF paper, Table 1 (bottom): NAF / B-NAF parameter ratios"


def table1_markdown(df: pd.DataFrame) -> str:
    """Ours beside the paper's, with each ratio's relative difference."""
    df = df.assign(**{c: df[c].astype(float) for c in ("ratio5", "ratio10", "paper_ratio5", "paper_ratio10")})
    counts = {c: df[c].astype(int) for c in ("params_bnaf", "params_naf5", "params_naf10", "params_bnaf_stored")}
    out = pd.DataFrame(
        {
            "dataset": df["dataset"],
            "d": df[Col.DIM].astype(int),
            "B-NAF params (non-zero)": counts["params_bnaf"].map("{:,}".format),
            "NAF(5) params (numel)": counts["params_naf5"].map("{:,}".format),
            "NAF(10) params (numel)": counts["params_naf10"].map("{:,}".format),
            "NAF(5)/B-NAF": df["ratio5"].map("{:.2f}".format),
            "paper": df["paper_ratio5"].map("{:.2f}".format),
            "diff": ((df["ratio5"] / df["paper_ratio5"] - 1) * 100).map("{:+.2f}%".format),
            "NAF(10)/B-NAF": df["ratio10"].map("{:.2f}".format),
            "paper ": df["paper_ratio10"].map("{:.2f}".format),
            "diff ": ((df["ratio10"] / df["paper_ratio10"] - 1) * 100).map("{:+.2f}%".format),
        }
    )
    note = (
        "\n\nCounting conventions, as the authors counted: B-NAF counts non-zero weight entries "
        "(masked-out blocks excluded, `params_effective`); NAF counts numel of every tensor "
        "(masked MADE entries included, `params_stored`). The B-NAF presets store "
        + ", ".join(f"{d} {n:,}" for d, n in zip(df["dataset"], counts["params_bnaf_stored"]))
        + " parameters including masked-out entries."
    )
    return tables.markdown(out) + note


def render(src: Sources, out: Path) -> list[str]:
    table1 = src.side[PAPER]
    if table1.empty:
        return []
    return [f"## {TITLE}", "", table1_markdown(table1.drop_duplicates("dataset")), ""]


def findings(src: Sources) -> list[Finding]:
    return []  # the parameters section's finding cites this table
