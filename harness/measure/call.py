"""Measuring configurations: settings in, rows' measured columns out.

A configuration is first *prepared*: one call outside timing checks the output against
the flow contract (harness.measure.contract), reads the solver's counters, serves as
the warm-up and gives the estimate the budget is checked on. Then it is timed, either
alone (:func:`measure`) or with the other configurations of its problem in
interleaved rounds (:func:`measure_together`: the default algorithms of every flow
at one device, d and batch, so that every ratio between them is paired by round),
and counted (FLOPs and peak memory in one pass, or from a cache of the same code).
Each row keeps the seconds per call of every run (``round_s``) for later comparison.

The sweep measures its grid with these; a fit times its trained models with
:func:`measure`; both pass their own :class:`Settings`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch

from ..models import Measurable, eager_ops, kernels, op_call, op_context, unchecked, use_kernel
from ..ops import COMPILE, EAGER, NUMBA, SAMPLE
from ..table import ERROR, OK, SKIPPED, Col
from .contract import violation
from .counting import FLOPS_METHOD, count_work
from .timing import MIN_RUNS, time_call, time_once, time_rounds

# The budget covers a configuration's every call: the checked call, MIN_RUNS timed runs
# and the counting pass (FLOPs and memory together), which costs up to about four calls
# for calls made of many small ops (a root-find), where dispatch dominates.
COUNT_CALLS = 4
ROUNDS = 5  # interleaved rounds of a paired problem (each one block of every configuration)
CALLS = 1 + max(MIN_RUNS, ROUNDS) + COUNT_CALLS
NO_FLOPS = "not counted: the run was made with --no-flops"
NOT_TORCH = "not counted: a JAX flow runs XLA's ops, which torch's dispatcher and allocator never see"


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
    rounds: int = ROUNDS  # interleaved rounds of a paired problem


def is_oom(e: BaseException) -> bool:
    return isinstance(e, (MemoryError, torch.cuda.OutOfMemoryError)) or "out of memory" in str(e).lower()


def one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".replace("\n", " ")[:300]


def round_text(times: tuple[float, ...] | list[float]) -> str:
    """The ``round_s`` column: seconds per call of each run, in the order timed."""
    return " ".join(f"{t:.6g}" for t in times)


@dataclass
class Prepared:
    """A configuration ready to time: its call, the seconds of one call, the columns
    known so far and the checked call's output."""

    model: Measurable
    op: str
    fn: Callable[[], object]
    one: float
    row: dict = field(default_factory=dict)
    out: object = None
    backend: str = EAGER
    eager: Callable[[], object] | None = None  # the same call in torch's eager ops, for counting
    x: object = None  # the input every call takes

    def timed(self) -> Last:
        """The call to time, keeping its last output for :meth:`broken_after`."""
        return Last(self.fn)

    def broken_after(self, last: Last) -> str:
        """What is wrong with the last timed call's output ('' if nothing): a flow whose
        outputs turn bad after the checked call is never recorded ok."""
        if last.calls == 0:
            return ""
        broken = violation(self.op, last.out, self.x)
        return f"breaks the contract after {last.calls} timed calls: {broken}" if broken else ""

    @property
    def not_steady(self) -> bool:
        """A compiled call that made a new graph while it was timed (:class:`Watched`)."""
        return isinstance(self.fn, Watched) and self.fn.recompiled

    def counted(self):
        """The call whose work is counted: the eager ops of the same arithmetic (a
        compiled loop or graph runs no op the counters see)."""
        return self.eager or self.fn

    def context(self):
        """The autograd mode and unchecked inputs its calls run under."""
        return _Both(op_context(self.model, self.op), unchecked())


class Last:
    """A call that keeps its last output and counts its calls (a Python call's cost,
    nothing next to a flow's)."""

    def __init__(self, fn: Callable[[], object]):
        self.fn, self.out, self.calls = fn, None, 0

    def __call__(self) -> object:
        self.out = self.fn()
        self.calls += 1
        return self.out


class _Both:
    def __init__(self, *managers):
        self.managers = managers

    def __enter__(self):
        for m in self.managers:
            m.__enter__()

    def __exit__(self, *exc):
        for m in reversed(self.managers):
            m.__exit__(*exc)


