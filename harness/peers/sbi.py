"""sbi's default posterior estimator behind the contract: ``sbi.maf``.

Built by sbi's own factory, ``sbi.neural_nets.posterior_nn(model="maf")``, the
estimator that sbi's NPE trains by default: K x (nflows' ``MaskedAffineAutoregressive
Transform`` with ``tanh`` activations, ``num_blocks`` plain blocks, then a
``RandomPermutation``), a standardizing transform of theta first and a z-scoring
embedding of x (its ``z_score_theta`` and ``z_score_x`` defaults, ``independent``).
Matched to ours: ``num_transforms=flows``, ``hidden_features=hidden[0]``,
``num_blocks=len(hidden) - 1`` (equal widths), so its parameter count is ours. sbi
z-scores with the mean and spread of a training batch: here 1,000 draws of N(0, I) for
theta and for x (seeded), so both standardizations are near the identity and cost what
they cost in sbi. It is a conditional estimator only: with no context it is not built.
Directions: ``forward`` data->base (theta -> z), ``inverse`` base->data.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import UserError
from ..models.base import Cost
from .base import Peer, equal_widths
from .nflows import NflowsFlow

BATCH = 1000  # the z-scoring batch: sbi computes its means and spreads from training data


class SbiFlow(NflowsFlow):
    """sbi's ``NFlowsFlow`` through its nflows ``Flow`` (``.net``): the context goes
    through the flow's embedding (sbi's z-scoring of x) before the transform, as
    nflows' own ``log_prob`` and ``sample`` do."""

    def _embedded(self, context: Tensor | None, batch: int) -> Tensor | None:
        rows = self.rows(context, batch)
        return None if rows is None else self.module._embedding_net(rows).expand(batch, -1)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.module._transform(x, context=self._embedded(context, x.shape[0]))

    def inverse(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        return self.module._transform.inverse(z, context=self._embedded(context, z.shape[0]))[0]


def _sbi_maf(dim: int, flows: int, hidden: Sequence[int], context: int = 0) -> nn.Module:
    if not context:
        raise UserError("sbi.maf is sbi's posterior estimator q(theta | x), conditional only: give it a context")
    from sbi.neural_nets import posterior_nn

    width = equal_widths("sbi.maf", hidden)
    generator = torch.Generator().manual_seed(0)
    theta = torch.randn(BATCH, dim, generator=generator)
    x = torch.randn(BATCH, context, generator=generator)
    build = posterior_nn(model="maf", hidden_features=width, num_transforms=flows, num_blocks=len(hidden) - 1)
    return build(theta, x).net


PEERS = {
    "sbi.maf": Peer("sbi", "maf", Cost("parallel", "sequential"), _sbi_maf, {}, SbiFlow, needs_context=True),
}
