"""Block neural autoregressive flow (De Cao et al., 2019)."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserError
from . import invert
from .base import Cost, Flow, Transform, stack
from .invert import InversionError, implicit_grad, invert_autoregressive, invert_coupled
from .masked import floored, in_place_ok
from .solvers import DEFAULT, SolveStats, check_solver

RESIDUALS = ("gated", "gated-but-last", "none")
KERNEL_BLOCK = 8  # dimensions per compiled block of the Newton solve; a GEMM per layer between blocks
KERNEL_DTYPES = (torch.float32, torch.float64)


class BlockMaskedLinear(nn.Module):
    """Linear map R^(d b) -> R^(d a) with a block lower-triangular weight (eq. 7-8).

    Diagonal blocks are exp(weight), strictly positive; blocks below are free; blocks
    above are masked to zero. Each row is weight-normalised, ``exp(s) v / |v|``
    (appendix C). ``mask`` marks the entries that can be non-zero.
    """

    def __init__(self, dim: int, block_in: int, block_out: int):
        super().__init__()
        self.dim, self.block_in, self.block_out = dim, block_in, block_out
        row = torch.arange(dim * block_out) // block_out
        col = torch.arange(dim * block_in) // block_in
        mask, diag = row[:, None] >= col[None, :], row[:, None] == col[None, :]
        bound = math.sqrt(6 / (block_in + block_out))  # Xavier-uniform on one block
        self.weight = nn.Parameter(torch.empty(mask.shape).uniform_(-bound, bound) * mask)
        self.log_scale = nn.Parameter(torch.rand(dim * block_out).log())
        fan = 1 / math.sqrt(dim * block_out)
        self.bias = nn.Parameter(torch.empty(dim * block_out).uniform_(-fan, fan))
        self.register_buffer("mask", mask.to(torch.get_default_dtype()))
        self.register_buffer("diag", diag)
        # the free blocks below the diagonal; not saved: the mask and the diagonal define it
        self.register_buffer("below", mask.to(torch.get_default_dtype()) * ~diag, persistent=False)

    def _blocks(self, t: Tensor) -> Tensor:
        """The diagonal blocks of a (d a, d b) matrix: a (d, a, b) view."""
        d, a, b = self.dim, self.block_out, self.block_in
        return t.view(d, a, d, b).diagonal(dim1=0, dim2=2).permute(2, 0, 1)

    def weights(self) -> tuple[Tensor, Tensor]:
        """The weight (d a, d b) and the log of its diagonal blocks (d, a, b). exp is taken
        on the diagonal blocks only (d a b entries, not d a d b)."""
        v = self.weight * self.below
        self._blocks(v).copy_(self._blocks(self.weight).exp())  # autograd sees through the copy
        log_norm = torch.linalg.vector_norm(v, dim=1, keepdim=True).log()
        w = (self.log_scale[:, None] - log_norm).exp() * v
        log_diag = self.log_scale.view(self.dim, self.block_out, 1) + self._blocks(self.weight)
        return w, log_diag - log_norm.view(self.dim, self.block_out, 1)

    def columns(self, h: Tensor, w: Tensor) -> Tensor:
        """w @ h + bias feature-major, h (d b, n) -> (d a, n), in block-triangular panels:
        each panel of block rows multiplies only the columns up to its last block, so the
        blocks the mask holds at zero above the diagonal are not multiplied."""
        d, a, b = self.dim, self.block_out, self.block_in
        edges = sorted({round(d * k / PANELS) for k in range(PANELS + 1)})
        parts = [
            torch.addmm(self.bias[lo * a : hi * a, None], w[lo * a : hi * a, : hi * b], h[: hi * b])
            for lo, hi in zip(edges, edges[1:])
        ]
        return torch.cat(parts) if len(parts) > 1 else parts[0]


PANELS = 4  # block-row panels of a block-triangular GEMM: (P + 1) / 2P of the dense FLOPs


def tanh_with_log_derivative(h: Tensor) -> tuple[Tensor, Tensor]:
    """tanh(h) and log(1 - tanh(h)^2) = 2 (log 2 - |h| - softplus(-2|h|)), stable for
    large |h|; in place on fresh buffers where no gradient needs h."""
    if in_place_ok(h):
        a = h.abs()
        log_der = floored(a.mul(-2)).exp_().log1p_().add_(a).sub_(math.log(2)).mul_(-2)  # softplus(-2|h|)
        return h.tanh_(), log_der
    return torch.tanh(h), tanh_log_derivative(h)


def tanh_log_derivative(h: Tensor) -> Tensor:
    """log(1 - tanh(h)^2), stable for large |h|."""
    return 2 * (math.log(2) - h - F.softplus(-2 * h))


def log_bmm(log_m: Tensor, log_v: Tensor) -> Tensor:
    """log(exp(log_m) @ exp(log_v)) per block, feature-major: log_m (d, a, b), log_v (d, b, n)
    -> (d, a, n); each column shifted by its maximum, so the largest term is exp(0)."""
    shift = log_v.amax(1, keepdim=True)
    if in_place_ok(log_v):
        return torch.bmm(log_m.exp(), floored(log_v - shift).exp_()).log_().add_(shift)
    return torch.bmm(log_m.exp(), floored(log_v - shift).exp()).log() + shift


def log_matvec(log_m: Tensor, log_v: Tensor) -> Tensor:
    """log(exp(log_m) @ exp(log_v)) per block: log_m (d, a, b), log_v (n, d, b) -> (n, d, a).

    Batched matrix-vector products shifted by each vector's maximum, so the largest
    term is exp(0): the log-matrix product of De Cao et al. (appendix D) without
    materialising the (n, d, a, b) tensor a logsumexp would need.
    """
    shift = log_v.amax(-1, keepdim=True)
    prod = torch.bmm((log_v - shift).exp().transpose(0, 1), log_m.exp().transpose(1, 2))  # (d, n, a)
    return prod.transpose(0, 1).log() + shift


class BlockAutoregressive(Transform):
    """One B-NAF transformation, data->base: block layers 1 -> a -> ... -> a -> 1 per
    dimension with tanh between them, optionally with a gated residual
    ``sigmoid(g) f(x) + (1 - sigmoid(g)) x``.

    tanh is bounded, so without the residual f maps onto a bounded set; the gated
    residual adds a linear term that makes the map onto R, so the density normalises.
    The log-det is a log-matrix product of the diagonal blocks (eq. 10).

    ``inverse`` solves by ``solver``. ``bisection`` and ``newton`` go dimension by
    dimension with the weights built once per call: the solved dimensions' part of
    each block row is computed once per dimension, and each evaluation runs only
    dimension i's diagonal blocks. ``fixed-point`` runs bracketed Newton steps on
    every dimension at once, one pass of this layer per iteration.
    """

    def __init__(self, dim: int, layers: int, hidden_factor: int, gated: bool, solver: str = DEFAULT["monotone"]):
        super().__init__()
        self.dim, self.solver = dim, check_solver("monotone", solver)
        self.blocks = [1] + [hidden_factor] * layers + [1]
        self.linears = nn.ModuleList(BlockMaskedLinear(dim, i, o) for i, o in zip(self.blocks, self.blocks[1:]))
        self.gate = nn.Parameter(torch.randn(1)) if gated else None
        # on the CPU: Newton's solve as compiled loops, bisection's steps as compiled passes (harness.models.kernels)
        self.kernel = True

    def _map(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (n, d) -> y (n, d) and log dy_i/dx_i (n, d), feature-major: the activations
        are (d a, n) and the log-Jacobian's diagonal blocks (d, a, n), so the block
        products are one batched GEMM over the points, and the weights' panels skip the
        blocks held at zero."""
        n, h, log_j = x.shape[0], x.T, None  # log_j: log of the diagonal blocks of dh/dx, (d, a, n)
        last = len(self.linears) - 1
        for k, linear in enumerate(self.linears):
            w, log_diag = linear.weights()  # built anew on each call, as the MADE's: never stale
            h = linear.columns(h, w)
            if log_j is None:  # the first block layer has one input per dimension: its diagonal blocks are columns
                log_j = log_diag[..., :1].expand(-1, -1, n)
            else:
                log_j = log_bmm(log_diag, log_j)
            if k < last:
                h, log_der = tanh_with_log_derivative(h)
                log_der = log_der.view(self.dim, linear.block_out, n)
                log_j = log_der.add_(log_j) if in_place_ok(log_der, log_j) else log_j + log_der
        log_j = log_j.view(self.dim, n)
        if self.gate is not None:
            alpha = torch.sigmoid(self.gate)
            h = alpha * h + (1 - alpha) * x.T
            log_j = torch.logaddexp(F.logsigmoid(self.gate) + log_j, F.logsigmoid(-self.gate))
        return h.T, log_j.T

    def _map_rows(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The same map row-major (points as rows): the reference the tests hold it to."""
        n, h, log_j = x.shape[0], x, None  # log_j: log of the diagonal blocks of dh/dx, (n, d, a)
        last = len(self.linears) - 1
        for k, linear in enumerate(self.linears):
            w, log_diag = linear.weights()
            h = F.linear(h, w, linear.bias)
            # the first block layer has one input per dimension: its diagonal blocks are columns
            log_j = log_diag[..., 0].expand(n, -1, -1) if log_j is None else log_matvec(log_diag, log_j)
            if k < last:
                log_j = log_j + tanh_log_derivative(h).view(n, self.dim, linear.block_out)
                h = torch.tanh(h)
        log_j = log_j.view(n, self.dim)
        if self.gate is not None:
            alpha = torch.sigmoid(self.gate)
            h = alpha * h + (1 - alpha) * x
            log_j = torch.logaddexp(F.logsigmoid(self.gate) + log_j, F.logsigmoid(-self.gate))
        return h, log_j

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y, log_j = self._map(x)
        return y, log_j.sum(-1)

    def _slope_map(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y, log_j = self._map(x)
        return y, log_j.exp()

    def inverse(self, y: Tensor) -> Tensor:
        x = self._solve(y)
        return implicit_grad(lambda x: self._map(x)[0], x, y, list(self.parameters()))

    def _solve(self, y: Tensor) -> Tensor:
        if self.solver == "fixed-point":
            x, self.stats = invert_coupled(self._slope_map, y)
            return x
        if self.kernel and self.solver == "newton" and y.device.type == "cpu" and y.dtype in KERNEL_DTYPES:
            return self._kernel_solve(y)
        with torch.no_grad():
            weights = [(*linear.weights(), linear.bias) for linear in self.linears]
            # activations of the solved dimensions' blocks, layer by layer (layer 0 is x)
            acts = [y.new_zeros(y.shape[0], self.dim * linear.block_in) for linear in self.linears]
            alpha = torch.sigmoid(self.gate) if self.gate is not None else None
        last = len(self.linears) - 1
        kept: list[Tensor] = []

        def dim_solver(x: Tensor, i: int):
            # the solved dimensions' contribution to block row i of each layer, once
            consts, diags = [], []
            for (w, log_diag, bias), linear, a in zip(weights, self.linears, acts):
                rows = slice(i * linear.block_out, (i + 1) * linear.block_out)
                known = i * linear.block_in
                consts.append(F.linear(a[:, :known], w[rows, :known], bias[rows]))
                diags.append(log_diag[i].exp())  # (block_out, block_in)

            def fn(xi: Tensor) -> tuple[Tensor, Tensor]:
                h, slope = xi[:, None], torch.ones_like(xi)[:, None]  # (n, 1) and dh/dx_i
                kept.clear()
                for k, (c, diag) in enumerate(zip(consts, diags)):
                    kept.append(h)
                    h, slope = torch.addmm(c, h, diag.T), slope @ diag.T
                    if k < last:
                        h = torch.tanh(h)
                        slope = slope * (1 - h.square())
                yi, dyi = h[:, 0], slope[:, 0]
                if alpha is not None:
                    yi, dyi = alpha * yi + (1 - alpha) * xi, alpha * dyi + (1 - alpha)
                return yi, dyi

            return fn

        def solved(i: int) -> None:  # the last evaluation was at the solution: keep its blocks
            for a, h, linear in zip(acts, kept, self.linears):
                a[:, i * linear.block_in : (i + 1) * linear.block_in] = h

        x, self.stats = invert_autoregressive(dim_solver, y, method=self.solver, solved=solved, compiled=self.kernel)
        return x

    @torch.no_grad()
    def _kernel_solve(self, y: Tensor) -> Tensor:
        """Newton's solve as compiled loops (harness.models.kernels): dimensions in
        blocks of :data:`KERNEL_BLOCK`; within a block, the root-finds of each group of
        :data:`kernels.GROUP` points in lock-step in one compiled loop; after it, one GEMM per layer adds the block's
        activations to the block rows of every later dimension. The arithmetic of the
        eager solve, without its per-op overhead at each step of each dimension."""
        from . import kernels  # numba (~0.4 s to import): loaded where a compiled solve first runs

        n, d = y.shape
        weights = [linear.weights() for linear in self.linears]
        # whole groups of points: the last point repeated (a target in the map's range), dropped after
        y = torch.cat([y, y[-1:].expand(-n % kernels.GROUP, -1)])
        # feature-major (features, points): a group of points is contiguous in each row
        acts = y.new_empty(sum(d * linear.block_in for linear in self.linears), y.shape[0])
        pre = torch.cat([linear.bias[:, None].expand(-1, y.shape[0]) for linear in self.linears])
        act_off = np.cumsum([0] + [d * linear.block_in for linear in self.linears])[:-1]
        pre_off = np.cumsum([0] + [d * linear.block_out for linear in self.linears])[:-1]
        flat_w = torch.cat([w.reshape(-1) for w, _ in weights])
        w_off = np.cumsum([0] + [w.numel() for w, _ in weights])[:-1]
        diag = torch.cat([log_diag.exp().reshape(-1) for _, log_diag in weights])
        diag_off = np.cumsum([0] + [log_diag.numel() for _, log_diag in weights])[:-1]
        alpha = float(torch.sigmoid(self.gate)) if self.gate is not None else 1.0
        tol, eps = invert.TOLERANCE.get(y.dtype, 1e-5), 4 * torch.finfo(y.dtype).eps
        z = y.T.contiguous()
        arrays = (acts.numpy(), act_off, pre.numpy(), pre_off, flat_w.numpy(), w_off, diag.numpy(), diag_off)
        blocks = np.asarray(self.blocks, dtype=np.int64)
        self.stats = SolveStats(self.solver)
        for i0 in range(0, d, KERNEL_BLOCK):
            i1 = min(d, i0 + KERNEL_BLOCK)
            spent = kernels.bnaf_block(
                z.numpy(), n, i0, i1, *arrays, blocks, alpha, self.gate is not None, tol, eps, invert.MAX_ITER
            )
            for j, (evaluations, unsolved, worst) in enumerate(spent):
                if unsolved:
                    raise InversionError(
                        f"dimension {i0 + j}: newton did not converge in {invert.MAX_ITER} evaluations: "
                        f"{int(unsolved)} of {n} entries unsolved, worst residual {worst:.3g} "
                        f"(tolerance {float(invert.tolerance(z[i0 + j]).max()):.3g})"
                    )
                self.stats.evaluations += int(evaluations)
                self.stats.iterations += int(evaluations)
            if i1 == d:
                break
            for (w, _), linear, a, b in zip(weights, self.linears, act_off, pre_off):
                bi, bo = linear.block_in, linear.block_out
                # the block's activations into the block rows of every later dimension
                pre[b + i1 * bo : b + d * bo].addmm_(w[i1 * bo :, i0 * bi : i1 * bi], acts[a + i0 * bi : a + i1 * bi])
        return acts[:d, :n].T.contiguous()


def build_bnaf(
    dim: int,
    *,
    flows: int = 5,
    layers: int = 2,
    hidden_factor: int = 4,
    residual: Literal["gated", "gated-but-last", "none"] = "gated",
    solver: str = DEFAULT["monotone"],
) -> Flow:
    """Block neural autoregressive flow: K B-NAF layers, order reversed between them.

    Arguments:
        layers: hidden block layers L (L + 1 masked linear maps per flow).
        hidden_factor: a, so that each hidden layer has H = a d units.
        residual: ``gated`` on every flow (default; onto R), ``gated-but-last`` as in
            the authors' code, or ``none``. Without a residual on the last flow the map
            is bounded and its density does not normalise.
        solver: ``sample``'s root-finder: ``bisection``, ``newton`` or ``fixed-point``.

    ``log_prob`` is one pass; ``sample`` inverts each layer numerically.
    """
    if residual not in RESIDUALS:
        raise UserError(f"unknown residual {residual!r}; allowed: {', '.join(RESIDUALS)}")
    gated = [residual == "gated" or (residual == "gated-but-last" and k < flows - 1) for k in range(flows)]
    layers_ = [BlockAutoregressive(dim, layers, hidden_factor, g, solver) for g in gated]
    return Flow(
        dim, stack(layers_, dim), Cost(log_prob="parallel", sample="iterative", family="monotone"), family="bnaf"
    )
