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
from dataclasses import dataclass
from importlib.metadata import entry_points

import torch
from torch import Tensor, nn

from . import peers
from .errors import UserError
from .models import NAMES, Cost, Flow, Measurable, build, keywords
from .ops import OURS
from .table import Col

GROUP = "flowbench.models"


class UserCodeExit(RuntimeError):
    """User code raised what is not an Exception (SystemExit, KeyboardInterrupt, a
    BaseException of its own): an error of that flow's row or check, never the end of
    the command, let alone a silent exit 0."""


STATE_NAMES = ("default dtype", "intra-op threads", "grad mode", "deterministic algorithms")


def torch_state() -> tuple:
    """torch's process-wide settings that a flow's call may change and every later
    measurement would inherit (:data:`STATE_NAMES`); a tuple, cheap to take per call."""
    import torch

    return (
        torch.get_default_dtype(),
        torch.get_num_threads(),
        torch.is_grad_enabled(),
        torch.are_deterministic_algorithms_enabled(),
    )


def restore(state: tuple) -> list[str]:
    """Sets torch's settings back to ``state``; returns the names of those that differed."""
    now = torch_state()
    if now == state:
        return []
    setters = (torch.set_default_dtype, torch.set_num_threads, torch.set_grad_enabled)
    setters += (torch.use_deterministic_algorithms,)
    changed = []
    for name, was, is_, setter in zip(STATE_NAMES, state, now, setters):
        if was != is_:
            setter(was)
            changed.append(name)
    return changed


def contained(what: str, call: Callable[[], object], changed: set[str] | None = None) -> object:
    """``call()`` of user code, with anything but an Exception turned into UserCodeExit,
    and torch's settings (:func:`torch_state`) set back after it; the names of those it
    changed are added to ``changed``."""
    state = torch_state()
    try:
        return call()
    except Exception:
        raise
    except BaseException as e:
        raise UserCodeExit(f"{what} raised {type(e).__name__}({e})") from None
    finally:
        undone = restore(state)
        if undone and changed is not None:
            changed.update(undone)


