"""Measuring one configuration: settings in, a row's measured columns out.

The sweep measures every configuration of its grid with :func:`measure`; a fit times
its trained models with it; both pass their own :class:`Settings`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models import Measurable, op_call, op_context, unchecked
from ..table import ERROR, OK, SKIPPED, Col
from .contract import violation
from .counting import FLOPS_METHOD, count_work
from .timing import MIN_RUNS, time_call, time_once

# The budget covers a configuration's every call: the checked call, MIN_RUNS timed runs
# and the counting pass (FLOPs and memory together), which costs up to about four calls
# for calls made of many small ops (a root-find), where dispatch dominates.
COUNT_CALLS = 4
CALLS = 1 + MIN_RUNS + COUNT_CALLS
NO_FLOPS = "not counted: the run was made with --no-flops"


@dataclass(frozen=True)
class Settings:
    """How one configuration is measured: intra-op ``threads``, ``budget_s`` seconds for
    all :data:`CALLS` calls, at least ``min_run_time`` seconds of timed runs, whether to
    count ``flops`` and peak ``memory``, and the ``seed`` of the input."""

    threads: int = 1
    budget_s: float = 30.0
    min_run_time: float = 0.3
    flops: bool = True
    memory: bool = True
    seed: int = 0


def is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".replace("\n", " ")[:300]


def measure(
    model: Measurable,
    op: str,
    device: str,
    batch: int,
    settings: Settings,
    estimate: float | None = None,
    *,
    essential: bool = False,
    counts: dict | None = None,
) -> tuple[dict, object]:
    """Times, counts and records one configuration; returns the measured columns and
    the output of its checked call (for the deviation of other solvers from the reference).

    One call outside timing checks the output against the flow contract (a wrong shape,
    dtype, device or a non-finite value is an error, never ``ok``: harness.measure.contract),
    reads the solver's counters and serves as the warm-up. The budget bounds all
    :data:`CALLS` calls: a configuration whose calls would not fit is skipped, unless it
    is ``essential`` (a cell of the default grid: only the deadline cuts those). FLOPs
    and peak memory are counted in one pass whatever a call's time, or taken from
    ``counts`` (the cache of an earlier count of the same configuration and code).
    """
    torch.manual_seed(settings.seed)
    x = torch.randn(batch, model.dim, device=device)
    fn = op_call(model, op, x)
    budget = settings.budget_s
    if not essential and estimate is not None and CALLS * estimate > budget:
        return dict(status=SKIPPED, reason=f"estimated {CALLS} calls x {estimate:.3g} s > budget {budget:g} s"), None
    with op_context(model, op), unchecked():
        torch.set_num_threads(settings.threads)
        out = None

        def checked():
            nonlocal out
            out = fn()

        model.reset_stats()
        one = time_once(checked, device)  # warm-up, and the estimate the budget is checked on
        row: dict = {}
        stats = model.solve_stats()
        if stats is not None and model.cost[op] != "parallel":
            row.update(
                evaluations=stats.evaluations,
                iterations=stats.iterations,
                evaluations_per_dim=stats.evaluations / (model.dim * model.solving_layers),
            )
        broken = violation(op, out, x)
        if broken:  # less work, or none that can be trusted: an error, never timed
            return dict(row, status=ERROR, reason=f"breaks the contract: {broken}"), None
        if not essential and CALLS * one > budget:
            reason = f"one call took {one:.3g} s; {CALLS} calls > budget {budget:g} s"
            return dict(row, status=SKIPPED, reason=reason), out
        run_time = min(max(settings.min_run_time, MIN_RUNS * one), max(budget - (1 + COUNT_CALLS) * one, 0.0))
        t = time_call(fn, device, threads=settings.threads, min_run_time=run_time, estimate_s=one)
        row.update(status=OK, reason="", median_s=t.median_s, iqr_s=t.iqr_s, runs=t.runs)
        wanted = {k for k, on in ((Col.FLOPS, settings.flops), (Col.PEAK_MEM_BYTES, settings.memory)) if on}
        if counts and wanted <= set(counts):
            row.update({k: counts[k] for k in wanted}, flops_method=FLOPS_METHOD if settings.flops else "")
        elif wanted:
            counted, peak = count_work(fn, device, flops=settings.flops, memory=settings.memory)
            if settings.memory:
                row[Col.PEAK_MEM_BYTES] = peak
            if settings.flops:
                row.update(flops=counted, flops_method=FLOPS_METHOD)
        if not settings.flops:
            row[Col.FLOPS_NOTE] = NO_FLOPS
    return row, out
