"""What a sweep measures: its settings (:class:`Config`), the grid of configurations in
measuring order, and what the parent knows of each before measuring it (the budget's
estimate from the series so far, the deadline)."""

from __future__ import annotations

import functools
import inspect
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from . import peers, registry
from .errors import UserError
from .measure.call import CALLS, ROUNDS, Settings
from .models import NAMES, SWEEP_OPS, Cost, build, keywords
from .models.solvers import ALL as ALL_SOLVERS
from .models.solvers import DIRECT, NATIVE
from .ops import BACKENDS, COMPILE, EAGER, NUMBA, QUICK_OPS, default_backend, has_kernel, role
from .table import Col

ALL_NAMES = NAMES + peers.NAMES
# --models shorthands (a conditional-only peer, sbi.maf, is named on its own)
GROUPS = {"ours": NAMES, "peers": peers.UNCONDITIONAL, "all": NAMES + peers.UNCONDITIONAL}

DEVICES = ("auto", "cpu", "cuda")
# --solvers shorthands, resolved per family
SOLVER_ALIASES = ("default", "reference", "all")

DEFAULT_DIMS = (2, 4, 8, 16, 32, 64, 128, 256)
DEFAULT_BATCHES = (1024,)
# Above these a model or its input does not fit a machine's memory: refused up front.
MAX_DIM, MAX_BATCH, MAX_CONTEXT = 65536, 1 << 24, 65536


@dataclass
class Config:
    """What to sweep and how. ``budget_s`` caps the measuring time of one configuration."""

    models: Sequence[str] = NAMES
    dims: Sequence[int] = DEFAULT_DIMS
    ops: Sequence[str] = SWEEP_OPS
    device: str = "auto"
    batches: Sequence[int] = DEFAULT_BATCHES
    # features of the context each flow is conditioned on, p(x | c); 0: unconditional
    contexts: Sequence[int] = (0,)
    threads: int = 1
    budget_s: float = 30.0
    min_run_time: float = 0.3
    # slow directions: solver names, or ``default`` and ``reference`` (each family's own)
    solvers: Sequence[str] = ("default", "reference")
    # how each runs: ``default`` (the compiled loop where there is one, else eager), or
    # eager, numba (where a kernel exists), compile (torch.compile)
    backends: Sequence[str] = ("default",)
    compile_limit_s: float = 600.0  # seconds torch.compile may take for one configuration
    flops: bool = True
    memory: bool = True
    # measure this machine's GEMM and copy rates (the roofline's ceilings, ~2 s) for a new table
    roofline: bool = True
    seed: int = 0
    rounds: int = ROUNDS  # interleaved rounds of each paired problem (the default algorithms at one d)
    processes: int = 1  # fresh worker processes that each time every paired problem's rounds
    model_config: dict = field(default_factory=dict)
    # measure in a worker process killed at the deadline (harness.worker); False measures
    # in this process, with no deadline
    isolate: bool = True
    # the deadline is 1.5 x the budget plus this, for building the model and the timer's own calls
    deadline_margin_s: float = 10.0

    @classmethod
    def quick(cls, **overrides) -> Config:
        """A small profile for CI and smoke tests (the two directions only): under a minute on two cores."""
        base = dict(dims=(2, 8), ops=QUICK_OPS, batches=(64,), budget_s=2.0, min_run_time=0.05)
        return cls(**{**base, **overrides})

    @property
    def measuring(self) -> Settings:
        """How each configuration is measured (harness.measure.call)."""
        return Settings(self.threads, self.budget_s, self.min_run_time, self.flops, self.memory, self.seed, self.rounds)

    def validate(self, here: bool = True) -> None:
        """Raises a UserError naming a bad setting; ``here`` False leaves the device's
        presence to the machine a job runs on."""
        for name, values in (
            ("models", self.models),
            ("ops", self.ops),
            ("dims", self.dims),
            ("batches", self.batches),
            ("contexts", self.contexts),
            ("solvers", self.solvers),
        ):
            if not values:
                raise UserError(f"{name} is empty; name at least one")
        bad = [m for m in self.models if not registry.known(m)]
        if bad:
            raise UserError(
                f"unknown model {bad[0]!r}; allowed: {', '.join(ALL_NAMES)} (or {', '.join(GROUPS)}), "
                "or module:factory for your own flow"
            )
        for m in self.models:
            registry.importable(m)
        bad = [o for o in self.ops if o not in SWEEP_OPS]
        if bad:
            raise UserError(f"unknown op {bad[0]!r}; allowed: {', '.join(SWEEP_OPS)}")
        allowed = (*SOLVER_ALIASES, *ALL_SOLVERS)
        bad = [s for s in self.solvers if s not in allowed]
        if bad:
            raise UserError(f"unknown solver {bad[0]!r}; allowed: {', '.join(allowed)}")
        bad = [b for b in self.backends if b not in ("default", *BACKENDS)]
        if bad or not self.backends:
            raise UserError(f"unknown backend {(bad or [''])[0]!r}; allowed: default, {', '.join(BACKENDS)}")
        for name, values, low, top in (
            (Col.DIM, self.dims, 1, MAX_DIM),
            (Col.BATCH, self.batches, 1, MAX_BATCH),
            (Col.CONTEXT, self.contexts, 0, MAX_CONTEXT),
        ):
            for v in values:
                if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= top:
                    raise UserError(f"{name} must be an int in {low}..{top}, got {v!r}")
        for m in self.models:  # a reference model's settings, before anything is measured (one line, exit 2)
            if m in NAMES:
                registry.check_config(m, self.model_config)
        most = 4 * (os.cpu_count() or 1)
        if not isinstance(self.threads, int) or not 1 <= self.threads <= most:
            raise UserError(f"threads must be an int in 1..{most} (4x this machine's cores), got {self.threads!r}")
        if not (isinstance(self.budget_s, (int, float)) and math.isfinite(self.budget_s) and self.budget_s > 0):
            raise UserError(f"budget must be a finite number of seconds > 0, got {self.budget_s!r}")
        if here:
            resolve_devices(self.device)  # raises for a bad or absent device
        elif self.device not in DEVICES:
            raise UserError(f"unknown device {self.device!r}; allowed: {', '.join(DEVICES)}")


