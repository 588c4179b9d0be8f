"""Masked affine autoregressive layers, and MAF (Papamakarios et al., 2017)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Cost, Flow, Transform
from .invert import TOLERANCE, InversionError
from .masked import LOG_SCALE_BOUND, MADE, Columns, clamp_log_scale, default_hidden, in_place_ok, set_column
from .solvers import DEFAULT, SolveStats, check_solver


class MaskedAffine(Transform):
    """Affine autoregressive layer.

    Fast direction, one MADE pass: ``v_i = u_i exp(s_i(u_<i)) + m_i(u_<i)``.
    Slow direction: ``u_i = (v_i - m_i(u_<i)) exp(-s_i(u_<i))``, solved by ``solver``:

    - ``sequential`` (the reference): d MADE passes, one per dimension.
    - ``incremental``: d steps that each compute only the hidden units of the degree
      just made known, one MADE pass of arithmetic in all (exact).
    - ``fixed-point``: Jacobi iterations ``u <- (v - m(u)) exp(-s(u))``, one full MADE
      pass each, until every residual ``|u exp(s) + m - v|`` is within tolerance; after
      d iterations the first d dimensions are exact, so it stops by then.

    This is Papamakarios et al.'s ``(x - mu) exp(-alpha)`` reparametrised.

    Arguments:
        dim: d.
        hidden: MADE hidden sizes.
        fast: which method is the fast direction: ``forward`` (data->base, MAF) or
            ``inverse`` (base->data, IAF).
        reverse: autoregressive in the reversed order of the dimensions.
        solver: the slow direction's solver.
        context: features of a context the MADE reads (0: unconditional; harness.models.masked.MADE).
    """

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int],
        fast: Literal["forward", "inverse"],
        reverse: bool = False,
        solver: str = DEFAULT["affine"],
        context: int = 0,
    ):
        super().__init__()
        self.dim, self.fast, self.solver = dim, fast, check_solver("affine", solver)
        self.made = MADE(dim, hidden, per_dim=2, reverse=reverse, context=context)
        self.stats: SolveStats | None = None  # what the last slow-direction call spent
        # the incremental solve as a compiled loop where no gradient is wanted (harness.models.kernels)
        self.kernel = True

    @staticmethod
    def _shift_scale(out: Tensor) -> tuple[Tensor, Tensor]:
        m, raw = out.unbind(-1)
        return m, clamp_log_scale(raw)

    def _fast(self, u: Tensor, with_ladj: bool = True) -> tuple[Tensor, Tensor | None]:
        if in_place_ok(u, *self.parameters()):
            return self._fast_columns(u, with_ladj)
        m, s = self._shift_scale(self.made(u))
        ladj = s.sum(-1) if with_ladj else None
        return torch.addcmul(m, u, s.exp()), ladj

    def _fast_columns(self, u: Tensor, with_ladj: bool) -> tuple[Tensor, Tensor | None]:
        """The fast direction where no graph needs the result, on the points as columns
        (:meth:`MADE.columns`): shift and log-scale are contiguous (d, batch) blocks and
        every step works in place in the MADE's output. The result is the transpose of
        that block, which the next layer reads as its columns without a copy."""
        uT = u.T if u.T.is_contiguous() else u.T.contiguous()
        out = self.made.columns(uT)
        m, s = out[: self.dim], clamp_log_scale(out[self.dim :])
        ladj = s.sum(0) if with_ladj else None
        return m.addcmul_(uT, s.exp_()).T, ladj

    def _slow(self, v: Tensor, with_ladj: bool = True) -> tuple[Tensor, Tensor | None]:
        solve = {"sequential": self._sequential, "incremental": self._incremental, "fixed-point": self._fixed_point}
        u, ladj, self.stats = solve[self.solver](v, with_ladj)
        return u, ladj

    def _sequential(self, v: Tensor, with_ladj: bool) -> tuple[Tensor, Tensor | None, SolveStats]:
        net = self.made.network()
        u = torch.zeros_like(v)
        ladj = v.new_zeros(v.shape[0]) if with_ladj else None
        for i in self.made.order:
            # Output i depends only on the dimensions before it in the order, solved by now.
            m, s = self._shift_scale(net(u, i))
            u = set_column(u, i, (v[:, i] - m) * torch.exp(-s))
            if ladj is not None:
                ladj = ladj - s
        return u, ladj, SolveStats("sequential", self.dim, self.dim)

    def _incremental(self, v: Tensor, with_ladj: bool) -> tuple[Tensor, Tensor | None, SolveStats]:
        in_place = in_place_ok(v, *self.parameters())
        if in_place and self.kernel and v.device.type == "cpu" and self.made.activation is F.relu:
            return self._kernel(v, with_ladj)
        output = self.made.incremental(v, in_place)
        u = Columns(v.shape[0], self.dim, v, in_place)  # solved dimensions, in solve order
        ladj = v.new_zeros(v.shape[0]) if with_ladj else None
        for p, i in enumerate(self.made.order):
            m, s = self._shift_scale(output(p, u.get()))
            u.append(((v[:, i] - m) * torch.exp(-s))[:, None])
            if ladj is not None:
                ladj = ladj.sub_(s) if in_place else ladj - s
        x = u.get()
        return (x.flip(-1) if self.made.order[0] else x), ladj, SolveStats("incremental", self.dim, self.dim)

    def _kernel(self, v: Tensor, with_ladj: bool) -> tuple[Tensor, Tensor | None, SolveStats]:
        """The incremental solve as one compiled loop (harness.models.kernels): the same
        arithmetic, without torch's per-op overhead at each of the d steps."""
        from . import kernels  # numba (~0.4 s to import): loaded where a compiled solve first runs

        made = self.made
        hidden, ends, w_out, b_out, term = made.solve_weights(v)  # w_out, b_out: shift and log-scale, in solve order
        with torch.no_grad():
            ladj = v.new_zeros(v.shape[0])
            solved = v.flip(-1) if made.order[0] else v
            u = kernels.affine_solve(
                solved.T.contiguous().numpy(),
                hidden,
                ends,
                w_out[0],
                w_out[1],
                b_out[0],
                b_out[1],
                LOG_SCALE_BOUND,
                ladj.numpy(),
                term,
            )
        x = torch.from_numpy(u).T
        x = x.flip(-1) if made.order[0] else x.contiguous()
        return x, (ladj if with_ladj else None), SolveStats("incremental", self.dim, self.dim)

    def _fixed_point(self, v: Tensor, with_ladj: bool) -> tuple[Tensor, Tensor | None, SolveStats]:
        tol = TOLERANCE.get(v.dtype, 1e-5)
        u = v
        for it in range(1, self.dim + 2):  # d updates make it exact; one more pass checks
            m, s = self._shift_scale(self.made(u))
            r = torch.addcmul(m, u, s.exp()) - v
            # relative to the terms summed, whose rounding the residual carries
            bound = tol * torch.maximum(v.abs(), m.abs()).clamp_min(1)
            if bool((r.abs() <= bound).all()):
                ladj = -s.sum(-1) if with_ladj else None
                return u, ladj, SolveStats("fixed-point", it * self.dim, it)
            u = (v - m) * torch.exp(-s)
        worst = float(r.abs().nan_to_num(torch.inf).max())
        raise InversionError(
            f"fixed-point did not converge in {self.dim + 1} passes (d = {self.dim}): worst residual {worst:.3g} "
            f"(tolerance {tol:g} relative); the input or the weights are out of floating-point range"
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._fast(x) if self.fast == "forward" else self._slow(x)

    def inverse(self, y: Tensor) -> Tensor:
        return (self._slow if self.fast == "forward" else self._fast)(y, with_ladj=False)[0]


def build_maf(
    dim: int,
    *,
    flows: int = 5,
    hidden: Sequence[int] | None = None,
    solver: str = DEFAULT["affine"],
    context: int = 0,
) -> Flow:
    """Masked autoregressive flow: K MADE-affine layers, the order reversed from one
    to the next (in the masks, not by permuting the data).

    ``log_prob`` is one MADE pass per layer; ``sample`` solves d dimensions per layer
    with ``solver`` (``sequential``, ``incremental`` or ``fixed-point``). With
    ``context`` > 0 every MADE reads a context of that many features (conditional MAF,
    Papamakarios et al., section 3.4).
    """
    hidden = default_hidden(dim) if hidden is None else hidden
    layers = [
        MaskedAffine(dim, hidden, fast="forward", reverse=k % 2 == 1, solver=solver, context=context)
        for k in range(flows)
    ]
    cost = Cost(log_prob="parallel", sample="sequential", family="affine")
    return Flow(dim, layers, cost, family="maf", context=context)
