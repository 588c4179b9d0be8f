"""The exactness suite for any flow: ``python -m harness check SPEC``.

Each check measures an error and compares it with a stated tolerance, in float64:

- ``structure``: is the Jacobian of one layer stack triangular in the natural or the
  reversed order (reported, not required: stacks that alternate orders are not);
- ``log-det``: the flow's log|det dz/dx| against ``slogdet`` of the autograd Jacobian;
- ``log_prob``: against the standard normal of z plus the log-det;
- ``round trip x``, ``round trip z``: inverse(forward(x)) against x, and back;
- ``normalises (d=1)``, ``normalises (d=2)``: the density's mass on a fine grid;
- ``samples match density``: total variation between samples and the density's
  mass in 10 x 10 bins at d = 2.

- ``contract``: what ``log_prob`` and ``inverse`` return: shape, dtype, finiteness.
- ``declared cost`` (reported): how sampling's time grows from d = 4 to 64 against
  log_prob's; a flow that declares (or defaults to) parallel sampling whose sampling
  grows like a d-step loop is told how to declare its cost.

A check the flow declares it cannot take (no data->base map, no inverse) is reported
as not applicable, with the reason. Any other check that could not run (the flow does
not build, a call raises, the deadline passed) is a failure with its reason: a pass is
only ever printed for a check that ran.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from . import store
from .measure.contract import violation
from .models.base import Measurable, normal_log_prob
from .ops import LOG_PROB, SAMPLE
from .table import CHECKS, Col, TableSpec

LOGDET_TOL = 1e-6
ROUND_TRIP_TOL = 1e-6  # relative: |error| / (1 + |value|)
MASS_TOL = 0.01
# Sampling noise alone gives about sqrt(2 * 101 / (pi * n)) / 2 = 0.028 at n = 20000 at
# worst; 0.05 leaves margin, while a wrong sampler scores far above.
TV_BOUND = 0.05


@dataclass
class Result:
    """One check: the error measured against its tolerance; ``passed`` None when the
    check does not apply (``note`` says why) or only reports."""

    check: str
    dim: int
    measured: float | None
    tolerance: float | None
    passed: bool | None
    note: str = ""


def _grid(lo: float, hi: float, n: int) -> tuple[Tensor, float]:
    step = (hi - lo) / n
    return torch.linspace(lo + step / 2, hi - step / 2, n, dtype=torch.float64), step


def sinh_grid(n: int, reach: float = 1e5) -> tuple[Tensor, Tensor]:
    """Points x = sinh(u), u uniform, with their widths dx: fine near 0 and reaching
    +-reach, so heavy-tailed flows (slopes compound over stacked layers) keep their
    mass on the grid."""
    u, du = _grid(-math.asinh(reach), math.asinh(reach), n)
    return torch.sinh(u), torch.cosh(u) * du


GRID_CHUNK = 8192  # points of a density grid evaluated at once


def mass(log_prob: Callable[[Tensor], Tensor], dim: int) -> float:
    """The density's mass on a sinh grid: 20000 points at d = 1 (ten times as many where
    those put it more than 1e-3 off 1: a spline bin at its least width is a spike of
    density narrower than the grid's step near 0), 400 x 400 at d = 2."""
    if dim == 1:
        for points in (20000, 200000):
            x, dx = sinh_grid(points)
            total = float((_chunked(log_prob, x[:, None]).exp() * dx).sum())
            if abs(total - 1) <= 1e-3:
                break
        return total
    x, dx = sinh_grid(400)
    log_p = _chunked(log_prob, torch.cartesian_prod(x, x))
    return float((log_p.exp() * torch.outer(dx, dx).flatten()).sum())


def _chunked(log_prob: Callable[[Tensor], Tensor], grid: Tensor) -> Tensor:
    """log_prob over a grid's points, :data:`GRID_CHUNK` at a time: a flow's activations
    for 160,000 points at once outgrow the caches (NAF's are 0.5 GB)."""
    return torch.cat([log_prob(chunk) for chunk in grid.split(GRID_CHUNK)])


def sample_density_tv(flow, n: int = 20000, bins: int = 10, sub: int = 8) -> float:
    """Total variation between the histogram of n samples and the density's mass in
    bins x bins cells (plus the mass outside them), at d = 2. Cells live in
    u = asinh(x), where p(sinh u) cosh u stays smooth even for heavy-tailed flows."""
    with torch.no_grad():
        u = torch.asinh(flow.sample(n).double())
    lo = torch.quantile(u, 0.01, dim=0).tolist()
    hi = torch.quantile(u, 0.99, dim=0).tolist()
    edges = [torch.linspace(a, b, bins + 1, dtype=torch.float64) for a, b in zip(lo, hi)]
    hist = torch.histogramdd(u, bins=edges).hist / n
    (g0, s0), (g1, s1) = (_grid(a, b, bins * sub) for a, b in zip(lo, hi))
    uu = torch.cartesian_prod(g0, g1)
    with torch.no_grad():
        dens = (flow.log_prob(torch.sinh(uu)).exp() * torch.cosh(uu).prod(-1)).view(bins * sub, bins * sub)
    cell = dens.view(bins, sub, bins, sub).sum((1, 3)) * s0 * s1
    outside_hist, outside_mass = 1 - hist.sum(), 1 - cell.sum()
    return float(0.5 * ((hist - cell).abs().sum() + (outside_hist - outside_mass).abs()))


