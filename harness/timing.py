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


# issue 32's start-up goals, whole commands: seconds from exec to exit
STARTUP = {"--help": 1.0, "models": 3.0, "readme --check": 3.0}


def startup(runs: int = 5) -> dict:
    """Times each of :data:`STARTUP`'s commands as a whole process ``runs`` times (after
    one untimed run that fills the bytecode caches) and records the median and the
    slowest, the goal and the load in reports/timing.json under ``start-up``."""
    import statistics
    import subprocess

    entry: dict = {Col.COMMIT: env.git_commit()[:7], "cpu": env.machine_name("cpu"), "repeats": runs}
    entry["load_start"] = (env.load_average() or ["?"])[0]
    for command, goal in STARTUP.items():
        argv = [sys.executable, "-m", "harness", *command.split()]
        subprocess.run(argv, capture_output=True, check=False)
        seconds = []
        for _ in range(runs):
            began = time.perf_counter()
            subprocess.run(argv, capture_output=True, check=False)
            seconds.append(time.perf_counter() - began)
        median = statistics.median(seconds)
        entry[command] = {"median": round(median, 2), "slowest": round(max(seconds), 2), "goal": goal}  # seconds
        print(f"{command}: median {median:.2f} s, slowest {max(seconds):.2f} s (goal {goal:g} s)")
    entry["load_end"] = (env.load_average() or ["?"])[0]
    entry["date"] = time.strftime("%Y-%m-%d", time.gmtime())
    path = REPORTS / TIMING
    store.write_json(path, {**store.read_json(path, missing={}), "start-up": entry})
    return entry


if __name__ == "__main__":
    what, name = sys.argv[1], " ".join(sys.argv[2:])
    if what == "start":
        start(name)
    elif what == "startup":
        startup()
    else:
        print(f"{name}: {end(name)['seconds']:.0f} s")
