"""normflows' flows behind the contract: ``normflows.nsf``."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..models.base import Cost
from .base import Peer, PeerFlow, authors_spline


class NormflowsFlow(PeerFlow):
    """normflows' autoregressive layers in a list, data->base in their own forward
    (normflows' ``Flow`` wrappers call it ``inverse``), the order reversed between
    layers by a flip, as its ``Permute`` layers would."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        ladj = x.new_zeros(x.shape[0])
        for k, layer in enumerate(self.module):
            x, log_det = layer(x.flip(-1) if k else x)
            ladj = ladj + log_det.view(-1)
        return x, ladj

    def inverse(self, z: Tensor) -> Tensor:
        for k in reversed(range(len(self.module))):
            z = self.module[k].inverse(z)[0]
            z = z.flip(-1) if k else z
        return z


def _normflows_nsf(dim: int, flows: int, hidden: Sequence[int], bins: int, bound: float) -> nn.Module:
    """K ``MaskedPiecewiseRationalQuadraticAutoregressive`` (normflows' copy of the
    authors' layer) with linear tails at ``bound`` and ``num_blocks=len(hidden) - 1``
    plain blocks. normflows' ``AutoregressiveRationalQuadraticSpline`` wrapper always
    uses residual blocks (two layers each), so the layer is built directly; normflows
    initialises it to the identity (its ``init_identity``), as it does by default."""
    from normflows.flows.neural_spline.autoregressive import MaskedPiecewiseRationalQuadraticAutoregressive

    layer = authors_spline("normflows.nsf", dim, hidden, bins, bound)
    return nn.ModuleList(MaskedPiecewiseRationalQuadraticAutoregressive(**layer) for _ in range(flows))


PEERS = {"normflows.nsf": Peer("normflows", "nsf", Cost("parallel", "sequential"), _normflows_nsf, {}, NormflowsFlow)}
