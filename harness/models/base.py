"""The flow contract shared by every reference model.

A :class:`Flow` is a stack of :class:`Transform` layers. ``forward`` maps data to
the base (data->base) and returns the log-absolute-determinant of that map;
``inverse`` maps base to data. The base is a standard normal.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from .. import ops
from ..errors import UserError
from ..ops import OURS
from .solvers import DEFAULT, DIRECT, REFERENCE, SOLVERS, Family, SolveStats

Kind = Literal["parallel", "sequential", "iterative"]
OPS = ops.DIRECTIONS  # the two directions
TRAIN_STEP, SWEEP_OPS = ops.TRAIN_STEP, ops.SWEEP_OPS

_CHECKS = True


@contextlib.contextmanager
def unchecked() -> Iterator[None]:
    """Skip input validation inside the block.

    The finiteness check needs a device->host copy; the timing engine turns checks
    off so that timings measure the flow, not the check.
    """
    global _CHECKS
    old, _CHECKS = _CHECKS, False
    try:
        yield
    finally:
        _CHECKS = old


def _kernel_layers(flow: object) -> list[nn.Module]:
    """The layers of ``flow`` with a compiled loop: a ``kernel`` switch (MADE-affine's
    incremental solve, NAF's root-find steps, B-NAF's Newton solve; harness.models.kernels)."""
    modules = flow.modules() if isinstance(flow, nn.Module) else ()
    return [m for m in modules if isinstance(getattr(m, "kernel", None), bool)]


@contextlib.contextmanager
def eager_ops(flow: object) -> Iterator[None]:
    """Within it, every layer of ``flow`` with a compiled loop solves in torch's eager
    ops (what a counter of dispatched ops can see), each switched back as it was after."""
    layers = _kernel_layers(flow)
    was = [m.kernel for m in layers]
    for m in layers:
        m.kernel = False
    try:
        yield
    finally:
        for m, on in zip(layers, was):
            m.kernel = on


def use_kernel(flow: object, on: bool) -> None:
    """Runs every compiled loop of ``flow`` (harness.models.kernels) as such, or as
    torch's eager ops: the same arithmetic either way."""
    for module in _kernel_layers(flow):
        module.kernel = on


@dataclass(frozen=True)
class Cost:
    """How each operation scales with the dimension d, as data for plots and tables.

    ``parallel``: one network pass per flow, whatever d. ``sequential``: d network
    passes per flow, one per dimension. ``iterative``: d root-finds per flow, each of
    several passes (numerical inversion). ``family`` names the solvers the slow
    direction takes (:mod:`.solvers`): ``affine`` or ``monotone``.
    """

    log_prob: Kind
    sample: Kind
    family: Family | None = None

    def __getitem__(self, op: str) -> Kind:
        if op not in ops.OPS:
            raise UserError(f"unknown op {op!r}; allowed: {', '.join(ops.OPS)}")
        return getattr(self, ops.OPS[op].cost_of)

    def describe(self, op: str, layers: int | None = None) -> str:
        """``op``'s cost in words, per autoregressive layer or, given ``layers``, in total."""
        if layers is None:
            return {
                "parallel": "parallel: 1 pass per layer",
                "sequential": "sequential: d passes per layer",
                "iterative": "iterative: d root-finds per layer",
            }[self[op]]
        es = "" if layers == 1 else "es"
        return {
            "parallel": f"parallel: {layers} pass{es}",
            "sequential": f"sequential: {layers} x d passes",
            "iterative": f"iterative: {layers} x d root-finds",
        }[self[op]]


