"""REPORT.md from its sections: the Findings first (every section's answers, as data,
also written to findings.json), a table of contents, then each section that has data,
in the order of :data:`harness.report.sections.SECTIONS`."""

from __future__ import annotations

from pathlib import Path

from .. import store
from ..table import REPORT, REPORT_HTML
from . import page, plots
from .findings import FINDINGS, Finding, anchor, render
from .load import load_sources
from .sections import SECTIONS


def contents(body: list[str]) -> list[str]:
    """A table of contents of the sections' headings."""
    heads = [line[3:] for line in body if line.startswith("## ")]
    return ["## Contents", "", *[f"- [{h}]({anchor(h)})" for h in heads], ""] if len(heads) > 1 else []


def build_report(
    sources: list[str | Path], out: str | Path, paper: bool = True, sections=None, figures: bool = True
) -> Path:
    """Writes ``out/REPORT.md`` (with its figures), the same as one page ``out/REPORT.html``
    and ``out/findings.json`` from the
    sources (sweep, fit and asv results folders); returns REPORT.md's path. ``paper``
    False leaves out the B-NAF paper's Table 1; ``figures`` False, every figure."""
    out = store.ensure_folder(out)
    src = load_sources(list(sources))
    body: list[str] = []
    found: list[Finding] = []
    with plots.drawn(figures):
        for section in sections or SECTIONS:
            if not paper and section.TITLE.startswith("B-NAF paper"):
                continue
            lines = section.render(src, out)
            if lines:  # a section without data is left out, and so are its findings
                body += lines
                found += section.findings(src)
    head = ["# flowbench report", "", "Sources: " + ", ".join(src.names()), ""]
    head += [] if figures else ["Figures: none drawn (`report --no-figures`).", ""]
    text = "\n".join(head + render(found) + contents(body) + body).rstrip() + "\n"
    path = out / REPORT
    store.write_text(path, text)
    store.write_text(out / REPORT_HTML, page.page(text, out))
    data = {"report": REPORT, "sources": src.names(), "findings": [f.as_dict() for f in found]}
    store.write_json(out / FINDINGS, data)
    return path
