"""Correctness of every reference flow in the registry."""

import math

import pytest
import torch

from harness.check import MASS_TOL, TV_BOUND, mass, sample_density_tv
from harness.models import NAMES, OPS, InversionError, build, keywords
from harness.models.base import normal_log_prob
from harness.models.invert import solve_increasing

from .conftest import perturb


def model(name: str, dim: int, dtype=torch.float64, single: bool = False, **config):
    if single and "flows" in keywords(name):
        config["flows"] = 1
    return perturb(build(name, dim, **config)).to(dtype)


def jacobian(m, x: torch.Tensor) -> torch.Tensor:
    """Autograd Jacobian dz/dx of a single point x (d,)."""
    return torch.autograd.functional.jacobian(lambda v: m(v[None])[0][0], x)


@pytest.mark.parametrize("name", NAMES)
def test_single_flow_is_autoregressive(name):
    d = 5
    m = model(name, d, single=True)
    for x in torch.randn(3, d, dtype=torch.float64):
        J = jacobian(m, x)
        assert torch.all(J.triu(1) == 0), "z_i depends on x_j for some j > i"
        assert torch.all(J.diagonal() > 0)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("d", [1, 2, 5, 17])
def test_logabsdet_is_exact(name, d):
    m = model(name, d)
    x = torch.randn(3, d, dtype=torch.float64)
    _, ladj = m(x)
    for xi, li in zip(x, ladj):
        sign, logdet = torch.linalg.slogdet(jacobian(m, xi))
        assert sign > 0
        torch.testing.assert_close(li, logdet, atol=1e-6, rtol=0)


# Round trips. In z the residual of numerical inversion is bounded by the solver's
# tolerance (1e-5 float32, 1e-9 float64) per layer. In x the error is that residual
# divided by the map's slope, compounded over layers: flows that contract (slopes
# below 1) amplify it, hence the looser bound on x.
ROUND_TRIP_TOL = {
    torch.float32: dict(z=dict(atol=1e-4, rtol=1e-4), x=dict(atol=5e-3, rtol=1e-3)),
    torch.float64: dict(z=dict(atol=1e-8, rtol=1e-8), x=dict(atol=1e-6, rtol=1e-6)),
}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_round_trips(name, dtype):
    d = 6
    m = model(name, d, dtype)
    tol = ROUND_TRIP_TOL[dtype]
    with torch.no_grad():
        z = torch.randn(256, d, dtype=dtype)
        torch.testing.assert_close(m(m.inverse(z))[0], z, **tol["z"])
        x = torch.randn(256, d, dtype=dtype)
        torch.testing.assert_close(m.inverse(m(x)[0]), x, **tol["x"])


def test_closed_form_inverses_are_exact():
    for name in ("made", "maf", "iaf"):
        m = model(name, 6)
        x = torch.randn(64, 6, dtype=torch.float64)
        with torch.no_grad():
            torch.testing.assert_close(m.inverse(m(x)[0]), x, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("name", NAMES)
def test_log_prob_is_base_plus_logabsdet(name):
    m = model(name, 4)
    x = torch.randn(16, 4, dtype=torch.float64)
    z, ladj = m(x)
    torch.testing.assert_close(m.log_prob(x), normal_log_prob(z) + ladj)
    # and the base is a standard normal
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    torch.testing.assert_close(normal_log_prob(z), expected)


@pytest.mark.parametrize("name", NAMES)
def test_density_normalises_1d(name):
    with torch.no_grad():
        assert abs(mass(model(name, 1).log_prob, 1) - 1) < MASS_TOL


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_density_normalises_2d(name):
    config = {"flows": 2} if name == "naf" else {}  # 160,000 points: NAF's five flows take 15 s
    with torch.no_grad():
        assert abs(mass(model(name, 2, **config).log_prob, 2) - 1) < MASS_TOL


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_samples_match_density(name):
    assert sample_density_tv(model(name, 2)) < TV_BOUND


def test_tv_detects_a_wrong_sampler():
    m = model("maf", 2)
    m.inverse = lambda z: z  # samples from the base, not the flow
    assert sample_density_tv(m) > 2 * TV_BOUND


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("d", [1, 2, 8, 64, 256])
def test_default_config_runs(name, d):
    m = build(name, d)
    x = torch.randn(4, d)
    with torch.inference_mode():
        lp = m.log_prob(x)
        s = m.sample(2 if d == 256 else 4)
    assert lp.shape == (4,) and torch.isfinite(lp).all()
    assert s.shape[1] == d and torch.isfinite(s).all()
    assert s.dtype == torch.float32


@pytest.mark.parametrize("name", NAMES)
def test_cost_is_data(name):
    cost = build(name, 3).cost
    kinds = {op: cost[op] for op in OPS}
    assert set(kinds.values()) <= {"parallel", "sequential", "iterative"}
    assert "parallel" in kinds.values(), "every model has one fast direction"
    with pytest.raises(ValueError, match="allowed: log_prob, sample"):
        cost["train"]


def test_cost_matches_the_papers():
    assert build("maf", 3).cost == build("made", 3).cost
    assert (build("maf", 3).cost.log_prob, build("maf", 3).cost.sample) == ("parallel", "sequential")
    assert (build("iaf", 3).cost.log_prob, build("iaf", 3).cost.sample) == ("sequential", "parallel")
    for name in ("naf", "bnaf"):
        assert (build(name, 3).cost.log_prob, build(name, 3).cost.sample) == ("parallel", "iterative")


@pytest.mark.parametrize("name", NAMES)
def test_sample_follows_model_dtype(name):
    m = build(name, 3).double()
    assert m.sample(5).dtype == torch.float64


# ---- bad input ---------------------------------------------------------------------


def test_unknown_name():
    with pytest.raises(ValueError, match=r"unknown model 'flow'; allowed: made, maf, iaf, naf, bnaf"):
        build("flow", 2)


@pytest.mark.parametrize("name", NAMES)
def test_unknown_keyword(name):
    with pytest.raises(ValueError, match=rf"unknown keyword 'width' for model '{name}'; allowed: "):
        build(name, 2, width=3)


def test_made_takes_no_flows():
    with pytest.raises(ValueError, match="unknown keyword 'flows' for model 'made'; allowed: hidden"):
        build("made", 2, flows=2)


@pytest.mark.parametrize("dim", [0, -3, 2.5, True, "4"])
def test_bad_dim(dim):
    with pytest.raises(ValueError, match=r"dim must be an int >= 1, got"):
        build("maf", dim)


@pytest.mark.parametrize(
    "config, match",
    [
        (dict(flows=0), "flows must be an int >= 1, got 0"),
        (dict(hidden=()), "hidden must be a non-empty sequence"),
        (dict(hidden=(8, -1)), "hidden must be a non-empty sequence"),
    ],
)
def test_bad_config_values(config, match):
    with pytest.raises(ValueError, match=match):
        build("maf", 3, **config)


def test_bad_choices():
    with pytest.raises(ValueError, match="unknown residual 'plain'; allowed: gated, gated-but-last, none"):
        build("bnaf", 3, residual="plain")
    with pytest.raises(ValueError, match="unknown activation 'gelu'; allowed: relu, elu"):
        build("naf", 3, activation="gelu")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(4,), (4, 2), (4, 3, 1)])