@runtime_checkable
class Measurable(Protocol):
    """Anything the harness can measure: a reference :class:`Flow`, a peer
    (``harness.peers.PeerFlow``) or a user's flow behind ``harness.registry.UserFlow``.

    ``log_prob`` (batch, d) -> (batch,); ``inverse`` base->data (batch, d) -> (batch, d);
    ``cost`` says which op is parallel; ``unsupported`` what the flow cannot do (op ->
    why); ``inference_mode`` False where a call takes autograd derivatives inside (timed
    under no_grad then); ``family`` the reference family it matches ('' if none) and
    ``library`` who wrote it; ``solver`` the slow direction's algorithm and
    ``reference_solver`` its family's reference (None for a library's own algorithm);
    ``solve_stats`` what the last slow call spent; ``masks`` the masks of parameters
    held at zero that the usual ``weight`` + ``mask`` convention does not show
    (parameter name -> mask)."""

    dim: int
    cost: Cost
    family: str
    library: str
    unsupported: dict[str, str]
    inference_mode: bool

    @property
    def solver(self) -> str: ...

    @property
    def reference_solver(self) -> str | None: ...

    def log_prob(self, x: Tensor) -> Tensor: ...

    def inverse(self, z: Tensor) -> Tensor: ...

    def reset_stats(self) -> None: ...

    def solve_stats(self) -> SolveStats | None: ...

    def masks(self) -> dict[str, Tensor]: ...


def run_op(flow: Measurable, op: str, x: Tensor, context: Tensor | None = None) -> Tensor:
    """One call of a direction as the harness measures it: ``log_prob`` of x, or
    ``sample`` as base->data on pre-drawn base points x (so the draw is not timed);
    given ``context`` for a conditional flow (an unconditional call keeps the one-argument form)."""
    given = () if context is None else (context,)
    if op == ops.LOG_PROB:
        return flow.log_prob(x, *given)
    if op == ops.SAMPLE:
        return flow.inverse(x, *given)
    raise UserError(f"unknown direction {op!r}; allowed: {', '.join(OPS)}")


def op_context(flow: Measurable, op: str) -> contextlib.AbstractContextManager:
    """The autograd mode ``op`` is timed under: gradients for a training step; inference
    mode otherwise, or no_grad for flows that take autograd derivatives inside a call."""
    if op == ops.TRAIN_STEP:
        return torch.enable_grad()
    return torch.inference_mode() if flow.inference_mode else torch.no_grad()


def op_call(flow: Measurable, op: str, x: Tensor, context: Tensor | None = None) -> Callable[[], Tensor]:
    """What is timed for ``op`` (any of :data:`harness.ops.OPS`) on the input x (and
    ``context``, for a conditional flow): a direction's call, or a training step on a
    copy of the flow (the steps change the weights the other ops time) with its own
    Adam optimiser."""
    if op == ops.TRAIN_STEP:
        trainee = copy.deepcopy(flow)
        optimizer = torch.optim.Adam(trainee.parameters(), lr=1e-3)
        return lambda: train_step(trainee, optimizer, x, context)
    if op in OPS:
        return lambda: run_op(flow, op, x, context)
    raise UserError(f"unknown op {op!r}; allowed: {', '.join(ops.OPS)}")


def train_step(flow: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, context: Tensor | None = None) -> Tensor:
    """One maximum-likelihood step on the batch x (batch, d), with its contexts (batch, c)
    for a conditional flow: the loss -mean log_prob(x | c), its gradient and the
    optimiser's update. Returns the loss, detached, shape ()."""
    optimizer.zero_grad(set_to_none=True)
    loss = -(flow.log_prob(x) if context is None else flow.log_prob(x, context)).mean()
    loss.backward()
    optimizer.step()
    return loss.detach()


