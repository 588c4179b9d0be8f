"""2-D densities with a known truth: samplers from a seed, exact log-densities and
their entropies (closed form or quadrature on a grid).

Each toy is defined by its density, so the gap ``test NLL - entropy`` estimates
KL(truth || model). The densities are mixtures of isotropic Gaussians along points or
curves, which makes them exact up to a 1-d quadrature along the curve, or uniform on
squares (the checkerboard).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch
from torch import Tensor

LOG_2PI = math.log(2 * math.pi)


@dataclass(frozen=True)
class Toy:
    """A 2-D density: ``sample(n, seed)`` (n, 2) float64, ``log_density(x)`` (m, 2) ->
    (m,) in nats, ``entropy`` its differential entropy in nats, ``extent`` a square
    [-extent, extent]^2 holding all but a negligible part of its mass."""

    name: str
    sample: Callable[[int, int], Tensor]
    log_density: Callable[[Tensor], Tensor]
    extent: float
    closed_form: float | None = None  # the entropy where it has one
    about: str = ""

    @property
    def entropy(self) -> float:
        return self.closed_form if self.closed_form is not None else quadrature_entropy(self.name)


def _gaussian_mixture_log_density(x: Tensor, centres: Tensor, sigma: float, weights: Tensor | None = None) -> Tensor:
    """log sum_k w_k N(x; c_k, sigma^2 I) in 2-D, uniform weights by default; chunked
    over x so a grid times a thousand centres fits in memory."""
    x, centres = x.double(), centres.double()
    log_w = (
        torch.full((len(centres),), -math.log(len(centres)), dtype=torch.float64)
        if weights is None
        else weights.double().log()
    )
    out = []
    for chunk in x.split(4096):
        sq = torch.cdist(chunk, centres).square()
        out.append(torch.logsumexp(log_w - sq / (2 * sigma**2), dim=1) - LOG_2PI - 2 * math.log(sigma))
    return torch.cat(out)


# eight gaussians: centres on a circle of radius 2, standard deviation 0.3
EIGHT_RADIUS, EIGHT_SIGMA = 2.0, 0.3
_EIGHT = torch.tensor(
    [[EIGHT_RADIUS * math.cos(k * math.pi / 4), EIGHT_RADIUS * math.sin(k * math.pi / 4)] for k in range(8)],
    dtype=torch.float64,
)


def _eight_sample(n: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    k = torch.randint(0, 8, (n,), generator=g)
    return _EIGHT[k] + EIGHT_SIGMA * torch.randn(n, 2, generator=g, dtype=torch.float64)


# checkerboard: uniform on the 8 dark squares of a 4 x 4 board on [-2, 2]^2
_DARK = torch.tensor([[i, j] for i in range(4) for j in range(4) if (i + j) % 2 == 0], dtype=torch.float64) - 2


def _checker_sample(n: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    k = torch.randint(0, 8, (n,), generator=g)
    return _DARK[k] + torch.rand(n, 2, generator=g, dtype=torch.float64)


def _checker_log_density(x: Tensor) -> Tensor:
    x = x.double()
    inside = (x.abs() < 2).all(dim=1)
    cell = torch.floor(x) + 2
    dark = (cell.sum(dim=1) % 2 == 0) & inside
    return torch.where(dark, torch.full_like(x[:, 0], -math.log(8)), torch.full_like(x[:, 0], -math.inf))


# two spirals: arms r(t) = t / 3 at angle t for t in [0, 3 pi], t with density
# proportional to t (so points are about uniform along the arm), the second arm the
# first rotated by pi, plus N(0, 0.1^2 I) noise
SPIRAL_TURN, SPIRAL_SIGMA, SPIRAL_NODES = 3 * math.pi, 0.1, 1000


def _spiral_points(t: Tensor) -> Tensor:
    return torch.stack([-torch.cos(t) * t, torch.sin(t) * t], dim=1) / 3


def _spirals_sample(n: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.sqrt(torch.rand(n, generator=g, dtype=torch.float64)) * SPIRAL_TURN
    arm = torch.randint(0, 2, (n, 1), generator=g) * 2 - 1
    return arm * _spiral_points(t) + SPIRAL_SIGMA * torch.randn(n, 2, generator=g, dtype=torch.float64)


def _spiral_nodes() -> tuple[Tensor, Tensor]:
    # midpoints in u = (t / T)^2, uniform, so equal weights are the exact t-density
    u = (torch.arange(SPIRAL_NODES, dtype=torch.float64) + 0.5) / SPIRAL_NODES
    points = _spiral_points(torch.sqrt(u) * SPIRAL_TURN)
    return torch.cat([points, -points]), torch.full((2 * SPIRAL_NODES,), 1 / (2 * SPIRAL_NODES), dtype=torch.float64)


def _spirals_log_density(x: Tensor) -> Tensor:
    centres, weights = _spiral_nodes()
    return _gaussian_mixture_log_density(x, centres, SPIRAL_SIGMA, weights)


# two moons: scikit-learn's make_moons (two half circles, noise 0.1), shifted by
# (-0.5, -0.25) and scaled by 2 so the moons sit around the origin at unit scale
MOONS_NOISE, MOONS_SCALE, MOONS_SHIFT, MOONS_NODES = 0.1, 2.0, (-0.5, -0.25), 500


def _moons_sample(n: int, seed: int) -> Tensor:
    from sklearn.datasets import make_moons

    x, _ = make_moons(n_samples=n, noise=MOONS_NOISE, random_state=seed)
    return (torch.from_numpy(x) + torch.tensor(MOONS_SHIFT, dtype=torch.float64)) * MOONS_SCALE


def _moons_nodes() -> Tensor:
    # make_moons spaces each half circle's angle evenly on [0, pi]: the density is
    # the uniform mixture along both arcs (midpoint rule in the angle)
    t = (torch.arange(MOONS_NODES, dtype=torch.float64) + 0.5) / MOONS_NODES * math.pi
    outer = torch.stack([torch.cos(t), torch.sin(t)], dim=1)
    inner = torch.stack([1 - torch.cos(t), 0.5 - torch.sin(t)], dim=1)
    return (torch.cat([outer, inner]) + torch.tensor(MOONS_SHIFT, dtype=torch.float64)) * MOONS_SCALE


def _moons_log_density(x: Tensor) -> Tensor:
    return _gaussian_mixture_log_density(x, _moons_nodes(), MOONS_NOISE * MOONS_SCALE)


def _eight_log_density(x: Tensor) -> Tensor:
    return _gaussian_mixture_log_density(x, _EIGHT, EIGHT_SIGMA)


TOYS: dict[str, Toy] = {
    "eight_gaussians": Toy(
        "eight_gaussians",
        _eight_sample,
        _eight_log_density,
        extent=2 + 7 * EIGHT_SIGMA,
        about=f"8 equal Gaussians, centres on a circle of radius {EIGHT_RADIUS:g}, sd {EIGHT_SIGMA:g}",
    ),
    "checkerboard": Toy(
        "checkerboard",
        _checker_sample,
        _checker_log_density,
        extent=2.0,
        closed_form=math.log(8),
        about="uniform on the 8 dark squares of a 4 x 4 board on [-2, 2]^2 (entropy log 8)",
    ),
    "two_spirals": Toy(
        "two_spirals",
        _spirals_sample,
        _spirals_log_density,
        extent=SPIRAL_TURN / 3 + 7 * SPIRAL_SIGMA,
        about=f"two arms r = t/3 at angle t, t in [0, 3 pi], noise sd {SPIRAL_SIGMA:g}",
    ),
    "two_moons": Toy(
        "two_moons",
        _moons_sample,
        _moons_log_density,
        extent=3.0 + 7 * MOONS_NOISE * MOONS_SCALE,
        about=f"scikit-learn's make_moons (noise {MOONS_NOISE:g}), centred and scaled by {MOONS_SCALE:g}",
    ),
}


def grid(extent: float, n: int) -> tuple[Tensor, float]:
    """Cell midpoints of an n x n grid on [-extent, extent]^2, as (n*n, 2), and the cell area."""
    step = 2 * extent / n
    axis = torch.linspace(-extent + step / 2, extent - step / 2, n, dtype=torch.float64)
    return torch.cartesian_prod(axis, axis), step * step


@cache
def quadrature_entropy(name: str, n: int = 400) -> float:
    """-sum p log p * area on an n x n midpoint grid over the toy's extent, in nats."""
    toy = TOYS[name]
    x, area = grid(toy.extent, n)
    log_p = toy.log_density(x)
    p = log_p.exp()
    return float(-(torch.where(p > 0, p * log_p, torch.zeros_like(p))).sum() * area)


def density_grid(log_density: Callable[[Tensor], Tensor], extent: float, n: int = 120) -> np.ndarray:
    """log-density on an n x n grid of [-extent, extent]^2 (rows: second coordinate),
    the heatmap the report draws."""
    x, _ = grid(extent, n)
    with torch.no_grad():
        values = log_density(x)
    return values.reshape(n, n).T.float().numpy()
