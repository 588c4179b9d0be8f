"""Findings as data: each section answers the product's questions with
:class:`Finding` objects (the values, their intervals and units, the sentence and the
heading of the table they come from). The report lists them first and writes them to
``findings.json``; the README's findings block is built from that file.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

import pandas as pd

from .. import calibration
from ..intervals import PAIRED, RERUN, UNPAIRED, for_rerun, paired_ratio, runs_of, unpaired_ratio
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
    how: str = ""  # paired, unpaired, or '' (no interval)

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

PAIRED_NOTE = (
    "95% percentile-bootstrap intervals of the median ratio, in log space, over runs timed in the same "
    "interleaved rounds (paired)"
)
UNPAIRED_NOTE = (
    "95% percentile-bootstrap intervals in log space, each side's runs resampled on its own (unpaired: timed "
    "apart, on different machines or in different sweeps)"
)
MEDIANS_NOTE = "ratios of medians without an interval where a table holds no runs (written before runs were kept)"
RERUN_NOTE = (
    "95% intervals for a rerun's estimate: the paired bootstrap over rounds, widened by the between-run spread that "
    "two make report runs showed (reports/cpu/ab/drift.json; coverage in docs/methodology.md)"
)
CONTEST = "contest"  # a versus contest's ratio to the fastest peer of each round
CONTEST_NOTE = (
    "contest ratios carry bootstrap 95% intervals over interleaved rounds (rounds in one process, not a rerun)"
)
NOTES = {PAIRED: PAIRED_NOTE, UNPAIRED: UNPAIRED_NOTE, RERUN: RERUN_NOTE, CONTEST: CONTEST_NOTE, "": MEDIANS_NOTE}


def ratio(a: pd.Series, b: pd.Series, label: str = "", units: str = "", rerun: bool = True) -> Value:
    """a / b of two ok rows: paired by round where they were timed in the same rounds
    (the same ``round_group``), unpaired where both kept their runs, else the ratio of
    their medians without an interval. A paired interval is widened into one for a
    rerun's estimate (:func:`harness.intervals.for_rerun`) where the between-run spread
    is calibrated (harness.calibration) and ``rerun``."""
    ra, rb = runs_of(a.get(Col.ROUND_S)), runs_of(b.get(Col.ROUND_S))
    ga, gb = a.get(Col.ROUND_GROUP), b.get(Col.ROUND_GROUP)
    if ra and rb:
        same = isinstance(ga, str) and ga != "" and ga == gb and len(ra) == len(rb)
        r = paired_ratio(ra, rb) if same else unpaired_ratio(ra, rb)
        between = calibration.load().get("rerun_sd")
        if same and rerun and between is not None:
            r = for_rerun(r, float(between))
        return Value(label, r.value, r.low, r.high, units, r.how)
    return Value(label, float(a[Col.MEDIAN_S]) / float(b[Col.MEDIAN_S]), None, None, units, "")


def note(values: tuple[Value, ...] | list[Value]) -> str:
    """What the intervals of ``values`` are."""
    return "; ".join(NOTES[h] for h in dict.fromkeys(v.how for v in values))
