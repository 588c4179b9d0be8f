"""Masked layers and the MADE network (Germain et al., 2015), shared by every
masked autoregressive model here."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {"relu": F.relu, "elu": F.elu}


def made_degrees(dim: int, hidden: Sequence[int], reverse: bool = False) -> list[Tensor]:
    """Degrees of the inputs (1..d, or d..1 with ``reverse``) and of each hidden layer.

    Hidden degrees cycle through 1..d-1, so every degree that can feed an output is
    used and none is wasted (Germain et al. use random draws; cycling is deterministic).
    At d=1 no hidden unit can feed the output and the MADE reduces to its output bias.
    """
    inputs = torch.arange(1, dim + 1)
    degrees = [inputs.flip(0) if reverse else inputs]
    for h in hidden:
        degrees.append(torch.arange(h) % max(dim - 1, 1) + 1)
    return degrees


def made_masks(dim: int, hidden: Sequence[int], per_dim: int, reverse: bool = False) -> list[Tensor]:
    """Boolean masks (out, in) of each layer: hidden masks allow ``>=``, the output
    mask is strict ``>``. The output has ``per_dim`` units per dimension, laid out
    parameter-major (unit k * d + i is parameter k of dimension i), so that each
    parameter's d values are contiguous for the element-wise work that follows."""
    degrees = made_degrees(dim, hidden, reverse)
    masks = [d_out[:, None] >= d_in[None, :] for d_in, d_out in zip(degrees, degrees[1:])]
    d_out = degrees[0].repeat(per_dim)
    masks.append(d_out[:, None] > degrees[-1][None, :])
    return masks


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed binary ``mask`` (out, in)."""

    def __init__(self, mask: Tensor, bias: bool = True):
        super().__init__(mask.shape[1], mask.shape[0], bias=bias)
        self.register_buffer("mask", mask.to(torch.get_default_dtype()))
        self._memo: tuple[tuple, tuple[Tensor, Tensor | None]] | None = None

    def effective(self) -> tuple[Tensor, Tensor | None]:
        """(weight * mask, bias)."""
        return self.weight * self.mask, self.bias

    def masked(self) -> tuple[Tensor, Tensor | None]:
        """The effective (weight, bias); computed once per call by sequential loops.

        Without autograd it is kept until a parameter or buffer changes (moves change
        the storage, in-place updates bump the version), so repeated inference calls
        skip the product.
        """
        tensors = (*self.parameters(), *self.buffers())
        # inference tensors (made under inference mode) keep no version to check
        if torch.is_grad_enabled() or any(t.is_inference() for t in tensors):
            return self.effective()
        key = tuple((t.data_ptr(), t._version) for t in tensors)
        if self._memo is None or self._memo[0] != key:
            self._memo = key, self.effective()
        return self._memo[1]

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

    def effective(self) -> tuple[Tensor, Tensor]:
        w = self.weight * self.mask
        w = w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)
        scale, bias = self.cscale(self.context)[0], self.cbias(self.context)[0]
        return scale[:, None] * w, bias


class MADE(nn.Module):
    """Masked autoencoder: (batch, d) -> (batch, d, per_dim), where output [:, i, :]
    depends only on inputs x[:, :i] (natural order), or on x[:, i+1:] with
    ``reverse``. The output is a view whose [..., k] slices are contiguous along d.

    Arguments:
        dim: number of dimensions d.
        hidden: hidden layer sizes.
        per_dim: outputs per dimension.
        activation: ``relu`` or ``elu``.
        weight_norm: use :class:`ContextWeightNormLinear` layers (NAF paper's conditioner).
        reverse: reversed order, so stacked flows alternate orders without a copy
            of the data between them.
    """

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int],
        per_dim: int,
        activation: str = "relu",
        weight_norm: bool = False,
        reverse: bool = False,
    ):
        super().__init__()
        self.dim, self.per_dim = dim, per_dim
        self.activation = ACTIVATIONS[activation]
        # dimensions in the order they can be solved: each after those it depends on
        self.order = list(range(dim - 1, -1, -1)) if reverse else list(range(dim))
        masks = made_masks(dim, hidden, per_dim, reverse)
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
        act, d, k = self.activation, self.dim, self.per_dim
        w_out, b_out = params[-1]
        by_dim: tuple[Tensor, Tensor | None] | None = None  # output rows regrouped per dimension

        def run(x: Tensor, i: int | None = None) -> Tensor:
            nonlocal by_dim
            for w, b in params[:-1]:
                x = act(F.linear(x, w, b), inplace=True)  # on linear's fresh output
            if i is None:
                return F.linear(x, w_out, b_out).unflatten(-1, (k, d)).transpose(-1, -2)
            if by_dim is None:  # once per call: dimension i's k rows become contiguous
                w = w_out.view(k, d, -1).transpose(0, 1).contiguous()
                b = None if b_out is None else b_out.view(k, d).t().contiguous()
                by_dim = w, b
            w, b = by_dim
            return F.linear(x, w[i], None if b is None else b[i])

        return run

    def forward(self, x: Tensor) -> Tensor:
        return self.network()(x)