class UserFlow(peers.PeerFlow):
    """A user's ``nn.Module`` behind the contract: it needs ``log_prob(x)``, and
    ``inverse(z)`` (base->data) for sampling on given base points; ``module(x)``
    returning ``(z, log|det dz/dx|)`` enables the log-det and round-trip checks.
    Its ``cost`` is used if it has one (a :class:`Cost`), else both ops count as
    parallel passes; its ``family`` (a reference model's name) if it has one. Its
    library is the module of its spec (or the plugin's name). A factory given
    ``context=C`` builds a conditional flow: its calls then take the context as a second
    argument (``log_prob(x, context)``, ``inverse(z, context)``, ``module(x, context)``)."""

    def __init__(self, dim: int, module: nn.Module, name: str, library: str = "", context: int = 0):
        if not callable(getattr(module, "log_prob", None)):
            raise UserError(f"{name} built a {type(module).__name__} without log_prob(x); a flow needs one")
        unsupported = {}
        if not callable(getattr(module, "inverse", None)):
            unsupported["sample"] = f"{name} has no inverse(z): sampling is timed on given base points"
        cost = module.cost if isinstance(getattr(module, "cost", None), Cost) else Cost("parallel", "parallel")
        family = module.family if isinstance(getattr(module, Col.FAMILY, None), str) else ""
        library = library or name.partition(":")[0]
        super().__init__(dim, module, cost, unsupported, family=family, library=library, context=context)
        self.name = name
        self.changed: set[str] = set()  # torch settings its calls changed (each set back after the call)

    def _given(self, context: Tensor | None, batch: int) -> tuple:
        rows = self.rows(context, batch)
        return () if rows is None else (rows,)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        given = self._given(context, x.shape[0])
        out = contained(f"{self.name}(x)", lambda: self.module(x, *given), self.changed)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise NotImplementedError(f"{type(self.module).__name__}(x) does not return (z, log|det dz/dx|)")
        return out

    def inverse(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        self._needs("sample")
        given = self._given(context, z.shape[0])
        return contained(f"{self.name}.inverse", lambda: self.module.inverse(z, *given), self.changed)

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        given = self._given(context, x.shape[0])
        return contained(f"{self.name}.log_prob", lambda: self.module.log_prob(x, *given), self.changed)

    def sample(self, n: int, context: Tensor | None = None) -> Tensor:
        if callable(getattr(self.module, "sample", None)) and "sample" in self.unsupported:
            given = self._given(context, n)
            return contained(f"{self.name}.sample", lambda: self.module.sample(n, *given), self.changed)
        return super().sample(n, context)


def _import(spec: str) -> Callable[..., object]:
    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:  # a module beside the caller, as python -m finds it
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise UserError(f"cannot import {module_name!r} for model {spec!r}: {e}") from None
    except BaseException as e:  # a user's module may fail at import with anything, sys.exit(0) too
        raise UserError(f"importing {module_name!r} for model {spec!r} raised {type(e).__name__}: {e}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UserError(f"model {spec!r}: {module_name!r} has no callable {attr!r}")
    return factory


def plugins() -> dict[str, object]:
    """Flows that installed packages register under the ``flowbench.models`` group."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def importable(name: str) -> None:
    """Refuses (UserError, one line) a ``module:factory`` or plugin name whose module
    cannot be imported or has no such factory: a usage error, found before any work."""
    if name not in NAMES and name not in peers.NAMES and (":" in name or name in plugins()):
        factory_of(name)


def known(name: str) -> bool:
    """A reference model, a peer, a module:factory spec or a registered plugin."""
    return name in NAMES or name in peers.NAMES or ":" in name or name in plugins()


def factory(name: str) -> Callable[..., Measurable]:
    """``make(dim, **config)`` for any model name; ValueError naming the allowed forms."""
    if name in NAMES:
        return lambda dim, **config: build(name, dim, **config)
    if name in peers.NAMES:
        return lambda dim, **config: peers.build(name, dim, **config)
    if name in plugins() or ":" in name:
        make = factory_of(name)
    else:
        raise UserError(
            f"unknown model {name!r}; allowed: {', '.join(NAMES + peers.NAMES)}, a flow registered under "
            f"{GROUP!r}, or module:factory (factory(dim, **config) returns the flow)"
        )

    def user(dim: int, **config: object) -> Measurable:
        built: set[str] = set()
        flow = contained(f"{name}'s factory", lambda: make(dim, **config), built)
        if isinstance(flow, (Flow, peers.PeerFlow)):
            return flow
        if not isinstance(flow, nn.Module):
            raise UserError(f"{name} returned a {type(flow).__name__}, not a torch.nn.Module flow")
        adapted = UserFlow(dim, flow, name, context=int(config.get(Col.CONTEXT) or 0))
        adapted.changed |= built
        return adapted

    return user


def check_config(name: str, config: dict) -> None:
    """Refuses keywords ``name``'s factory does not take, naming them and the allowed ones,
    and for a reference model a value it cannot take (built once at d = 2: bins=1,
    flows=0, ...), so a command stops in one line before it measures."""
    import inspect

    if not config:
        return
    if name in NAMES:
        allowed = list(keywords(name))
    elif name in peers.NAMES:
        allowed = [p for p in inspect.signature(peers.PEERS[name].builder).parameters if p != Col.DIM]
    else:
        params = list(inspect.signature(factory_of(name)).parameters.values())[1:]
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return
        allowed = [p.name for p in params]
    bad = [k for k in config if k not in allowed]
    if bad and name in NAMES:
        build(name, 2, **config)  # names the keyword (a context, why this family takes none)
    if bad:
        raise UserError(f"unknown keyword {bad[0]!r} for model {name!r}; allowed: {', '.join(allowed) or 'none'}")
    if name in NAMES:
        build(name, 2, **config)


def factory_of(name: str) -> Callable[..., object]:
    """The user's own factory of a plugin or ``module:factory`` name (unwrapped)."""
    if name in plugins():
        try:
            return plugins()[name].load()
        except Exception as e:
            raise UserError(f"the {GROUP!r} entry point {name!r} cannot be loaded: {type(e).__name__}: {e}") from None
    return _import(name)


def build_any(name: str, dim: int, **config: object) -> Measurable:
    """The flow of any model name at ``dim``."""
    return factory(name)(dim, **config)


@dataclass(frozen=True)
class Identity:
    """What the harness knows of a flow without measuring it: the reference family it
    matches ('' if none), who wrote it (``flowbench`` for ours) and its ops' costs."""

    family: str
    library: str
    cost: Cost


_LEARNED: dict[str, Identity] = {}  # users' flows described by a probe (a worker built them)


def learn(name: str, found: Identity) -> None:
    """Records what a probe found of a user's flow, so it is not built here."""
    _LEARNED[name] = found


@functools.cache
def _ours(name: str) -> Identity:
    """A reference model's identity: its cost is its class's, so one build at d = 1 per
    process tells it (the grid asks for every configuration)."""
    return Identity(name, OURS, build(name, 1).cost)


def describe(name: str) -> Identity:
    """The identity of any model name; a user's flow is built at d = 1 to learn it
    (unless a probe in a worker already did: :func:`learn`)."""
    if name in NAMES:
        return _ours(name)
    if name in peers.NAMES:
        p = peers.PEERS[name]
        return Identity(p.family, p.library, p.cost)
    if name not in _LEARNED:
        flow = build_any(name, 1)
        _LEARNED[name] = Identity(flow.family, flow.library, flow.cost)
    return _LEARNED[name]


def identity(name: str) -> tuple[str, str]:
    """(family, library) of any model name."""
    found = describe(name)
    return found.family, found.library


def identity_or_module(name: str) -> tuple[str, str]:
    """(family, library) of a model name, or ('', its module) when building it fails:
    for labelling the row of a flow that could not be measured."""
    try:
        return identity(name)
    except Exception:  # a user's factory may raise anything; the row says why elsewhere
        return "", name.partition(":")[0]


__all__ = ["GROUP", "Identity", "UserFlow", "build_any", "describe", "factory", "identity", "known", "learn", "plugins"]
