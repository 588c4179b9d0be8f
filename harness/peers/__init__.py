"""Public implementations behind the harness's flow contract: zuko, pyro, nflows,
normflows and sbi; flowjax and numpyro (JAX).

Each peer is built from the same keywords as the reference model of its family, and
translated to the library's own arguments, so ``--models maf,zuko.maf,nflows.maf``
measures identical shapes:

- ``zuko.maf``: ``zuko.flows.MAF``, ``transforms=K``, ``hidden_features=hidden``;
  orders alternate, as ours.
- ``nflows.maf``: ``nflows.flows.MaskedAutoregressiveFlow``, ``num_layers=K``,
  ``hidden_features=h``, ``num_blocks_per_layer=len(hidden) - 1``, no residual
  blocks; the hidden widths must be equal.
- ``pyro.iaf``: K ``AffineAutoregressive(AutoRegressiveNN(d, hidden))``, orders alternating.
- ``zuko.naf``: ``zuko.flows.NAF``, ``transforms=K``, ``hidden_features=hidden``,
  ``signal=ds_hidden`` (zuko's monotonic network stands in for the DDSF).
- ``pyro.naf``: K ``NeuralAutoregressive(AutoRegressiveNN(d, hidden,
  param_dims=[ds_hidden] * 3), hidden_units=ds_hidden)``: a DSF, so ``ds_layers=1``.
- ``pyro.bnaf``: K ``BlockAutoregressive(d, hidden_factors=[hidden_factor] * layers,
  residual=...)`` with ``gated`` -> "gated", ``none`` -> None, reversed between flows.
- ``zuko.nsf``, ``nflows.nsf``, ``normflows.nsf``, ``pyro.nsf``: K autoregressive
  rational-quadratic spline layers with ``bins`` bins on [-bound, bound] and linear
  tails, the conditioner's hidden layers ``hidden``; each library's convention is
  stated where it is built (zuko: soft-clipped widths and exp derivatives; nflows and
  normflows: the authors' layer; pyro: ``order="quadratic"``, its network built here).
- ``sbi.maf``: sbi's default posterior estimator, from sbi's own factory
  (``posterior_nn(model="maf")``), conditional only (harness.peers.sbi).

One module per library (``harness/peers/<library>.py``) holds its adapters and its
``PEERS`` entries; this module gathers them.

Directions: ``forward`` is data->base, ``inverse`` base->data, as for the reference
flows. pyro's NAF and B-NAF have no inverse; they are used in the density direction
(pyro's forward as data->base) and their ``sample`` is recorded as skipped with the
reason.

Without the ``peers`` extra (``pip install '.[peers]'``), :func:`unavailable` names
what is missing and :func:`build` raises a ValueError saying so.
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Callable

from ..errors import UserError
from ..models import BUILDERS
from ..models.masked import default_hidden
from ..table import Col
from . import flowjax, nflows, normflows, numpyro, pyro, sbi, zuko
from .base import INSTALL, Peer, PeerFlow

__all__ = ["INSTALL", "NAMES", "PEERS", "UNCONDITIONAL", "Peer", "PeerFlow", "build", "unavailable"]

PEERS: dict[str, Peer] = {**zuko.PEERS, **pyro.PEERS, **nflows.PEERS, **normflows.PEERS, **sbi.PEERS}
PEERS.update({**flowjax.PEERS, **numpyro.PEERS})  # JAX (the jax extra)
NAMES: tuple[str, ...] = tuple(PEERS)
# what `--models peers` and `all` stand for: the peers that are built without a context
# (a conditional-only estimator is named on its own, with --context)
UNCONDITIONAL: tuple[str, ...] = tuple(n for n in NAMES if not PEERS[n].needs_context)


def _defaults(fn: Callable) -> dict[str, object]:
    return {k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not p.empty}


def unavailable(name: str) -> str | None:
    """Why peer ``name`` cannot be built here (its library is missing), or None."""
    peer = _peer(name)
    if importlib.util.find_spec(peer.library) is None:
        return f"{peer.library} is not installed ({peer.install})"
    return None


def _peer(name: str) -> Peer:
    if name not in PEERS:
        raise UserError(f"unknown peer {name!r}; allowed: {', '.join(NAMES)}")
    return PEERS[name]


def build(name: str, dim: int, **config: object) -> PeerFlow:
    """Builds peer ``name`` over ``dim`` dimensions, matched to its family's reference
    model with the same ``config`` (float32, CPU).

    Raises ValueError for an unknown name, a keyword the peer cannot match, or a
    missing library.
    """
    peer = _peer(name)
    missing = unavailable(name)
    if missing:
        raise UserError(f"peer {name!r} is unavailable: {missing}")
    params = inspect.signature(peer.builder).parameters
    allowed = [p for p in params if p != Col.DIM]
    for key in config:
        if key not in allowed:
            raise UserError(f"unknown keyword {key!r} for peer {name!r}; allowed: {', '.join(allowed)}")
    # the family's reference defaults, then the peer's own (pyro's NAF is a DSF), then config
    kwargs = {**_defaults(BUILDERS[peer.family]), **_defaults(peer.builder), **config}
    if "hidden" in params:
        kwargs["hidden"] = tuple(kwargs.get("hidden") or default_hidden(dim))
    kwargs = {k: v for k, v in kwargs.items() if k in params}
    module = peer.builder(dim, **kwargs)
    names = dict(family=peer.family, library=peer.library, context=int(kwargs.get("context") or 0))
    return peer.wrapper(dim, module, peer.cost, peer.unsupported, **names)
