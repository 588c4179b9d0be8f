"""zuko's flows behind the contract: ``zuko.maf``, ``zuko.naf``, ``zuko.nsf``."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..models.base import Cost
from .base import Peer, PeerFlow


class ZukoFlow(PeerFlow):
    """zuko's lazy flow: ``module(c)`` is the distribution given the context c (None
    without one), whose ``transform`` maps data->base; zuko broadcasts one context
    (1, c) over the batch."""

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.module(self.rows(context, x.shape[0])).transform.call_and_ladj(x)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        return self.module(self.rows(context, z.shape[0])).transform.inv(z)

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.module(self.rows(context, x.shape[0])).log_prob(x)


def _zuko_maf(dim: int, flows: int, hidden: Sequence[int], context: int = 0) -> nn.Module:
    import zuko

    return zuko.flows.MAF(dim, context, transforms=flows, hidden_features=tuple(hidden))


def _zuko_naf(dim: int, flows: int, hidden: Sequence[int], ds_hidden: int, context: int = 0) -> nn.Module:
    import zuko

    return zuko.flows.NAF(dim, context, transforms=flows, signal=ds_hidden, hidden_features=tuple(hidden))


def _zuko_nsf(dim: int, flows: int, hidden: Sequence[int], bins: int, bound: float, context: int = 0) -> nn.Module:
    """zuko's NSF with its spline's bound set to ours (zuko's default is 5): ``zuko.flows.NSF``
    fixes the bound, so the MAF it subclasses is built with the same univariate
    transform and shapes, and ``bound`` passed through."""
    from functools import partial

    import zuko

    return zuko.flows.MAF(
        dim,
        context,
        transforms=flows,
        hidden_features=tuple(hidden),
        univariate=partial(zuko.transforms.MonotonicRQSTransform, bound=bound),
        shapes=[(bins,), (bins,), (bins - 1,)],
    )


PEERS = {
    "zuko.maf": Peer("zuko", "maf", Cost("parallel", "sequential"), _zuko_maf, {}, ZukoFlow),
    "zuko.naf": Peer("zuko", "naf", Cost("parallel", "iterative"), _zuko_naf, {}, ZukoFlow),
    "zuko.nsf": Peer("zuko", "nsf", Cost("parallel", "sequential"), _zuko_nsf, {}, ZukoFlow),
}
