"""numpyro's autoregressive transforms behind the contract (JAX;
:mod:`harness.peers.jaxflow`): ``numpyro.iaf``, ``numpyro.bnaf``.

- ``numpyro.iaf``: K ``InverseAutoregressiveTransform`` on
  ``numpyro.nn.AutoregressiveNN(d, hidden, permutation=order)``, orders alternating as
  ours. numpyro's transform maps base->data in one pass (sampling: the parallel
  direction, as our IAF's) and inverts with a d-step ``fori_loop`` (log_prob: the
  sequential one); it clips log-scales to [-5, 3].
- ``numpyro.bnaf``: K ``BlockNeuralAutoregressiveTransform`` on
  ``BlockNeuralAutoregressiveNN(d, [hidden_factor] * layers, residual)``, reversed
  between flows as ours, LeakyTanh activations (numpyro's default). numpyro gives it
  no inverse; its autoguide uses its one pass base->data. Here that pass is timed as
  data->base (log_prob, the direction ours and pyro's are timed in: the same network
  pass and log-det); sample is a stated skip.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import UserError
from ..models.base import Cost
from .base import Peer, orders
from .jaxflow import INSTALL_JAX, JaxFlow, JaxModule, jax

NO_INVERSE = "numpyro's BlockNeuralAutoregressiveTransform has no inverse (its one pass is timed as log_prob)"


def _normal_log_prob(z):
    jnp = jax().numpy
    return -0.5 * (z * z).sum(-1) - 0.5 * z.shape[-1] * jnp.log(2 * jnp.pi)


def _iaf(dim: int, flows: int, hidden: Sequence[int]) -> JaxModule:
    from numpyro.distributions.flows import InverseAutoregressiveTransform
    from numpyro.nn import AutoregressiveNN

    keys = jax().random.split(jax().random.key(0), flows)
    nets, params = [], []
    for key, order in zip(keys, orders(dim, flows)):
        init, apply = AutoregressiveNN(dim, list(hidden), permutation=np.asarray(order))
        nets.append(apply)
        params.append(init(key, (dim,))[1])

    def layers(p):
        return [InverseAutoregressiveTransform(lambda x, a=a, q=q: a(q, x)) for a, q in zip(nets, p)]

    def inverse(p, z):  # base->data: each layer's one pass
        for layer in layers(p):
            z = layer(z)
        return z

    def forward(p, x):  # data->base: each layer's d-step inverse, last layer first
        ladj = 0.0
        for layer in reversed(layers(p)):
            u = layer.inv(x)
            ladj = ladj - layer.log_abs_det_jacobian(u, x)
            x = u
        return x, ladj

    def log_prob(p, x):
        z, ladj = forward(p, x)
        return _normal_log_prob(z) + ladj

    ops = dict(forward=forward, inverse=inverse, log_prob=log_prob)
    return JaxModule(params, params, ops, lambda: _iaf(dim, flows, hidden))


def _bnaf(dim: int, flows: int, layers: int, hidden_factor: int, residual: str) -> JaxModule:
    from numpyro.nn import BlockNeuralAutoregressiveNN

    residuals = {"gated": "gated", "none": None}
    if residual not in residuals:
        raise UserError(f"numpyro.bnaf residual must be one of {', '.join(residuals)}, got {residual!r}")
    keys = jax().random.split(jax().random.key(0), flows)
    nets, params = [], []
    for key in keys:
        init, apply = BlockNeuralAutoregressiveNN(dim, [hidden_factor] * layers, residual=residuals[residual])
        nets.append(apply)
        params.append(init(key, (dim,))[1])

    def forward(p, x):
        ladj = 0.0
        for k, (apply, q) in enumerate(zip(nets, p)):
            if k > 0:
                x = x[..., ::-1]  # the reference flow's reversal between flows
            x, logdet = apply(q, x)
            ladj = ladj + logdet.sum(-1)
        return x, ladj

    def log_prob(p, x):
        z, ladj = forward(p, x)
        return _normal_log_prob(z) + ladj

    ops = dict(forward=forward, log_prob=log_prob)
    return JaxModule(params, params, ops, lambda: _bnaf(dim, flows, layers, hidden_factor, residual))


PEERS = {
    "numpyro.iaf": Peer("numpyro", "iaf", Cost("sequential", "parallel"), _iaf, {}, JaxFlow, INSTALL_JAX),
    "numpyro.bnaf": Peer(
        "numpyro", "bnaf", Cost("parallel", "iterative"), _bnaf, {"sample": NO_INVERSE}, JaxFlow, INSTALL_JAX
    ),
}
