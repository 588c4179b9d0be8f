"""Neural autoregressive flow (Huang et al., 2018): a MADE hypernetwork emits, per
dimension, the pseudo-parameters of a deep sigmoidal flow (DSF, or DDSF when
``ds_layers >= 2``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserError
from .base import Cost, Flow, Transform, stack
from .ddsf import CHUNK, DeepSigmoid
from .invert import implicit_grad, invert_autoregressive, invert_coupled
from .masked import ACTIVATIONS, MADE, default_hidden
from .solvers import DEFAULT, check_solver


class SigmoidalAutoregressive(Transform):
    """One NAF layer, data->base: y_i = DDSF(x_i; params(x_<i)).

    The MADE emits ``channels`` values per dimension; a linear map shared across
    dimensions (Huang et al.'s 1x1 convolution) turns them into the DDSF's
    pseudo-parameters. ``forward`` is one MADE pass; ``inverse`` solves by ``solver``:
    ``bisection`` or ``newton`` solve each dimension in order, the MADE evaluated
    incrementally (each hidden unit once per call), the root-find on that dimension's
    DDSF alone; ``fixed-point`` runs bracketed Newton steps on every dimension at
    once, one full pass per iteration.
    """

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int],
        ds_hidden: int,
        ds_layers: int,
        channels: int,
        activation: str = "relu",
        weight_norm: bool = False,
        solver: str = DEFAULT["monotone"],
        context: int = 0,
    ):
        super().__init__()
        self.dim, self.solver = dim, check_solver("monotone", solver)
        self.made = MADE(dim, hidden, channels, activation, weight_norm, context=context)
        self.ds = DeepSigmoid(ds_hidden, ds_layers)
        self.to_params = nn.Linear(channels, self.ds.n_params)
        self.ds.init_hyper_bias(self.to_params.bias)
        # the root-finder's steps as compiled passes on the CPU (harness.models.kernels.root_step)
        self.kernel = True

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Data->base, feature-major: the MADE's outputs become (channels, d x n) columns,
        each chunk of :data:`CHUNK` columns gets its pseudo-parameters (one GEMM) and the
        DDSF (:meth:`DeepSigmoid.columns`) while it fits the cache."""
        n, d = x.shape
        if n == 0:  # no chunk to run
            return x.clone(), x.new_zeros(0)
        out = self.made.network()(x)  # (n, d, channels), a view of (n, channels, d)
        k = out.shape[-1]
        features = out.transpose(-1, -2).permute(1, 2, 0).reshape(k, d * n)  # (channels, d x n), dimension-major
        columns = x.T.reshape(d * n)
        w, bias = self.to_params.weight, self.to_params.bias
        ys, gs = [], []
        for start in range(0, d * n, CHUNK):
            stop = min(start + CHUNK, d * n)
            params = torch.addmm(bias[:, None], w, features[:, start:stop])
            y, g = self.ds.columns(columns[start:stop], params)
            ys.append(y)
            gs.append(g)
        y = torch.cat(ys).view(d, n).T
        return y, torch.cat(gs).view(d, n).sum(0)

    def _map(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (n, d) -> y (n, d) and dy_i/dx_i (n, d): the fixed-point solver's pass."""
        y, logder = self.ds(x, self.to_params(self.made(x)))
        return y, logder.exp()

    def inverse(self, y: Tensor) -> Tensor:
        x = self._solve(y)
        return implicit_grad(lambda x: self.ds(x, self.to_params(self.made(x)))[0], x, y, list(self.parameters()))

    def _solve(self, y: Tensor) -> Tensor:
        if self.solver == "fixed-point":
            x, self.stats = invert_coupled(self._map, y)
            return x
        output = None

        def dim_solver(x: Tensor, i: int):
            nonlocal output
            if output is None:  # inside the solver's no_grad: hidden units kept in buffers
                output = self.made.incremental(x, in_place=True)
            # feature-major (n_params, n), its x-free terms once (DeepSigmoid.at): each of
            # the root-finder's evaluations is then one GEMM per layer, as log_prob's
            w, bias = self.to_params.weight, self.to_params.bias
            ddsf = self.ds.at(torch.addmm(bias[:, None], w, output(i, x[:, :i]).T), compiled=self.kernel)

            return ddsf  # x_i -> (y_i, dy_i/dx_i)

        x, self.stats = invert_autoregressive(dim_solver, y, method=self.solver, compiled=self.kernel)
        return x


class WeightNormLinear(nn.Module):
    """Weight-normalised linear layer: rows ``scale * v / |v|`` plus a bias."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_out, n_in) / math.sqrt(n_in))
        self.scale = nn.Parameter(torch.ones(n_out))
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight / self.weight.norm(dim=1, keepdim=True)
        return F.linear(x, self.scale[:, None] * w, self.bias)


class ResidualMLP(nn.Module):
    """``W2 relu(W1 c) + W3 c`` of weight-normalised layers (torchkit's ResLinear)."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.inner, self.outer = WeightNormLinear(n_in, n_out), WeightNormLinear(n_out, n_out)
        self.skip = WeightNormLinear(n_in, n_out)

    def forward(self, c: Tensor) -> Tensor:
        return self.outer(F.relu(self.inner(c))) + self.skip(c)


class ContextAffine(Transform):
    """Element-wise affine layer, data->base: ``z = loc + softplus(t) * x``, where loc and
    t are residual MLPs of a constant zero context (the NAF paper's final linear flow)."""

    def __init__(self, dim: int, context: int = 1):
        super().__init__()
        self.loc, self.t = ResidualMLP(context, dim), ResidualMLP(context, dim)
        self.register_buffer("context", torch.zeros(1, context))

    def _loc_std(self) -> tuple[Tensor, Tensor]:
        return self.loc(self.context)[0], F.softplus(self.t(self.context)[0])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        loc, std = self._loc_std()
        return loc + std * x, std.log().sum().expand(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        loc, std = self._loc_std()
        return (y - loc) / std


def build_naf(
    dim: int,
    *,
    flows: int = 5,
    hidden: Sequence[int] | None = None,
    ds_hidden: int = 16,
    ds_layers: int = 2,
    ds_channels: int | None = None,
    activation: str = "relu",
    weight_norm: bool = False,
    final_affine: bool = False,
    solver: str = DEFAULT["monotone"],
    context: int = 0,
) -> Flow:
    """Neural autoregressive flow: K sigmoidal autoregressive layers, order reversed between.

    Arguments:
        ds_hidden: sigmoid units per DDSF layer.
        ds_layers: 1 = DSF, 2 or more = DDSF.
        ds_channels: MADE outputs per dimension; default ``3 * ds_layers * max(1, h // d)``
            with h the last hidden size, the rule of Huang et al.'s code.
        activation: MADE activation, ``relu`` or ``elu``.
        weight_norm: conditional weight normalisation in the MADE (the paper's conditioner).
        final_affine: end with the paper's element-wise affine layer.
        solver: ``sample``'s root-finder: ``bisection``, ``newton`` or ``fixed-point``.
        context: features of a context every MADE reads (0: unconditional).

    ``log_prob`` is one MADE pass per layer; ``sample`` inverts each layer numerically.
    """
    if activation not in ACTIVATIONS:
        raise UserError(f"unknown activation {activation!r}; allowed: {', '.join(ACTIVATIONS)}")
    hidden = default_hidden(dim) if hidden is None else hidden
    channels = 3 * ds_layers * max(1, hidden[-1] // dim) if ds_channels is None else ds_channels
    layers: list[Transform] = [
        SigmoidalAutoregressive(dim, hidden, ds_hidden, ds_layers, channels, activation, weight_norm, solver, context)
        for _ in range(flows)
    ]
    transforms = stack(layers, dim)
    if final_affine:
        transforms.append(ContextAffine(dim))
    cost = Cost(log_prob="parallel", sample="iterative", family="monotone")
    return Flow(dim, transforms, cost, family="naf", context=context)
