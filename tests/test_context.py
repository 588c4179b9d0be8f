"""Conditional flows, p(x | c): every family whose conditioner can read a context, per
context exact (log-det against autograd, round trips, every solver against the
reference, normalisation, samples against the density), and the context used."""

import math

import pytest
import torch

from harness.errors import UserError
from harness.models import NAMES, build, keywords

from .conftest import perturb

CONDITIONAL = [name for name in NAMES if "context" in keywords(name)]
C = 3  # context features


def conditional(name: str, dim: int, **config) -> torch.nn.Module:
    if "flows" in keywords(name):
        config.setdefault("flows", 2)
    config.setdefault("hidden", (max(8, 2 * dim),) * 2)
    torch.manual_seed(1)
    return perturb(build(name, dim, context=C, **config)).double().eval()


def test_every_family_but_bnaf_takes_a_context_and_bnaf_says_why_not():
    assert set(CONDITIONAL) == set(NAMES) - {"bnaf"}
    with pytest.raises(UserError, match="takes no context: .*conditional: made, maf"):
        build("bnaf", 2, context=2)
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(UserError, match=f"context must be an int >= 0.*got {bad!r}"):
            build("maf", 2, context=bad)
    assert build("maf", 2, context=0).context == 0  # unconditional


@pytest.mark.parametrize("name", CONDITIONAL)
def test_log_det_matches_autograd_per_context(name):
    flow = conditional(name, 3)
    x, c = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, C, dtype=torch.float64)
    with torch.no_grad():
        _, ladj = flow(x, c)
    for i in range(4):
        jac = torch.autograd.functional.jacobian(lambda v, ci=c[i : i + 1]: flow(v[None], ci)[0][0], x[i])
        assert float(ladj[i]) == pytest.approx(float(torch.linalg.slogdet(jac)[1]), abs=1e-9)


@pytest.mark.parametrize("name", CONDITIONAL)
def test_every_solver_round_trips_and_equals_the_reference_per_context(name):
    """A context per point (the eager incremental solve) and one for all (the compiled
    solve, its term folded into the first layer's biases)."""
    reference = conditional(name, 5, solver="sequential" if "sequential" in build(name, 2).solvers else "bisection")
    x = torch.randn(6, 5, dtype=torch.float64)
    per_point, shared = torch.randn(6, C, dtype=torch.float64), torch.randn(C, dtype=torch.float64)
    for solver in build(name, 2).solvers:
        flow = conditional(name, 5, solver=solver)
        for c in (per_point, shared):
            with torch.no_grad():
                z, _ = flow(x, c)
                assert torch.allclose(flow.inverse(z, c), x, atol=1e-9, rtol=0), (solver, c.shape)
                assert torch.allclose(flow.inverse(z, c), reference.inverse(z, c), atol=1e-9, rtol=0)


@pytest.mark.parametrize("name", CONDITIONAL)
def test_the_context_is_used_by_every_dimension(name):
    """Different contexts give different densities, the first dimension's conditional
    too (a conditional MADE's degree-0 units read the context before any dimension)."""
    flow = conditional(name, 2)
    x = torch.randn(64, 2, dtype=torch.float64)
    c1, c2 = torch.randn(C, dtype=torch.float64), torch.randn(C, dtype=torch.float64)
    with torch.no_grad():
        assert float((flow.log_prob(x, c1) - flow.log_prob(x, c2)).abs().min()) > 1e-6
        z1, z2 = flow(x, c1)[0], flow(x, c2)[0]
    first = flow.transforms[0].made  # the first layer's conditioner: dimension 0's parameters move with c
    with torch.no_grad():
        first.condition(c1[None])
        out1 = first(x)[:, first.order[0]]
        first.condition(c2[None])
        out2 = first(x)[:, first.order[0]]
        first.condition(None)
    assert float((out1 - out2).abs().max()) > 1e-6 and float((z1 - z2).abs().max()) > 1e-6


@pytest.mark.parametrize("name", CONDITIONAL)
@pytest.mark.parametrize("dim", [1, pytest.param(2, marks=pytest.mark.slow)])  # d=2: a 361,201-point grid
def test_density_normalises_per_context(name, dim):
    flow = conditional(name, dim)
    n = 4001 if dim == 1 else 601  # fine enough for narrow spline bins (NSF: 7e-4 off at 601)
    grid = torch.linspace(-12, 12, n, dtype=torch.float64)
    points = grid[:, None] if dim == 1 else torch.cartesian_prod(grid, grid)
    step = float(grid[1] - grid[0]) ** dim
    for c in torch.randn(2, C, dtype=torch.float64):
        with torch.no_grad():
            mass = sum(float(flow.log_prob(chunk, c).exp().sum()) for chunk in points.split(100000)) * step
        assert mass == pytest.approx(1.0, abs=2e-3), (name, dim, mass)


