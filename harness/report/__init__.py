"""Reports from the tidy tables: REPORT.md made of sections (markdown tables via pandas
and tabulate, figures via matplotlib), its Findings as data in findings.json. No torch:
reading and rendering a results folder needs no model."""

from .build import build_report
from .load import load, load_sources

__all__ = ["build_report", "load", "load_sources"]
