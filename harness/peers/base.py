"""What every peer adapter shares: the registry entry and the flow contract."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import UserError
from ..models.base import Cost, context_rows, normal_log_prob
from ..models.solvers import NATIVE

INSTALL = "pip install 'flowbench-harness[peers]'"
REVERSE = "reverse"  # stands for the order reversal between flows, done as ours (a flip)


@dataclass(frozen=True)
class Peer:
    """A registry entry: the library it needs, the reference family it matches, its
    cost per op, the function that builds the library's model from the family's
    keywords, the ops it cannot do with the reason, and the :class:`PeerFlow` that puts
    the model behind the contract."""

    library: str
    family: str
    cost: Cost
    builder: Callable[..., object]
    unsupported: dict[str, str]
    wrapper: type[PeerFlow]
    install: str = INSTALL  # what installs its library
    needs_context: bool = False  # a conditional estimator only (sbi's): built only with a context


class PeerFlow(nn.Module):
    """A peer library's flow behind the harness's contract: ``forward`` (data->base,
    (batch, d) -> z (batch, d), log|det| (batch,)), ``inverse`` (base->data),
    ``log_prob`` (batch, d) -> (batch,) and ``sample``.

    Arguments:
        dim: d.
        module: the library's model (registered, so parameters are counted).
        cost: kinds of ``log_prob`` and ``sample``.
        unsupported: op -> why the library cannot do it.
        context: features of the context the library's flow is conditioned on (0: none);
            its ops then take ``context`` as ours do, (batch, c) or (c,).
    """

    # zuko's monotonic transforms take autograd derivatives inside log_prob, which
    # inference mode forbids; the harness times peers under no_grad instead.
    inference_mode = False
    framework = "torch"  # the stack the library computes in (torch, or jax: harness.peers.jaxflow)
    solver = NATIVE  # the library's own algorithm for its slow direction
    reference_solver = None

    def __init__(
        self,
        dim: int,
        module: nn.Module,
        cost: Cost,
        unsupported: dict[str, str],
        family: str = "",
        library: str = "",
        context: int = 0,
    ):
        super().__init__()
        self.dim, self.module, self.cost, self.unsupported = dim, module, cost, dict(unsupported)
        self.family, self.library, self.context = family, library, context

    def rows(self, context: Tensor | None, batch: int) -> Tensor | None:
        """The context checked, as rows (batch or 1, c); None without one."""
        return context_rows(self, context, batch)

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

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Data->base: (batch, d) -> z (batch, d), log|det dz/dx| (batch,)."""
        raise NotImplementedError

    def inverse(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """Base->data: (batch, d) -> x (batch, d)."""
        raise NotImplementedError

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Exact log-density: (batch, d) -> (batch,)."""
        z, ladj = self(x) if context is None else self(x, context)  # an adapter without contexts takes x alone
        return normal_log_prob(z) + ladj

    def sample(self, n: int, context: Tensor | None = None) -> Tensor:
        """n samples (n, d); for a conditional flow, of one ``context`` (c,)."""
        self._needs("sample")
        ref = next(self.parameters())
        z = torch.randn(n, self.dim, device=ref.device, dtype=ref.dtype)
        return self.inverse(z) if context is None else self.inverse(z, context)


def orders(dim: int, flows: int) -> list[Tensor]:
    """Natural order, then reversed, alternating: the reference flows' order reversal,
    built into a library's masks instead of a separate permutation."""
    natural = torch.arange(dim)
    return [natural if k % 2 == 0 else natural.flip(0) for k in range(flows)]


def authors_spline(
    name: str, dim: int, hidden: Sequence[int], bins: int, bound: float, context: int = 0
) -> dict[str, object]:
    """The keywords of the NSF authors' ``MaskedPiecewiseRationalQuadraticAutoregressive``
    layer (nflows', and normflows' copy of it) matched to ours: linear tails at
    ``bound``, ``len(hidden) - 1`` plain blocks after the input layer (our hidden
    layers; the blocks are all ``hidden[0]`` wide, so the widths must be equal)."""
    return dict(
        features=dim,
        hidden_features=equal_widths(name, hidden),
        num_bins=bins,
        tails="linear",
        tail_bound=bound,
        num_blocks=len(hidden) - 1,
        use_residual_blocks=False,
        context_features=context or None,
    )


def equal_widths(name: str, hidden: Sequence[int]) -> int:
    """The one hidden width of a library whose conditioner's layers are all one width
    (nflows' and normflows' MADE), or a UserError naming the widths given."""
    if len(set(hidden)) != 1:
        raise UserError(f"{name} needs equal hidden widths, got {tuple(hidden)!r}")
    return hidden[0]
