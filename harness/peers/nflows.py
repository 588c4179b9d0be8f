"""nflows' flows behind the contract: ``nflows.maf``, ``nflows.nsf``."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..models.base import Cost
from .base import Peer, PeerFlow, authors_spline, equal_widths


class NflowsFlow(PeerFlow):
    """nflows' ``Flow``: its ``_transform`` maps data->base and returns the log-det. nflows
    takes a context per point: one context (1, c) is expanded over the batch (a view),
    as nflows' own ``sample(n, context)`` repeats it."""

    def _context(self, context: Tensor | None, batch: int) -> Tensor | None:
        rows = self.rows(context, batch)
        return None if rows is None else rows.expand(batch, -1)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.module._transform(x, context=self._context(context, x.shape[0]))

    def inverse(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        return self.module._transform.inverse(z, context=self._context(context, z.shape[0]))[0]

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.module.log_prob(x, context=self._context(context, x.shape[0]))


def _nflows_maf(dim: int, flows: int, hidden: Sequence[int], context: int = 0) -> nn.Module:
    """nflows' ``MaskedAutoregressiveFlow`` with plain blocks; with a context, the same
    layers (a ``ReversePermutation`` before each ``MaskedAffineAutoregressiveTransform``)
    built with ``context_features``, which that class does not pass on (sbi's default
    posterior estimator, a conditional MAF, stacks the same nflows layer)."""
    from nflows.flows import MaskedAutoregressiveFlow

    width = equal_widths("nflows.maf", hidden)
    if not context:
        return MaskedAutoregressiveFlow(
            features=dim,
            hidden_features=width,
            num_layers=flows,
            num_blocks_per_layer=len(hidden) - 1,
            use_residual_blocks=False,
        )
    from nflows.distributions import StandardNormal
    from nflows.flows import Flow
    from nflows.transforms import CompositeTransform, MaskedAffineAutoregressiveTransform, ReversePermutation

    layers: list[nn.Module] = []
    for _ in range(flows):
        layers.append(ReversePermutation(dim))
        layers.append(
            MaskedAffineAutoregressiveTransform(
                features=dim,
                hidden_features=width,
                context_features=context,
                num_blocks=len(hidden) - 1,
                use_residual_blocks=False,
            )
        )
    return Flow(CompositeTransform(layers), StandardNormal([dim]))


def _nflows_nsf(dim: int, flows: int, hidden: Sequence[int], bins: int, bound: float, context: int = 0) -> nn.Module:
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

    layer = authors_spline("nflows.nsf", dim, hidden, bins, bound, context)
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
