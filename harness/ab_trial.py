"""One trial of ``compare --run``: a fresh process that imports both revisions' code and
times their calls in interleaved rounds (harness.ab runs it in a worker).

Each side builds, prepares and calls its flows with its own code (its registry's
``build_any``, its ``measure.call.prepare``: model, solver switch, backend, autograd
mode), so a change anywhere in the measured path is seen; the clock (one block of
calls, synchronised at both ends) is this runner's, the same for both. Within a
configuration both sides get the same weights and inputs; every round times one block
of each side in a random order. The trials import the two sides in alternating order.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import sys
import time
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from .measure.call import one_line
from .measure.timing import time_block, time_once
from .models.solvers import DIRECT, NATIVE
from .table import ERROR, Col

SIDES = ("a", "b")
MIN_ROUNDS = 6  # rounds a trial times at least, whatever max_s says
WARMUP_S = 0.1  # seconds of untimed calls per side before the rounds (caches, allocator, branch predictors)


@dataclass(frozen=True)
class SideCode:
    """Where one side's code is: ``root`` on sys.path holding ``harness`` (a revision's
    renamed harness package, or '' for this runner's) and ``modules`` (a user flow's
    top-level module name -> the renamed copy at this revision)."""

    root: str
    harness: str = ""
    modules: tuple[tuple[str, str], ...] = ()

    def spec(self, model: str) -> str:
        """The model's name as this side builds it (a user flow's module renamed)."""
        module, sep, factory = model.partition(":")
        top, dot, rest = module.partition(".")
        renamed = dict(self.modules).get(top)
        return f"{renamed}{dot}{rest}{sep}{factory}" if sep and renamed else model


@dataclass(frozen=True)
class Plan:
    """What every trial measures the same way."""

    sides: dict[str, SideCode]
    rounds: int
    block_s: float
    threads: int
    seed: int
    max_s: float = 2.0  # seconds of rounds per configuration and trial, after MIN_ROUNDS
    inject: float = 0.0  # calibration only: b's every call does this fraction of a's call more work


class Side:
    """A side's imported code: build, prepare and the Settings of its own harness."""

    def __init__(self, code: SideCode):
        if code.root and code.root not in sys.path:
            sys.path.insert(0, code.root)
        package = code.harness or "harness"
        self.code = code
        self.registry = importlib.import_module(f"{package}.registry")
        self.call = importlib.import_module(f"{package}.measure.call")

    def prepare(self, entry: dict, seed: int, threads: int):
        """The side's prepared call of a grid entry (its warm-up made); raises with a
        line naming what failed."""
        model, dim, solver = entry[Col.MODEL], entry[Col.DIM], entry[Col.SOLVER]
        torch.manual_seed(seed)  # the same weights on both sides
        kwargs = {} if solver in (DIRECT, NATIVE) else {"solver": solver}
        flow = self.registry.build_any(self.code.spec(model), dim, **kwargs).to(entry[Col.DEVICE]).eval()
        wanted = dict(threads=threads, budget_s=math.inf, min_run_time=0.0, flops=False, memory=False, seed=seed)
        known = {f.name for f in dataclasses.fields(self.call.Settings)}
        settings = self.call.Settings(**{k: v for k, v in wanted.items() if k in known})
        final, ready = self.call.prepare(
            flow,
            entry[Col.OP],
            entry[Col.DEVICE],
            entry[Col.BATCH],
            settings,
            essential=True,
            backend=entry[Col.BACKEND],
        )
        if final is not None:
            raise RuntimeError(f"{final.get(Col.STATUS)}: {final.get(Col.REASON)}")
        return ready


def _filler(seconds: float):
    """A call of about ``seconds`` of CPU arithmetic (small matrix products), for the
    calibration's injected slowdowns: it slows under load as a flow's arithmetic does."""
    m = torch.randn(48, 48)
    out = torch.empty(48, 48)
    unit = min(time_once(lambda: [torch.mm(m, m, out=out) for _ in range(200)], "cpu") for _ in range(5)) / 200
    count = max(int(round(seconds / unit)), 1)

    def work():
        for _ in range(count):
            torch.mm(m, m, out=out)

    return work


def import_order(seed: int, trial: int) -> tuple[str, ...]:
    """The order a trial imports the two sides in: alternating from trial to trial, from
    a random start. An import-order bias (where each side's code and objects land)
    then splits between the trials and widens the interval over them; drawn afresh per
    trial, all three of three trials would share one order a quarter of the time, and
    the bias would pass for a change."""
    start = int(np.random.default_rng(seed).integers(2))
    return SIDES if (trial + start) % 2 == 0 else SIDES[::-1]