def graphs_compiled() -> int:
    """Graphs torch.compile has made in this process so far (0 before its first use)."""
    import sys

    utils = sys.modules.get("torch._dynamo.utils")
    return int(utils.counters["stats"]["unique_graphs"]) if utils is not None else 0


class Watched:
    """A compiled call that notes whether any of its calls compiled anew (torch.compile:
    data that changes a traced branch or loop count; a JAX flow: an input of a new shape
    or dtype): such a timing includes compiling, so it is an error row, never a
    steady-state time. ``compiles`` counts what the compiler made so far."""

    NOT_STEADY = "torch.compile made new graphs while it was timed (a branch or loop count that depends on the data)"
    JAX_NOT_STEADY = "jax compiled a new executable while it was timed (an input of a new shape or dtype)"

    def __init__(
        self, fn: Callable[[], object], compiles: Callable[[], int] = graphs_compiled, reason: str = NOT_STEADY
    ):
        self.fn, self.recompiled, self.compiles, self.reason = fn, False, compiles, reason

    def __call__(self) -> object:
        before = self.compiles()
        out = self.fn()
        self.recompiled |= self.compiles() != before
        return out


def _settle(call: Callable[[], object], device: str, most: int = 8) -> tuple[float, int]:
    """Calls ``call`` until a call makes no new torch.compile graph; returns the seconds
    and the number of the calls that did."""
    seconds, calls = 0.0, 0
    for _ in range(most):
        before = graphs_compiled()
        took = time_once(call, device)
        if graphs_compiled() == before:
            return seconds, calls
        seconds, calls = seconds + took, calls + 1
    raise RuntimeError(f"torch.compile made a new graph on each of {most} calls: it never settles")