@pytest.mark.parametrize("name", CONDITIONAL)
def test_samples_of_one_context_follow_its_density(name):
    """sample(n, c) at d = 1 against the CDF integrated from log_prob(., c): the
    Kolmogorov-Smirnov distance within its 99.9% bound."""
    flow = conditional(name, 1)
    c = torch.randn(C, dtype=torch.float64)
    n = 4000
    draws = flow.sample(n, c)[:, 0].sort().values
    grid = torch.linspace(-15, 15, 30001, dtype=torch.float64)
    with torch.no_grad():
        pdf = flow.log_prob(grid[:, None], c).exp()
    cdf = torch.cumulative_trapezoid(pdf, grid)
    cdf = torch.cat([cdf.new_zeros(1), cdf]) / cdf[-1]
    at = torch.searchsorted(grid, draws).clamp(max=len(grid) - 1)
    empirical = torch.arange(1, n + 1, dtype=torch.float64) / n
    assert float((cdf[at] - empirical).abs().max()) < 1.95 / math.sqrt(n)


def test_a_context_that_does_not_fit_is_one_line_naming_it():
    flow = build("maf", 2, context=C)
    x = torch.randn(4, 2)
    with pytest.raises(UserError, match=r"conditional on a context of 3 features: pass context, shape \(batch, 3\)"):
        flow.log_prob(x)
    with pytest.raises(UserError, match=r"context must have shape \(4, 3\) or \(3,\), got \(4, 2\)"):
        flow.log_prob(x, torch.randn(4, 2))
    with pytest.raises(UserError, match=r"context has 1 non-finite"):
        flow.log_prob(x, torch.tensor([0.0, math.nan, 0.0]))
    with pytest.raises(UserError, match="context has dtype torch.float64"):
        flow.log_prob(x, torch.zeros(3, dtype=torch.float64))
    with pytest.raises(UserError, match="takes no context"):
        build("maf", 2).log_prob(x, torch.zeros(3))


def test_the_context_weights_are_counted_and_an_unconditional_flow_is_unchanged():
    """The context's first-layer weights are parameters (context x first hidden width
    per MADE); context=0 builds the unconditional flow, weight for weight."""
    plain, cond = build("maf", 4, flows=2), build("maf", 4, flows=2, context=C)
    extra = sum(p.numel() for p in cond.parameters()) - sum(p.numel() for p in plain.parameters())
    assert extra == 2 * C * 64
    torch.manual_seed(3)
    again = build("maf", 4, flows=2, context=0)
    torch.manual_seed(3)
    plain = build("maf", 4, flows=2)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), plain.state_dict().values()))


class ShiftByContext(torch.nn.Module):
    """A user's conditional flow: x = z + W c (c per point or one for all); with
    ``reads=False`` it ignores its context, which check must catch."""

    def __init__(self, dim: int, context: int, reads: bool = True):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(context, dim))
        self.reads = reads

    def _shift(self, context: torch.Tensor) -> torch.Tensor:
        return context @ self.weight if self.reads else torch.zeros_like(context @ self.weight)

    def forward(self, x, context):
        return x - self._shift(context), x.new_zeros(x.shape[0])

    def inverse(self, z, context):
        return z + self._shift(context)

    def log_prob(self, x, context):
        z, ladj = self(x, context)
        return -0.5 * (z.square().sum(-1) + z.shape[-1] * math.log(2 * math.pi)) + ladj


def conditional_flow(dim: int, context: int = 0) -> torch.nn.Module:
    return ShiftByContext(dim, context)


def context_ignoring_flow(dim: int, context: int = 0) -> torch.nn.Module:
    return ShiftByContext(dim, context, reads=False)


@pytest.mark.parametrize("spec", ["maf", "zuko.maf", "tests.test_context:conditional_flow"])
def test_check_covers_conditional_flows_at_two_contexts_and_whether_they_read_it(spec):
    from harness import check, peers, registry

    if spec in peers.NAMES and peers.unavailable(spec):
        pytest.skip(peers.unavailable(spec))
    results = check.run(
        lambda dim: (
            registry.build_any(spec, dim, flows=1, context=C)
            if spec == "maf"
            else registry.build_any(spec, dim, context=C)
        ),
        dims=(1, 2),
    )
    names = {r.check for r in results}
    assert {"log-det (context 1)", "log-det (context 2)", "normalises (d=2) (context 2)", "reads its context"} <= names
    failed = [(r.check, r.dim, r.note) for r in results if r.passed is False]
    assert not failed


def test_check_fails_a_conditional_flow_that_ignores_its_context():
    from harness import check, registry

    results = check.run(
        lambda dim: registry.build_any("tests.test_context:context_ignoring_flow", dim, context=C), (1,)
    )
    (used,) = [r for r in results if r.check == "reads its context"]
    assert used.passed is False and used.measured == 0.0


def test_a_users_factory_takes_a_context_only_with_a_context_keyword():
    from harness import grid

    assert grid.takes_context("tests.test_context:conditional_flow") == ""
    assert "no context keyword" in grid.takes_context("examples.linear_flow:make")


def raising_conditional_flow(dim: int, context: int = 0) -> torch.nn.Module:
    flow = ShiftByContext(dim, context)
    flow.log_prob = lambda x, context: (_ for _ in ()).throw(RuntimeError("broken"))
    return flow


def test_a_conditional_flow_that_raises_fails_its_checks_with_the_reason():
    from harness import check, registry

    spec = "tests.test_context:raising_conditional_flow"
    results = check.run(lambda dim: registry.build_any(spec, dim, context=C), (1,))
    (used,) = [r for r in results if r.check == "reads its context"]
    assert used.passed is False and "RuntimeError: broken" in used.note
