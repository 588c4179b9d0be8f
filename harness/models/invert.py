"""Numerical inversion of monotone autoregressive maps (NAF, B-NAF).

Each dimension is solved in autoregressive order with a safeguarded Newton method
inside a bracket: Newton steps use the diagonal derivative that the log-det already
gives; a step that leaves the bracket, or does not halve the residual, is replaced
by bisection; while the bracket is open on one side it doubles outwards until it
holds the root. Iterations are counted and capped: a solve that does not converge
raises :class:`InversionError`, it never returns a silently wrong value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

# |f(x) - z| that counts as solved, per dtype.
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-9, torch.float16: 1e-2, torch.bfloat16: 1e-2}
MAX_ITER = 100

Scalar = Callable[[Tensor], tuple[Tensor, Tensor]]


class InversionError(RuntimeError):
    """A root-find hit its iteration cap."""


@dataclass
class Solves:
    """Evaluations spent per solved dimension; one evaluation is one network pass
    for B-NAF and one element-wise sigmoid-flow evaluation for NAF."""

    evaluations: list[int] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.evaluations)


def solve_increasing(
    fn: Scalar,
    target: Tensor,
    x0: Tensor,
    tol: float | None = None,
    max_iter: int = MAX_ITER,
) -> tuple[Tensor, int]:
    """Solves fn(x) = target element-wise for a strictly increasing fn.

    Arguments:
        fn: x (batch,) -> (fn(x), dfn/dx), both (batch,).
        target: (batch,).
        x0: starting point (batch,).
        tol: residual tolerance; default from :data:`TOLERANCE` by dtype.
        max_iter: cap on evaluations.

    Returns:
        x (batch,) and the number of evaluations. An entry also counts as solved
        when its bracket has shrunk to the dtype's resolution: the root is then
        pinned as exactly as floating point allows.
    """
    tol = TOLERANCE.get(target.dtype, 1e-5) if tol is None else tol
    eps = 4 * torch.finfo(target.dtype).eps
    x = x0.clone()
    lo = torch.full_like(x, -torch.inf)
    hi = torch.full_like(x, torch.inf)
    step = 1 + x.abs()
    prev = torch.full_like(x, torch.inf)
    for it in range(1, max_iter + 1):
        y, dy = fn(x)
        r = y - target
        lo = torch.where(r < 0, x, lo)
        hi = torch.where(r > 0, x, hi)
        closed = torch.isfinite(lo) & torch.isfinite(hi)
        done = (r.abs() <= tol) | (closed & (hi - lo <= eps * (1 + x.abs())))
        if bool(done.all()):
            return x, it
        # Newton is trusted inside the bracket, within twice the current expansion step on
        # an open side (so one flat point cannot throw x to 1e300), and while it halves |r|.
        newton = x - r / dy
        reach_lo = torch.where(torch.isinf(lo), hi - 2 * step, lo)
        reach_hi = torch.where(torch.isinf(hi), lo + 2 * step, hi)
        ok = (newton > reach_lo) & (newton < reach_hi) & torch.isfinite(newton) & (r.abs() <= 0.5 * prev)
        # Otherwise bisect a closed bracket, or step outwards from the known side, doubling.
        outward = torch.where(torch.isinf(hi), lo + step, hi - step)
        fallback = torch.where(closed, 0.5 * (lo + hi), outward)
        step = torch.where(closed, step, 2 * step)
        prev = r.abs()
        x = torch.where(done, x, torch.where(ok, newton, fallback))
    worst = float(r.abs().max())
    raise InversionError(
        f"root-find did not converge in {max_iter} evaluations: "
        f"{int((~done).sum())} of {done.numel()} entries unsolved, worst residual {worst:.3g} "
        f"(tolerance {tol:g})"
    )


def invert_autoregressive(
    dim_solver: Callable[[Tensor, int], Scalar],
    z: Tensor,
    tol: float | None = None,
    max_iter: int = MAX_ITER,
) -> tuple[Tensor, Solves]:
    """Inverts an autoregressive map f with f_i increasing in x_i, dimension by dimension.

    Arguments:
        dim_solver: (x, i) -> the scalar function x_i -> (f_i, df_i/dx_i), with x[:, :i]
            already solved. It may do per-dimension work once (e.g. a conditioner pass).
        z: targets (batch, d).

    Returns:
        x (batch, d) with f(x) = z, and the evaluations spent per dimension.
    """
    solves = Solves()
    x = z.clone()
    with torch.no_grad():
        for i in range(z.shape[-1]):
            xi, n = solve_increasing(dim_solver(x, i), z[:, i], x[:, i], tol, max_iter)
            x[:, i] = xi
            solves.evaluations.append(n)
    return x, solves
