"""The contests of ``versus`` (what is run, apart from how: :mod:`harness.versus`):
each pits a reference model's op against the same work in peers of its family."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from . import peers
from .errors import UserError
from .grid import takes_context
from .measure.contract import PASS
from .ops import FRAMEWORK_NAMES, LOG_PROB, SAMPLE
from .table import Col

BATCH = 1024
FRAMEWORKS = tuple(FRAMEWORK_NAMES)  # the stacks a peer computes in (PeerFlow.framework): torch, jax


@dataclass(frozen=True)
class Contest:
    """Reference ``model``'s ``op`` against each (peer, peer op), at ``config``."""

    model: str
    op: str
    rivals: tuple[tuple[str, str], ...]
    config: dict = field(default_factory=dict)
    dims: tuple[int, ...] = (8, 32, 128)

    @property
    def name(self) -> str:
        return f"{self.model}.{self.op}"

    @property
    def context(self) -> int:
        """Features of the context every contender is conditioned on (0: none)."""
        return int(self.config.get(Col.CONTEXT, 0))

    def joined(self, entrants: Sequence[str]) -> Contest:
        """This contest with more rivals: any model names (a user's ``module:factory``,
        a plugin, a peer), each doing the contest's op on the same inputs."""
        rivals = self.rivals + tuple((e, self.op) for e in entrants if (e, self.op) not in self.rivals)
        return dataclasses.replace(self, rivals=rivals)


NSF_PEERS = ("zuko.nsf", "nflows.nsf", "normflows.nsf", "pyro.nsf", "flowjax.nsf")
MAF_PEERS = ("zuko.maf", "nflows.maf", "flowjax.maf", "sbi.maf")  # sbi's estimator: conditional contests only
CONTESTS: dict[str, Contest] = {
    c.name: c
    for c in (
        Contest("maf", "log_prob", tuple((p, "log_prob") for p in MAF_PEERS)),
        Contest("maf", "sample", tuple((p, "sample") for p in MAF_PEERS)),
        Contest(
            "iaf",
            "sample",
            (("pyro.iaf", "sample"), ("numpyro.iaf", "sample"), ("zuko.maf", "pass"), ("nflows.maf", "pass")),
        ),
        Contest(
            "bnaf",
            "log_prob",
            (("pyro.bnaf", "log_prob"), ("numpyro.bnaf", "log_prob"), ("flowjax.bnaf", "log_prob")),
            {"hidden_factor": 8},
        ),
        Contest("naf", "log_prob", (("zuko.naf", "log_prob"), ("pyro.naf", "log_prob"))),
        Contest("nsf", "log_prob", tuple((p, "log_prob") for p in NSF_PEERS)),
        Contest("nsf", "sample", tuple((p, "sample") for p in NSF_PEERS)),
    )
}


def inputs(contest: Contest, dim: int, batch: int) -> tuple[Tensor, dict[str, Tensor | None]]:
    """The contest's inputs, the same for every contender: x (batch, d), and per op its
    context in a conditional contest: one per point (batch, c) for log_prob and a pass,
    one for all (c,) for sample (the posterior's shape: ``batch`` draws for one
    observation). Without a context, None for every op."""
    torch.manual_seed(0)
    x = torch.randn(batch, dim)
    if not contest.context:
        return x, dict.fromkeys((LOG_PROB, SAMPLE, PASS))
    rows = torch.randn(batch, contest.context)
    return x, {LOG_PROB: rows, PASS: rows, SAMPLE: rows[0]}


def rival_config(contest: Contest, rival: str) -> dict:
    """What a rival is built with: a peer from the contest's config, as its family's
    reference; another flow (a user's) from its own factory's defaults, with the
    contest's context if it has one."""
    if rival in peers.NAMES:
        return contest.config
    return {Col.CONTEXT: contest.context} if contest.context else {}


def conditioned(contest: Contest, context: int) -> tuple[Contest, list[str]]:
    """``contest`` with every contender conditioned on a context of ``context`` features
    (0: none), and the rivals that cannot be, each with why: a conditional contest keeps
    those that take a context (harness.grid.takes_context), an unconditional one those
    that need none (sbi's estimator is conditional only). A rival named as a user's
    entrant is kept either way: its own checked call says whether it copes."""
    left_out, kept = [], []
    for rival, op in contest.rivals:
        if rival in peers.NAMES and context and (why := takes_context(rival)):
            left_out.append(f"{rival} {why}")
        elif rival in peers.NAMES and not context and peers.PEERS[rival].needs_context:
            continue  # only ever conditional: not a rival here, and not news
        else:
            kept.append((rival, op))
    if context and (why := takes_context(contest.model)):
        raise UserError(f"{contest.name} cannot run with --context {context}: our {contest.model} {why}")
    config = {k: v for k, v in contest.config.items() if k != Col.CONTEXT} | ({Col.CONTEXT: context} if context else {})
    return dataclasses.replace(contest, rivals=tuple(kept), config=config), left_out


def available(
    chosen: dict[str, Contest], needed: set[str], frameworks: Sequence[str] = FRAMEWORKS
) -> dict[str, Contest]:
    """``chosen`` with the peers of ``frameworks`` alone, and without those of an
    optional extra that is not installed (the JAX peers: each named on stderr with what
    installs it); a UserError names a bad framework, or any other peer that cannot be
    built here."""
    bad = [f for f in frameworks if f not in FRAMEWORKS]
    if bad:
        raise UserError(f"unknown framework {bad[0]!r}; allowed: {', '.join(FRAMEWORKS)}")
    other = {p for p in needed if peers.PEERS[p].wrapper.framework not in frameworks}
    needed = needed - other
    missing = {p: why for p in sorted(needed) if (why := peers.unavailable(p))}
    optional = {p for p in missing if peers.PEERS[p].install != peers.INSTALL} | other
    for p in sorted(set(missing) & optional):
        print(f"{p} left out of the contests: {missing.pop(p)}", file=sys.stderr)
    if missing:
        raise UserError("peers unavailable: " + "; ".join(f"{p}: {why}" for p, why in missing.items()))
    return {
        n: dataclasses.replace(c, rivals=tuple(r for r in c.rivals if r[0] not in optional)) for n, c in chosen.items()
    }
