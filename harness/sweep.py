"""The sweep: every (model, dim, op, device, batch) measured into one tidy table.

Rows go to ``DIR/results.csv`` the moment they are measured (an interrupted sweep
loses nothing; ``resume`` skips keys already there), with ``DIR/meta.json`` beside it.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import json
import math
import os
import platform
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from . import __version__, peers
from .measure.counting import FLOPS_METHOD, count_flops, count_params, peak_memory
from .measure.stats import relative_deviation
from .measure.timing import MIN_RUNS, gemm_rate, time_call, time_once
from .models import NAMES, OPS, build, run_op, unchecked
from .models.solvers import ALL as ALL_SOLVERS
from .models.solvers import DIRECT, NATIVE
from .table import COLUMNS, ERROR, META, OK, OOM, RESULTS, SKIPPED, UNITS, key_of

ALL_NAMES = NAMES + peers.NAMES
# --models shorthands
GROUPS = {"ours": NAMES, "peers": peers.NAMES, "all": ALL_NAMES}

DEVICES = ("auto", "cpu", "cuda")
# --solvers shorthands, resolved per family
SOLVER_ALIASES = ("default", "reference", "all")

DEFAULT_DIMS = (2, 4, 8, 16, 32, 64, 128, 256)


@dataclass
class Config:
    """What to sweep and how. ``budget_s`` caps the measuring time of one configuration."""

    models: Sequence[str] = NAMES
    dims: Sequence[int] = DEFAULT_DIMS
    ops: Sequence[str] = OPS
    device: str = "auto"
    batches: Sequence[int] = (1024,)
    threads: int = 1
    budget_s: float = 30.0
    min_run_time: float = 0.5
    # slow directions: solver names, or ``default`` and ``reference`` (each family's own)
    solvers: Sequence[str] = ("default", "reference")
    flops: bool = True
    # FLOPs are counted op by op as dispatched, at a few times a call's own time for the
    # many small ops of a sequential solve: calls slower than this are not counted.
    flops_max_s: float = 10.0
    memory: bool = True
    seed: int = 0
    model_config: dict = field(default_factory=dict)

    @classmethod
    def quick(cls, **overrides) -> Config:
        """A small profile for CI and smoke tests: under a minute on two cores."""
        base = dict(dims=(2, 8), batches=(64,), budget_s=2.0, min_run_time=0.05)
        return cls(**{**base, **overrides})

    def validate(self) -> None:
        bad = [m for m in self.models if m not in ALL_NAMES]
        if bad:
            raise ValueError(f"unknown model {bad[0]!r}; allowed: {', '.join(ALL_NAMES)} (or {', '.join(GROUPS)})")
        bad = [o for o in self.ops if o not in OPS]
        if bad:
            raise ValueError(f"unknown op {bad[0]!r}; allowed: {', '.join(OPS)}")
        allowed = (*SOLVER_ALIASES, *ALL_SOLVERS)
        bad = [s for s in self.solvers if s not in allowed]
        if bad or not self.solvers:
            raise ValueError(f"unknown solver {(bad or [''])[0]!r}; allowed: {', '.join(allowed)}")
        for name, values in (("dim", self.dims), ("batch", self.batches)):
            for v in values:
                if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                    raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads!r}")
        if self.budget_s <= 0:
            raise ValueError(f"budget must be > 0 seconds, got {self.budget_s!r}")
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


def git_commit(path: Path | None = None) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=path or Path(__file__).parent,
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def metadata(config: Config) -> dict:
    rates = {d: gemm_rate(d, threads=config.threads) for d in resolve_devices(config.device)}
    return {
        "harness_version": __version__,
        "commit": git_commit(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "threads": config.threads,
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


class RowWriter:
    """Appends rows to a CSV, flushed and synced per row."""

    def __init__(self, path: Path):
        self.path = path
        new = not path.exists() or path.stat().st_size == 0
        self.file = path.open("a", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=COLUMNS, extrasaction="ignore")
        if new:
            self.writer.writeheader()

    def write(self, row: dict) -> None:
        self.writer.writerow(row)
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


# ---- measuring one configuration ---------------------------------------------------


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def estimate_seconds(history: list[tuple[int, float]], dim: int, kind: str) -> float | None:
    """Seconds of one call at ``dim``, extrapolated from earlier dims of the same series.

    The exponent is the local slope of the last two measured dims, kept within [1, 2.5];
    with one point it is 1 (a fast solver's cost grows about linearly in d; for a slow
    one the timed check call, whose time the budget also bounds, decides).
    """
    if not history:
        return None
    (d1, t1), (d2, t2) = ([(0, 0.0)] + history)[-2:]
    k = 1.0
    if d1 > 0 and t1 > 0 and d2 > d1:
        k = min(max(math.log(t2 / t1) / math.log(d2 / d1), 1.0), 2.5)
    return t2 * (dim / d2) ** k


def build_any(name: str, dim: int, **config: object):
    """A reference model or a peer (harness.peers) by registry name."""
    return peers.build(name, dim, **config) if name in peers.NAMES else build(name, dim, **config)


def grad_off(model) -> contextlib.AbstractContextManager:
    """Inference mode, or no_grad for peers that take autograd derivatives inside a call."""
    return torch.inference_mode() if getattr(model, "inference_mode", True) else torch.no_grad()


def measure(model, op: str, device: str, batch: int, config: Config, estimate: float | None) -> tuple[dict, object]:
    """Times, counts and records one configuration; returns the measured columns and
    the output of its checked call (for the deviation of other solvers from the reference).

    One call outside timing checks the output (non-finite is an error, never ``ok``),
    reads the solver's counters and serves as the warm-up.
    """
    torch.manual_seed(config.seed)
    x = torch.randn(batch, model.dim, device=device)
    fn = lambda: run_op(model, op, x)  # noqa: E731
    budget = config.budget_s
    if estimate is not None and MIN_RUNS * estimate > budget:
        return dict(status=SKIPPED, reason=f"estimated {MIN_RUNS} runs x {estimate:.3g} s > budget {budget:g} s"), None
    with grad_off(model), unchecked():
        torch.set_num_threads(config.threads)
        out = None

        def checked():
            nonlocal out
            out = fn()

        if hasattr(model, "reset_stats"):
            model.reset_stats()
        one = time_once(checked, device)  # warm-up, and the estimate the budget is checked on
        row: dict = {}
        stats = model.solve_stats() if hasattr(model, "solve_stats") else None
        if stats is not None and model.cost[op] != "parallel":
            layers = sum(1 for t in model.transforms if t.solver)
            row.update(
                evaluations=stats.evaluations,
                iterations=stats.iterations,
                evaluations_per_dim=stats.evaluations / (model.dim * layers),
            )
        if not bool(torch.isfinite(out).all()):
            bad = int((~torch.isfinite(out)).sum())
            return dict(row, status=ERROR, reason=f"non-finite output: {bad} of {out.numel()} entries"), None
        if MIN_RUNS * one > budget:
            return dict(
                row, status=SKIPPED, reason=f"one call took {one:.3g} s; {MIN_RUNS} runs > budget {budget:g} s"
            ), out
        run_time = min(max(config.min_run_time, MIN_RUNS * one), budget)
        t = time_call(fn, device, threads=config.threads, min_run_time=run_time, estimate_s=one)
        row.update(status=OK, reason="", median_s=t.median_s, iqr_s=t.iqr_s, runs=t.runs)
        if config.memory:
            row["peak_mem_bytes"] = peak_memory(fn, device)
    if config.flops and one <= config.flops_max_s:
        torch.set_num_threads(config.threads)
        with grad_off(model), unchecked():
            row.update(flops=count_flops(model, lambda m, x: run_op(m, op, x), x)[0], flops_method=FLOPS_METHOD)
    elif config.flops:
        row["reason"] = f"flops not counted: one call took {one:.3g} s > {config.flops_max_s:g} s"
    return row, out


def solvers_for(name: str, op: str, requested: Sequence[str]) -> list[str]:
    """The solver column values to sweep for ``name``'s ``op``: ``direct`` for a parallel
    op, ``native`` for a peer's own algorithm, else the requested solvers the family has
    (``default``, ``reference`` and ``all`` resolved), the reference first."""
    if name in peers.NAMES:
        return [DIRECT if peers.PEERS[name].cost[op] == "parallel" else NATIVE]
    flow = build(name, 1)
    if flow.cost[op] == "parallel":
        return [DIRECT]
    named = {"default": {flow.solver}, "reference": {flow.reference_solver}, "all": set(flow.solvers)}
    chosen = set().union(*(named.get(s, {s}) for s in requested)) & set(flow.solvers)
    return [s for s in dict.fromkeys((flow.reference_solver, *flow.solvers)) if s in chosen]


GRID = ("device", "model", "dim", "op", "batch", "solver")  # the fields of a grid entry


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


def run(config: Config, out: Path, resume: bool = False, progress: bool = True) -> list[dict]:
    """Runs the sweep into ``out``; returns the rows measured now (not the resumed ones)."""
    from tqdm.auto import tqdm

    config.validate()
    out.mkdir(parents=True, exist_ok=True)
    results = out / RESULTS
    if not resume and results.exists():
        results.unlink()
    done = {key_of(r): r for r in read_rows(results)}
    meta = metadata(config)
    (out / META).write_text(json.dumps(meta, indent=2) + "\n")
    commit = meta["commit"]

    todo = [g for g in grid(config) if key_of(dict(zip(GRID, g))) not in done]
    writer = RowWriter(results)
    rows: list[dict] = []
    # per (device, model, op, batch, solver): measured (dim, seconds), and the dim first over budget
    history: dict[tuple, list[tuple[int, float]]] = {}
    over: dict[tuple, int] = {}

    def record(r: dict) -> None:
        series = (r["device"], r["model"], r["op"], int(r["batch"]), r["solver"])
        if r["status"] == OK:
            history.setdefault(series, []).append((int(r["dim"]), float(r["median_s"])))
        elif r["status"] in (SKIPPED, OOM):  # larger d only costs more
            over.setdefault(series, int(r["dim"]))

    for r in sorted(done.values(), key=lambda r: int(r["dim"])):  # resumed rows inform the budget
        record(r)
    built: dict[tuple, tuple] = {}  # (device, model, dim, solver) -> (flow, (stored, effective))
    reference_out: dict[tuple, object] = {}  # (device, model, dim, op, batch) -> the reference solver's output
    bar = tqdm(todo, desc="sweep", unit="config", disable=not progress, dynamic_ncols=True)
    try:
        for device, name, dim, op, batch, solver in bar:
            bar.set_postfix_str(f"{name} d={dim} {op} {solver} {device} b={batch}")
            row = dict(
                model=name, dim=dim, op=op, device=device, batch=batch, solver=solver,
                threads=config.threads, dtype="float32", source="sweep", commit=commit,
            )  # fmt: skip
            missing = peers.unavailable(name) if name in peers.NAMES else None
            if missing:  # listed, not measured, and not recorded: it says nothing of larger d
                row.update(kind=peers.PEERS[name].cost[op], status=SKIPPED, reason=f"unavailable: {missing}")
                writer.write(row)
                rows.append(row)
                continue
            solver_config = {} if solver in (DIRECT, NATIVE) else {"solver": solver}
            if (device, name, dim, solver) not in built:
                built.clear()  # one model in memory at a time
                torch.manual_seed(config.seed)  # the same weights whatever the solver
                flow = build_any(name, dim, **config.model_config, **solver_config).to(device).eval()
                built[(device, name, dim, solver)] = (flow, count_params(flow))
            model, (stored, effective) = built[(device, name, dim, solver)]
            row.update(kind=model.cost[op], params_stored=stored, params_effective=effective)
            series = (device, name, op, batch, solver)
            problem = (device, name, dim, op, batch)
            if op in getattr(model, "unsupported", {}):
                row.update(status=SKIPPED, reason=model.unsupported[op])
            elif series in over and over[series] < dim:
                row.update(status=SKIPPED, reason=f"over budget already at d={over[series]}")
            else:
                estimate = estimate_seconds(history.get(series, []), dim, model.cost[op])
                try:
                    measured, out = measure(model, op, device, batch, config, estimate)
                    row.update(measured)
                    if out is not None and solver == getattr(model, "reference_solver", None):
                        reference_out = {problem: out}  # only the current problem's is kept
                    elif out is not None and problem in reference_out:
                        row["max_rel_dev"] = relative_deviation(out, reference_out[problem])
                except Exception as e:  # record, and go on with the sweep
                    kind = OOM if _is_oom(e) else ERROR
                    row.update(status=kind, reason=f"{type(e).__name__}: {e}".replace("\n", " ")[:300])
                    if device == "cuda":
                        torch.cuda.empty_cache()
            record(row)
            writer.write(row)
            rows.append(row)
    finally:
        writer.close()
        bar.close()
    return rows


def summary(rows: Iterable[dict]) -> str:
    """A plain-text table of measured rows: median ms, runs, solver counters and status."""
    from tabulate import tabulate

    table = [
        [
            r["model"], r["dim"], r["op"], r["solver"], r["device"], r["batch"],
            f"{float(r['median_s']) * 1e3:.3g}" if r.get("median_s") not in (None, "") and r["status"] == OK else "",
            r.get("runs", ""), r.get("evaluations", ""),
            r["status"] if r["status"] == OK else f"{r['status']}: {r.get('reason', '')}",
        ]
        for r in rows
    ]  # fmt: skip
    headers = ["model", "d", "op", "solver", "device", "batch", "median (ms)", "runs", "evaluations", "status"]
    return tabulate(table, headers, tablefmt="github")
