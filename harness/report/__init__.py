"""Reports from the tidy table: markdown tables (pandas + tabulate) and plots (matplotlib)."""

from .build import build_report
from .load import load

__all__ = ["build_report", "load"]
