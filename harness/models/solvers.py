"""Solvers for the slow direction of each family, and what a solve costs.

The slow direction is the one that is not a single parallel pass: MADE/MAF ``sample``
and IAF ``log_prob`` (an affine autoregressive system), NAF and B-NAF ``sample`` (a
monotone autoregressive root-find). This module owns their names, the reference
solver of each (the textbook algorithm every other one is checked against) and the
default (the fastest exact one on the CPU, from ``python -m harness solvers``).

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

from ..errors import UserError

Family = Literal["affine", "monotone"]

SOLVERS: dict[str, tuple[str, ...]] = {
    "affine": ("sequential", "incremental", "fixed-point"),
    "monotone": ("bisection", "newton", "fixed-point"),
}
REFERENCE: dict[str, str] = {"affine": "sequential", "monotone": "bisection"}
# Fastest exact solvers on the CPU at batch 1024 (README, "Algorithms for the slow direction").
DEFAULT: dict[str, str] = {"affine": "incremental", "monotone": "newton"}
# The solver column of an op that is one parallel pass, and of a peer's own algorithm.
DIRECT = "direct"
NATIVE = "native"

ALL: tuple[str, ...] = tuple(dict.fromkeys(s for names in SOLVERS.values() for s in names))


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