def devices() -> list[str]:
    """Devices present on this machine."""
    import torch

    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def resolve_devices(device: str) -> list[str]:
    if device not in DEVICES:
        raise UserError(f"unknown device {device!r}; allowed: {', '.join(DEVICES)}")
    if device == "auto":
        return devices()
    if device not in devices():
        raise UserError(f"device {device!r} is not available here; present: {', '.join(devices())}")
    return [device]


def cost_of(name: str) -> Cost:
    """A model's cost kinds (harness.registry.describe)."""
    return registry.describe(name).cost


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


@functools.cache
def _default_solver(name: str) -> str:
    return build(name, 1).solver


def essential(
    name: str, solver: str, dim: int, batch: int, op: str = "", backend: str = "", device: str = "cpu", context: int = 0
) -> bool:
    """A cell of the default grid (our models' parallel passes and default solvers, in
    their default backend, at the default dims and batch): measured whatever the
    budget, cut only by the deadline. Every other configuration is bounded by the budget."""
    in_grid = dim in DEFAULT_DIMS and batch in DEFAULT_BATCHES and not context
    default = not backend or backend == default_backend(name, solver, op, device)
    return in_grid and default and name in NAMES and solver in (DIRECT, _default_solver(name))


# the fields of a grid entry
GRID = (Col.DEVICE, Col.MODEL, Col.DIM, Col.OP, Col.BATCH, Col.SOLVER, Col.BACKEND, Col.CONTEXT)


def takes_context(name: str) -> str:
    """Why model ``name`` cannot be conditioned on a context, or '' if it can: a
    reference family or a peer whose builder has a ``context`` keyword."""
    if name in NAMES:
        if "context" in keywords(name):
            return ""
        return "takes no context: its flow has no conditioner network for one to enter"
    if name in peers.NAMES:
        if "context" in inspect.signature(peers.PEERS[name].builder).parameters:
            return ""
        return "takes no context: this adapter builds the library's flow without one"
    try:
        params = inspect.signature(registry.factory_of(name)).parameters
    except (UserError, TypeError, ValueError):
        return "takes no context: its factory could not be inspected"
    if "context" in params:
        return ""
    return "takes no context: its factory has no context keyword"


def backends_for(name: str, solver: str, op: str, device: str, requested: Sequence[str]) -> list[str]:
    """The backend column values to sweep for a configuration: ``default`` resolved to
    its default (harness.ops.default_backend); ``numba`` only where a kernel exists."""
    chosen = [default_backend(name, solver, op, device) if b == "default" else b for b in requested]
    return [b for b in dict.fromkeys(chosen) if b != NUMBA or has_kernel(name, solver, op, device)]


