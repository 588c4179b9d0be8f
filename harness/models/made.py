"""MADE as a density model (Germain et al., 2015) with Gaussian conditionals."""

from __future__ import annotations

from collections.abc import Sequence

from .base import Cost, Flow
from .maf import MaskedAffine
from .masked import default_hidden
from .solvers import DEFAULT


def build_made(dim: int, *, hidden: Sequence[int] | None = None, solver: str = DEFAULT["affine"]) -> Flow:
    """One MADE with Gaussian conditionals p(x_i | x_<i) = N(m_i, exp(-s_i)^2).

    As a flow this is a single MADE-affine layer: ``log_prob`` is one pass,
    ``sample`` is d sequential passes.
    """
    hidden = default_hidden(dim) if hidden is None else hidden
    layer = MaskedAffine(dim, hidden, fast="forward", solver=solver)
    return Flow(dim, [layer], Cost(log_prob="parallel", sample="sequential", family="affine"), family="made")
