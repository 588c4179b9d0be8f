"""Block neural autoregressive flow (De Cao et al., 2019)."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Cost, Flow, Transform, stack
from .invert import invert_autoregressive

RESIDUALS = ("gated", "gated-but-last", "none")


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

    def weights(self) -> tuple[Tensor, Tensor]:
        """The weight (d a, d b) and the log of its diagonal blocks (d, a, b)."""
        v = torch.where(self.diag, self.weight.exp(), self.weight) * self.mask
        log_norm = 0.5 * v.square().sum(1, keepdim=True).log()
        w = (self.log_scale[:, None] - log_norm).exp() * v
        log_diag = self.log_scale[:, None] + self.weight - log_norm
        return w, log_diag[self.diag].view(self.dim, self.block_out, self.block_in)


def tanh_log_derivative(h: Tensor) -> Tensor:
    """log(1 - tanh(h)^2), stable for large |h|."""
    return 2 * (math.log(2) - h - F.softplus(-2 * h))


class BlockAutoregressive(Transform):
    """One B-NAF transformation, data->base: block layers 1 -> a -> ... -> a -> 1 per
    dimension with tanh between them, optionally with a gated residual
    ``sigmoid(g) f(x) + (1 - sigmoid(g)) x``.

    tanh is bounded, so without the residual f maps onto a bounded set; the gated
    residual adds a linear term that makes the map onto R, so the density normalises.
    The log-det is a log-matrix product (logsumexp) of the diagonal blocks (eq. 10).
    ``inverse`` solves each dimension in order by safeguarded Newton, one pass of this
    layer per evaluation.
    """

    def __init__(self, dim: int, layers: int, hidden_factor: int, gated: bool):
        super().__init__()
        self.dim = dim
        blocks = [1] + [hidden_factor] * layers + [1]
        self.linears = nn.ModuleList(BlockMaskedLinear(dim, i, o) for i, o in zip(blocks, blocks[1:]))
        self.gate = nn.Parameter(torch.randn(1)) if gated else None
        self.solves = None

    def _map(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (n, d) -> y (n, d) and log dy_i/dx_i (n, d)."""
        n, h, log_j = x.shape[0], x, None  # log_j: log diagonal blocks of dh/dx, (n, d, a, 1)
        last = len(self.linears) - 1
        for k, linear in enumerate(self.linears):
            w, log_diag = linear.weights()
            h = F.linear(h, w, linear.bias)
            if log_j is None:
                log_j = log_diag.expand(n, -1, -1, -1)
            else:  # log-matrix product of the diagonal blocks
                log_j = torch.logsumexp(log_diag + log_j.transpose(-1, -2), -1)[..., None]
            if k < last:
                log_j = log_j + tanh_log_derivative(h).view(n, self.dim, -1, 1)
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

    def inverse(self, y: Tensor) -> Tensor:
        def dim_solver(x: Tensor, i: int):
            def fn(xi: Tensor) -> tuple[Tensor, Tensor]:
                x[:, i] = xi  # columns > i do not reach output i
                out, log_j = self._map(x)
                return out[:, i], log_j[:, i].exp()

            return fn

        x, self.solves = invert_autoregressive(dim_solver, y)
        return x


def build_bnaf(
    dim: int,
    *,
    flows: int = 5,
    layers: int = 2,
    hidden_factor: int = 4,
    residual: Literal["gated", "gated-but-last", "none"] = "gated",
) -> Flow:
    """Block neural autoregressive flow: K B-NAF layers, order reversed between them.

    Arguments:
        layers: hidden block layers L (L + 1 masked linear maps per flow).
        hidden_factor: a, so that each hidden layer has H = a d units.
        residual: ``gated`` on every flow (default; onto R), ``gated-but-last`` as in
            the authors' code, or ``none``. Without a residual on the last flow the map
            is bounded and its density does not normalise.

    ``log_prob`` is one pass; ``sample`` inverts each layer numerically.
    """
    if residual not in RESIDUALS:
        raise ValueError(f"unknown residual {residual!r}; allowed: {', '.join(RESIDUALS)}")
    gated = [residual == "gated" or (residual == "gated-but-last" and k < flows - 1) for k in range(flows)]
    layers_ = [BlockAutoregressive(dim, layers, hidden_factor, g) for g in gated]
    return Flow(dim, stack(layers_, dim), Cost(log_prob="parallel", sample="iterative"))