def test_wrong_shape(name, shape):
    m = build(name, 3)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 3\), got"):
        m.log_prob(torch.randn(*shape))
    with pytest.raises(ValueError, match=r"z must have shape \(batch, 3\), got"):
        m.inverse(torch.randn(*shape))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_input(name, bad):
    m = build(name, 3)
    x = torch.randn(4, 3)
    x[1, 2] = bad
    with pytest.raises(ValueError, match="x has 1 non-finite entries"):
        m.log_prob(x)


def test_bad_sample_count():
    with pytest.raises(ValueError, match="n must be a positive int, got 0"):
        build("maf", 2).sample(0)


# ---- numerical inversion -----------------------------------------------------------


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-9)])
def test_solver_meets_stated_tolerance(dtype, tol):
    def fn(x):  # increasing, with flat and steep regions and a far-away root
        return x**3 + 0.01 * x, 3 * x**2 + 0.01

    target = torch.tensor([-1000.0, -1.0, 0.0, 1e-3, 2.0, 1e4], dtype=dtype)
    x, evals = solve_increasing(fn, target, torch.zeros_like(target))
    y, dy = fn(x)
    resolution = 4 * torch.finfo(dtype).eps * (1 + x.abs()) * dy
    assert torch.all(((y - target).abs() <= tol) | ((y - target).abs() <= resolution))
    assert evals < 100


def test_solver_raises_when_there_is_no_root():
    def fn(x):  # bounded: tanh never reaches 2
        return torch.tanh(x), 1 - torch.tanh(x) ** 2

    with pytest.raises(InversionError, match="did not converge in 30 evaluations"):
        solve_increasing(fn, torch.tensor([0.5, 2.0]), torch.zeros(2), max_iter=30)


@pytest.mark.parametrize("name", ["naf", "bnaf"])
def test_inversion_counts_evaluations(name):
    m = build(name, 4, flows=1)
    with torch.no_grad():
        m.sample(16)
    stats = m.solve_stats()
    assert stats.solver == "newton" and 4 <= stats.evaluations <= 4 * 100


def test_run_op_is_log_prob_or_sampling_on_given_base_points():
    from harness.models import run_op

    m = build("maf", 3).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    torch.testing.assert_close(run_op(m, "log_prob", x), m.log_prob(x))
    torch.testing.assert_close(run_op(m, "sample", x), m.inverse(x))
    with pytest.raises(ValueError, match="unknown direction 'train'; allowed: log_prob, sample"):
        run_op(m, "train", x)


def test_updates_through_data_show_in_the_next_call():
    """The classic manual step ``p.data -= lr * p.grad`` bumps no version counter."""
    flow = build("maf", 4)
    x = torch.randn(8, 4)
    before = flow.log_prob(x).detach()
    flow.log_prob(x).sum().backward()
    for p in flow.parameters():
        p.data -= 0.1 * p.grad
    after = flow.log_prob(x).detach()
    fresh = build("maf", 4)
    fresh.load_state_dict(flow.state_dict())
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, fresh.log_prob(x).detach())


@pytest.mark.parametrize("made_under", ["inference_mode", "no_grad"])
def test_masked_weights_follow_parameter_updates(made_under):
    """The memoised masked weights: a model built under inference mode still runs, and
    an in-place parameter update shows in the next call."""
    ctx = torch.inference_mode if made_under == "inference_mode" else torch.no_grad
    with ctx():
        flow = build("maf", 4).eval()
        x = torch.randn(8, 4)
        before = flow.log_prob(x)
        assert torch.equal(flow.log_prob(x), before)
        for p in flow.parameters():
            p.mul_(1.5)
        after = flow.log_prob(x)
    assert not torch.allclose(before, after)
    with torch.no_grad():
        fresh = flow.log_prob(x)
    torch.testing.assert_close(fresh, after)
