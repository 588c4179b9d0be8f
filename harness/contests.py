"""The contests of ``versus`` (what is run, apart from how: :mod:`harness.versus`):
each pits a reference model's op against the same work in peers of its family."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from . import peers
from .errors import UserError
from .ops import FRAMEWORK_NAMES

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

    def joined(self, entrants: Sequence[str]) -> Contest:
        """This contest with more rivals: any model names (a user's ``module:factory``,
        a plugin, a peer), each doing the contest's op on the same inputs."""
        rivals = self.rivals + tuple((e, self.op) for e in entrants if (e, self.op) not in self.rivals)
        return dataclasses.replace(self, rivals=rivals)


NSF_PEERS = ("zuko.nsf", "nflows.nsf", "normflows.nsf", "pyro.nsf", "flowjax.nsf")
MAF_PEERS = ("zuko.maf", "nflows.maf", "flowjax.maf")
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
        Contest("nsf", "log_prob", tuple((p, "log_prob") for p in NSF_PEERS)),
        Contest("nsf", "sample", tuple((p, "sample") for p in NSF_PEERS)),
    )
}


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
