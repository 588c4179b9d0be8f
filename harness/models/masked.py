"""Masked layers and the MADE network (Germain et al., 2015), shared by every
masked autoregressive model here."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {"relu": F.relu, "elu": F.elu}


def made_degrees(dim: int, hidden: Sequence[int]) -> list[Tensor]:
    """Degrees of the inputs (1..d) and of each hidden layer.

    Hidden degrees cycle through 1..d-1, so every degree that can feed an output is
    used and none is wasted (Germain et al. use random draws; cycling is deterministic).
    At d=1 no hidden unit can feed the output and the MADE reduces to its output bias.
    """
    degrees = [torch.arange(1, dim + 1)]
    for h in hidden:
        degrees.append(torch.arange(h) % max(dim - 1, 1) + 1)
    return degrees


def made_masks(dim: int, hidden: Sequence[int], per_dim: int) -> list[Tensor]:
    """Boolean masks (out, in) of each layer: hidden masks allow ``>=``, the output
    mask is strict ``>``. The output has ``per_dim`` units per dimension, laid out
    dimension-major (unit i * per_dim + k belongs to dimension i)."""
    degrees = made_degrees(dim, hidden)
    masks = [d_out[:, None] >= d_in[None, :] for d_in, d_out in zip(degrees, degrees[1:])]
    d_out = torch.arange(1, dim + 1).repeat_interleave(per_dim)
    masks.append(d_out[:, None] > degrees[-1][None, :])
    return masks


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed binary ``mask`` (out, in)."""

    def __init__(self, mask: Tensor, bias: bool = True):
        super().__init__(mask.shape[1], mask.shape[0], bias=bias)
        self.register_buffer("mask", mask.to(torch.get_default_dtype()))

    def masked(self) -> tuple[Tensor, Tensor | None]:
        """The effective (weight, bias); computed once per call by sequential loops."""
        return self.weight * self.mask, self.bias

    def forward(self, x: Tensor) -> Tensor:
        w, b = self.masked()
        return F.linear(x, w, b)


class ContextWeightNormLinear(MaskedLinear):
    """Masked linear layer with conditional weight normalisation (Huang et al., 2018).

    Each row of the masked direction matrix is normalised; a scale and a bias per
    output are produced by linear maps of a context vector. The harness's flows are
    unconditional, so the context is a constant zero vector of ``context`` entries:
    the scale and the bias reduce to those maps' biases, yet all their parameters exist.
    """

    def __init__(self, mask: Tensor, context: int = 1):
        super().__init__(mask, bias=False)
        self.cscale = nn.Linear(context, mask.shape[0])
        self.cbias = nn.Linear(context, mask.shape[0])
        self.register_buffer("context", torch.zeros(1, context))

    def masked(self) -> tuple[Tensor, Tensor]:
        w = self.weight * self.mask
        w = w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)
        scale, bias = self.cscale(self.context)[0], self.cbias(self.context)[0]
        return scale[:, None] * w, bias


class MADE(nn.Module):
    """Masked autoencoder: (batch, d) -> (batch, d, per_dim), where output [:, i, :]
    depends only on inputs x[:, :i] (natural order).

    Arguments:
        dim: number of dimensions d.
        hidden: hidden layer sizes.
        per_dim: outputs per dimension.
        activation: ``relu`` or ``elu``.
        weight_norm: use :class:`ContextWeightNormLinear` layers (NAF paper's conditioner).
    """

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int],
        per_dim: int,
        activation: str = "relu",
        weight_norm: bool = False,
    ):
        super().__init__()
        self.dim, self.per_dim = dim, per_dim
        self.activation = ACTIVATIONS[activation]
        masks = made_masks(dim, hidden, per_dim)
        layer = ContextWeightNormLinear if weight_norm else MaskedLinear
        self.layers = nn.ModuleList(layer(m) for m in masks)

    def network(self) -> Callable[..., Tensor]:
        """The MADE as a function ``run(x, i=None)`` with its masked weights computed once.

        Sequential loops call the network d times per flow; computing ``weight * mask``
        (and any normalisation) once per call, not once per pass, saves that work.
        ``run(x)`` gives (batch, d, per_dim); ``run(x, i)`` gives only dimension i's
        outputs (batch, per_dim), skipping the other rows of the output layer.
        """
        params = [layer.masked() for layer in self.layers]
        act, shape, k = self.activation, (self.dim, self.per_dim), self.per_dim

        def run(x: Tensor, i: int | None = None) -> Tensor:
            for w, b in params[:-1]:
                x = act(F.linear(x, w, b))
            w, b = params[-1]
            if i is None:
                return F.linear(x, w, b).unflatten(-1, shape)
            rows = slice(i * k, (i + 1) * k)
            return F.linear(x, w[rows], None if b is None else b[rows])

        return run

    def forward(self, x: Tensor) -> Tensor:
        return self.network()(x)
