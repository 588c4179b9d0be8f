"""nflows' flows behind the contract: ``nflows.maf``, ``nflows.nsf``."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..models.base import Cost
from .base import Peer, PeerFlow, authors_spline, equal_widths


class NflowsFlow(PeerFlow):
    """nflows' ``Flow``: its ``_transform`` maps data->base and returns the log-det."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.module._transform(x)

    def inverse(self, z: Tensor) -> Tensor:
        return self.module._transform.inverse(z)[0]

    def log_prob(self, x: Tensor) -> Tensor:
        return self.module.log_prob(x)


def _nflows_maf(dim: int, flows: int, hidden: Sequence[int]) -> nn.Module:
    from nflows.flows import MaskedAutoregressiveFlow

    return MaskedAutoregressiveFlow(
        features=dim,
        hidden_features=equal_widths("nflows.maf", hidden),
        num_layers=flows,
        num_blocks_per_layer=len(hidden) - 1,
        use_residual_blocks=False,
    )


def _nflows_nsf(dim: int, flows: int, hidden: Sequence[int], bins: int, bound: float) -> nn.Module:
    """K ``MaskedPiecewiseRationalQuadraticAutoregressiveTransform`` with linear tails
    at ``bound``, ``num_blocks=len(hidden) - 1`` plain blocks (our hidden layers), a
    ``ReversePermutation`` between them, as ``MaskedAutoregressiveFlow`` builds MAF."""
    from nflows.distributions import StandardNormal
    from nflows.flows import Flow
    from nflows.transforms import (
        CompositeTransform,
        MaskedPiecewiseRationalQuadraticAutoregressiveTransform,
        ReversePermutation,
    )

    layer = authors_spline("nflows.nsf", dim, hidden, bins, bound)
    layers: list[nn.Module] = []
    for k in range(flows):
        if k:
            layers.append(ReversePermutation(dim))
        layers.append(MaskedPiecewiseRationalQuadraticAutoregressiveTransform(**layer))
    return Flow(CompositeTransform(layers), StandardNormal([dim]))


PEERS = {
    "nflows.maf": Peer("nflows", "maf", Cost("parallel", "sequential"), _nflows_maf, {}, NflowsFlow),
    "nflows.nsf": Peer("nflows", "nsf", Cost("parallel", "sequential"), _nflows_nsf, {}, NflowsFlow),
}