def _jacobian(flow, x: Tensor) -> Tensor:
    """dz/dx at one point (d,): by the flow's own autodiff where torch's cannot see its
    arithmetic (a JAX flow's ``jacobian``), else torch's autograd."""
    if callable(getattr(flow, "jacobian", None)):
        return flow.jacobian(x)
    return torch.autograd.functional.jacobian(lambda v: flow(v[None])[0][0], x)


def _rel(a: Tensor, b: Tensor) -> float:
    return float(((a - b).abs() / (1 + b.abs())).max())


def can(flow: Measurable, op: str) -> str:
    """'' if ``flow`` can do ``op`` (``forward``: data->base with its log-det;
    ``inverse``: base->data), else why not."""
    unsupported = flow.unsupported
    if op == "inverse" and "sample" in unsupported:
        return unsupported["sample"]
    if op == "forward" and "log_prob" in unsupported:
        return unsupported["log_prob"]
    return ""


def attempt(what: str | tuple[str, ...], dim: int, fn: Callable[[], list[Result]]) -> list[Result]:
    """``fn``'s results, or each check of ``what`` failed with what ``fn`` raised: a flow
    whose inverse raises still has its density checked (a user's or a peer's flow may
    raise anything)."""
    try:
        return fn()
    except Exception as e:
        message = f"{type(e).__name__}: {e}".replace("\n", " ")[:300]
        return [
            Result(w, dim, None, None, False, f"could not run: {message}")
            for w in ((what,) if isinstance(what, str) else what)
        ]


def contract(flow: Measurable, dim: int, points: int = 4) -> list[Result]:
    """What ``log_prob`` and ``inverse`` return against the contract (harness.measure.contract)."""
    torch.manual_seed(1)
    x = torch.randn(points, dim, dtype=torch.float64)
    out = []
    with torch.no_grad():
        broken = violation(LOG_PROB, flow.log_prob(x), x)
        out.append(Result("contract log_prob", dim, None, None, not broken, broken or "(batch,) float64, finite"))
        if not can(flow, "inverse"):

            def inverse() -> list[Result]:
                broken = violation(SAMPLE, flow.inverse(x), x)
                return [Result("contract inverse", dim, None, None, not broken, broken or "(batch, d) float64, finite")]

            out += attempt("contract inverse", dim, inverse)
    return out


def check_dim(flow: Measurable, dim: int, points: int = 4) -> list[Result]:
    """The contract, structure, log-det, log_prob and round trips of ``flow`` (float64) at ``dim``."""
    out: list[Result] = contract(flow, dim, points)
    torch.manual_seed(0)
    x = torch.randn(points, dim, dtype=torch.float64)
    no_forward = can(flow, "forward")
    if no_forward:
        return [Result(c, dim, None, None, None, no_forward) for c in ("structure", "log-det", "log_prob")]
    try:
        jac = torch.stack([_jacobian(flow, xi) for xi in x])
    except NotImplementedError as e:  # no data->base map with its log-det
        return [Result(c, dim, None, None, None, str(e)) for c in ("structure", "log-det", "log_prob", "round trip x")]
    lower, upper = jac.triu(1).abs().max(), jac.tril(-1).abs().max()
    shape = "lower triangular" if lower == 0 else "upper triangular" if upper == 0 else "not triangular"
    out.append(Result("structure", dim, float(min(lower, upper)), None, None, f"{shape} in the given order"))
    with torch.no_grad():
        z, ladj = flow(x)
        lp = flow.log_prob(x)
    logdet = torch.linalg.slogdet(jac)
    err = float((ladj - logdet.logabsdet).detach().abs().max())
    ok = bool((logdet.sign > 0).all() or (logdet.sign < 0).all()) and err <= LOGDET_TOL
    out.append(Result("log-det", dim, err, LOGDET_TOL, ok, "against slogdet of the autograd Jacobian"))
    err = float((lp - (normal_log_prob(z) + ladj)).detach().abs().max())
    out.append(Result("log_prob", dim, err, LOGDET_TOL, err <= LOGDET_TOL, "against N(z) + log-det"))
    no_inverse = can(flow, "inverse")
    if no_inverse:
        out += [Result(c, dim, None, None, None, no_inverse) for c in ("round trip x", "round trip z")]
        return out

    def round_trips() -> list[Result]:
        with torch.no_grad():
            err_x = _rel(flow.inverse(z), x)
            zz = torch.randn(points, dim, dtype=torch.float64)
            err_z = _rel(flow(flow.inverse(zz))[0], zz)
        note = "forward(inverse(z))" + (image_note(flow) if dim == 1 and err_z > ROUND_TRIP_TOL else "")
        return [
            Result("round trip x", dim, err_x, ROUND_TRIP_TOL, err_x <= ROUND_TRIP_TOL, "inverse(forward(x))"),
            Result("round trip z", dim, err_z, ROUND_TRIP_TOL, err_z <= ROUND_TRIP_TOL, note),
        ]

    return out + attempt(("round trip x", "round trip z"), dim, round_trips)