def compiled(fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` under torch.compile (default mode, static shapes). Every configuration of a
    process compiles the same small closure, so the recompile limit is raised, and
    reaching it fails instead of falling back to eager ops unnoticed."""
    import torch._dynamo.config as dynamo

    dynamo.recompile_limit = max(dynamo.recompile_limit, 256)
    dynamo.fail_on_recompile_limit_hit = True
    return torch.compile(fn, dynamic=False)


def prepare(
    model: Measurable,
    op: str,
    device: str,
    batch: int,
    settings: Settings,
    estimate: float | None = None,
    essential: bool = False,
    backend: str = EAGER,
    context: int = 0,
) -> tuple[dict | None, Prepared | None]:
    """The checked call of one configuration: (a final row, None) when it is not timed
    (over budget, or its output breaks the contract), else (None, what to time). The
    budget bounds all :data:`CALLS` calls unless the configuration is ``essential`` (a
    cell of the default grid: only the deadline cuts those). A ``backend`` other than
    eager compiles first, in a call of its own (``compile_s``), outside the budget.
    With ``context`` features, log_prob and train_step take a context per point, sample
    one for all its batch (the posterior's shape), drawn with the input."""
    torch.manual_seed(settings.seed)
    x = torch.randn(batch, model.dim, device=device)
    given = None
    if context:
        given = torch.randn(context, device=device) if op == SAMPLE else torch.randn(batch, context, device=device)
    budget = settings.budget_s
    if not essential and estimate is not None and CALLS * estimate > budget:
        return dict(status=SKIPPED, reason=f"estimated {CALLS} calls x {estimate:.3g} s > budget {budget:g} s"), None
    use_kernel(model, backend == NUMBA)
    eager = op_call(model, op, x, given)
    fn = compiled(eager) if backend == COMPILE else eager
    ready = Prepared(model, op, fn, 0.0, backend=backend, eager=eager if backend != EAGER else None, x=x)
    with ready.context():
        torch.set_num_threads(settings.threads)

        def checked():
            ready.out = fn()

        def after_reset():
            model.reset_stats()
            checked()

        if backend == NUMBA:
            time_once(fn, device)  # compiles, or loads the compiled loop, once per process
        jax_flow = getattr(model, "framework", "torch") == "jax"
        if jax_flow:  # jit compiles for this input's shape on the first call: apart from every timing
            before = model.compile_seconds()
            time_once(fn, device)
            compile_s = model.compile_seconds() - before
        # torch.compile guards on the layers' counters too, which the checked call finds
        # reset and every later call set: both states compile before anything is timed
        compiling = [_settle(call, device) for call in (fn, after_reset)] if backend == COMPILE else []
        model.reset_stats()
        ready.one = time_once(checked, device)  # warm-up, and the estimate the budget is checked on
    if jax_flow:
        ready.fn = Watched(fn, model.compiles, Watched.JAX_NOT_STEADY)
        ready.row[Col.COMPILE_S] = compile_s
    if backend == COMPILE:  # the calls that compiled also ran once each
        ready.fn = Watched(fn)
        ready.row[Col.COMPILE_S] = max(sum(s for s, _ in compiling) - sum(n for _, n in compiling) * ready.one, 0.0)
    elif backend == NUMBA:  # once per process, whichever configuration came first
        ready.row[Col.COMPILE_S] = kernels.compile_seconds()
    stats = model.solve_stats()
    if stats is not None and model.cost[op] != "parallel":
        ready.row.update(
            evaluations=stats.evaluations,
            iterations=stats.iterations,
            evaluations_per_dim=stats.evaluations / (model.dim * model.solving_layers),
        )
    broken = violation(op, ready.out, x)
    if broken:  # less work, or none that can be trusted: an error, never timed
        return dict(ready.row, status=ERROR, reason=f"breaks the contract: {broken}"), None
    if not essential and CALLS * ready.one > budget:
        reason = f"one call took {ready.one:.3g} s; {CALLS} calls > budget {budget:g} s"
        return dict(ready.row, status=SKIPPED, reason=reason, one_call_s=ready.one), ready
    return None, ready


def _timed(times: list[float] | tuple[float, ...], number: int = 1) -> dict:
    q25, median, q75 = np.quantile(times, [0.25, 0.5, 0.75])
    return dict(status=OK, reason="", median_s=float(median), iqr_s=float(q75 - q25), runs=len(times))


def count(ready: Prepared, device: str, settings: Settings, counts: dict | None) -> dict:
    """FLOPs, bytes moved and peak memory of one call (a compiled one's eager ops),
    counted in one pass, or from ``counts``."""
    row: dict = {}
    if getattr(ready.model, "framework", "torch") != "torch":
        return {Col.FLOPS_NOTE: NOT_TORCH}
    counted = ((Col.FLOPS, settings.flops), (Col.BYTES_MOVED, settings.flops), (Col.PEAK_MEM_BYTES, settings.memory))
    wanted = {k for k, on in counted if on}
    if counts and wanted <= set(counts):
        row.update({k: counts[k] for k in wanted}, flops_method=FLOPS_METHOD if settings.flops else "")
    elif wanted:
        with ready.context(), eager_ops(ready.model):
            work = count_work(ready.counted(), device, flops=settings.flops, memory=settings.memory)
        if settings.memory:
            row[Col.PEAK_MEM_BYTES] = work.peak
        if settings.flops:
            row.update({Col.FLOPS: work.flops, Col.BYTES_MOVED: work.moved, Col.FLOPS_METHOD: FLOPS_METHOD})
    if not settings.flops:
        row[Col.FLOPS_NOTE] = NO_FLOPS
    return row


def measure(
    model: Measurable,
    op: str,
    device: str,
    batch: int,
    settings: Settings,
    estimate: float | None = None,
    essential: bool = False,
    backend: str = EAGER,
    context: int = 0,
    *,
    counts: dict | None = None,
) -> tuple[dict, object]:
    """Times, counts and records one configuration alone; returns the measured columns
    and the output of its checked call (for the deviation of other solvers from the
    reference)."""
    final, ready = prepare(model, op, device, batch, settings, estimate, essential, backend, context)
    if final is not None:
        return final, ready.out if ready is not None else None
    budget = settings.budget_s
    run_time = min(max(settings.min_run_time, MIN_RUNS * ready.one), max(budget - (1 + COUNT_CALLS) * ready.one, 0.0))
    last = ready.timed()
    with ready.context():
        t = time_call(last, device, threads=settings.threads, min_run_time=run_time, estimate_s=ready.one)
    if ready.not_steady:
        return dict(ready.row, status=ERROR, reason=ready.fn.reason), ready.out
    if ready.broken_after(last):
        return dict(ready.row, status=ERROR, reason=ready.broken_after(last)), ready.out
    row = dict(ready.row, **_timed(t.times), round_s=round_text(t.times))
    row.update(count(ready, device, settings, counts))
    return row, ready.out


def measure_together(
    ready: dict[object, Prepared], device: str, settings: Settings, rounds: int | None = None
) -> dict[object, dict]:
    """Times prepared configurations in ``rounds`` interleaved rounds (each round one
    block of every configuration, in rotating order, blocks of at least one call that
    together fill ``min_run_time``), so that the ratio of any two of them is paired by
    round; returns each one's timing columns with its runs (``round_s``)."""
    if not ready:
        return {}
    compiling = _settle_together(ready, device)
    rounds = rounds or settings.rounds
    block_s = settings.min_run_time / rounds
    last = {k: r.timed() for k, r in ready.items()}
    times = time_rounds(
        last,
        device,
        rounds=rounds,
        min_rounds=rounds,
        block_s=block_s,
        threads=settings.threads,
        max_s=float("inf"),
        estimates={k: r.one for k, r in ready.items()},
        contexts={k: partial(Prepared.context, r) for k, r in ready.items()},
    )
    columns = {
        k: dict(status=ERROR, reason=ready[k].fn.reason)
        if ready[k].not_steady
        else dict(status=ERROR, reason=ready[k].broken_after(last[k]))
        if ready[k].broken_after(last[k])
        else dict(_timed(t), round_s=round_text(t))
        for k, t in times.items()
    }
    for k, seconds in compiling.items():
        columns[k][Col.COMPILE_S] = ready[k].row.get(Col.COMPILE_S, 0.0) + seconds
    return columns


def _settle_together(ready: dict[object, Prepared], device: str, passes: int = 4) -> dict[object, float]:
    """Calls every torch.compile'd configuration until none makes a new graph: the
    compiled calls of one process share code (harness.models.run_op), so one's graph
    break can make another's first later call compile again. Returns the seconds each
    spent compiling here, to add to its ``compile_s``."""
    compiled = {k: r for k, r in ready.items() if r.backend == COMPILE}
    extra = dict.fromkeys(compiled, 0.0)
    for _ in range(passes):
        made = False
        for k, r in compiled.items():
            with r.context():
                seconds, calls = _settle(r.fn.fn, device)
            extra[k] += max(seconds - calls * r.one, 0.0)
            made |= calls > 0
        if not made:
            break
    return {k: v for k, v in extra.items() if v > 0}


def count_all(
    jobs: dict[object, tuple[Prepared, dict | None]], device: str, settings: Settings, processes: int = 2
) -> dict[object, dict | str]:
    """:func:`count` of every prepared configuration of a unit (with its cached counts),
    after its timing: on the CPU split between this process and a forked one, since
    counting times nothing and the other core is idle then. Returns each one's columns,
    or why counting failed."""
    import os
    import pickle

    def run(keys: list) -> dict[object, dict | str]:
        done: dict[object, dict | str] = {}
        for k in keys:
            try:
                done[k] = count(jobs[k][0], device, settings, jobs[k][1])
            except Exception as e:
                done[k] = one_line(e)
        return done

    keys = sorted(jobs, key=lambda k: -jobs[k][0].one)  # the costliest first, dealt to the emptier side
    if len(jobs) < 2 or device != "cpu" or processes < 2 or not hasattr(os, "fork"):
        return run(keys)
    sides: list[list] = [[] for _ in range(processes)]
    load = [0.0] * processes
    for k in keys:
        i = load.index(min(load))
        sides[i].append(k)
        load[i] += (0.0 if jobs[k][1] else jobs[k][0].one) + 1e-6
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: count its share, send it, and leave without any exit handler
        try:
            os.close(read)
            with os.fdopen(write, "wb") as out:
                pickle.dump(run(sides[1]), out)
        finally:
            os._exit(0)
    os.close(write)
    done = run(sides[0])
    with os.fdopen(read, "rb") as got:
        try:
            done.update(pickle.load(got))
        except (EOFError, pickle.UnpicklingError):  # the child died: count its share here
            done.update(run(sides[1]))
    os.waitpid(pid, 0)
    return done
