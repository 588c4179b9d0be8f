"""Every solver of every slow direction: exact against its family's reference solver."""

import math

import pytest
import torch

from harness.models import NAMES, InversionError, build, keywords
from harness.models.solvers import REFERENCE, SOLVERS

from .conftest import perturb

CASES = [(name, solver) for name in NAMES for solver in build(name, 2).solvers]
DIMS = [1, 2, 5, 17, 64]


def slow_op(flow):
    return "log_prob" if flow.cost.log_prob != "parallel" else "sample"


def run_slow(flow, x):
    """The slow direction: IAF's data->base pass, or a base->data pass."""
    return flow(x)[0] if slow_op(flow) == "log_prob" else flow.inverse(x)


def small(name: str, dim: int, solver: str, flows: int = 2):
    """A perturbed float64 model; smaller than the defaults, so d=64 stays quick."""
    config = {"solver": solver}
    if "flows" in keywords(name):
        config["flows"] = flows
    if "hidden" in keywords(name):
        config["hidden"] = (max(16, dim),) * 2
    if name == "bnaf":
        config["hidden_factor"] = 2
    torch.manual_seed(1)
    return perturb(build(name, dim, **config)).double().eval()


def test_every_family_has_its_solvers():
    for name in NAMES:
        flow = build(name, 3)
        assert flow.solvers == SOLVERS[flow.cost.family]
        assert flow.reference_solver == REFERENCE[flow.cost.family]
        assert flow.solver in flow.solvers


@pytest.mark.slow
@pytest.mark.parametrize("name,solver", CASES)
@pytest.mark.parametrize("d", DIMS)
def test_solver_equals_reference(name, solver, d):
    torch.manual_seed(2)
    x = torch.randn(16, d, dtype=torch.float64)
    ref_flow, flow = small(name, d, REFERENCE[build(name, 1).cost.family]), small(name, d, solver)
    with torch.no_grad():
        ref, got = run_slow(ref_flow, x), run_slow(flow, x)
    torch.testing.assert_close(got, ref, atol=1e-9, rtol=1e-9)
    if slow_op(flow) == "log_prob":  # IAF: the log-det comes with the solve
        torch.testing.assert_close(flow.log_prob(x), ref_flow.log_prob(x), atol=1e-9, rtol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("name,solver", CASES)
@pytest.mark.parametrize("d", DIMS)
def test_round_trip_and_counters(name, solver, d):
    torch.manual_seed(3)
    flow = small(name, d, solver)
    x = torch.randn(16, d, dtype=torch.float64)
    flow.reset_stats()
    with torch.no_grad():
        if slow_op(flow) == "log_prob":
            z = flow(x)[0]
            torch.testing.assert_close(flow.inverse(z), x, atol=1e-9, rtol=1e-9)
        else:
            z = torch.randn(16, d, dtype=torch.float64)
            torch.testing.assert_close(flow(flow.inverse(z))[0], z, atol=1e-9, rtol=1e-9)
    stats = flow.solve_stats()
    layers = sum(1 for t in flow.transforms if t.solver)
    assert stats is not None and stats.solver == solver
    assert stats.evaluations >= d * layers and stats.iterations >= 1
    if solver in ("sequential", "incremental"):
        assert stats.evaluations == stats.iterations == d * layers
    if solver == "fixed-point":
        assert stats.evaluations == d * stats.iterations


@pytest.mark.parametrize("name,solver", [c for c in CASES if c[1] not in ("sequential", "incremental")])
def test_iteration_cap_raises(name, solver, monkeypatch):
    """Root-finders stop at ``invert.MAX_ITER``; the affine fixed point at d + 1 passes,
    where it is exact, so a layer that claims a smaller d runs out."""
    from harness.models import invert

    flow = small(name, 8, solver)
    x = 3 * torch.randn(16, 8, dtype=torch.float64)
    if flow.cost.family == "affine":
        for t in flow.transforms:
            t.dim = 1
    else:
        monkeypatch.setattr(invert, "MAX_ITER", 2)
        monkeypatch.setattr(invert, "solve_increasing", _capped(invert.solve_increasing, 2))
    with pytest.raises(InversionError, match=f"{solver} did not converge"), torch.no_grad():
        run_slow(flow, x)


def _capped(solve, cap):
    def capped(*args, max_iter=None, **kwargs):
        return solve(*args, max_iter=min(max_iter or cap, cap), **kwargs)

    return capped


@pytest.mark.parametrize("name", ["naf", "bnaf"])
@pytest.mark.parametrize("solver", ["newton", "fixed-point"])
def test_gradients_through_numerical_inversion(name, solver):
    """inverse(z) is differentiable: in z (gradcheck, finite differences) and in the
    parameters (one weight, central differences), by implicit differentiation."""
    flow = small(name, 3, solver, flows=1)
    z = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(flow.inverse, (z,), eps=1e-6, atol=1e-6)
    weight = next(p for p in flow.parameters() if p.ndim == 2)
    (grad,) = torch.autograd.grad(flow.inverse(z.detach()).sum(), weight)
    i, j = (int(k) for k in torch.nonzero(grad.abs() > 1e-3)[0])
    with torch.no_grad():
        weight[i, j] += 1e-6
        up = flow.inverse(z).sum()
        weight[i, j] -= 2e-6
        down = flow.inverse(z).sum()
        weight[i, j] += 1e-6
    assert float(grad[i, j]) == pytest.approx(float(up - down) / 2e-6, rel=1e-4, abs=1e-7)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_nafs_root_finding_evaluation_equals_its_log_domain_map(dtype, tol, monkeypatch):
    """The root-finder's DDSF evaluations (linear domain, DeepSigmoid.at) give
    columns()' y and exp(log dy/dx), near the root and far from it, where a mixture
    underflows and its columns go the log way."""
    flow = small("naf", 4, "newton").to(dtype)
    ds = flow.transforms[0].ds
    torch.manual_seed(2)
    params = 2 * torch.randn(ds.n_params, 2048, dtype=dtype)
    x = torch.cat([torch.randn(1024, dtype=dtype), 3000 * torch.randn(1024, dtype=dtype)])
    far, at_log = [], type(ds)._at_log
    monkeypatch.setattr(type(ds), "_at_log", lambda self, p: far.append(p.shape[1]) or at_log(self, p))
    with torch.no_grad():
        y_ref, logder = ds.columns(x, params)
        y, dy = ds.at(params)(x)
    assert far and 0 < far[0] < 1024  # some far columns went the log way, no near one
    assert torch.isfinite(y_ref).all() and torch.isfinite(y).all() and (dy >= 0).all()
    assert float(((y - y_ref).abs() / (1 + y_ref.abs())).max()) < tol
    shown = logder > math.log(torch.finfo(dtype).tiny) + 20  # where exp(log dy/dx) is a normal number
    assert float(((dy - logder.exp()).abs() / logder.exp())[shown].max()) < 10 * tol
