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

import contextlib
import functools
import statistics
import sys
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
from .table import ERROR, OK, SOLVERS, SOLVERS_MD, TIMEOUT, Col

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


class SolverWorker:
    """The worker side of ``solvers`` (harness.worker): ``(name, dim)`` answers that
    model's rows (:func:`compare`) or ``(ERROR, line)``."""

    def __init__(self, batch: int, rounds: int, max_call_s: float):
        self.batch, self.rounds, self.max_call_s = batch, rounds, max_call_s
        allocator.tune()

    def __call__(self, task: tuple[str, int]):
        from .measure.call import one_line

        try:
            return compare(*task, batch=self.batch, rounds=self.rounds, max_call_s=self.max_call_s)
        except Exception as e:
            return (ERROR, one_line(e))


def failed_row(name: str, dim: int, batch: int, status: str, reason: str) -> dict:
    """The row of a model and d whose A/B did not finish (killed, or an error)."""
    family = ops.FAMILIES[name]
    known = {Col.MODEL: name, Col.DIM: dim, Col.BATCH: batch, Col.OP: family.slow}
    known |= {Col.STATUS: status, Col.REASON: reason}
    return {field: known.get(field, "") for field in FIELDS}


def main(
    models: Sequence[str] = NAMES,
    dims: Sequence[int] | None = None,
    *,
    batch: int = 1024,
    rounds: int = 7,
    max_call_s: float = 10.0,
    out: Path | None = None,
    progress: bool = True,
    resume: bool = False,
    deadline_s: float = 600.0,
) -> list[dict]:
    """Every solver of each model at its dims (or ``dims``), each model and d in a worker
    killed after ``deadline_s``; prints the table. With ``out``: ``out/solvers.csv``
    rewritten after every model and d under the folder's lock, an earlier table moved
    aside into previous/ (or, with ``resume``, its models and dims kept and not measured
    again), and ``out/solvers.md`` at the end."""
    from tqdm.auto import tqdm

    from .worker import Worker

    bad = [m for m in models if m not in NAMES]
    if bad:
        raise UserError(f"unknown model {bad[0]!r}; allowed: {', '.join(NAMES)}")
    todo = [(name, dim) for name in models for dim in dims or ops.FAMILIES[name].solver_dims]
    rows: list[dict] = []
    worker = Worker(functools.partial(SolverWorker, batch, rounds, max_call_s))
    with store.lock(out, "solvers") if out is not None else contextlib.nullcontext():
        if out is not None and resume:
            rows = store.kept_rows(out / SOLVERS, FIELDS, {Col.BATCH: batch}, (Col.MODEL, Col.DIM))
            done = {(r[Col.MODEL], int(r[Col.DIM])) for r in rows}
            todo = [t for t in todo if t not in done]
        elif out is not None and (aside := store.move_aside(out, (SOLVERS, SOLVERS_MD))) is not None:
            print(f"moved the earlier solver A/B of {out} aside into {aside}", file=sys.stderr)
        bar = tqdm(todo, desc="solvers", unit="model x d", disable=not progress, dynamic_ncols=True)
        try:
            for name, dim in bar:
                bar.set_postfix_str(f"{name} d={dim}")
                answer = worker.run((name, dim), deadline_s)
                if answer is None:
                    new = [failed_row(name, dim, batch, TIMEOUT, f"killed after {deadline_s:g} s")]
                elif isinstance(answer, tuple):
                    new = [failed_row(name, dim, batch, ERROR, answer[1])]
                else:
                    new = answer
                rows += new
                bar.write(f"{name} d={dim}: " + summary(new))
                if out is not None:  # every model and d as it is measured
                    store.write_table(out / SOLVERS, rows, FIELDS)
        finally:
            bar.close()
            worker.close()
        text = table(rows)
        print(text)
        if out is not None:
            store.write_text(out / SOLVERS_MD, text + "\n")
    return rows


def summary(rows: list[dict]) -> str:
    """One model and d's outcome, as the progress line says it."""
    timed = [r for r in rows if r[Col.STATUS] == OK]
    if not timed:
        return f"{rows[0][Col.STATUS]}: {rows[0][Col.REASON]}"
    best = max(timed, key=lambda r: r["speedup"])
    return f"fastest {best[Col.SOLVER]} ({best['speedup']:.3g}x the reference)"
