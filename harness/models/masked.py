"""Masked layers and the MADE network (Germain et al., 2015), shared by every
masked autoregressive model here."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .workspace import scratch

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {"relu": F.relu, "elu": F.elu}


# The log-scale is clamped to [-B, B]: each layer scales by at most e^B either way,
# which keeps stacked layers and their inverses finite.
LOG_SCALE_BOUND = 5.0


def _exp_floor(dtype: torch.dtype) -> float:
    tiny = torch.finfo(dtype).tiny
    x = torch.tensor(math.log(tiny), dtype=dtype)
    while torch.exp(x) < tiny:
        x = torch.nextafter(x, torch.zeros((), dtype=dtype))
    return float(x)


# found once, eagerly: a traced graph (torch.compile) then reads a constant
_EXP_FLOORS = {dtype: _exp_floor(dtype) for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64)}


def exp_floor(dtype: torch.dtype) -> float:
    """The smallest x whose exp(x) is a normal number of ``dtype`` (about -87.3 in
    float32): below it exp's result is subnormal or zero, and on the CPU an exp that
    underflows runs 11-35x slower."""
    if dtype not in _EXP_FLOORS:
        _EXP_FLOORS[dtype] = _exp_floor(dtype)
    return _EXP_FLOORS[dtype]


def floored(x: Tensor) -> Tensor:
    """x with every entry below :func:`exp_floor` raised to it, before an exp: the exp's
    values at or above the smallest normal number are unchanged, the rest (below 1.2e-38
    in float32, of no weight beside the terms they are summed with) become that
    smallest normal instead of a slow subnormal. In place where no graph needs x."""
    low = exp_floor(x.dtype)
    return x.clamp_(min=low) if in_place_ok(x) else x.clamp(min=low)


def in_place_ok(*tensors: Tensor) -> bool:
    """Whether results may overwrite these tensors: no autograd graph needs them.

    Inference reuses buffers in place: each fresh (batch, d) buffer is a new heap or
    mmap block, whose first touch page-faults, which costs more than the arithmetic.
    """
    return not torch.is_grad_enabled() or not any(t.requires_grad for t in tensors)


def clamp_log_scale(raw: Tensor, bound: float = LOG_SCALE_BOUND) -> Tensor:
    """``clamp(raw, -bound, bound)``: one pass, in place on the conditioner's output
    when no graph needs it. With autograd the gradient passes straight through the
    clamp (as pyro's IAF does), so a unit beyond the bound can come back."""
    if in_place_ok(raw):
        return raw.clamp_(-bound, bound)
    return raw + (raw.clamp(-bound, bound) - raw).detach()


def default_hidden(dim: int) -> tuple[int, int]:
    """Two hidden layers of max(64, d) units: enough for every MADE degree at any d."""
    return (max(64, dim),) * 2


def set_column(u: Tensor, i: int, col: Tensor) -> Tensor:
    """u[:, i] = col, copying first only where autograd needs the old u."""
    if torch.is_grad_enabled() and (u.requires_grad or col.requires_grad):
        u = u.clone()
    u[:, i] = col
    return u


def hidden_degrees(units: int, dim: int, conditional: bool = False) -> list[int]:
    """Degrees of a hidden layer's units: cycling through 1..d-1, so every degree that
    can feed an output is used and none is wasted (Germain et al. use random draws;
    cycling is deterministic). At d=1 no such unit can feed the output and an
    unconditional MADE reduces to its output bias. With a context (degree 0, as zuko
    gives it) they cycle through 0..d-1: units of degree 0 read the context alone and
    feed every output, the first dimension's too."""
    if conditional:
        return [j % dim for j in range(units)]
    return [j % max(dim - 1, 1) + 1 for j in range(units)]


def made_degrees(dim: int, hidden: Sequence[int], reverse: bool = False, conditional: bool = False) -> list[Tensor]:
    """Degrees of the inputs (1..d, or d..1 with ``reverse``) and of each hidden layer
    (:func:`hidden_degrees`)."""
    inputs = torch.arange(1, dim + 1)
    degrees = [inputs.flip(0) if reverse else inputs]
    for h in hidden:
        degrees.append(torch.tensor(hidden_degrees(h, dim, conditional), dtype=torch.long))
    return degrees


def made_masks(
    dim: int, hidden: Sequence[int], per_dim: int, reverse: bool = False, conditional: bool = False
) -> list[Tensor]:
    """Boolean masks (out, in) of each layer: hidden masks allow ``>=``, the output
    mask is strict ``>``. The output has ``per_dim`` units per dimension, laid out
    parameter-major (unit k * d + i is parameter k of dimension i), so that each
    parameter's d values are contiguous for the element-wise work that follows."""
    degrees = made_degrees(dim, hidden, reverse, conditional)
    masks = [d_out[:, None] >= d_in[None, :] for d_in, d_out in zip(degrees, degrees[1:])]
    d_out = degrees[0].repeat(per_dim)
    masks.append(d_out[:, None] > degrees[-1][None, :])
    return masks


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed binary ``mask`` (out, in)."""

    def __init__(self, mask: Tensor, bias: bool = True):
        super().__init__(mask.shape[1], mask.shape[0], bias=bias)
        self.register_buffer("mask", mask.to(torch.get_default_dtype()))

    def effective(self) -> tuple[Tensor, Tensor | None]:
        """(weight * mask, bias), computed anew on each call: a memo keyed on tensor
        versions cannot see updates through ``.data``, and costs one element-wise
        product per layer to skip."""
        return self.weight * self.mask, self.bias

    def forward(self, x: Tensor) -> Tensor:
        w, b = self.effective()
        return F.linear(x, w, b)


class ContextWeightNormLinear(MaskedLinear):
    """Masked linear layer with conditional weight normalisation (Huang et al., 2018).

    Each row of the masked direction matrix is normalised; a scale and a bias per
    output are produced by linear maps of a context vector. The harness's flows are
    unconditional, so the context is a constant zero vector of ``context`` entries:
    the scale and the bias reduce to those maps' biases, yet all their parameters exist.
    """

    def __init__(self, mask: Tensor, context: int = 1):
        super().__init__(mask, bias=False)
        self.cscale = nn.Linear(context, mask.shape[0])
        self.cbias = nn.Linear(context, mask.shape[0])
        self.register_buffer("context", torch.zeros(1, context))

    def effective(self) -> tuple[Tensor, Tensor]:
        w = self.weight * self.mask
        w = w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)
        scale, bias = self.cscale(self.context)[0], self.cbias(self.context)[0]
        return scale[:, None] * w, bias


@dataclass(frozen=True)
class Regrouping:
    """Where each weight of a MADE goes when it is solved in order (:meth:`MADE.regrouping`)."""

    hidden: list[tuple[Tensor, Tensor]]  # per hidden layer: (flat indices (h, in), sorted rows (h,))
    output: Tensor  # flat indices (k, d, h_last) of each parameter's weights (MAF: shift, log-scale), in solve order
    output_bias: Tensor  # (k, d) their bias indices
    ends: np.ndarray  # (layers, d): units of degree <= p per layer


class MADE(nn.Module):
    """Masked autoencoder: (batch, d) -> (batch, d, per_dim), where output [:, i, :]
    depends only on inputs x[:, :i] (natural order), or on x[:, i+1:] with
    ``reverse``. The output is a view whose [..., k] slices are contiguous along d.

    Arguments:
        dim: number of dimensions d.
        hidden: hidden layer sizes.
        per_dim: outputs per dimension.
        activation: ``relu`` or ``elu``.
        weight_norm: use :class:`ContextWeightNormLinear` layers (NAF paper's conditioner).
        reverse: reversed order, so stacked flows alternate orders without a copy
            of the data between them.
        context: features of a context vector c (0: unconditional). c enters the first
            hidden layer through a weight matrix of its own (no mask: every unit may
            read it), as zuko's and nflows' conditional MADEs take it; the flow sets c
            for a call (:meth:`condition`).
    """

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int],
        per_dim: int,
        activation: str = "relu",
        weight_norm: bool = False,
        reverse: bool = False,
        context: int = 0,
    ):
        super().__init__()
        self.dim, self.per_dim = dim, per_dim
        self.activation = ACTIVATIONS[activation]
        # dimensions in the order they can be solved: each after those it depends on
        self.order = list(range(dim - 1, -1, -1)) if reverse else list(range(dim))
        masks = made_masks(dim, hidden, per_dim, reverse, conditional=context > 0)
        layer = ContextWeightNormLinear if weight_norm else MaskedLinear
        self.layers = nn.ModuleList(layer(m) for m in masks)
        self.context = context
        self.context_layer = nn.Linear(context, hidden[0], bias=False) if context else None
        self._rows: Tensor | None = None  # this call's context, (batch or 1, c)
        self._memo: Tensor | None = None  # its share of the first hidden layer, once computed
        # per hidden layer: units sorted by degree, and how many have degree <= m, m = 0..d-1
        # (plain ints, as made_degrees numbers them: models also get built on the meta device)
        degrees = [hidden_degrees(h, dim, context > 0) for h in hidden]
        self._by_degree = [sorted(range(len(deg)), key=deg.__getitem__) for deg in degrees]
        self._ends = [list(itertools.accumulate(np.bincount(deg, minlength=dim)[:dim].tolist())) for deg in degrees]
        self._regrouping: Regrouping | None = None

    def condition(self, context: Tensor | None) -> None:
        """Sets the context of the calls that follow: (batch, c), one per point, or
        (1, c), one for all; None clears it."""
        if self.context_layer is None:
            return
        self._rows, self._memo = context, None

    @property
    def _term(self) -> Tensor | None:
        """The context's share of the first hidden layer (batch or 1, h), computed once per
        call of the flow where a path reads it (:meth:`columns` adds it in place instead)."""
        if self._rows is not None and self._memo is None:
            self._memo = self.context_layer(self._rows)
        return self._memo

    def shared_context(self) -> bool:
        """Whether every point has the same context (or there is none): a compiled
        solve then folds it into the first hidden layer's biases."""
        return self._rows is None or self._rows.shape[0] == 1

    def _first_bias(self, b: Tensor | None, rows: Tensor) -> Tensor | None:
        """The first hidden layer's bias, its units regrouped by ``rows``, with this call's
        context term added: (h,) without a context, else (batch or 1, h)."""
        b = None if b is None else b[rows]
        if self._term is None:
            return b
        return self._term[:, rows] if b is None else self._term[:, rows] + b

    def regrouping(self) -> Regrouping:
        """Indices that regroup the masked weights for solving in order (computed once):
        each hidden layer's rows sorted by degree and its columns in the previous
        layer's order, as flat indices into the (out, in) weight; the output rows of
        every parameter in solve order, and their columns likewise."""
        if self._regrouping is None:
            order = torch.tensor(self.order)
            cols, hidden = order, []
            for layer, rows in zip(self.layers[:-1], self._by_degree):
                rows = torch.tensor(rows)
                n_in = layer.weight.shape[1]
                hidden.append(((rows[:, None] * n_in + cols[None, :]).contiguous(), rows))
                cols = rows
            d, n_in = self.dim, self.layers[-1].weight.shape[1]
            out_rows = torch.arange(self.per_dim)[:, None] * d + order[None, :]  # (k, d): parameter k of order[p]
            output = (out_rows[..., None] * n_in + cols[None, None, :]).contiguous()
            ends = np.asarray(self._ends, dtype=np.int64)
            self._regrouping = Regrouping(hidden, output, out_rows, ends)
        return self._regrouping

    @torch.no_grad()
    def solve_weights(
        self, like: Tensor
    ) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """What a compiled incremental solve reads (harness.models.kernels): each hidden
        layer's (weight, bias) regrouped in solve order (:meth:`regrouping`), the units
        of degree <= p per layer, the output layer's weights (per_dim, d, h_last) and
        biases (per_dim, d) in solve order, as numpy arrays (``like`` gives the dtype),
        and each point's context term of the first layer (n, h) in the same unit order
        where points have contexts of their own (a shared one is in the biases; else None)."""
        regroup = self.regrouping()
        shared, term = self.shared_context(), None
        hidden = []
        for k, (layer, (flat, rows)) in enumerate(zip(self.layers[:-1], regroup.hidden)):
            w, b = layer.effective()
            if k == 0 and not shared:
                term = self._term[:, rows].numpy()
            b = self._first_bias(b, rows).reshape(-1) if k == 0 and shared else b[rows]
            hidden.append((torch.take(w, flat).numpy(), b.numpy()))
        w_out, b_out = self.layers[-1].effective()
        w_out = torch.take(w_out, regroup.output).numpy()
        b_out = like.new_zeros(self.per_dim, self.dim) if b_out is None else b_out[regroup.output_bias]
        return hidden, regroup.ends, w_out, b_out.numpy(), term

    def network(self) -> Callable[..., Tensor]:
        """The MADE as a function ``run(x, i=None)`` with its masked weights computed once.

        Sequential loops call the network d times per flow; computing ``weight * mask``
        (and any normalisation) once per call, not once per pass, saves that work.
        ``run(x)`` gives (batch, d, per_dim); ``run(x, i)`` gives only dimension i's
        outputs (batch, per_dim), skipping the other rows of the output layer.
        """
        params = [layer.effective() for layer in self.layers]
        act, d, k = self.activation, self.dim, self.per_dim
        w_out, b_out = params[-1]
        by_dim: tuple[Tensor, Tensor | None] | None = None  # output rows regrouped per dimension
        term = self._term

        def run(x: Tensor, i: int | None = None) -> Tensor:
            nonlocal by_dim
            for j, (w, b) in enumerate(params[:-1]):
                pre = F.linear(x, w, b)
                if j == 0 and term is not None:
                    pre = pre.add_(term) if in_place_ok(pre, term) else pre + term
                x = act(pre, inplace=True)  # on a fresh output
            if i is None:
                return F.linear(x, w_out, b_out).unflatten(-1, (k, d)).transpose(-1, -2)
            if by_dim is None:  # once per call: dimension i's k rows become contiguous
                w = w_out.view(k, d, -1).transpose(0, 1).contiguous()
                b = None if b_out is None else b_out.view(k, d).t().contiguous()
                by_dim = w, b
            w, b = by_dim
            return F.linear(x, w[i], None if b is None else b[i])

        return run

    def columns(self, xT: Tensor) -> Tensor:
        """The MADE with its outputs as columns, where no graph needs the results:
        xT (d, batch) -> (per_dim * d, batch), row k * d + i holding parameter k of
        dimension i (the output layer's own row order), each parameter a contiguous block.

        In the (batch, d) layout of :meth:`forward` a parameter is a strided view of rows
        d long, which torch's element-wise loops walk 5-10x slower than a contiguous block
        at d = 2 to 10; here what follows the network is contiguous at any d. The hidden
        layers stay (batch, h), where the products run 5-10% faster than as (h, batch)
        (the BLAS reads xT and writes the output transposed without a copy). They go to
        scratch buffers (:mod:`harness.models.workspace`: a fresh one page-faults for
        longer than its product takes), and a context per point is multiplied into the
        first layer's product in place (one shared by all points joins its bias).
        """
        h, n = xT.T, xT.shape[1]
        params = [layer.effective() for layer in self.layers]
        for j, (w, b) in enumerate(params[:-1]):
            if j == 0 and self._rows is not None and self._rows.shape[0] == 1:
                b = self._term[0] if b is None else b + self._term[0]
            out = scratch(f"made.hidden{j % 2}", (n, w.shape[0]), xT)
            out = torch.mm(h, w.T, out=out) if b is None else torch.addmm(b, h, w.T, out=out)
            if j == 0 and self._rows is not None and self._rows.shape[0] > 1:
                out.addmm_(self._rows, self.context_layer.weight.T)
            h = self.activation(out, inplace=True)
        w, b = params[-1]
        return torch.mm(w, h.T) if b is None else torch.addmm(b[:, None], w, h.T)

    def incremental(self, like: Tensor, in_place: bool) -> Callable[[int, Tensor], Tensor]:
        """The MADE as a function ``output(p, u)`` for solving the dimensions one by one.

        ``u`` (batch, p) holds the first p solved dimensions, in solve order; the
        result (batch, per_dim) is the output of the p-th dimension in that order.
        Hidden units of degree p depend only on those p inputs: each call computes
        just them and keeps them, so d calls do one network pass of arithmetic in all,
        where ``network()(x, i)`` recomputes every hidden unit at each step.

        Arguments:
            like: a (batch, d) tensor giving batch, dtype and device.
            in_place: keep hidden units in preallocated buffers (no autograd graph
                needs them); otherwise in a list of blocks, concatenated as needed.
        """
        params = [layer.effective() for layer in self.layers]
        order = torch.tensor(self.order, device=like.device)
        cols, hidden = order, []
        for j, ((w, b), rows) in enumerate(zip(params[:-1], self._by_degree)):
            rows = torch.tensor(rows, device=like.device)
            hidden.append((w[rows][:, cols], self._first_bias(b, rows) if j == 0 else None if b is None else b[rows]))
            cols = rows
        w_out, b_out = params[-1]
        k, d = self.per_dim, self.dim
        w_out = w_out.view(k, d, -1)[:, order][:, :, cols].transpose(0, 1)  # (d, k, h) in solve order
        b_out = like.new_zeros(d, k) if b_out is None else b_out.view(k, d)[:, order].t()
        act, ends = self.activation, self._ends
        units = [Columns(like.shape[0], w.shape[0], like, in_place) for w, _ in hidden]

        def output(p: int, u: Tensor) -> Tensor:
            # units of degree p: inputs (or units) of degree <= p are known now; degree 0
            # (a conditional MADE's) reads the context alone, before any dimension
            prev = u
            for (w, b), kept, end in zip(hidden, units, ends):
                start, stop = end[p - 1] if p else 0, end[p]
                if stop > start:
                    pre = F.linear(prev, w[start:stop, : prev.shape[1]], b[start:stop] if b.ndim == 1 else None)
                    kept.append(act(pre if b.ndim == 1 else pre + b[:, start:stop]))
                prev = kept.get()
            n = ends[-1][p]
            if n == 0:
                return b_out[p].repeat(like.shape[0], 1)  # a fresh buffer: the caller works in place
            return F.linear(units[-1].get(), w_out[p, :, :n], b_out[p])

        return output

    def forward(self, x: Tensor) -> Tensor:
        return self.network()(x)


class Columns:
    """A (batch, n) matrix filled block by block from the left; ``get()`` gives the
    filled columns. A preallocated buffer when ``in_place``, else a list of blocks
    concatenated on demand (autograd cannot see through writes into a buffer)."""

    def __init__(self, batch: int, n: int, like: Tensor, in_place: bool):
        self.buffer = like.new_empty(batch, n) if in_place else None
        self.blocks: list[Tensor] = []
        self.filled = 0
        self._cat: Tensor | None = like.new_empty(batch, 0)

    def append(self, block: Tensor) -> None:
        if self.buffer is not None:
            self.buffer[:, self.filled : self.filled + block.shape[1]] = block
        else:
            self.blocks.append(block)
            self._cat = None
        self.filled += block.shape[1]

    def get(self) -> Tensor:
        if self.buffer is not None:
            return self.buffer[:, : self.filled]
        if self._cat is None:
            self._cat = torch.cat(self.blocks, 1)
        return self._cat
