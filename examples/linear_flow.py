"""A user's flow, kept outside the harness: an autoregressive linear flow.

z = L x + b with L lower triangular and a positive diagonal, data->base, so
log|det dz/dx| = sum log L_ii and x = L^-1 (z - b). It follows the harness's contract
(``forward`` returns ``(z, log|det|)``, ``inverse``, ``log_prob``), so ``check`` can
test every property; ``factory(dim, **config)`` is what ``--models`` names.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class LinearFlow(nn.Module):
    """z = L x + b, L lower triangular with diagonal exp(s). x, z: (batch, d)."""

    def __init__(self, dim: int, scale: float = 0.3):
        super().__init__()
        self.off = nn.Parameter(scale * torch.randn(dim, dim).tril(-1))
        self.log_diag = nn.Parameter(scale * torch.randn(dim))
        self.shift = nn.Parameter(scale * torch.randn(dim))

    def matrix(self) -> Tensor:
        return self.off.tril(-1) + torch.diag(self.log_diag.exp())

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Data->base: z (batch, d) and log|det dz/dx| (batch,)."""
        z = x @ self.matrix().T + self.shift
        return z, self.log_diag.sum().expand(x.shape[0])

    def inverse(self, z: Tensor) -> Tensor:
        """Base->data: x = L^-1 (z - b)."""
        return torch.linalg.solve_triangular(self.matrix(), (z - self.shift).T, upper=False).T

    def log_prob(self, x: Tensor) -> Tensor:
        z, ladj = self(x)
        return -0.5 * (z.square().sum(-1) + z.shape[-1] * math.log(2 * math.pi)) + ladj


def make(dim: int, scale: float = 0.3) -> LinearFlow:
    """The factory ``--models examples.linear_flow:make`` calls."""
    return LinearFlow(dim, scale)