def image_note(flow: Measurable, reach: float = 1e5) -> str:
    """Where a 1-d flow's data->base map sends +-reach: a bounded image (a map that is
    not onto R) puts the base's mass outside it, so the density cannot normalise."""
    with torch.no_grad():
        ends = flow(torch.tensor([[-reach], [reach]], dtype=torch.float64))[0].flatten().tolist()
    low, high = min(ends), max(ends)
    if -6 < low and high < 6:  # N(0, 1) has 2e-9 of its mass beyond 6
        mass_in = 0.5 * (math.erf(high / math.sqrt(2)) - math.erf(low / math.sqrt(2)))
        return (
            f"; f(+-{reach:.0e}) spans only [{low:.3g}, {high:.3g}] (N(0, 1) mass {mass_in:.3g}): the rest of the "
            f"base's mass lies beyond |x| = {reach:.0e}, or nowhere (f not onto R)"
        )
    return ""


def check_density(make: Callable[[int], object]) -> list[Result]:
    """Normalisation at d = 1 and 2, and samples against the density at d = 2."""
    out = []
    for dim in (1, 2):
        flow = make(dim)
        if can(flow, "forward"):
            out.append(Result(f"normalises (d={dim})", dim, None, None, None, can(flow, "forward")))
            continue
        with torch.no_grad():
            err = abs(mass(flow.log_prob, dim) - 1)
        note = "|mass on a grid - 1|"
        if dim == 1 and err > MASS_TOL:
            note += image_note(flow)
        out.append(Result(f"normalises (d={dim})", dim, err, MASS_TOL, err <= MASS_TOL, note))
    flow = make(2)
    why = can(flow, "inverse") or can(flow, "forward")
    if why:
        out.append(Result("samples match density", 2, None, None, None, why))
    else:

        def matched() -> list[Result]:
            tv = sample_density_tv(flow)
            return [Result("samples match density", 2, tv, TV_BOUND, tv <= TV_BOUND, "total variation, 20000 samples")]

        out += attempt("samples match density", 2, matched)
    return out


def run(make: Callable[..., Measurable], dims: Sequence[int] = (1, 2, 5)) -> list[Result]:
    """Every check of the flow ``make(dim)`` builds, in float64 with a fixed seed; a
    conditional flow's at each of two fixed contexts (harness.check_context)."""
    from .check_context import conditional_run

    return conditional_run(make, dims, _run, Result) or _run(make, dims)


def _run(make: Callable[..., Measurable], dims: Sequence[int]) -> list[Result]:

    def build(dim: int) -> Measurable:
        torch.manual_seed(0)
        return make(dim).double().eval()

    results: list[Result] = []
    # float64 as the default too: tensors a library creates inside a call without a
    # dtype (pyro's IAF inverse starts from torch.zeros) must match the flow's
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        for dim in dims:
            results += attempt("build", dim, lambda dim=dim: check_dim(build(dim), dim))
        results += attempt("density", 2, lambda: check_density(build))
        from .check_cost import COST_DIMS, check_cost

        return results + attempt("declared cost", COST_DIMS[1], lambda: check_cost(build))
    finally:
        torch.set_default_dtype(default)


@dataclass(frozen=True)
class Job:
    """One flow's checks, for a worker: its spec, dims and the keywords its factory
    takes; ``probe``: only time the flow's own calls (see :func:`probe_seconds`)."""

    spec: str
    dims: tuple[int, ...]
    config: dict
    probe: bool = False


