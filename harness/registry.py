"""Every flow the harness can measure, by name.

A name is a reference model (``maf``), a peer (``zuko.maf``), a flow registered by an
installed package under the entry-point group ``flowbench.models``, or a user's
``module:factory``, where ``factory(dim, **config)`` returns the flow. Objects that are
not already behind the harness's contract (:class:`harness.models.Flow` or a
:class:`harness.peers.PeerFlow`) are adapted by :class:`UserFlow`.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from collections.abc import Callable
from importlib.metadata import entry_points

from torch import Tensor, nn

from . import peers
from .errors import UserError
from .models import NAMES, Cost, Flow, Measurable, build
from .ops import OURS
from .table import Col

GROUP = "flowbench.models"


class UserFlow(peers.PeerFlow):
    """A user's ``nn.Module`` behind the contract: it needs ``log_prob(x)``, and
    ``inverse(z)`` (base->data) for sampling on given base points; ``module(x)``
    returning ``(z, log|det dz/dx|)`` enables the log-det and round-trip checks.
    Its ``cost`` is used if it has one (a :class:`Cost`), else both ops count as
    parallel passes; its ``family`` (a reference model's name) if it has one. Its
    library is the module of its spec (or the plugin's name)."""

    def __init__(self, dim: int, module: nn.Module, name: str, library: str = ""):
        if not callable(getattr(module, "log_prob", None)):
            raise UserError(f"{name} built a {type(module).__name__} without log_prob(x); a flow needs one")
        unsupported = {}
        if not callable(getattr(module, "inverse", None)):
            unsupported["sample"] = f"{name} has no inverse(z): sampling is timed on given base points"
        cost = module.cost if isinstance(getattr(module, "cost", None), Cost) else Cost("parallel", "parallel")
        family = module.family if isinstance(getattr(module, Col.FAMILY, None), str) else ""
        super().__init__(dim, module, cost, unsupported, family=family, library=library or name.partition(":")[0])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = self.module(x)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise NotImplementedError(f"{type(self.module).__name__}(x) does not return (z, log|det dz/dx|)")
        return out

    def inverse(self, z: Tensor) -> Tensor:
        self._needs("sample")
        return self.module.inverse(z)

    def log_prob(self, x: Tensor) -> Tensor:
        return self.module.log_prob(x)

    def sample(self, n: int) -> Tensor:
        if callable(getattr(self.module, "sample", None)) and "sample" in self.unsupported:
            return self.module.sample(n)
        return super().sample(n)


def _import(spec: str) -> Callable[..., object]:
    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:  # a module beside the caller, as python -m finds it
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise UserError(f"cannot import {module_name!r} for model {spec!r}: {e}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UserError(f"model {spec!r}: {module_name!r} has no callable {attr!r}")
    return factory


def plugins() -> dict[str, object]:
    """Flows that installed packages register under the ``flowbench.models`` group."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def known(name: str) -> bool:
    """A reference model, a peer, a module:factory spec or a registered plugin."""
    return name in NAMES or name in peers.NAMES or ":" in name or name in plugins()


def factory(name: str) -> Callable[..., Measurable]:
    """``make(dim, **config)`` for any model name; ValueError naming the allowed forms."""
    if name in NAMES:
        return lambda dim, **config: build(name, dim, **config)
    if name in peers.NAMES:
        return lambda dim, **config: peers.build(name, dim, **config)
    if name in plugins():
        make = plugins()[name].load()
    elif ":" in name:
        make = _import(name)
    else:
        raise UserError(
            f"unknown model {name!r}; allowed: {', '.join(NAMES + peers.NAMES)}, a flow registered under "
            f"{GROUP!r}, or module:factory (factory(dim, **config) returns the flow)"
        )

    def user(dim: int, **config: object) -> Measurable:
        flow = make(dim, **config)
        if isinstance(flow, (Flow, peers.PeerFlow)):
            return flow
        if not isinstance(flow, nn.Module):
            raise UserError(f"{name} returned a {type(flow).__name__}, not a torch.nn.Module flow")
        return UserFlow(dim, flow, name)

    return user


def build_any(name: str, dim: int, **config: object) -> Measurable:
    """The flow of any model name at ``dim``."""
    return factory(name)(dim, **config)


@functools.cache
def identity(name: str) -> tuple[str, str]:
    """(family, library) of any model name: the reference family it matches ('' if
    none) and who wrote it (``flowbench`` for ours)."""
    if name in NAMES:
        return name, OURS
    if name in peers.NAMES:
        return peers.PEERS[name].family, peers.PEERS[name].library
    flow = build_any(name, 1)
    return flow.family, flow.library


__all__ = ["GROUP", "UserFlow", "build_any", "factory", "identity", "known", "plugins"]
