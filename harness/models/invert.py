"""Numerical inversion of monotone autoregressive maps (NAF, B-NAF).

Three solvers (:mod:`.solvers` names them):

- ``bisection`` (the reference): each dimension in autoregressive order; a bracket
  doubles outwards from the start until it holds the root, then halves.
- ``newton``: each dimension in order, safeguarded Newton steps with the diagonal
  derivative the log-det already gives; a step that leaves the bracket, or does not
  halve the residual, is replaced by bisection.
- ``fixed-point``: every dimension at once, bracketed Newton steps on the diagonal
  (a nonlinear Jacobi iteration); dimension i settles once the dimensions before it
  have, so it stops when every residual is within tolerance, not after d rounds.

A value is accepted only when it is finite and either its residual is within the
tolerance, or its bracket has closed to floating-point resolution with a residual the
local slope accounts for. Otherwise the iteration cap raises :class:`InversionError`
naming the dimension, the worst residual and the tolerance: no solve returns a
silently wrong value.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .solvers import SolveStats

# |f(x) - z| <= TOLERANCE * max(1, |z|) counts as solved, per dtype.
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12, torch.float16: 1e-2, torch.bfloat16: 1e-2}
MAX_ITER = 100

Scalar = Callable[[Tensor], tuple[Tensor, Tensor]]


class InversionError(RuntimeError):
    """A root-find hit its iteration cap, or met no finite root."""


def tolerance(target: Tensor, tol: float | None = None) -> Tensor:
    """The absolute residual tolerance of each entry of ``target``."""
    tol = TOLERANCE.get(target.dtype, 1e-5) if tol is None else tol
    return tol * target.abs().clamp_min(1)


def solve_increasing(
    fn: Scalar,
    target: Tensor,
    x0: Tensor,
    *,
    method: str = "newton",
    tol: float | None = None,
    max_iter: int | None = None,
    coupled: bool = False,
    compiled: bool = False,
) -> tuple[Tensor, int]:
    """Solves fn(x) = target element-wise, fn increasing in each entry.

    Arguments:
        fn: x -> (fn(x), dfn/dx element-wise), all of x's shape.
        target: the values to reach, x's shape.
        x0: starting point.
        method: ``newton`` (safeguarded) or ``bisection``.
        tol: relative residual tolerance; default from :data:`TOLERANCE` by dtype.
        max_iter: cap on evaluations of fn; default :data:`MAX_ITER`.
        coupled: x is (batch, d) and fn is autoregressive along d, as in a Jacobi
            iteration: entry i's function is fixed only once entries < i are solved,
            so until then its bracket holds only this iteration's sign, and Newton
            steps are taken without the residual-halving test until then.
        compiled: take each step's bookkeeping as one compiled pass
            (:func:`harness.models.kernels.root_step`) where :func:`compiled_steps`
            allows: the same steps, without ~60 small torch ops per step.

    Returns:
        x and the number of evaluations of fn.
    """
    max_iter = MAX_ITER if max_iter is None else max_iter
    tol_abs = tolerance(target, tol)
    eps = 4 * torch.finfo(target.dtype).eps
    if compiled and not coupled and compiled_steps(x0, target):
        return _solve_compiled(fn, target, x0, tol_abs, eps, method, max_iter)
    x = x0.clone()
    lo = torch.full_like(x, -torch.inf)
    hi = torch.full_like(x, torch.inf)
    step = 1 + x.abs()
    prev = torch.full_like(x, torch.inf)
    settled = done = torch.zeros_like(x, dtype=torch.bool)
    for it in range(1, max_iter + 1):
        y, dy = fn(x)
        r = y - target
        if coupled:  # entries before i accepted last time, so frozen since: f_i has not moved
            settled = torch.cumprod(done, -1).roll(1, -1).bool()
            settled[..., 0] = True
            lo, hi = torch.where(settled, lo, -torch.inf), torch.where(settled, hi, torch.inf)
        lo = torch.where(r < 0, x, lo)
        hi = torch.where(r > 0, x, hi)
        closed = torch.isfinite(lo) & torch.isfinite(hi)
        width = hi - lo
        # at resolution, the residual must be one the slope across the bracket explains
        pinned = closed & (width <= eps * (1 + x.abs())) & (r.abs() <= 2 * dy.abs() * width + tol_abs)
        done = torch.isfinite(x) & torch.isfinite(r) & ((r.abs() <= tol_abs) | pinned)
        if bool(done.all()):
            return x, it
        # Otherwise bisect a closed bracket, or step outwards from the known side, doubling.
        outward = torch.where(torch.isinf(hi), lo + step, hi - step)
        fallback = torch.where(closed, 0.5 * (lo + hi), outward)
        if method == "newton":
            # Newton is trusted inside the bracket, within twice the expansion step on an open
            # side (so one flat point cannot throw x to 1e300), and while it halves |r|.
            newton = x - r / dy
            reach_lo = torch.where(torch.isinf(lo), hi - 2 * step, lo)
            reach_hi = torch.where(torch.isinf(hi), lo + 2 * step, hi)
            ok = (newton > reach_lo) & (newton < reach_hi) & torch.isfinite(newton)
            # (an entry whose function still moves cannot be held to it)
            ok &= (r.abs() <= 0.5 * prev) | ~settled if coupled else r.abs() <= 0.5 * prev
            fallback = torch.where(ok, newton, fallback)
        step = torch.where(closed, step, 2 * step)
        prev = r.abs()
        x = torch.where(done, x, fallback)
    raise _unsolved(done, r, tol_abs, "fixed-point" if coupled else method, max_iter)


def _unsolved(done: Tensor, r: Tensor, tol_abs: Tensor, name: str, max_iter: int) -> InversionError:
    bad = ~done
    worst = float(torch.where(bad, r.abs().nan_to_num(torch.inf), 0).max())
    where = ""
    if r.ndim == 2:  # (batch, d): name the dimension with the worst residual
        column = int(torch.where(bad, r.abs().nan_to_num(torch.inf), -1).amax(0).argmax())
        where = f"dimension {column}: "
    return InversionError(
        f"{where}{name} did not converge in {max_iter} evaluations: {int(bad.sum())} of {bad.numel()} "
        f"entries unsolved, worst residual {worst:.3g} (tolerance {float(tol_abs.max()):.3g})"
    )


def compiled_steps(x0: Tensor, target: Tensor) -> bool:
    """Whether a scalar root-find runs its steps as one compiled pass each
    (:func:`harness.models.kernels.root_step`): one-dimensional float32 or float64
    tensors on the CPU, outside autograd (the solvers run under no_grad)."""
    return (
        x0.ndim == 1
        and x0.device.type == "cpu"
        and x0.dtype in (torch.float32, torch.float64)
        and target.dtype == x0.dtype
        and not torch.is_grad_enabled()
    )


def _solve_compiled(
    fn: Scalar, target: Tensor, x0: Tensor, tol_abs: Tensor, eps: float, method: str, max_iter: int
) -> tuple[Tensor, int]:
    """:func:`solve_increasing`'s loop with each step's bookkeeping (bracket, acceptance,
    next point) as one compiled pass: the same arithmetic, entry by entry, where the
    torch loop dispatches ~60 small ops per step. Each step writes a new x: what ``fn``
    kept of an earlier point stays as it was."""
    from . import kernels  # numba: imported where first used

    x = x0.contiguous().clone()
    target, tol_abs = target.contiguous(), tol_abs.contiguous()
    lo, hi = torch.full_like(x, -torch.inf), torch.full_like(x, torch.inf)
    step, prev, r = 1 + x.abs(), torch.full_like(x, torch.inf), torch.empty_like(x)
    done = torch.zeros_like(x, dtype=torch.bool)
    state = [t.numpy() for t in (target, tol_abs, lo, hi, step, prev, done, r)]
    for it in range(1, max_iter + 1):
        y, dy = fn(x)
        x_next = torch.empty_like(x)
        left = kernels.root_step(
            x.numpy(), y.contiguous().numpy(), dy.contiguous().numpy(), *state, method == "newton", eps, x_next.numpy()
        )
        if left == 0:
            return x, it
        x = x_next
    raise _unsolved(done, r, tol_abs, method, max_iter)


def invert_autoregressive(
    dim_solver: Callable[[Tensor, int], Scalar],
    z: Tensor,
    *,
    method: str = "newton",
    tol: float | None = None,
    max_iter: int | None = None,
    solved: Callable[[int], None] | None = None,
    compiled: bool = False,
) -> tuple[Tensor, SolveStats]:
    """Inverts an autoregressive map f with f_i increasing in x_i, dimension by dimension.

    Arguments:
        dim_solver: (x, i) -> the scalar function x_i -> (f_i, df_i/dx_i), with x[:, :i]
            already solved. It may do per-dimension work once (e.g. a conditioner pass).
        z: targets (batch, d).
        method: ``newton`` or ``bisection``.
        solved: called with i once x[:, i] is final (e.g. to keep its activations).
        compiled: each root-find's steps as compiled passes (:func:`solve_increasing`).

    Returns:
        x (batch, d) with f(x) = z, and the evaluations spent.
    """
    stats = SolveStats(method)
    x = z.clone()
    with torch.no_grad():
        for i in range(z.shape[-1]):
            try:
                xi, n = solve_increasing(
                    dim_solver(x, i), z[:, i], x[:, i], method=method, tol=tol, max_iter=max_iter, compiled=compiled
                )
            except InversionError as e:
                raise InversionError(f"dimension {i}: {e}") from None
            x[:, i] = xi
            if solved is not None:
                solved(i)
            stats.evaluations += n
            stats.iterations += n
    return x, stats


def implicit_grad(fn: Callable[[Tensor], Tensor], x: Tensor, z: Tensor, params: list[Tensor]) -> Tensor:
    """x with the gradients of x = f^-1(z), for x solved without a graph (f(x) = z).

    Where autograd needs them (z or a parameter requires grad), returns
    ``x - J^-1 (f(x) - z)`` with the Jacobian J of ``fn`` at x held constant: its value
    is x plus one Newton correction (within the solver's tolerance), and by the
    implicit function theorem its derivatives are dx/dz = J^-1 and dx/dtheta =
    -J^-1 df/dtheta. J is lower triangular (f is autoregressive in its own order).
    Costs a (batch, d, d) Jacobian per layer: draw samples under no_grad when no
    gradient is wanted.
    """
    if not torch.is_grad_enabled() or not (z.requires_grad or any(p.requires_grad for p in params)):
        return x
    x = x.detach()
    with torch.no_grad():
        jac = torch.func.vmap(torch.func.jacrev(lambda xi: fn(xi[None])[0]))(x)
    step = torch.linalg.solve_triangular(jac, (fn(x) - z).unsqueeze(-1), upper=False).squeeze(-1)
    return x - step


def invert_coupled(
    fn: Callable[[Tensor], tuple[Tensor, Tensor]],
    z: Tensor,
    *,
    tol: float | None = None,
    max_iter: int | None = None,
) -> tuple[Tensor, SolveStats]:
    """Inverts an autoregressive map f by the ``fixed-point`` solver: every dimension at
    once, ``fn(x) -> (f(x), diagonal of df/dx)``, both (batch, d), one pass per iteration.
    The cap defaults to :data:`MAX_ITER` + d: in the worst case each dimension waits
    for the one before.

    Returns x (batch, d) and the evaluations spent (d per iteration).
    """
    max_iter = MAX_ITER + z.shape[-1] if max_iter is None else max_iter
    with torch.no_grad():
        x, n = solve_increasing(fn, z, z.clone(), method="newton", tol=tol, max_iter=max_iter, coupled=True)
    return x, SolveStats("fixed-point", evaluations=n * z.shape[-1], iterations=n)
