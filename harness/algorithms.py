"""Algorithms for the slow direction, timed A/B: every solver of a family against its
reference solver, in one process, on the same weights and inputs.

Each solver's model is built from the same seed (the solver changes no parameter), so
all of them solve the same system; one checked call per solver gives its output (and
so its largest deviation from the reference's), its counters and a first time. Solvers
whose call fits ``max_call_s`` are then timed in alternating rounds together with the
model's parallel op (for slow / fast), and each speed-up over the reference is the
median over rounds of reference / solver with a bootstrap 95% interval.
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import Sequence
from pathlib import Path

import torch

from . import ops, store
from .errors import UserError
from .measure import allocator
from .measure.contract import violation
from .measure.stats import ratio_interval, relative_deviation
from .measure.timing import time_once, time_rounds
from .models import NAMES, build, run_op, unchecked
from .table import OK, SOLVERS, SOLVERS_MD, Col

FIELDS = [
    Col.MODEL,
    Col.DIM,
    Col.BATCH,
    Col.OP,
    Col.SOLVER,
    "reference",
    Col.MEDIAN_S,
    "rounds",
    "speedup",
    "speedup_low",
    "speedup_high",
    Col.EVALUATIONS,
    Col.ITERATIONS,
    Col.EVALUATIONS_PER_DIM,
    Col.MAX_REL_DEV,
    "fast_op",
    "fast_median_s",
    "slow_over_fast",
    Col.STATUS,
    Col.REASON,
]


def slow_op(flow) -> str:
    return "log_prob" if flow.cost.log_prob != "parallel" else "sample"


def compare(
    name: str,
    dim: int,
    *,
    batch: int = 1024,
    solvers: Sequence[str] | None = None,
    rounds: int = 7,
    block_s: float = 0.2,
    threads: int = 1,
    max_call_s: float = 10.0,
    seed: int = 0,
) -> list[dict]:
    """One row per solver of model ``name`` at ``dim`` (see the module docstring)."""
    probe = build(name, dim)
    op, fast_op = slow_op(probe), "sample" if slow_op(probe) == "log_prob" else "log_prob"
    reference = probe.reference_solver
    chosen = [reference] + [s for s in (solvers or probe.solvers) if s != reference]
    torch.manual_seed(seed)
    x = torch.randn(batch, dim)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    rows, fns, ref_out = {}, {}, None
    try:
        with torch.inference_mode(), unchecked():
            for solver in chosen:
                torch.manual_seed(seed)
                flow = build(name, dim, solver=solver).eval()
                flow.reset_stats()
                out = None

                def checked(flow=flow):
                    nonlocal out
                    out = run_op(flow, op, x)

                seconds = time_once(checked, "cpu")
                broken = violation(op, out, x)
                if broken:  # an output that breaks the contract is reported, never timed nor compared
                    raise RuntimeError(f"{name} {op} with solver {solver} breaks the contract at d={dim}: {broken}")
                stats = flow.solve_stats()
                if ref_out is None:
                    ref_out = out
                dev = relative_deviation(out, ref_out)
                rows[solver] = dict(
                    model=name,
                    dim=dim,
                    batch=batch,
                    op=op,
                    solver=solver,
                    reference=solver == reference,
                    median_s=seconds,
                    rounds=1,
                    evaluations=stats.evaluations,
                    iterations=stats.iterations,
                    evaluations_per_dim=stats.evaluations / (dim * flow.solving_layers),
                    max_rel_dev=dev,
                    fast_op=fast_op,
                    status=OK,
                    reason="",
                )
                if seconds <= max_call_s:
                    fns[solver] = functools.partial(run_op, flow, op, x)
                else:
                    rows[solver][Col.REASON] = f"one call took {seconds:.3g} s > {max_call_s:g} s: timed once"
                if solver == chosen[-1] or solver == probe.solver:
                    fns["fast"] = functools.partial(run_op, flow, fast_op, x)
            times = time_rounds(fns, rounds=rounds, block_s=block_s, threads=threads)
    finally:
        torch.set_num_threads(previous)
    fast = statistics.median(times["fast"])
    for solver, row in rows.items():
        if solver in times:
            row.update(median_s=statistics.median(times[solver]), rounds=len(times[solver]))
        if solver in times and reference in times:
            row["speedup"], row["speedup_low"], row["speedup_high"] = ratio_interval(times[reference], times[solver])
        else:  # the reference (or this solver) was timed once: a ratio of single calls
            row["speedup"] = rows[reference][Col.MEDIAN_S] / row[Col.MEDIAN_S]
        row.update(fast_median_s=fast, slow_over_fast=row[Col.MEDIAN_S] / fast)
    return list(rows.values())


def table(rows: list[dict]) -> str:
    """The A/B as markdown (the report's table)."""
    from .report.load import frame
    from .report.sections.algorithms import ab_table

    return ab_table(frame(rows))


def write_csv(rows: list[dict], folder: Path) -> None:
    with store.lock(folder, "solvers"):
        store.write_table(folder / SOLVERS, rows, FIELDS)


def main(
    models: Sequence[str] = NAMES,
    dims: Sequence[int] | None = None,
    *,
    batch: int = 1024,
    rounds: int = 7,
    max_call_s: float = 10.0,
    out: Path | None = None,
    progress: bool = True,
) -> list[dict]:
    """Every solver of each model at its dims (or ``dims``); prints the table, writes
    ``out/solvers.csv`` and ``out/solvers.md`` if ``out``."""
    bad = [m for m in models if m not in NAMES]
    if bad:
        raise UserError(f"unknown model {bad[0]!r}; allowed: {', '.join(NAMES)}")
    allocator.tune()
    rows: list[dict] = []
    for name in models:
        for dim in dims or ops.FAMILIES[name].solver_dims:
            new = compare(name, dim, batch=batch, rounds=rounds, max_call_s=max_call_s)
            rows += new
            if progress:
                best = max(new, key=lambda r: r["speedup"])
                print(f"{name} d={dim}: fastest {best[Col.SOLVER]} ({best['speedup']:.3g}x the reference)", flush=True)
    text = table(rows)
    print(text)
    if out is not None:
        write_csv(rows, out)
        store.write_text(out / SOLVERS_MD, text + "\n")
    return rows