def grid(config: Config, broken: Sequence[str] = ()) -> list[tuple[str, str, int, str, int, str, str, int]]:
    """(device, model, dim, op, batch, solver, backend, context) in measuring order: dims
    ascending, so budgets can be extrapolated from the previous dim; at each dim the
    reference solver first, so the others' deviation from it is known; the contexts of
    one configuration together (timed in the same rounds). A ``broken`` model (one that
    could not be described) has one ``direct`` entry per op, to record why."""
    ours = [m for m in config.models if m in NAMES]
    bad = [s for s in config.solvers if s not in SOLVER_ALIASES and not any(s in build(m, 1).solvers for m in ours)]
    if bad and ours:
        raise UserError(f"solver {bad[0]!r} belongs to no model of this sweep ({', '.join(config.models)})")
    return [
        (device, name, dim, op, batch, solver, backend, context)
        for device in resolve_devices(config.device)
        for name in config.models
        for batch in config.batches
        for op in config.ops
        for dim in sorted(config.dims)
        for solver in ([DIRECT] if name in broken else solvers_for(name, op, config.solvers))
        for backend in ([EAGER] if name in broken else backends_for(name, solver, op, device, config.backends))
        for context in config.contexts
    ]


def estimate_seconds(history: list[tuple], dim: int) -> float | None:
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


def deadline_s(config: Config, is_essential: bool = False, backend: str = EAGER) -> float:
    """Seconds a configuration may take before its worker is killed: the budget, plus
    half of it and a margin (10 s) for building the model and the timer's own calls. A
    cell of the default grid, which the budget does not cut, gets 4 budgets and at
    least 5 minutes: only a hang stops it. torch.compile gets ``compile_limit_s`` more."""
    extra = config.compile_limit_s if backend == COMPILE else 0.0
    if is_essential:
        return max(4.0 * config.budget_s, 300.0) + config.deadline_margin_s + extra
    return 1.5 * config.budget_s + config.deadline_margin_s + extra


def predicted_seconds(history: list[tuple], dim: int, unknown: float = 1.0) -> float:
    """Seconds a configuration is predicted to take in all: CALLS calls at the
    extrapolated time, ``unknown`` where nothing is known yet."""
    est = estimate_seconds(history, dim)
    return CALLS * est if est is not None else unknown


@dataclass(frozen=True)
class Probe:
    """Ask the worker what a user's flow is (harness.registry.describe): building it
    runs the user's code, which may raise anything or hang."""

    model: str


@dataclass(frozen=True)
class Task:
    """One grid entry for the measurer, with what the parent knows of it."""

    device: str
    model: str
    dim: int
    op: str
    batch: int
    solver: str
    backend: str = "eager"
    context: int = 0  # features of the context (0: unconditional)
    estimate: float | None = None
    skip: str = ""  # a reason to record without measuring
    essential: bool = False  # a cell of the default grid: measured whatever the budget
    counts: dict | None = None  # cached FLOPs and peak memory of this configuration


@dataclass(frozen=True)
class Unit:
    """What the worker measures in one call, at one (device, d, batch): configurations
    timed ``alone`` (solvers other than the default, each against the reference solver's
    output), or the default algorithms of every flow timed ``together`` in interleaved
    rounds, their rows sharing the round ``group``."""

    device: str
    dim: int
    batch: int
    alone: tuple[Task, ...] = ()
    together: tuple[Task, ...] = ()
    group: str = ""
    prepare_only: bool = False  # together's checked calls only, kept in the worker for the rounds

    @property
    def tasks(self) -> tuple[Task, ...]:
        return self.alone + self.together


def paired(solver: str) -> bool:
    """Whether a configuration is timed with the others of its problem: one parallel
    pass, a peer's own algorithm, or a family's default solver."""
    return solver in (DIRECT, NATIVE) or role(solver) == "default"


def units(entries: list[tuple]) -> list[tuple[tuple[str, int, int], list[tuple], list[tuple]]]:
    """Grid entries grouped by (device, batch, d), dims ascending within each device and
    batch: ((device, batch, dim), timed alone, timed together)."""
    groups: dict[tuple, tuple[list, list]] = {}
    order = {k: i for i, k in enumerate(dict.fromkeys((e[0], e[4]) for e in entries))}
    for e in sorted(entries, key=lambda e: (order[(e[0], e[4])], e[2])):
        alone, together = groups.setdefault((e[0], e[4], e[2]), ([], []))
        (together if paired(e[5]) else alone).append(e)  # e: (device, model, dim, op, batch, solver, backend)
    return [(k, a, t) for k, (a, t) in groups.items()]
