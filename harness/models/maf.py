"""Masked affine autoregressive layers, and MAF (Papamakarios et al., 2017)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from .base import Cost, Flow, Transform, stack
from .masked import MADE

# The log-scale is soft-clamped, s = B tanh(raw / B): smooth, and each layer scales by
# at most e^B either way, which keeps stacked layers and their inverses finite.
LOG_SCALE_BOUND = 5.0


def default_hidden(dim: int) -> tuple[int, int]:
    """Two hidden layers of max(64, d) units: enough for every MADE degree at any d."""
    return (max(64, dim),) * 2


def set_column(u: Tensor, i: int, col: Tensor) -> Tensor:
    """u[:, i] = col, copying first only where autograd needs the old u."""
    if torch.is_grad_enabled() and (u.requires_grad or col.requires_grad):
        u = u.clone()
    u[:, i] = col
    return u


class MaskedAffine(Transform):
    """Affine autoregressive layer.

    Fast direction, one MADE pass: ``v_i = u_i exp(s_i(u_<i)) + m_i(u_<i)``.
    Slow direction, d sequential MADE passes: ``u_i = (v_i - m_i(u_<i)) exp(-s_i(u_<i))``.
    This is Papamakarios et al.'s ``(x - mu) exp(-alpha)`` reparametrised.

    Arguments:
        dim: d.
        hidden: MADE hidden sizes.
        fast: which method is the fast direction: ``forward`` (data->base, MAF) or
            ``inverse`` (base->data, IAF).
    """

    def __init__(self, dim: int, hidden: Sequence[int], fast: Literal["forward", "inverse"]):
        super().__init__()
        self.dim, self.fast = dim, fast
        self.made = MADE(dim, hidden, per_dim=2)

    @staticmethod
    def _shift_scale(out: Tensor) -> tuple[Tensor, Tensor]:
        m, raw = out.unbind(-1)
        return m, LOG_SCALE_BOUND * torch.tanh(raw / LOG_SCALE_BOUND)

    def _fast(self, u: Tensor) -> tuple[Tensor, Tensor]:
        m, s = self._shift_scale(self.made(u))
        return u * torch.exp(s) + m, s.sum(-1)

    def _slow(self, v: Tensor) -> tuple[Tensor, Tensor]:
        net = self.made.network()
        u = torch.zeros_like(v)
        ladj = v.new_zeros(v.shape[0])
        for i in range(self.dim):
            # Output i depends on u[:, :i] only, which are solved by now.
            m, s = self._shift_scale(net(u, i))
            u = set_column(u, i, (v[:, i] - m) * torch.exp(-s))
            ladj = ladj - s
        return u, ladj

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._fast(x) if self.fast == "forward" else self._slow(x)

    def inverse(self, y: Tensor) -> Tensor:
        return (self._slow(y) if self.fast == "forward" else self._fast(y))[0]


def build_maf(dim: int, *, flows: int = 5, hidden: Sequence[int] | None = None) -> Flow:
    """Masked autoregressive flow: K MADE-affine layers, order reversed between them.

    ``log_prob`` is one MADE pass per layer; ``sample`` is d sequential passes per layer.
    """
    hidden = default_hidden(dim) if hidden is None else hidden
    layers = [MaskedAffine(dim, hidden, fast="forward") for _ in range(flows)]
    return Flow(dim, stack(layers, dim), Cost(log_prob="parallel", sample="sequential"))
