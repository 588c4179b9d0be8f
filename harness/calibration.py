"""What two ``make report`` runs of one commit showed about drift between runs, as
``tools/calibrate_ab.py --drift`` wrote it (reports/cpu/ab/drift.json). No torch here.

- ``drift``: the change (a factor - 1) that 95% of configurations' B / A stayed within:
  the bound ``compare A B`` needs an estimate past before it calls runs measured apart
  different (harness.compare).
- ``rerun_sd``: the spread, in log space, of a paired ratio between runs beyond each
  run's own noise: what widens a paired interval into one for a rerun's estimate
  (harness.intervals.for_rerun; the report's op / log_prob ratios).
"""

from __future__ import annotations

import functools
from pathlib import Path

from .records import read_json

DRIFT_FILE = Path(__file__).resolve().parents[1] / "reports" / "cpu" / "ab" / "drift.json"


@functools.cache
def load(path: Path | None = None) -> dict:
    """The calibration, or {} where there is none."""
    found = read_json(path or DRIFT_FILE, missing=None)
    return found if isinstance(found, dict) else {}


def describe(found: dict, path: Path | None = None) -> str:
    name = (path or DRIFT_FILE).name
    if not found:
        return f"no drift calibration ({name} is missing)"
    return (
        f"two make report runs of one commit on {found.get('machine', '?')} ({name}, "
        f"{found.get('configurations', '?')} configurations)"
    )