class Trial:
    """The worker's handler: ``("probe", entries)`` prepares every entry on both sides
    once and returns what failed; ``("measure", entry, trial)`` returns its rows."""

    def __init__(self, plan: Plan, trial: int):
        self.plan = plan
        torch.set_num_threads(plan.threads)
        order = import_order(plan.seed, trial)
        self.broken = ""
        try:
            self.sides = {s: Side(plan.sides[s]) for s in order}
        except Exception as e:  # answered to every task: the parent refuses in one line
            self.broken = f"a side's code does not import here: {one_line(e)}"

    def __call__(self, task: tuple):
        if self.broken:
            return self.broken
        if task[0] == "probe":
            return self.probe(task[1])
        return self.measure(task[1], task[2])

    def _prepared(self, entry: dict, rng: np.random.Generator) -> dict:
        ready = {}
        for s in rng.permutation(SIDES):
            try:
                ready[s] = self.sides[s].prepare(entry, self.plan.seed, self.plan.threads)
            except Exception as e:
                raise SideFailed(s, one_line(e)) from None
        return ready

    def probe(self, entries: list[dict]) -> list[tuple[int, str, str]]:
        """(index, side, why) of every entry that fails on a side."""
        failed = []
        rng = np.random.default_rng(self.plan.seed)
        for i, entry in enumerate(entries):
            try:
                self._prepared(entry, rng)
            except SideFailed as e:
                failed.append((i, e.side, e.why))
        return failed

    def measure(self, entry: dict, trial: int) -> list[dict]:
        key = zlib.crc32(repr(sorted(entry.items())).encode())
        rng = np.random.default_rng([self.plan.seed, trial, key])
        try:
            ready = self._prepared(entry, rng)
        except SideFailed as e:
            return [{**entry, Col.TRIAL: trial, Col.STATUS: ERROR, Col.REASON: f"side {e.side}: {e.why}"}]
        device = entry[Col.DEVICE]
        # each side's last timed output is checked after the rounds, where its harness can (Prepared.timed)
        lasts = {s: r.timed() if hasattr(r, "timed") else None for s, r in ready.items()}
        fns = {s: lasts[s] or r.fn for s, r in ready.items()}
        one = {}
        for s in SIDES:  # warm each side up for a few blocks' worth of calls, then size its blocks
            with ready[s].context():
                one[s] = min(time_once(fns[s], device) for _ in range(3))
            time_block(fns[s], device, max(1, round(WARMUP_S / max(one[s], 1e-9))), ready[s].context)
        if self.plan.inject:
            extra, inner = _filler(self.plan.inject * one["a"]), fns["b"]
            fns["b"] = lambda: (inner(), extra())
            one["b"] *= 1 + self.plan.inject
        # the same calls per block on both sides, from their mean call: neither side's blocks run longer by design
        number = dict.fromkeys(SIDES, max(1, round(self.plan.block_s / max(np.mean(list(one.values())), 1e-9))))
        rows = []
        previous = torch.get_num_threads()
        torch.set_num_threads(self.plan.threads)
        try:
            start = time.monotonic()
            for r in range(self.plan.rounds):
                if r >= MIN_ROUNDS and time.monotonic() - start > self.plan.max_s:
                    break  # a slow configuration: fewer rounds, never fewer than MIN_ROUNDS
                for position, s in enumerate(rng.permutation(SIDES)):
                    seconds = time_block(fns[s], device, number[s], ready[s].context)
                    rows.append(
                        {
                            **entry,
                            Col.TRIAL: trial,
                            Col.ROUND: r,
                            Col.REVISION: s,
                            Col.POSITION: position,
                            Col.CALLS: number[s],
                            Col.CALL_S: seconds,
                        }
                    )
        finally:
            torch.set_num_threads(previous)
        broken = [
            f"side {s}: {ready[s].broken_after(last)}"
            for s, last in lasts.items()
            if last and ready[s].broken_after(last)
        ]
        if broken:
            return [{**entry, Col.TRIAL: trial, Col.STATUS: ERROR, Col.REASON: "; ".join(broken)}]
        return rows


class SideFailed(Exception):
    def __init__(self, side: str, why: str):
        super().__init__(f"side {side}: {why}")
        self.side, self.why = side, why
