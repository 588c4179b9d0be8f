"""Conditional flows under ``check``: a flow built with ``context=C`` is checked at two
fixed contexts, each as the unconditional flow it is at that context
(:class:`Conditioned`), with every check of :mod:`harness.check`; and once for whether
it reads its context at all (two contexts, two densities)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import torch
from torch import Tensor, nn

from .table import Col

CONTEXTS = 2  # fixed contexts each check runs at
USED_TOL = 1e-9  # a flow whose log-densities at two contexts differ by no more ignores its context


def contexts(features: int) -> list[Tensor]:
    """The fixed contexts (features,), float64, the same for every flow."""
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(features, generator=generator, dtype=torch.float64) for _ in range(CONTEXTS)]


class Conditioned(nn.Module):
    """A conditional flow at one fixed context ``c`` (features,): to every check an
    unconditional flow over the same dimensions, its other attributes the flow's."""

    def __init__(self, flow: nn.Module, context: Tensor):
        super().__init__()
        self.flow = flow
        self.register_buffer("fixed_context", context)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["flow"], name)

    def _c(self, like: Tensor) -> Tensor:
        return self.fixed_context.to(like.dtype)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.flow(x, self._c(x))

    def inverse(self, z: Tensor) -> Tensor:
        return self.flow.inverse(z, self._c(z))

    def log_prob(self, x: Tensor) -> Tensor:
        return self.flow.log_prob(x, self._c(x))

    def sample(self, n: int) -> Tensor:
        return self.flow.sample(n, self.fixed_context)


def reads_context(flow: nn.Module, features: int, dim: int, points: int = 64) -> float:
    """The largest difference of log p(x | c) between the two fixed contexts over
    ``points`` points: zero for a flow that ignores its context."""
    first, second = contexts(features)
    x = torch.randn(points, dim, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        return float((flow.log_prob(x, first) - flow.log_prob(x, second)).abs().max())


def conditioned(make: Callable[[int], nn.Module], context: Tensor) -> Callable[[int], nn.Module]:
    return lambda dim: Conditioned(make(dim), context)


def conditional_run(make: Callable[[int], nn.Module], dims: Sequence[int], run: Callable, result: type) -> list | None:
    """A conditional flow's checks (None for an unconditional one): ``run``'s at each
    fixed context, each named with its context, then whether it reads its context."""
    try:
        features = int(getattr(make(1), Col.CONTEXT, 0) or 0)
    except Exception:  # the checks themselves record why it does not build
        return None
    if not features:
        return None
    results = []
    for k, c in enumerate(contexts(features), 1):
        results += [replace(r, check=f"{r.check} (context {k})") for r in run(conditioned(make, c), dims)]
    torch.manual_seed(0)
    try:
        differ = reads_context(make(2).double().eval(), features, 2)
    except Exception as e:  # a user's flow may raise anything: the check could not run, so it fails
        message = f"could not run: {type(e).__name__}: {e}".replace("\n", " ")[:300]
        return [*results, result("reads its context", 2, None, USED_TOL, False, message)]
    note = "max |log p(x | c1) - log p(x | c2)|"
    return [*results, result("reads its context", 2, differ, USED_TOL, differ > USED_TOL, note)]
