"""Public implementations behind the harness's flow contract: zuko, pyro and nflows.

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

Directions: ``forward`` is data->base, ``inverse`` base->data, as for the reference
flows. pyro's NAF and B-NAF have no inverse; they are used in the density direction
(pyro's forward as data->base) and their ``sample`` is recorded as skipped with the
reason. pyro caches a transform's last input and output, so every call here starts
from an empty cache: repeated timings of one input measure the work, not a lookup.

Without the ``peers`` extra (``pip install '.[peers]'``), :func:`unavailable` names
what is missing and :func:`build` raises a ValueError saying so.
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .errors import UserError
from .models import BUILDERS
from .models.base import Cost, normal_log_prob
from .models.masked import default_hidden
from .models.solvers import NATIVE
from .table import Col

INSTALL = "pip install 'flowbench-harness[peers]'"


@dataclass(frozen=True)
class Peer:
    """A registry entry: the library it needs, the reference family it matches, its
    cost per op, and the ops it cannot do with the reason."""

    library: str
    family: str
    cost: Cost
    builder: Callable[..., PeerFlow]
    unsupported: dict[str, str]


class PeerFlow(nn.Module):
    """A peer library's flow behind the harness's contract: ``forward`` (data->base,
    (batch, d) -> z (batch, d), log|det| (batch,)), ``inverse`` (base->data),
    ``log_prob`` (batch, d) -> (batch,) and ``sample``.

    Arguments:
        dim: d.
        module: the library's model (registered, so parameters are counted).
        cost: kinds of ``log_prob`` and ``sample``.
        unsupported: op -> why the library cannot do it.
    """

    # zuko's monotonic transforms take autograd derivatives inside log_prob, which
    # inference mode forbids; the harness times peers under no_grad instead.
    inference_mode = False
    solver = NATIVE  # the library's own algorithm for its slow direction
    reference_solver = None

    def __init__(
        self, dim: int, module: nn.Module, cost: Cost, unsupported: dict[str, str], family: str = "", library: str = ""
    ):
        super().__init__()
        self.dim, self.module, self.cost, self.unsupported = dim, module, cost, dict(unsupported)
        self.family, self.library = family, library

    def reset_stats(self) -> None:
        """A library's solver keeps no counters."""

    def solve_stats(self) -> None:
        return None

    def masks(self) -> dict[str, Tensor]:
        """Masks beyond the ``weight`` + ``mask`` convention (zuko, nflows and pyro's
        MADE follow it): none."""
        return {}

    def _needs(self, op: str) -> None:
        if op in self.unsupported:
            raise NotImplementedError(self.unsupported[op])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Data->base: (batch, d) -> z (batch, d), log|det dz/dx| (batch,)."""
        raise NotImplementedError

    def inverse(self, z: Tensor) -> Tensor:
        """Base->data: (batch, d) -> x (batch, d)."""
        raise NotImplementedError

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log-density: (batch, d) -> (batch,)."""
        z, ladj = self(x)
        return normal_log_prob(z) + ladj

    def sample(self, n: int) -> Tensor:
        """n samples (n, d)."""
        self._needs("sample")
        ref = next(self.parameters())
        return self.inverse(torch.randn(n, self.dim, device=ref.device, dtype=ref.dtype))


# ---- zuko ---------------------------------------------------------------------------


class ZukoFlow(PeerFlow):
    """zuko's lazy flow: ``module()`` is the distribution, whose ``transform`` maps data->base."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.module().transform.call_and_ladj(x)

    def inverse(self, z: Tensor) -> Tensor:
        return self.module().transform.inv(z)

    def log_prob(self, x: Tensor) -> Tensor:
        return self.module().log_prob(x)


def _zuko_maf(dim: int, flows: int, hidden: Sequence[int]) -> nn.Module:
    import zuko

    return zuko.flows.MAF(dim, transforms=flows, hidden_features=tuple(hidden))


def _zuko_naf(dim: int, flows: int, hidden: Sequence[int], ds_hidden: int) -> nn.Module:
    import zuko

    return zuko.flows.NAF(dim, transforms=flows, signal=ds_hidden, hidden_features=tuple(hidden))


# ---- nflows -------------------------------------------------------------------------


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

    if len(set(hidden)) != 1:
        raise UserError(f"nflows.maf needs equal hidden widths, got {tuple(hidden)!r}")
    return MaskedAutoregressiveFlow(
        features=dim,
        hidden_features=hidden[0],
        num_layers=flows,
        num_blocks_per_layer=len(hidden) - 1,
        use_residual_blocks=False,
    )


# ---- pyro ---------------------------------------------------------------------------


def _clear(transforms: Sequence[nn.Module]) -> None:
    """Forgets pyro's cached (x, y) pairs: a repeated input must be recomputed."""
    for t in transforms:
        if t is not REVERSE and getattr(t, "_cache_size", 0):
            t._cached_x_y = None, None


REVERSE = "reverse"  # stands for the order reversal between flows, done as ours (a flip)


