"""MADE as a density model (Germain et al., 2015) with Gaussian conditionals."""

from __future__ import annotations

from collections.abc import Sequence

from .base import Cost, Flow
from .maf import MaskedAffine
from .masked import default_hidden
from .solvers import DEFAULT


def build_made(
    dim: int, *, hidden: Sequence[int] | None = None, solver: str = DEFAULT["affine"], context: int = 0
) -> Flow:
    """One MADE with Gaussian conditionals p(x_i | x_<i) = N(m_i, exp(-s_i)^2).

    As a flow this is a single MADE-affine layer: ``log_prob`` is one pass,
    ``sample`` is d sequential passes. ``context`` > 0: the MADE reads a context of
    that many features, p(x | c).
    """
    hidden = default_hidden(dim) if hidden is None else hidden
    layer = MaskedAffine(dim, hidden, fast="forward", solver=solver, context=context)
    cost = Cost(log_prob="parallel", sample="sequential", family="affine")
    return Flow(dim, [layer], cost, family="made", context=context)
