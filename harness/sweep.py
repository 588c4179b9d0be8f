"""The sweep: every (model, dim, op, device, batch) measured into one tidy table.

Rows go to ``DIR/results.csv`` the moment they are measured (an interrupted sweep
loses nothing; ``resume`` skips keys already there), with ``DIR/meta.json`` beside it.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import datetime as dt
import functools
import io
import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from . import __version__, peers, registry
from .files import ensure_folder
from .measure import allocator
from .measure.counting import FLOPS_METHOD, count_params, count_work
from .measure.stats import relative_deviation
from .measure.timing import MIN_RUNS, gemm_rate, time_call, time_once
from .models import NAMES, OPS, SWEEP_OPS, TRAIN_STEP, Cost, Measurable, build, run_op, train_step, unchecked
from .models.solvers import ALL as ALL_SOLVERS
from .models.solvers import DIRECT, NATIVE
from .table import COLUMNS, COUNTS, ERROR, META, OK, OOM, RESULTS, SKIPPED, TIMEOUT, UNITS, Col, Row, key_of

ALL_NAMES = NAMES + peers.NAMES
# --models shorthands
GROUPS = {"ours": NAMES, "peers": peers.NAMES, "all": ALL_NAMES}

DEVICES = ("auto", "cpu", "cuda")
# --solvers shorthands, resolved per family
SOLVER_ALIASES = ("default", "reference", "all")

DEFAULT_DIMS = (2, 4, 8, 16, 32, 64, 128, 256)
# Above these a model or its input does not fit a machine's memory: refused up front.
MAX_DIM, MAX_BATCH = 65536, 1 << 24


@dataclass
class Config:
    """What to sweep and how. ``budget_s`` caps the measuring time of one configuration."""

    models: Sequence[str] = NAMES
    dims: Sequence[int] = DEFAULT_DIMS
    ops: Sequence[str] = SWEEP_OPS
    device: str = "auto"
    batches: Sequence[int] = (1024,)
    threads: int = 1
    budget_s: float = 30.0
    min_run_time: float = 0.3
    # slow directions: solver names, or ``default`` and ``reference`` (each family's own)
    solvers: Sequence[str] = ("default", "reference")
    flops: bool = True
    memory: bool = True
    seed: int = 0
    model_config: dict = field(default_factory=dict)
    # measure in a worker process killed at the deadline (harness.worker); False measures
    # in this process, with no deadline
    isolate: bool = True
    # the deadline is 1.5 x the budget plus this, for building the model and the timer's own calls
    deadline_margin_s: float = 10.0

    @classmethod
    def quick(cls, **overrides) -> Config:
        """A small profile for CI and smoke tests (the two directions only): under a minute on two cores."""
        base = dict(dims=(2, 8), ops=OPS, batches=(64,), budget_s=2.0, min_run_time=0.05)
        return cls(**{**base, **overrides})

    def validate(self) -> None:
        for name, values in (
            ("models", self.models),
            ("ops", self.ops),
            ("dims", self.dims),
            ("batches", self.batches),
            ("solvers", self.solvers),
        ):
            if not values:
                raise ValueError(f"{name} is empty; name at least one")
        bad = [m for m in self.models if not registry.known(m)]
        if bad:
            raise ValueError(
                f"unknown model {bad[0]!r}; allowed: {', '.join(ALL_NAMES)} (or {', '.join(GROUPS)}), "
                "or module:factory for your own flow"
            )
        bad = [o for o in self.ops if o not in SWEEP_OPS]
        if bad:
            raise ValueError(f"unknown op {bad[0]!r}; allowed: {', '.join(SWEEP_OPS)}")
        allowed = (*SOLVER_ALIASES, *ALL_SOLVERS)
        bad = [s for s in self.solvers if s not in allowed]
        if bad or not self.solvers:
            raise ValueError(f"unknown solver {(bad or [''])[0]!r}; allowed: {', '.join(allowed)}")
        for name, values, top in ((Col.DIM, self.dims, MAX_DIM), (Col.BATCH, self.batches, MAX_BATCH)):
            for v in values:
                if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= top:
                    raise ValueError(f"{name} must be an int in 1..{top}, got {v!r}")
        most = 4 * (os.cpu_count() or 1)
        if not isinstance(self.threads, int) or not 1 <= self.threads <= most:
            raise ValueError(f"threads must be an int in 1..{most} (4x this machine's cores), got {self.threads!r}")
        if not (isinstance(self.budget_s, (int, float)) and math.isfinite(self.budget_s) and self.budget_s > 0):
            raise ValueError(f"budget must be a finite number of seconds > 0, got {self.budget_s!r}")
        resolve_devices(self.device)  # raises for a bad or absent device


def devices() -> list[str]:
    """Devices present on this machine."""
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def resolve_devices(device: str) -> list[str]:
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; allowed: {', '.join(DEVICES)}")
    if device == "auto":
        return devices()
    if device not in devices():
        raise ValueError(f"device {device!r} is not available here; present: {', '.join(devices())}")
    return [device]


# ---- provenance --------------------------------------------------------------------


def _git(*args: str, path: Path | None = None) -> str | None:
    """git's output in ``path`` (this package's folder by default), None outside git."""
    try:
        out = subprocess.run(
            ["git", *args], cwd=path or Path(__file__).parent, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def git_commit(path: Path | None = None) -> str:
    return _git("rev-parse", "--short=12", "HEAD", path=path) or "unknown"


def dirty_tree(path: Path | None = None) -> bool | None:
    """Whether the working tree has uncommitted changes (None outside git)."""
    out = _git("status", "--porcelain", "--untracked-files=no", path=path)
    return None if out is None else bool(out)


def cpu_flags() -> str:
    """The CPU's feature flags (/proc/cpuinfo), e.g. for the vector units a GEMM uses."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def gpu_driver() -> str | None:
    if not torch.cuda.is_available():
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_name(device: str) -> str:
    """The hardware a row is measured on, as reports name machines: the GPU's name for
    ``cuda``, the CPU model and its core count for ``cpu``."""
    if device == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{cpu_name()} ({os.cpu_count()} cores)"


