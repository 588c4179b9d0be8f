"""Wall time of a whole command, for the README's commands block: ``python -m
harness.timing start NAME`` before it, ``python -m harness.timing end NAME`` after it
(the Makefile does both around each target's job, and ``make test-timed``); the entry
goes to reports/timing.json with the commit, the machine and the load at both ends."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from . import env, store
from .table import TIMING, Col

REPORTS = Path("reports")


def _started(name: str) -> Path:
    return REPORTS / f".{name.replace(' ', '-')}.started.json"


def start(name: str) -> None:
    store.write_json(_started(name), {"start": time.time(), "load_start": env.load_average()[:1]})


def end(name: str) -> dict:
    """Writes NAME's entry (seconds since its start, commit, machine, loads) and returns it."""
    began = store.read_json(_started(name), missing=None)
    if began is None:
        raise SystemExit(f"no start recorded for {name!r}: run `python -m harness.timing start {name!r}` first")
    entry = {
        "seconds": round(time.time() - began["start"], 1),
        Col.COMMIT: env.git_commit()[:7],
        "cpu": env.machine_name("cpu"),
        "load_start": (began["load_start"] or ["?"])[0],
        "load_end": (env.load_average() or ["?"])[0],
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
    }
    path = REPORTS / TIMING
    runs = store.read_json(path, missing={})
    runs[name] = entry
    store.write_json(path, runs)
    _started(name).unlink(missing_ok=True)
    return entry


if __name__ == "__main__":
    what, name = sys.argv[1], " ".join(sys.argv[2:])
    if what == "start":
        start(name)
    else:
        print(f"{name}: {end(name)['seconds']:.0f} s")