class Transform(nn.Module):
    """One invertible layer. ``forward(x) -> (y, logabsdet)`` runs data->base,
    ``inverse(y) -> x`` runs base->data. Shapes: x, y (batch, d); logabsdet (batch,).
    A layer whose slow direction runs a solver keeps what its last call spent in
    ``stats``."""

    solver: str | None = None
    stats: SolveStats | None = None

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def inverse(self, y: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class Reverse(Transform):
    """Reverses the order of the dimensions; volume preserving."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x.flip(-1), x.new_zeros(x.shape[:-1])

    def inverse(self, y: Tensor) -> Tensor:
        return y.flip(-1)


def stack(layers: Sequence[Transform], dim: int) -> list[Transform]:
    """Interleaves order reversals between flows, so each flow sees a new order."""
    out: list[Transform] = []
    for i, layer in enumerate(layers):
        if i > 0 and dim > 1:
            out.append(Reverse())
        out.append(layer)
    return out


def normal_log_prob(z: Tensor) -> Tensor:
    """Standard normal log-density summed over the last axis: (batch, d) -> (batch,)."""
    return -0.5 * (z.square().sum(-1) + z.shape[-1] * math.log(2 * math.pi))


def context_rows(flow: nn.Module, context: Tensor | None, batch: int) -> Tensor | None:
    """``context`` checked against ``flow`` (its ``context`` features) and a batch of
    ``batch`` points, as rows (batch or 1, c); None for an unconditional call. A context
    an unconditional flow is given, or one missing, misshapen, of another dtype or not
    finite, is a UserError naming it."""
    c = getattr(flow, "context", 0)
    if context is None:
        if c:
            raise UserError(f"this flow is conditional on a context of {c} features: pass context, shape (batch, {c})")
        return None
    if not c:
        raise UserError("this flow takes no context (built with context=0); build it with context=C to condition it")
    if not isinstance(context, Tensor):
        raise UserError(f"context must be a torch.Tensor, got {type(context).__name__}")
    rows = context.reshape(1, -1) if context.ndim == 1 else context
    if rows.ndim != 2 or rows.shape[1] != c or rows.shape[0] not in (1, batch):
        raise UserError(f"context must have shape ({batch}, {c}) or ({c},), got {tuple(context.shape)}")
    check_values(flow, rows, "context")
    return rows


def check_values(flow: nn.Module, x: Tensor, what: str) -> None:
    """An input of ``flow`` (named ``what`` in the error) in the model's dtype and, unless
    checks are off (:func:`unchecked`), finite."""
    dtype = next(iter(flow.parameters()), x).dtype
    if x.dtype != dtype:
        raise UserError(f"{what} has dtype {x.dtype}, the model {dtype}; convert one ({what}.to({dtype}))")
    if _CHECKS and not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise UserError(f"{what} has {bad} non-finite entries (nan or inf); all must be finite")


class Flow(nn.Module):
    """A normalizing flow with a standard normal base over ``dim`` dimensions.

    Arguments:
        dim: the data dimensionality d.
        transforms: layers applied in order from data to base.
        cost: which of ``log_prob`` and ``sample`` is parallel, sequential or iterative.
        context: features of the context c the flow is conditioned on, p(x | c); 0 for
            an unconditional flow. Every op then takes ``context``: (batch, c), a
            context per point, or (c,), one for all (the posterior-sampling shape).
    """

    library = OURS
    inference_mode = True

    def __init__(self, dim: int, transforms: Sequence[Transform], cost: Cost, family: str = "", context: int = 0):
        super().__init__()
        self.dim = dim
        self.transforms = nn.ModuleList(transforms)
        self.cost = cost
        self.family = family
        self.context = context
        self.unsupported: dict[str, str] = {}

    def masks(self) -> dict[str, Tensor]:
        """Ours follow the ``weight`` + ``mask`` convention: nothing to add."""
        return {}

    @property
    def solvers(self) -> tuple[str, ...]:
        """Solvers the slow direction takes; () when both directions are one pass."""
        return SOLVERS[self.cost.family] if self.cost.family else ()

    @property
    def reference_solver(self) -> str | None:
        return REFERENCE[self.cost.family] if self.cost.family else None

    @property
    def solver(self) -> str:
        """The slow direction's solver (``direct`` when there is none)."""
        used = {t.solver for t in self.transforms if t.solver}
        return used.pop() if len(used) == 1 else DEFAULT.get(self.cost.family or "", DIRECT)

    def solver_of(self, op: str) -> str:
        """The solver column of ``op``: this flow's solver for its slow op, else ``direct``."""
        return DIRECT if self.cost[op] == "parallel" else self.solver

    @property
    def solving_layers(self) -> int:
        """Layers whose slow direction runs a solver (the Reverse layers between them do not)."""
        return sum(1 for t in self.transforms if t.solver)

    def solve_stats(self) -> SolveStats | None:
        """What the last call of the slow direction spent, summed over layers (None
        when no layer has run one yet)."""
        stats = [t.stats for t in self.transforms if t.stats is not None]
        if not stats:
            return None
        total = SolveStats(stats[0].solver)
        for s in stats:
            total = total + s
        return total

    def reset_stats(self) -> None:
        for t in self.transforms:
            if t.stats is not None:
                t.stats = None

    def _check(self, x: Tensor, what: str) -> None:
        if not isinstance(x, Tensor):
            raise UserError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 2 or x.shape[-1] != self.dim:
            raise UserError(f"{what} must have shape (batch, {self.dim}), got {tuple(x.shape)}")
        check_values(self, x, what)

    @staticmethod
    def _check_out(out: Tensor, what: str, error: type[Exception]) -> Tensor:
        """A result that cannot be trusted raises: it is never returned."""
        if _CHECKS and not bool(torch.isfinite(out).all()):
            bad = int((~torch.isfinite(out)).sum())
            raise error(
                f"{what} has {bad} non-finite values (nan or inf) of {out.numel()}: "
                "the weights or the input are out of floating-point range"
            )
        return out

    @contextlib.contextmanager
    def given(self, context: Tensor | None, batch: int) -> Iterator[None]:
        """Within it, every conditioner reads ``context`` (checked against the flow and a
        batch of ``batch`` points); none is an error for a conditional flow, as a
        context is for an unconditional one."""
        rows = context_rows(self, context, batch)
        if rows is None:
            yield
            return
        layers = [m for m in self.modules() if m is not self and callable(getattr(m, "condition", None))]
        for m in layers:
            m.condition(rows)
        try:
            yield
        finally:
            for m in layers:
                m.condition(None)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Data->base. (batch, d) -> z (batch, d), log|det dz/dx| (batch,), given
        ``context`` for a conditional flow. An empty batch gives empty results."""
        self._check(x, "x")
        ladj = x.new_zeros(x.shape[0])
        with self.given(context, x.shape[0]):
            for t in self.transforms:
                x, l = t(x)
                ladj = ladj + l
        # a layer may hand on its result transposed (harness.models.maf: points as columns)
        return self._check_out(x.contiguous(), "z", ValueError), self._check_out(ladj, "log|det|", ValueError)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """Base->data. (batch, d) -> x (batch, d), given ``context`` for a conditional
        flow; raises InversionError rather than return a non-finite x."""
        from .invert import InversionError

        self._check(z, "z")
        with self.given(context, z.shape[0]):
            for t in reversed(self.transforms):
                z = t.inverse(z)
        return self._check_out(z.contiguous(), "x = inverse(z)", InversionError)

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Exact log-density of x under the flow: (batch, d) -> (batch,); log p(x | c)
        for a conditional flow, ``context`` (batch, c) or (c,)."""
        z, ladj = self(x, context)
        return self._check_out(normal_log_prob(z) + ladj, "log_prob", ValueError)

    def sample(self, n: int, context: Tensor | None = None) -> Tensor:
        """n samples (n, d), on the model's device and dtype, drawn without gradients
        (``inverse(z)`` of your own base draws keeps them); for a conditional flow, n
        draws from p(x | c) of one ``context`` (c,)."""
        if not isinstance(n, int) or n < 1:
            raise UserError(f"n must be a positive int, got {n!r}")
        ref = next(self.parameters())
        z = torch.randn(n, self.dim, device=ref.device, dtype=ref.dtype)
        with torch.no_grad():  # an unconditional call keeps inverse's one-argument form (subclasses override it)
            return self.inverse(z) if context is None else self.inverse(z, context)