def command_line() -> str:
    """How this process was started, as a user would type it."""
    import shlex

    program = Path(sys.argv[0]).name if sys.argv else ""
    if program in ("__main__.py", "flowbench"):
        return shlex.join(["python -m harness", *sys.argv[1:]]).replace("'python -m harness'", "python -m harness")
    return shlex.join(sys.argv)


def metadata(config: Config, roofline: bool = True) -> dict:
    """The environment of a sweep; ``roofline`` times each device's GEMM rate."""
    rates = {d: gemm_rate(d, threads=config.threads) for d in resolve_devices(config.device)} if roofline else {}
    return {
        "harness_version": __version__,
        "command": command_line(),
        Col.COMMIT: git_commit(),
        "dirty": dirty_tree(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": platform.node(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "cpu_flags": cpu_flags(),
        "load_start": load_average(),
        "allocator": allocator.tune(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "gpu_driver": gpu_driver(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        Col.THREADS: config.threads,
        "roofline": rates,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
        "units": UNITS,
    }


# ---- the table on disk -------------------------------------------------------------


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


# ---- measuring one configuration ---------------------------------------------------


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def estimate_seconds(history: list[tuple], dim: int, kind: str) -> float | None:
    """Seconds of one call at ``dim``, predicted from earlier dims of the same series,
    entries (dim, seconds, flops or None).

    The work grows as the counted FLOPs do: with two counted dims, FLOPs at ``dim`` are
    extrapolated along their local power law (deterministic, whatever the load), and
    the last measured time is scaled by that growth. Otherwise the exponent is the
    local slope of the last two times, kept within [1, 2.5]; with one point it is 1 (a
    fast solver's cost grows about linearly in d; for a slow one the timed check call,
    whose time the budget also bounds, decides).
    """
    if not history:
        return None
    (d1, t1, *f1), (d2, t2, *f2) = ([(0, 0.0, None)] + list(history))[-2:]
    flops1, flops2 = (f1 or [None])[0], (f2 or [None])[0]
    if d1 > 0 and d2 > d1 and flops1 and flops2:
        k = max(math.log(flops2 / flops1) / math.log(d2 / d1), 0.0)
        return t2 * (dim / d2) ** k
    k = 1.0
    if d1 > 0 and t1 > 0 and d2 > d1:
        k = min(max(math.log(t2 / t1) / math.log(d2 / d1), 1.0), 2.5)
    return t2 * (dim / d2) ** k


def counts_key(row: dict, config: Config) -> str:
    """The cache key of a configuration's FLOPs and memory: the same code, model config
    and configuration count the same."""
    parts = [
        row[Col.MODEL],
        row[Col.DIM],
        row[Col.OP],
        row[Col.DEVICE],
        row[Col.BATCH],
        row[Col.SOLVER],
        row[Col.COMMIT],
    ]
    return "|".join(map(str, parts)) + "|" + json.dumps(config.model_config, sort_keys=True)


def build_any(name: str, dim: int, **config: object):
    """A reference model, a peer or a user's flow by name (harness.registry)."""
    return registry.build_any(name, dim, **config)


@functools.cache
def cost_of(name: str) -> Cost:
    """A model's cost kinds, from a build at d = 1."""
    return peers.PEERS[name].cost if name in peers.NAMES else build_any(name, 1).cost


def grad_off(model) -> contextlib.AbstractContextManager:
    """Inference mode, or no_grad for peers that take autograd derivatives inside a call."""
    return torch.inference_mode() if model.inference_mode else torch.no_grad()


# The budget covers a configuration's every call: the checked call, MIN_RUNS timed runs
# and the counting pass (FLOPs and memory together), which costs up to about four calls
# for calls made of many small ops (a root-find), where dispatch dominates.
COUNT_CALLS = 4
NO_FLOPS = "not counted: the sweep ran with --no-flops"
CALLS = 1 + MIN_RUNS + COUNT_CALLS


def measure(
    model: Measurable,
    op: str,
    device: str,
    batch: int,
    config: Config,
    estimate: float | None,
    *,
    essential: bool = False,
    counts: dict | None = None,
) -> tuple[dict, object]:
    """Times, counts and records one configuration; returns the measured columns and
    the output of its checked call (for the deviation of other solvers from the reference).

    One call outside timing checks the output (non-finite is an error, never ``ok``),
    reads the solver's counters and serves as the warm-up. The budget bounds all
    :data:`CALLS` calls: a configuration whose calls would not fit is skipped, unless it
    is ``essential`` (a cell of the default grid: only the deadline cuts those). FLOPs
    and peak memory are counted in one pass whatever a call's time, or taken from
    ``counts`` (the cache of an earlier count of the same configuration and commit).
    """
    torch.manual_seed(config.seed)
    x = torch.randn(batch, model.dim, device=device)
    if op == TRAIN_STEP:  # on a copy: the steps change the weights the other ops time
        trainee = copy.deepcopy(model)
        optimizer = torch.optim.Adam(trainee.parameters(), lr=1e-3)
        fn = lambda: train_step(trainee, optimizer, x)  # noqa: E731
    else:
        fn = lambda: run_op(model, op, x)  # noqa: E731
    budget = config.budget_s
    if not essential and estimate is not None and CALLS * estimate > budget:
        return dict(status=SKIPPED, reason=f"estimated {CALLS} calls x {estimate:.3g} s > budget {budget:g} s"), None
    with torch.enable_grad() if op == TRAIN_STEP else grad_off(model), unchecked():
        torch.set_num_threads(config.threads)
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
        if not bool(torch.isfinite(out).all()):
            bad = int((~torch.isfinite(out)).sum())
            return dict(row, status=ERROR, reason=f"non-finite output: {bad} of {out.numel()} entries"), None
        if not essential and CALLS * one > budget:
            reason = f"one call took {one:.3g} s; {CALLS} calls > budget {budget:g} s"
            return dict(row, status=SKIPPED, reason=reason), out
        run_time = min(max(config.min_run_time, MIN_RUNS * one), max(budget - (1 + COUNT_CALLS) * one, 0.0))
        t = time_call(fn, device, threads=config.threads, min_run_time=run_time, estimate_s=one)
        row.update(status=OK, reason="", median_s=t.median_s, iqr_s=t.iqr_s, runs=t.runs)
        wanted = {k for k, on in ((Col.FLOPS, config.flops), (Col.PEAK_MEM_BYTES, config.memory)) if on}
        if counts and wanted <= set(counts):
            row.update({k: counts[k] for k in wanted}, flops_method=FLOPS_METHOD if config.flops else "")
        elif wanted:
            counted, peak = count_work(fn, device, flops=config.flops, memory=config.memory)
            if config.memory:
                row[Col.PEAK_MEM_BYTES] = peak
            if config.flops:
                row.update(flops=counted, flops_method=FLOPS_METHOD)
        if not config.flops:
            row[Col.FLOPS_NOTE] = NO_FLOPS
    return row, out


def solvers_for(name: str, op: str, requested: Sequence[str]) -> list[str]:
    """The solver column values to sweep for ``name``'s ``op``: ``direct`` for a parallel
    op, ``native`` for a peer's own algorithm, else the requested solvers the family has
    (``default``, ``reference`` and ``all`` resolved), the reference first."""
    if name not in NAMES:
        return [DIRECT if cost_of(name)[op] == "parallel" else NATIVE]
    flow = build(name, 1)
    if flow.cost[op] == "parallel":
        return [DIRECT]
    named = {"default": {flow.solver}, "reference": {flow.reference_solver}, "all": set(flow.solvers)}
    chosen = set().union(*(named.get(s, {s}) for s in requested)) & set(flow.solvers)
    return [s for s in dict.fromkeys((flow.reference_solver, *flow.solvers)) if s in chosen]


GRID = (Col.DEVICE, Col.MODEL, Col.DIM, Col.OP, Col.BATCH, Col.SOLVER)  # the fields of a grid entry


def grid(config: Config) -> list[tuple[str, str, int, str, int, str]]:
    """(device, model, dim, op, batch, solver) in measuring order: dims ascending, so
    budgets can be extrapolated from the previous dim; at each dim the reference solver
    first, so the others' deviation from it is known."""
    ours = [m for m in config.models if m in NAMES]
    bad = [s for s in config.solvers if s not in SOLVER_ALIASES and not any(s in build(m, 1).solvers for m in ours)]
    if bad and ours:
        raise ValueError(f"solver {bad[0]!r} belongs to no model of this sweep ({', '.join(config.models)})")
    return [
        (device, name, dim, op, batch, solver)
        for device in resolve_devices(config.device)
        for name in config.models
        for batch in config.batches
        for op in config.ops
        for dim in sorted(config.dims)
        for solver in solvers_for(name, op, config.solvers)
    ]


@dataclass(frozen=True)
class Task:
    """One grid entry for the measurer, with what the parent knows of it."""

    device: str
    model: str
    dim: int
    op: str
    batch: int
    solver: str
    estimate: float | None = None
    skip: str = ""  # a reason to record without measuring
    essential: bool = False  # a cell of the default grid: measured whatever the budget
    counts: dict | None = None  # cached FLOPs and peak memory of this configuration


class Measurer:
    """Measures tasks one after another, keeping the last model built and the reference
    solver's output of the current problem (for the other solvers' deviation). Runs in
    the worker process (``harness.worker``), or in-process with ``isolate=False``."""

    def __init__(self, config: Config):
        self.config = config
        allocator.tune()  # in the measuring process, before any buffer
        self.built: dict[tuple, tuple] = {}  # (device, model, dim, solver) -> (flow, (stored, effective))
        self.reference_out: dict[tuple, object] = {}

    def __call__(self, task: Task) -> dict:
        try:
            return self.measure(task)
        except Exception as e:  # record, and go on with the sweep
            if task.device == "cuda":
                torch.cuda.empty_cache()
            return dict(status=OOM if _is_oom(e) else ERROR, reason=_one_line(e))

    def measure(self, task: Task) -> dict:
        config, name, device = self.config, task.model, task.device
        solver_config = {} if task.solver in (DIRECT, NATIVE) else {"solver": task.solver}
        key = (device, name, task.dim, task.solver)
        if key not in self.built:
            self.built.clear()  # one model in memory at a time
            torch.manual_seed(config.seed)  # the same weights whatever the solver
            flow = build_any(name, task.dim, **config.model_config, **solver_config).to(device).eval()
            self.built[key] = (flow, count_params(flow, flow.masks()))
        model, (stored, effective) = self.built[key]
        row = dict(kind=model.cost[task.op], params_stored=stored, params_effective=effective)
        # a training step is log_prob's gradient: it goes where log_prob goes
        cannot = model.unsupported.get("log_prob" if task.op == TRAIN_STEP else task.op)
        if cannot:
            return dict(row, status=SKIPPED, reason=cannot)
        if task.skip:
            return dict(row, status=SKIPPED, reason=task.skip)
        measured, out = measure(
            model, task.op, device, task.batch, config, task.estimate, essential=task.essential, counts=task.counts
        )
        row.update(measured)
        problem = (device, name, task.dim, task.op, task.batch)
        if out is not None and task.solver == model.reference_solver:
            self.reference_out = {problem: out}  # only the current problem's is kept
        elif out is not None and problem in self.reference_out:
            row[Col.MAX_REL_DEV] = relative_deviation(out, self.reference_out[problem])
        return row


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".replace("\n", " ")[:300]


def deadline_s(config: Config, essential: bool = False) -> float:
    """Seconds a configuration may take before its worker is killed: the budget, plus
    half of it and a margin (10 s) for building the model and the timer's own calls. A
    cell of the default grid, which the budget does not cut, gets 4 budgets and at
    least 5 minutes: only a hang stops it."""
    if essential:
        return max(4.0 * config.budget_s, 300.0) + config.deadline_margin_s
    return 1.5 * config.budget_s + config.deadline_margin_s


class Interrupted(Exception):
    """Ctrl-C during a sweep; the rows measured so far are kept."""

    def __init__(self, kept: int, out: Path):
        super().__init__(f"interrupted: {kept} rows kept in {out / RESULTS}; continue with --resume")
        self.kept = kept


def run(config: Config, out: Path, resume: bool = False, progress: bool = True, fresh: bool = False) -> list[dict]:
    """Runs the sweep into ``out``; returns the rows measured now (not the resumed ones).

    ``out`` is locked while written. Without ``resume`` an existing table is refused,
    or with ``fresh`` moved aside into ``out/previous/``; with ``resume`` a torn last
    line is dropped (and measured again), and a table of other columns or settings is
    refused. Ctrl-C raises :class:`Interrupted` once the rows so far are safe.
    """
    from functools import partial

    from tqdm.auto import tqdm

    from .worker import Worker

    config.validate()
    folder = ResultsFolder(out)
    with folder.lock():
        done = {key_of(r): r for r in folder.prepare(config, resume=resume, fresh=fresh)}
        commit = git_commit()
        todo = [g for g in grid(config) if key_of(dict(zip(GRID, g))) not in done]
        rows: list[dict] = []
        # per (device, model, op, batch, solver): measured (dim, seconds), and the dim first over budget
        history: dict[tuple, list[tuple[int, float]]] = {}
        over: dict[tuple, int] = {}
        failed: dict[tuple, tuple[int, str]] = {}  # the dim of the first oom or timeout, and which

        def record(r: dict) -> None:
            series = (r[Col.DEVICE], r[Col.MODEL], r[Col.OP], int(r[Col.BATCH]), r[Col.SOLVER])
            if r[Col.STATUS] == OK:
                flops = float(r[Col.FLOPS]) if r.get(Col.FLOPS) not in (None, "") else None
                history.setdefault(series, []).append((int(r[Col.DIM]), float(r[Col.MEDIAN_S]), flops))
            elif r[Col.STATUS] in (OOM, TIMEOUT):  # larger d only costs more, whatever the cell
                failed.setdefault(series, (int(r[Col.DIM]), r[Col.STATUS]))
            elif r[Col.STATUS] == SKIPPED:
                over.setdefault(series, int(r[Col.DIM]))

        for r in sorted(done.values(), key=lambda r: int(r[Col.DIM])):  # resumed rows inform the budget
            record(r)
        counts = folder.load_counts()

        def eta(remaining: list[tuple]) -> float:
            """Seconds the remaining configurations are predicted to take: CALLS calls
            each at the extrapolated time, a second where nothing is known yet."""
            total = 0.0
            for device, name, dim, op, batch, solver in remaining:
                est = estimate_seconds(history.get((device, name, op, batch, solver), []), dim, "")
                total += CALLS * est if est is not None else 1.0
            return total

        worker = Worker(partial(Measurer, config)) if config.isolate else None
        local = None if config.isolate else Measurer(config)
        bar = tqdm(todo, desc="sweep", unit="config", disable=not progress, dynamic_ncols=True)
        try:
            for device, name, dim, op, batch, solver in bar:
                family, library = registry.identity(name)
                row: Row = dict(
                    model=name,
                    family=family,
                    library=library,
                    dim=dim,
                    op=op,
                    device=device,
                    batch=batch,
                    solver=solver,
                    threads=config.threads,
                    dtype="float32",
                    source="sweep",
                    commit=commit,
                    machine=machine_name(device),
                )
                missing = peers.unavailable(name) if name in peers.NAMES else None
                if missing:  # listed, not measured, and not recorded: it says nothing of larger d
                    row.update(kind=peers.PEERS[name].cost[op], status=SKIPPED, reason=f"unavailable: {missing}")
                    folder.write(row)
                    rows.append(row)
                    continue
                series = (device, name, op, batch, solver)
                kind = cost_of(name)[op]
                essential = name in NAMES and solver in (DIRECT, build(name, 1).solver)
                over_at, (failed_at, failure) = over.get(series), failed.get(series, (None, ""))
                skip = f"over budget already at d={over_at}" if over_at and over_at < dim and not essential else ""
                skip = f"{failure} already at d={failed_at}" if failed_at and failed_at < dim else skip
                estimate = estimate_seconds(history.get(series, []), dim, kind)
                key = counts_key(row, config)
                task = Task(device, name, dim, op, batch, solver, estimate, skip, essential, counts.get(key))
                bar.set_postfix_str(f"{name} d={dim} {op} {solver}, ~{eta(todo[len(rows) :]) / 60:.0f} min left")
                row.update(local(task) if worker is None else _isolated(worker, task, config, kind))
                if row[Col.STATUS] == OK and row.get(Col.FLOPS) not in (None, ""):
                    counts[key] = {k: row[k] for k in (Col.FLOPS, Col.PEAK_MEM_BYTES) if row.get(k) not in (None, "")}
                    folder.save_counts(counts)
                record(row)
                folder.write(row)
                rows.append(row)
        except KeyboardInterrupt:  # what the table holds, whichever line the signal came in
            raise Interrupted(folder.rows_on_disk(), out) from None
        finally:
            if worker is not None:
                worker.close()
            bar.close()
            folder.close()
            folder.update_meta(load_end=load_average())
    return rows


def _isolated(worker, task: Task, config: Config, kind: str) -> dict:
    """The worker's answer, or a ``timeout`` or ``error`` row when it gave none."""
    from .worker import WorkerDied

    limit = deadline_s(config, task.essential)
    try:
        answer = worker.run(task, limit)
    except WorkerDied as e:
        return dict(kind=kind, status=ERROR, reason=str(e))
    if answer is None:
        return dict(kind=kind, status=TIMEOUT, reason=f"killed after {limit:g} s (budget {config.budget_s:g} s)")
    return answer


# Settings that change what a row means: resuming with others would mix rows.
SETTINGS = (Col.THREADS, "budget_s", "min_run_time", "seed", "model_config", Col.FLOPS, "memory")


class ResultsFolder:
    """The sweep's output folder: locked while written, its table checked before reuse.
    The class attributes name the table, its settings file, columns and the settings a
    resume must share (``harness.fit`` keeps its own table the same way)."""

    table, meta, columns, settings = RESULTS, META, COLUMNS, SETTINGS
    what = "sweep"

    def __init__(self, out: Path):
        self.out = Path(out)
        self.results = self.out / self.table
        self._file = None

    def lock(self) -> contextlib.AbstractContextManager:
        """Holds ``out/.lock`` (fcntl) while the block runs; a second writer is refused."""
        import fcntl

        ensure_folder(self.out)

        @contextlib.contextmanager
        def held():
            fd = os.open(self.out / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 100, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise ValueError(
                    f"{str(self.out)!r} is being written by another {self.what} ({holder}); "
                    "wait for it to end, or give another --out"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()}, since {dt.datetime.now():%Y-%m-%d %H:%M:%S}\n".encode(), 0)
            try:
                yield
            finally:
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

        return held()

    def prepare(self, config: Config, *, resume: bool, fresh: bool) -> list[dict]:
        """The rows to keep: none for a new table; the checked rows of a resumed one."""
        exists = self.results.exists() and self.results.stat().st_size > 0
        if exists and not resume:
            if not fresh:
                n = max(len(self.results.read_text().splitlines()) - 1, 0)
                raise ValueError(
                    f"{str(self.results)!r} already holds {n} rows: pass --resume to complete it, "
                    f"or --fresh to move it aside into {str(self.out / 'previous')!r} and start anew"
                )
            stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            (self.out / "previous").mkdir(exist_ok=True)
            for name in (self.table, self.meta):
                if (self.out / name).exists():
                    (self.out / name).rename(self.out / "previous" / f"{Path(name).stem}-{stamp}{Path(name).suffix}")
            exists = False
        if not exists:  # the settings first: a table never exists without its meta.json
            self.write_meta(config, resume=False)
            self._open(new=True)
            return []
        self._check_settings(config)
        rows = self._read_checked()
        self.write_meta(config, resume=True)
        self._open(new=False)
        return rows

    def _check_settings(self, config: Config) -> None:
        meta_path = self.out / self.meta
        if not meta_path.exists():
            raise ValueError(f"{str(meta_path)!r} is missing: the settings of the rows to resume are unknown")
        try:
            old = json.loads(meta_path.read_text()).get("config", {})
        except json.JSONDecodeError as e:
            raise ValueError(f"{str(meta_path)!r} is not valid JSON ({e})") from None
        new = json.loads(json.dumps(asdict(config)))
        diff = [f"{k}: {old.get(k)!r} there, {new[k]!r} now" for k in self.settings if old.get(k) != new[k]]
        if diff:
            raise ValueError(f"cannot resume {str(self.out)!r} with other settings ({'; '.join(diff)})")

    def _read_checked(self) -> list[dict]:
        text = self.results.read_text()
        lines = text.splitlines(keepends=True)
        header = next(csv.reader([lines[0]]))
        if header != self.columns:
            missing = [c for c in self.columns if c not in header]
            extra = [c for c in header if c not in self.columns]
            raise ValueError(
                f"{str(self.results)!r} has other columns than this version writes "
                f"(missing: {', '.join(missing) or 'none'}; extra: {', '.join(extra) or 'none'}); "
                "resume it with the version that wrote it, or start anew with --fresh"
            )
        if not lines[-1].endswith("\n"):  # torn by a kill mid-write: measured again
            with self.results.open("r+") as f:
                f.truncate(len(text.encode()) - len(lines[-1].encode()))
            print(f"warning: {self.results}: dropped a torn last line; it is measured again", file=sys.stderr)
            lines = lines[:-1]
        rows = []
        for number, row in enumerate(csv.reader(lines[1:]), start=2):
            if len(row) != len(self.columns):
                raise ValueError(f"{str(self.results)!r} line {number} has {len(row)} fields, not {len(self.columns)}")
            rows.append(dict(zip(self.columns, row)))
        return rows

    def _open(self, *, new: bool) -> None:
        self._file = self.results.open("w" if new else "a", newline="")
        if new:
            self._file.write(",".join(self.columns) + "\r\n")
            self._sync()

    def write(self, row: dict) -> None:
        """Appends one row as one write, flushed and synced: a kill leaves whole rows
        and at most one torn last line."""
        line = io.StringIO()
        csv.DictWriter(line, fieldnames=self.columns, extrasaction="ignore").writerow(row)
        self._file.write(line.getvalue())
        self._sync()

    def _sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def rows_on_disk(self) -> int:
        """Whole rows in the table now (the header and a torn last line not counted)."""
        if not self.results.exists():
            return 0
        text = self.results.read_text()
        return max(text.count("\n") - 1, 0)

    def write_meta(self, config: Config, *, resume: bool) -> dict:
        """A new table's environment; a resumed one keeps its first and lists each resume."""
        meta = metadata(config, roofline=not resume)
        path = self.out / self.meta
        if resume:
            first = json.loads(path.read_text())
            first.setdefault("resumed", []).append(
                {k: meta[k] for k in ("date", Col.COMMIT, "dirty", "torch", "cpu", "load_start")}
            )
            meta = first
        tmp = path.with_suffix(".json.tmp")  # whole or not at all: a kill mid-write keeps the old one
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
        tmp.replace(path)
        return meta

    def load_counts(self) -> dict:
        """The FLOP and memory counts of earlier runs in this folder (``counts.json``)."""
        path = self.out / COUNTS
        try:
            return json.loads(path.read_text()) if path.exists() else {}
        except json.JSONDecodeError:
            print(f"warning: {path} is not valid JSON; counting anew", file=sys.stderr)
            return {}

    def save_counts(self, counts: dict) -> None:
        path = self.out / COUNTS
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(counts, indent=1, sort_keys=True) + "\n")
        tmp.replace(path)

    def update_meta(self, **fields) -> None:
        """Adds fields to meta.json (whole or not at all); to a resumed run's entry if any."""
        path = self.out / self.meta
        meta = json.loads(path.read_text())
        (meta["resumed"][-1] if meta.get("resumed") else meta).update(fields)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
        tmp.replace(path)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def summary(rows: Iterable[dict]) -> str:
    """A plain-text table of measured rows: median ms, runs, solver counters and status."""
    from tabulate import tabulate

    table = [
        [
            r[Col.MODEL],
            r[Col.DIM],
            r[Col.OP],
            r[Col.SOLVER],
            r[Col.DEVICE],
            r[Col.BATCH],
            f"{float(r[Col.MEDIAN_S]) * 1e3:.3g}"
            if r.get(Col.MEDIAN_S) not in (None, "") and r[Col.STATUS] == OK
            else "",
            r.get(Col.RUNS, ""),
            r.get(Col.EVALUATIONS, ""),
            r[Col.STATUS] if r[Col.STATUS] == OK else f"{r[Col.STATUS]}: {r.get(Col.REASON, '')}",
        ]
        for r in rows
    ]
    headers = [
        Col.MODEL,
        "d",
        Col.OP,
        Col.SOLVER,
        Col.DEVICE,
        Col.BATCH,
        "median (ms)",
        Col.RUNS,
        Col.EVALUATIONS,
        Col.STATUS,
    ]
    return tabulate(table, headers, tablefmt="github")
