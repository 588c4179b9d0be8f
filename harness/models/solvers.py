"""Solvers for the slow direction of each family, and what a solve costs.

The slow direction is the one that is not a single parallel pass: MADE/MAF ``sample``
and IAF ``log_prob`` (an affine autoregressive system), NAF and B-NAF ``sample`` (a
monotone autoregressive root-find). Their names, the reference solver of each (the
textbook algorithm every other one is checked against) and the default (the fastest
exact one on the CPU, from ``python -m harness solvers``) are :mod:`harness.ops`'s;
this module keeps what a solve costs.

Counters, per call of the slow direction, summed over the flow's layers:

- ``evaluations``: evaluations of one dimension's output (its conditioner included).
  Sequential and incremental solves make one per dimension; a fixed-point iteration
  makes d (all dimensions at once); a root-find one per step of each dimension. So
  ``evaluations / (d * layers)`` is the evaluations per dimension.
- ``iterations``: steps on the critical path, each waiting for the one before: d per
  layer for sequential and incremental solves, the iteration count of a fixed-point
  solve, the root-finding steps of each dimension summed for bisection and Newton.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .. import ops
from ..errors import UserError

Family = Literal["affine", "monotone"]

# the vocabulary's solvers (harness.ops), by solver family
SOLVERS: dict[str, tuple[str, ...]] = {f: ops.solvers_of(f) for f in ops.SOLVER_FAMILIES}
REFERENCE: dict[str, str] = {f: ops.reference_of(f) for f in ops.SOLVER_FAMILIES}
DEFAULT: dict[str, str] = {f: ops.default_of(f) for f in ops.SOLVER_FAMILIES}
DIRECT, NATIVE, ALL = ops.DIRECT, ops.NATIVE, ops.ALL_SOLVERS


def check_solver(family: Family, solver: str) -> str:
    """Returns ``solver`` if ``family`` has it; raises ValueError naming the allowed ones."""
    if solver not in SOLVERS[family]:
        raise UserError(f"unknown solver {solver!r}; allowed: {', '.join(SOLVERS[family])}")
    return solver


@dataclass
class SolveStats:
    """What one call of the slow direction spent (see the module docstring)."""

    solver: str
    evaluations: int = 0
    iterations: int = 0

    def __add__(self, other: SolveStats) -> SolveStats:
        return SolveStats(self.solver, self.evaluations + other.evaluations, self.iterations + other.iterations)
