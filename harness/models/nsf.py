"""Autoregressive rational-quadratic neural spline flow, RQ-NSF (Durkan et al., 2019)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Cost, Flow, Transform
from .invert import TOLERANCE, InversionError
from .masked import MADE, Columns, default_hidden, in_place_ok, set_column
from .solvers import DEFAULT, SolveStats, check_solver
from .spline import (
    BINS,
    BOUND,
    MIN_DERIVATIVE,
    MIN_HEIGHT,
    MIN_WIDTH,
    check_spline,
    params_per_dim,
    rq_forward,
    rq_inverse,
)


class MaskedSpline(Transform):
    """Rational-quadratic spline autoregressive layer.

    Fast direction (data->base), one MADE pass: ``z_i = g(x_i; theta_i(x_<i))`` with g
    the monotonic rational-quadratic spline of :mod:`.spline` on [-B, B] (identity
    outside). Slow direction (base->data): ``x_i = g^-1(z_i; theta_i(x_<i))``, each
    dimension in closed form once the ones before it are known, solved by ``solver``:

    - ``sequential`` (the reference): d MADE passes, one per dimension.
    - ``incremental``: d steps that each compute only the hidden units of the degree
      just made known, one MADE pass of arithmetic in all (exact).
    - ``fixed-point``: Jacobi iterations, one full MADE pass each; exact after d, as the
      inverses of zuko's, nflows' and normflows' autoregressive transforms take them.

    Arguments:
        dim: d.
        hidden: MADE hidden sizes.
        bins: K, the spline's bins.
        bound: B, the spline's interval is [-B, B].
        reverse: autoregressive in the reversed order of the dimensions.
        solver: the slow direction's solver.
        context: features of a context the MADE reads (0: unconditional).
    """

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int],
        bins: int = BINS,
        bound: float = BOUND,
        reverse: bool = False,
        solver: str = DEFAULT["affine"],
        context: int = 0,
    ):
        super().__init__()
        self.bins, self.bound = check_spline(bins, bound)
        self.dim, self.solver = dim, check_solver("affine", solver)
        self.made = MADE(dim, hidden, per_dim=params_per_dim(self.bins), reverse=reverse, context=context)
        self.stats: SolveStats | None = None  # what the last slow-direction call spent
        # the incremental solve as a compiled loop where no gradient is wanted (harness.models.spline_kernel)
        self.kernel = True

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z, log_det = rq_forward(x, self._params(x), self.bound)
        return z, log_det.sum(-1)

    def _params(self, x: Tensor) -> Tensor:
        """The splines' parameters (batch, 3 K - 1, d): the MADE's output as it lies in memory."""
        return self.made(x).transpose(-1, -2)

    def inverse(self, z: Tensor) -> Tensor:
        solve = {"sequential": self._sequential, "incremental": self._incremental, "fixed-point": self._fixed_point}
        x, self.stats = solve[self.solver](z)
        return x

    def _sequential(self, z: Tensor) -> tuple[Tensor, SolveStats]:
        net = self.made.network()
        x = torch.zeros_like(z)
        for i in self.made.order:
            # output i depends only on the dimensions before it in the order, solved by now
            x = set_column(x, i, rq_inverse(z[:, i, None], net(x, i)[..., None], self.bound)[0][:, 0])
        return x, SolveStats("sequential", self.dim, self.dim)

    def _incremental(self, z: Tensor) -> tuple[Tensor, SolveStats]:
        in_place = in_place_ok(z, *self.parameters())
        if in_place and self.kernel and z.device.type == "cpu" and self.made.activation is F.relu:
            return self._kernel(z), SolveStats("incremental", self.dim, self.dim)
        output = self.made.incremental(z, in_place)
        x = Columns(z.shape[0], self.dim, z, in_place)  # solved dimensions, in solve order
        for p, i in enumerate(self.made.order):
            x.append(rq_inverse(z[:, i, None], output(p, x.get())[..., None], self.bound)[0])
        solved = x.get()
        return (solved.flip(-1) if self.made.order[0] else solved), SolveStats("incremental", self.dim, self.dim)

    @torch.no_grad()
    def _kernel(self, z: Tensor) -> Tensor:
        """The incremental solve as one compiled loop (harness.models.spline_kernel):
        the same arithmetic, without torch's per-op overhead at each of the d steps."""
        from .spline_kernel import spline_solve  # numba: loaded where a compiled solve first runs

        made = self.made
        hidden, ends, w_out, b_out, term = made.solve_weights(z)  # w_out, b_out: each of the 3K - 1 parameters
        solved = z.flip(-1) if made.order[0] else z
        floors = (MIN_WIDTH, MIN_HEIGHT, MIN_DERIVATIVE)
        x = spline_solve(solved.T.contiguous().numpy(), hidden, ends, w_out, b_out, self.bins, self.bound, floors, term)
        x = torch.from_numpy(x).T
        return x.flip(-1) if made.order[0] else x.contiguous()

    def _fixed_point(self, z: Tensor) -> tuple[Tensor, SolveStats]:
        tol = TOLERANCE.get(z.dtype, 1e-5)
        x = z
        for it in range(1, self.dim + 2):  # d updates make it exact; one more pass checks
            params = self._params(x)
            residual = rq_forward(x, params, self.bound)[0] - z
            if bool((residual.abs() <= tol * z.abs().clamp_min(1)).all()):
                return x, SolveStats("fixed-point", it * self.dim, it)
            x = rq_inverse(z, params, self.bound)[0]
        worst = float(residual.abs().nan_to_num(torch.inf).max())
        raise InversionError(
            f"fixed-point did not converge in {self.dim + 1} passes (d = {self.dim}): worst residual {worst:.3g} "
            f"(tolerance {tol:g} relative); the input or the weights are out of floating-point range"
        )


def build_nsf(
    dim: int,
    *,
    flows: int = 5,
    hidden: Sequence[int] | None = None,
    bins: int = BINS,
    bound: float = BOUND,
    solver: str = DEFAULT["affine"],
    context: int = 0,
) -> Flow:
    """Autoregressive neural spline flow: K MADE-spline layers, the order reversed from
    one to the next (in the masks, not by permuting the data).

    Arguments:
        flows: layers.
        hidden: MADE hidden sizes (MAF's by default).
        bins: K bins per spline (the paper's 8).
        bound: B, each spline acts on [-B, B] and is the identity outside (the paper's 3).
        solver: ``sample``'s solver (``sequential``, ``incremental`` or ``fixed-point``).
        context: features of a context every MADE reads (0: unconditional), as zuko's
            and sbi's conditional NSF.

    ``log_prob`` is one MADE pass per layer; ``sample`` solves d dimensions per layer,
    each in closed form (the root of a quadratic).
    """
    hidden = default_hidden(dim) if hidden is None else hidden
    layers = [
        MaskedSpline(dim, hidden, bins, bound, reverse=k % 2 == 1, solver=solver, context=context) for k in range(flows)
    ]
    cost = Cost(log_prob="parallel", sample="sequential", family="affine")
    return Flow(dim, layers, cost, family="nsf", context=context)
