"""Inverse autoregressive flow (Kingma et al., 2016)."""

from __future__ import annotations

from collections.abc import Sequence

from .base import Cost, Flow
from .maf import MaskedAffine
from .masked import default_hidden
from .solvers import DEFAULT


def build_iaf(
    dim: int,
    *,
    flows: int = 5,
    hidden: Sequence[int] | None = None,
    solver: str = DEFAULT["affine"],
    context: int = 0,
) -> Flow:
    """Inverse autoregressive flow: the mirror of MAF, conditioners read the base side;
    orders alternate from one layer to the next, as in MAF.

    ``sample`` is one MADE pass per layer; ``log_prob`` is exact, by d sequential
    passes per layer. ``context`` > 0: every MADE reads a context of that many features.
    """
    hidden = default_hidden(dim) if hidden is None else hidden
    layers = [
        MaskedAffine(dim, hidden, fast="inverse", reverse=k % 2 == 1, solver=solver, context=context)
        for k in range(flows)
    ]
    cost = Cost(log_prob="sequential", sample="parallel", family="affine")
    return Flow(dim, layers, cost, family="iaf", context=context)