def probe_seconds(make: Callable[[int], object], points: int = 1024) -> float:
    """Seconds of what the checks call most: building the flow at d = 2 in float64,
    then its log_prob and sample of ``points`` points (a call that raises counts its
    time; the checks name the error)."""
    import time

    start = time.perf_counter()
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        flow = make(2)
        for call in (lambda: flow.log_prob(torch.randn(points, 2)), lambda: flow.sample(points)):
            try:
                call()
            except Exception:
                pass
    except Exception:
        pass
    finally:
        torch.set_default_dtype(default)
    return time.perf_counter() - start


def checker() -> Callable[[Job], tuple[str, str, list[Result]]]:
    """The worker's handler: (family, library, results) of a job, or a probe's seconds."""
    from . import registry

    def handle(job: Job) -> tuple[str, str, list[Result]] | float:
        if job.probe:
            try:
                make = registry.factory(job.spec)
            except Exception:
                return 0.0
            return probe_seconds(lambda dim: make(dim, **job.config))
        try:
            make = registry.factory(job.spec)
            family, library = registry.identity(job.spec)
        except Exception as e:
            message = f"{type(e).__name__}: {e}".replace("\n", " ")[:300]
            return "", job.spec.partition(":")[0], [Result("build", 0, None, None, False, f"could not run: {message}")]
        return family, library, run(lambda dim: make(dim, **job.config), job.dims)

    return handle


# Without --deadline a flow's checks get CALLS times what its own calls took in a probe
# (at least FIRST_S): a hanging flow fails within FIRST_S, a slow honest one is not killed.
FIRST_S = 120.0
CALLS = 300  # the checks make ~100 calls of the probe's size (density grids, samples, Jacobians)


def run_isolated(
    specs: Sequence[str], dims: Sequence[int], config: dict, deadline_s: float | None = None, processes: int = 2
):
    """Each flow's checks in a worker process killed at ``deadline_s`` (None: at what
    the flow's own calls take, see FIRST_S), ``processes`` flows at a time (checks time
    nothing): yields (spec, family, library, results) in the order given; a flow that
    hangs or kills its process fails its checks."""
    import queue
    from concurrent.futures import ThreadPoolExecutor

    from .worker import Worker, WorkerDied

    workers = [Worker(checker) for _ in range(max(1, min(processes, len(specs))))]
    free: queue.Queue = queue.Queue()
    for w in workers:
        free.put(w)

    def one(spec: str) -> tuple:
        worker = free.get()
        try:
            limit = deadline_s
            if limit is None:
                took = worker.run(Job(spec, tuple(dims), dict(config), probe=True), FIRST_S)
                limit = max(FIRST_S, CALLS * took) if took is not None else None
            if limit is None:
                answer, why = None, f"its first calls did not return within {FIRST_S:g} s: killed (a hang?"
                why += " --deadline gives a slower flow longer)"
            else:
                answer = worker.run(Job(spec, tuple(dims), dict(config)), limit)
                why = "" if answer is not None else f"did not finish within the deadline of {limit:.3g} s: killed"
        except WorkerDied as e:
            answer, why = None, f"the checking process died: {e}"
        finally:
            free.put(worker)
        if answer is None:
            return spec, "", spec.partition(":")[0], [Result("deadline", 0, None, None, False, why)]
        return (spec, *answer)

    try:
        with ThreadPoolExecutor(len(workers)) as pool:
            yield from pool.map(one, specs)
    finally:
        for w in workers:
            w.close()


def table(results: list[Result]) -> str:
    from tabulate import tabulate

    def num(v: float | None) -> str:
        return "" if v is None else f"{v:.3g}"

    rows = [[r.check, r.dim, num(r.measured), num(r.tolerance), VERDICT[r.passed], r.note] for r in results]
    return tabulate(rows, ["check", "d", "measured", "tolerance", "result", "note"], tablefmt="github")


VERDICT = {True: "pass", False: "FAIL", None: "n/a"}
FIELDS = (Col.MODEL, Col.FAMILY, Col.LIBRARY, "check", Col.DIM, "measured", "tolerance", "result", "note")


CHECKS_TABLE = TableSpec(CHECKS, FIELDS, (Col.MODEL, "check", Col.DIM))


def write(folder: Path, model: str, family: str, library: str, results: list[Result]) -> None:
    """Adds one model's results to ``folder/checks.csv`` (whole or not at all, under the
    folder's lock); rows of an earlier check of the same model are replaced."""
    rows = [
        dict(
            model=model,
            family=family,
            library=library,
            check=r.check,
            dim=r.dim,
            measured=r.measured,
            tolerance=r.tolerance,
            result=VERDICT[r.passed],
            note=r.note,
        )
        for r in results
    ]
    store.side_table(Path(folder), CHECKS_TABLE, rows, replace={Col.MODEL: model}, what="check")


def passed(results: list[Result]) -> bool:
    """Every check that applies ran and passed, and at least one did."""
    return all(r.passed is not False for r in results) and any(r.passed for r in results)
