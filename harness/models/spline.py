"""Monotonic rational-quadratic splines (Durkan et al., 2019, "Neural Spline Flows").

A spline maps [-B, B] onto itself through K bins whose widths, heights and knot
derivatives come from unconstrained parameters; outside [-B, B] it is the identity
(the paper's linear tails), and the derivatives at -B and B are 1, so the map and its
slope are continuous. Each bin is a ratio of two quadratics (the paper's eq. 4), its
inverse the stable root of a quadratic (eq. 6, 8): both directions are closed form.

Parameters per dimension: ``3 K - 1`` (K widths, K heights, K - 1 interior derivatives),
in this order, on the second-to-last axis: (..., 3 K - 1, n) for n entries (..., n),
the layout a MADE's output has in memory, so that every reduction over a spline's bins
runs along contiguous entries.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UserError

BINS, BOUND = 8, 3.0  # the paper's K and B for its density-estimation experiments
# floors that keep every bin and slope resolvable (the paper's code has the same three)
MIN_WIDTH, MIN_HEIGHT, MIN_DERIVATIVE = 1e-3, 1e-3, 1e-3


def params_per_dim(bins: int) -> int:
    """Unconstrained parameters of one dimension's spline: K widths, K heights, K - 1
    interior derivatives."""
    return 3 * bins - 1


def check_spline(bins: object, bound: object) -> tuple[int, float]:
    """(bins, bound) if a spline can take them; a :class:`UserError` naming the bad value
    and what is allowed otherwise."""
    if not isinstance(bins, int) or isinstance(bins, bool) or bins < 2:
        raise UserError(f"bins must be an int >= 2, got {bins!r}")
    if bins * max(MIN_WIDTH, MIN_HEIGHT) >= 1:
        raise UserError(
            f"bins must be below {int(1 / max(MIN_WIDTH, MIN_HEIGHT))}: {bins} bins of the least width "
            f"{MIN_WIDTH:g} (of the interval) do not fit in it"
        )
    if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not math.isfinite(bound) or bound <= 0:
        raise UserError(f"bound must be a finite number > 0 (the spline's interval is [-bound, bound]), got {bound!r}")
    return bins, float(bound)


def _knots(raw: Tensor, bound: float, floor: float) -> tuple[Tensor, Tensor]:
    """Knot positions (..., K + 1, n) from -B to B, and the bins' sizes (..., K, n)."""
    bins = raw.shape[-2]
    sizes = floor + (1 - floor * bins) * torch.softmax(raw, -2)
    knots = 2 * bound * F.pad(torch.cumsum(sizes, -2), (0, 0, 1, 0)) - bound
    knots[..., -1, :] = bound  # the sizes sum to 1 up to rounding: the last knot is B exactly
    return knots, knots[..., 1:, :] - knots[..., :-1, :]


def _bin_params(x: Tensor, params: Tensor, bound: float, inverse: bool):
    """The bin each entry falls in (by x's knots forward, y's inverse) and that bin's
    (x_k, width, y_k, height, d_k, d_k+1), each shaped as x."""
    bins = (params.shape[-2] + 1) // 3
    raw_w, raw_h, raw_d = params[..., :bins, :], params[..., bins : 2 * bins, :], params[..., 2 * bins :, :]
    xk, widths = _knots(raw_w, bound, MIN_WIDTH)
    yk, heights = _knots(raw_h, bound, MIN_HEIGHT)
    # derivatives at the K + 1 knots: softplus of the interior ones above the floor, 1
    # at either end (the linear tails' slope)
    deriv = F.pad(MIN_DERIVATIVE + F.softplus(raw_d), (0, 0, 1, 1), value=1.0)
    knots = yk if inverse else xk
    # the bin: how many interior knots lie at or below the entry; entries at B fall in the last bin
    k = (x.unsqueeze(-2) >= knots[..., 1:-1, :]).sum(-2, keepdim=True)

    def at(t: Tensor, shift: int = 0) -> Tensor:
        return t.gather(-2, k + shift).squeeze(-2)

    return at(xk), at(widths), at(yk), at(heights), at(deriv), at(deriv, 1)


def _log_slope(theta: Tensor, s: Tensor, d0: Tensor, d1: Tensor) -> Tensor:
    """log dy/dx inside a bin at relative position theta (the paper's eq. 5), with the
    bin's slope s = height / width and knot derivatives d0, d1."""
    t1 = theta * (1 - theta)
    denominator = s + (d1 + d0 - 2 * s) * t1
    numerator = s.square() * (d1 * theta.square() + 2 * s * t1 + d0 * (1 - theta).square())
    return torch.log(numerator) - 2 * torch.log(denominator)


def _inside(t: Tensor, bound: float, mapped: Tensor, log_det: Tensor) -> tuple[Tensor, Tensor]:
    """The spline's values where t is in [-B, B], the identity (log-det 0) outside."""
    inside = (t >= -bound) & (t <= bound)
    return torch.where(inside, mapped, t), torch.where(inside, log_det, torch.zeros_like(log_det))


def rq_forward(x: Tensor, params: Tensor, bound: float = BOUND) -> tuple[Tensor, Tensor]:
    """y = spline(x) and log |dy/dx|, elementwise.

    Arguments:
        x: (..., n) inputs; those outside [-B, B] map to themselves with log-det 0.
        params: (..., 3 K - 1, n) unconstrained parameters of each entry's spline.
    """
    xc = x.clamp(-bound, bound)
    xk, w, yk, h, d0, d1 = _bin_params(xc, params, bound, inverse=False)
    s = h / w
    theta = ((xc - xk) / w).clamp(0, 1)
    t1 = theta * (1 - theta)
    y = yk + h * (s * theta.square() + d0 * t1) / (s + (d1 + d0 - 2 * s) * t1)
    return _inside(x, bound, y, _log_slope(theta, s, d0, d1))


def rq_inverse(y: Tensor, params: Tensor, bound: float = BOUND) -> tuple[Tensor, Tensor]:
    """x = spline^-1(y) and log |dx/dy|, elementwise: the root in [0, 1] of the bin's
    quadratic, taken in the form that does not cancel (Durkan et al., eq. 6-8).

    Arguments:
        y: (..., n) outputs; those outside [-B, B] map to themselves with log-det 0.
        params: (..., 3 K - 1, n) unconstrained parameters of each entry's spline.
    """
    yc = y.clamp(-bound, bound)
    xk, w, yk, h, d0, d1 = _bin_params(yc, params, bound, inverse=True)
    s = h / w
    dy = yc - yk
    slack = d1 + d0 - 2 * s
    a = h * (s - d0) + dy * slack
    b = h * d0 - dy * slack
    c = -s * dy
    discriminant = (b.square() - 4 * a * c).clamp_min(0)  # >= 0 in exact arithmetic for a monotone bin
    theta = ((2 * c) / (-b - discriminant.sqrt())).clamp(0, 1)
    return _inside(y, bound, xk + theta * w, -_log_slope(theta, s, d0, d1))
