"""Findings as data: each section answers the product's questions with
:class:`Finding` objects (the values, their intervals and units, the sentence and the
heading of the table they come from). The report lists them first and writes them to
``findings.json``; the README's findings block is built from that file.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from ..table import Col
from .tables import fmt

FINDINGS = "findings.json"


def anchor(title: str) -> str:
    """GitHub's anchor of a markdown heading: lower case, punctuation dropped, spaces to '-'."""
    return "#" + re.sub(r"[^a-z0-9 _-]", "", title.lower()).replace(" ", "-")


def link(title: str, base: str = "") -> str:
    return f"[{title}]({base}{anchor(title)})"


@dataclass(frozen=True)
class Value:
    """One number of a finding: what it is, its value and interval, and its units."""

    label: str
    value: float
    low: float | None = None
    high: float | None = None
    units: str = ""

    def show(self) -> str:
        """'4.23 [4.07, 4.4]': the value and its interval, as the tables print them."""
        if self.low is None or self.high is None:
            return fmt(self.value)
        return f"{fmt(self.value)} [{fmt(self.low)}, {fmt(self.high)}]"


@dataclass(frozen=True)
class Finding:
    """An answer: ``question`` in bold, then ``text`` (which quotes the values), then a
    link to the heading ``title`` of the table the values come from."""

    question: str
    text: str
    title: str
    values: tuple[Value, ...] = ()
    interval: str = ""  # what the intervals are (the method, the level)
    data: dict = field(default_factory=dict)  # what it is about: device, batch, d, ...

    def markdown(self, base: str = "") -> str:
        return f"**{self.question}** {self.text} ({link(self.title, base)})."

    def as_dict(self) -> dict:
        return {**asdict(self), "anchor": anchor(self.title)}


def from_dict(d: dict) -> Finding:
    values = tuple(Value(**v) for v in d.get("values", ()))
    return Finding(d["question"], d["text"], d["title"], values, d.get("interval", ""), d.get("data", {}))


def render(found: list[Finding]) -> list[str]:
    """The report's opening section."""
    if not found:
        return []
    notes = list(dict.fromkeys(f.interval for f in found if f.interval))
    lines = ["## Findings", "", *[f"- {f.markdown()}" for f in found], ""]
    if notes:
        lines += ["Intervals: " + "; ".join(notes) + ".", ""]
    return lines


# ---- ratios of two rows ------------------------------------------------------------

QUARTILES = "ratios from the sweep carry quartile intervals [q1(a)/q3(b), q3(a)/q1(b)] of the two timings"


def _quartiles(row: pd.Series) -> tuple[float, float, float]:
    median = float(row[Col.MEDIAN_S])
    iqr = float(row[Col.IQR_S]) if pd.notna(row[Col.IQR_S]) else 0.0
    # quartiles of a positive time: the spread is taken in log space, never below zero
    half = iqr / 2
    low = median * np.exp(-np.log1p(half / median)) if median > 0 else np.nan
    return low, median, median + half


def ratio(a: pd.Series, b: pd.Series, label: str = "", units: str = "") -> Value:
    """a / b of two ok rows with their quartile interval."""
    a1, a2, a3 = _quartiles(a)
    b1, b2, b3 = _quartiles(b)
    return Value(label, a2 / b2, a1 / b3, a3 / b1, units)
