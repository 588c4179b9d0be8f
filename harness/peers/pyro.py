"""pyro's transforms behind the contract: ``pyro.iaf``, ``pyro.naf``, ``pyro.bnaf``, ``pyro.nsf``.

pyro caches a transform's last input and output, so every call here starts from an
empty cache: repeated timings of one input measure the work, not a lookup.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..errors import UserError
from ..models.base import Cost
from .base import REVERSE, Peer, PeerFlow, orders


def _clear(transforms: Sequence[nn.Module]) -> None:
    """Forgets pyro's cached (x, y) pairs: a repeated input must be recomputed."""
    for t in transforms:
        if t is not REVERSE and getattr(t, "_cache_size", 0):
            t._cached_x_y = None, None


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
        """Base->data through pyro's own inverses (the spline's d passes); NAF and B-NAF
        have none (``_needs`` raises)."""
        self._needs("sample")
        _clear(self.transforms)
        for t in reversed(self.transforms):
            z = z.flip(-1) if t is REVERSE else t.inv(z)
        return z


def _pyro_iaf(dim: int, flows: int, hidden: Sequence[int]) -> list:
    from pyro.distributions.transforms import AffineAutoregressive
    from pyro.nn import AutoRegressiveNN

    return [AffineAutoregressive(AutoRegressiveNN(dim, list(hidden), permutation=p)) for p in orders(dim, flows)]


def _pyro_naf(dim: int, flows: int, hidden: Sequence[int], ds_hidden: int, ds_layers: int = 1) -> list:
    from pyro.distributions.transforms import NeuralAutoregressive
    from pyro.nn import AutoRegressiveNN

    if ds_layers != 1:
        raise UserError(f"pyro.naf is a DSF (one sigmoid layer): ds_layers must be 1, got {ds_layers!r}")
    return [
        NeuralAutoregressive(
            AutoRegressiveNN(dim, list(hidden), param_dims=[ds_hidden] * 3, permutation=p), hidden_units=ds_hidden
        )
        for p in orders(dim, flows)
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


def _pyro_nsf(dim: int, flows: int, hidden: Sequence[int], bins: int, bound: float) -> list:
    """K ``SplineAutoregressive(order="quadratic")`` on ``AutoRegressiveNN(d, hidden,
    param_dims=[K, K, K - 1])``, orders alternating. pyro's helper
    ``spline_autoregressive`` gives the network the linear order's four outputs
    (``[K, K, K - 1, K]``) whatever the order, so the network is built here."""
    from pyro.distributions.transforms import SplineAutoregressive
    from pyro.nn import AutoRegressiveNN

    return [
        SplineAutoregressive(
            dim,
            AutoRegressiveNN(dim, list(hidden), param_dims=[bins, bins, bins - 1], permutation=p),
            count_bins=bins,
            bound=bound,
            order="quadratic",
        )
        for p in orders(dim, flows)
    ]


NO_INVERSE = "{} has no inverse: pyro implements only its forward map"

PEERS = {
    "pyro.iaf": Peer("pyro", "iaf", Cost("sequential", "parallel"), _pyro_iaf, {}, PyroSampling),
    "pyro.naf": Peer(
        "pyro", "naf", Cost("parallel", "iterative"), _pyro_naf, {"sample": NO_INVERSE.format("pyro NAF")}, PyroDensity
    ),
    "pyro.bnaf": Peer(
        "pyro",
        "bnaf",
        Cost("parallel", "iterative"),
        _pyro_bnaf,
        {"sample": NO_INVERSE.format("pyro B-NAF")},
        PyroDensity,
    ),
    "pyro.nsf": Peer("pyro", "nsf", Cost("parallel", "sequential"), _pyro_nsf, {}, PyroDensity),
}
