"""The rational-quadratic spline (harness.models.spline) and the NSF built on it."""

from __future__ import annotations

import math

import pytest
import torch

from harness.errors import UserError
from harness.models import build
from harness.models.spline import BOUND, params_per_dim, rq_forward, rq_inverse


def _params(n: int, bins: int = 8, scale: float = 2.0, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(params_per_dim(bins), n, generator=g, dtype=torch.float64)  # (3 K - 1, n)


@pytest.mark.parametrize("bins", [2, 8, 32])
# near uniform bins, uneven ones, bins at their floors (slopes of 1e-3 to 1e3: an error
# in y is one in x times dx/dy, so the round trip is held in y there, and in x)
@pytest.mark.parametrize("scale, x_tol", [(0.1, 1e-12), (3.0, 1e-9), (30.0, 1e-7)])
def test_the_spline_round_trips_and_its_log_det_is_the_derivative(bins, scale, x_tol):
    params = _params(500, bins, scale)
    x = torch.linspace(-BOUND - 1, BOUND + 1, 500, dtype=torch.float64, requires_grad=True)
    y, log_det = rq_forward(x, params)
    (slope,) = torch.autograd.grad(y.sum(), x)
    assert torch.allclose(log_det, slope.log(), atol=1e-9, rtol=0)
    back, inv_log_det = rq_inverse(y.detach(), params)
    again, again_log_det = rq_forward(back, params)
    assert torch.allclose(again, y.detach(), atol=1e-12, rtol=0)
    assert torch.allclose(back, x.detach(), atol=x_tol, rtol=0)
    assert torch.allclose(inv_log_det, -again_log_det, atol=1e-9, rtol=0)  # log |dx/dy| at y = -log |dy/dx| at x(y)
    one, _ = rq_forward(x.detach(), params[:, :1].expand(-1, 500))  # one spline over the grid
    assert bool((one[1:] > one[:-1]).all())  # monotone, strictly


def test_the_spline_is_the_identity_outside_its_interval_and_continuous_at_its_ends():
    params = _params(6, scale=3.0)
    x = torch.tensor([-50.0, -BOUND - 1e-9, -BOUND, BOUND, BOUND + 1e-9, 50.0], dtype=torch.float64)
    y, log_det = rq_forward(x, params)
    assert torch.equal(y[[0, 5]], x[[0, 5]]) and torch.equal(log_det[[0, 5]], torch.zeros(2, dtype=torch.float64))
    # the ends map to themselves with slope 1: value and slope continuous with the tails
    assert torch.allclose(y, x, atol=1e-8, rtol=0)
    assert torch.allclose(log_det, torch.zeros(6, dtype=torch.float64), atol=1e-6)
    z, _ = rq_inverse(torch.tensor([-7.0, 9.0], dtype=torch.float64), params[:, :2])
    assert z.tolist() == [-7.0, 9.0]  # base points outside [-B, B] sample as themselves


@pytest.mark.parametrize("solver", ["sequential", "incremental", "fixed-point"])
def test_every_nsf_solver_equals_the_reference_in_float64(solver):
    torch.manual_seed(0)
    ref = build("nsf", 9, solver="sequential").double()
    flow = build("nsf", 9, solver=solver).double()
    flow.load_state_dict(ref.state_dict())
    z = 2 * torch.randn(200, 9, dtype=torch.float64)
    assert torch.allclose(flow.inverse(z), ref.inverse(z), atol=1e-9, rtol=0)


def test_nsf_mass_on_a_grid_covers_the_tails():
    """Normalises over the spline's interval and the tails (the registry's tests use a
    grid too; here the interval is small, so most of the mass passes through the tails)."""
    torch.manual_seed(1)
    flow = build("nsf", 1, bound=0.5).double()
    grid = torch.linspace(-12, 12, 48_001, dtype=torch.float64)[:, None]
    with torch.no_grad():
        density = flow.log_prob(grid).exp()
    assert math.isclose(float(torch.trapezoid(density, grid[:, 0])), 1.0, abs_tol=1e-6)


@pytest.mark.parametrize(
    "config, match",
    [
        ({"bins": 1}, "bins must be an int >= 2, got 1"),
        ({"bins": 2.5}, "bins must be an int >= 2"),
        ({"bins": True}, "bins must be an int >= 2"),
        ({"bins": 1000}, "do not fit"),
        ({"bound": 0}, "bound must be a finite number > 0"),
        ({"bound": -3.0}, "bound must be a finite number > 0"),
        ({"bound": math.inf}, "bound must be a finite number > 0"),
        ({"bound": "3"}, "bound must be a finite number > 0"),
    ],
)
def test_bad_spline_settings_are_one_line_naming_the_value(config, match):
    with pytest.raises(UserError, match=match):
        build("nsf", 4, **config)


@pytest.mark.parametrize("command", ["sweep", "fit"])
def test_a_bad_spline_setting_stops_a_command_before_it_measures(command, tmp_path, capsys):
    from harness.__main__ import main

    out = tmp_path / "out"
    assert main([command, "--quick", "--models", "nsf", "--config", "bins=1", "--out", str(out)]) == 2
    assert "bins must be an int >= 2, got 1" in capsys.readouterr().err and not out.exists()
