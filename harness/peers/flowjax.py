"""flowjax's flows behind the contract (JAX; :mod:`harness.peers.jaxflow`):
``flowjax.maf``, ``flowjax.nsf``, ``flowjax.bnaf``.

Each is flowjax's own constructor (``flowjax.flows``) over a standard normal base, with
``invert=True`` (flowjax's choice for fitting by maximum likelihood): the layers map
data->base in one pass, so log_prob is the parallel direction and sampling the
sequential (MAF, NSF: a scan over d) or iterative one (B-NAF: flowjax's bisection).
Matched to ours: ``flow_layers=flows``; MAF and NSF ``nn_width=hidden[0]``,
``nn_depth=len(hidden)`` (equal widths), NSF ``RationalQuadraticSpline(knots=bins - 1,
interval=bound)`` (flowjax counts knots, not bins; identity tails); B-NAF
``nn_depth=layers``, ``nn_block_dim=hidden_factor``. flowjax permutes the dimensions
at random between layers (ours reverses them), gives its affine transformer a minimum
scale, uses LeakyTanh in B-NAF and has no gated residual: the parameter counts are
compared in the report. Only the bijection's arrays are parameters (the base's mean
and scale are not).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..models.base import Cost
from .base import Peer, equal_widths
from .jaxflow import INSTALL_JAX, JaxFlow, JaxModule, jax


def _flowjax(dim: int, build) -> JaxModule:
    import equinox as eqx
    import jax.numpy as jnp
    import paramax
    from flowjax.distributions import Normal

    dist = build(jax().random.key(0), Normal(jnp.zeros(dim)))
    params, static = eqx.partition(dist, eqx.is_inexact_array)

    def model(p):
        return paramax.unwrap(eqx.combine(p, static))

    def forward(p, x):
        return jax().vmap(model(p).bijection.inverse_and_log_det)(x)

    def inverse(p, z):
        return jax().vmap(model(p).bijection.transform)(z)

    def log_prob(p, x):
        return model(p).log_prob(x)

    ops = dict(forward=forward, inverse=inverse, log_prob=log_prob)
    return JaxModule(params, params.bijection, ops, lambda: _flowjax(dim, build))


def _maf(dim: int, flows: int, hidden: Sequence[int]):
    from flowjax.flows import masked_autoregressive_flow

    width = equal_widths("flowjax.maf", hidden)

    def build(key, base):
        return masked_autoregressive_flow(key, base_dist=base, flow_layers=flows, nn_width=width, nn_depth=len(hidden))

    return _flowjax(dim, build)


def _nsf(dim: int, flows: int, hidden: Sequence[int], bins: int, bound: float):
    from flowjax.bijections import RationalQuadraticSpline
    from flowjax.flows import masked_autoregressive_flow

    width = equal_widths("flowjax.nsf", hidden)

    def build(key, base):
        spline = RationalQuadraticSpline(knots=bins - 1, interval=bound)
        return masked_autoregressive_flow(
            key, base_dist=base, transformer=spline, flow_layers=flows, nn_width=width, nn_depth=len(hidden)
        )

    return _flowjax(dim, build)


def _bnaf(dim: int, flows: int, layers: int, hidden_factor: int, residual: str):
    from flowjax.flows import block_neural_autoregressive_flow

    def build(key, base):
        return block_neural_autoregressive_flow(
            key, base_dist=base, flow_layers=flows, nn_depth=layers, nn_block_dim=hidden_factor
        )

    return _flowjax(dim, build)


PEERS = {
    "flowjax.maf": Peer("flowjax", "maf", Cost("parallel", "sequential"), _maf, {}, JaxFlow, INSTALL_JAX),
    "flowjax.nsf": Peer("flowjax", "nsf", Cost("parallel", "sequential"), _nsf, {}, JaxFlow, INSTALL_JAX),
    "flowjax.bnaf": Peer("flowjax", "bnaf", Cost("parallel", "iterative"), _bnaf, {}, JaxFlow, INSTALL_JAX),
}