class PyroFlow(PeerFlow):
    """A list of pyro transforms, and :data:`REVERSE` markers between them (pyro's
    ``Permute`` is no Module: its index would stay on the CPU when the flow moves)."""

    def __init__(self, dim: int, transforms: list, cost: Cost, unsupported: dict[str, str], **names: str):
        super().__init__(
            dim, nn.ModuleList(t for t in transforms if isinstance(t, nn.Module)), cost, unsupported, **names
        )
        self.transforms = transforms

    def masks(self) -> dict[str, Tensor]:
        """pyro's block layers (B-NAF) keep their weight as ``_weight`` beside a diagonal
        and an off-diagonal mask, ``mask_d`` and ``mask_o``."""
        from pyro.distributions.transforms.block_autoregressive import MaskedBlockLinear

        return {
            f"{prefix}._weight": layer.mask_d + layer.mask_o
            for prefix, layer in self.named_modules()
            if isinstance(layer, MaskedBlockLinear)
        }


class PyroSampling(PyroFlow):
    """pyro transforms in their sampling direction: each transform maps base->data
    (IAF). ``log_prob`` inverts them, data->base."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        _clear(self.transforms)
        ladj = x.new_zeros(x.shape[0])
        for t in reversed(self.transforms):
            z = t.inv(x)
            ladj = ladj - t.log_abs_det_jacobian(z, x)
            x = z
        return x, ladj

    def inverse(self, z: Tensor) -> Tensor:
        _clear(self.transforms)
        for t in self.transforms:
            z = t(z)
        return z


class PyroDensity(PyroFlow):
    """pyro transforms used in the density direction: each maps data->base, as the
    B-NAF and NAF papers fit them; pyro has no inverse for these."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        _clear(self.transforms)
        ladj = x.new_zeros(x.shape[0])
        for t in self.transforms:
            if t is REVERSE:
                x = x.flip(-1)
                continue
            y = t(x)
            ladj = ladj + t.log_abs_det_jacobian(x, y)
            x = y
        return x, ladj

    def inverse(self, z: Tensor) -> Tensor:
        self._needs("sample")
        raise NotImplementedError  # pragma: no cover - _needs raised


def _orders(dim: int, flows: int) -> list[Tensor]:
    """Natural order, then reversed, alternating: the reference flows' Reverse layers,
    built into pyro's masks instead of a separate permutation."""
    natural = torch.arange(dim)
    return [natural if k % 2 == 0 else natural.flip(0) for k in range(flows)]


def _pyro_iaf(dim: int, flows: int, hidden: Sequence[int]) -> list:
    from pyro.distributions.transforms import AffineAutoregressive
    from pyro.nn import AutoRegressiveNN

    return [AffineAutoregressive(AutoRegressiveNN(dim, list(hidden), permutation=p)) for p in _orders(dim, flows)]


def _pyro_naf(dim: int, flows: int, hidden: Sequence[int], ds_hidden: int, ds_layers: int = 1) -> list:
    from pyro.distributions.transforms import NeuralAutoregressive
    from pyro.nn import AutoRegressiveNN

    if ds_layers != 1:
        raise UserError(f"pyro.naf is a DSF (one sigmoid layer): ds_layers must be 1, got {ds_layers!r}")
    return [
        NeuralAutoregressive(
            AutoRegressiveNN(dim, list(hidden), param_dims=[ds_hidden] * 3, permutation=p), hidden_units=ds_hidden
        )
        for p in _orders(dim, flows)
    ]


def _pyro_bnaf(dim: int, flows: int, layers: int, hidden_factor: int, residual: str) -> list:
    from pyro.distributions.transforms import BlockAutoregressive

    residuals = {"gated": "gated", "none": None}
    if residual not in residuals:
        raise UserError(f"pyro.bnaf residual must be one of {', '.join(residuals)}, got {residual!r}")
    out: list = []
    for k in range(flows):
        if k > 0 and dim > 1:  # the reference flow's Reverse between flows
            out.append(REVERSE)
        out.append(BlockAutoregressive(dim, hidden_factors=[hidden_factor] * layers, residual=residuals[residual]))
    return out


# ---- registry -----------------------------------------------------------------------

NO_INVERSE = "{} has no inverse: pyro implements only its forward map"

PEERS: dict[str, Peer] = {
    "zuko.maf": Peer("zuko", "maf", Cost("parallel", "sequential"), _zuko_maf, {}),
    "zuko.naf": Peer("zuko", "naf", Cost("parallel", "iterative"), _zuko_naf, {}),
    "pyro.iaf": Peer("pyro", "iaf", Cost("sequential", "parallel"), _pyro_iaf, {}),
    "pyro.naf": Peer(
        "pyro", "naf", Cost("parallel", "iterative"), _pyro_naf, {"sample": NO_INVERSE.format("pyro NAF")}
    ),
    "pyro.bnaf": Peer(
        "pyro", "bnaf", Cost("parallel", "iterative"), _pyro_bnaf, {"sample": NO_INVERSE.format("pyro B-NAF")}
    ),
    "nflows.maf": Peer("nflows", "maf", Cost("parallel", "sequential"), _nflows_maf, {}),
}
NAMES: tuple[str, ...] = tuple(PEERS)
WRAPPERS: dict[str, type[PeerFlow]] = {"zuko": ZukoFlow, "nflows": NflowsFlow}


def _defaults(fn: Callable) -> dict[str, object]:
    return {k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not p.empty}


def unavailable(name: str) -> str | None:
    """Why peer ``name`` cannot be built here (its library is missing), or None."""
    peer = _peer(name)
    if importlib.util.find_spec(peer.library) is None:
        return f"{peer.library} is not installed ({INSTALL})"
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
    wrapper = WRAPPERS.get(peer.library) or (PyroSampling if peer.family == "iaf" else PyroDensity)
    return wrapper(dim, module, peer.cost, peer.unsupported, family=peer.family, library=peer.library)
