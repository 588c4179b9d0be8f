"""Neural autoregressive flow (Huang et al., 2018): a MADE hypernetwork emits, per
dimension, the pseudo-parameters of a deep sigmoidal flow (DSF, or DDSF when
``ds_layers >= 2``)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserError
from .base import Cost, Flow, Transform, stack
from .invert import implicit_grad, invert_autoregressive, invert_coupled
from .masked import ACTIVATIONS, LOG_SCALE_BOUND, MADE, default_hidden, floored, in_place_ok
from .solvers import DEFAULT, check_solver


def soft_clamp(raw: Tensor, bound: float) -> Tensor:
    """``raw / (1 + |raw| / bound)``: smooth, odd, increasing, within (-bound, bound).

    Rational rather than ``bound * tanh(raw / bound)``: on the CPU a tanh costs ~25
    additions.
    """
    den = raw.abs().div_(bound).add_(1)  # in place on abs's fresh output: autograd keeps raw only
    return den.reciprocal_().mul_(raw) if in_place_ok(raw) else raw / den


CHUNK = 4096  # points x dims per chunk of the feature-major log_prob: its parameters stay in the cache


class DeepSigmoid(nn.Module):
    """Element-wise deep (dense) sigmoidal flow, computed in the log domain.

    Layer l maps h (n_in units) to ``logit(sum_k w_ok sigmoid(a_k sum_j u_kj h_j + b_k))``
    (n_out units), with u, w softmax-normalised and a > 0. Huang et al. take
    a = softplus(.), which underflows to 0 for large conditioner outputs and leaves the
    map numerically flat; here log a is soft-clamped within (-5, 5), as MAF bounds its log-scale. The first layer
    reads the scalar x, the last writes the scalar y. Each of a, b (H each), w (H) and
    u (n_in) comes per dimension from the hypernetwork; u and w also have learned
    components of their own, (H, n_in) and (n_out, H), as in Huang et al.'s code.
    The logit is taken as log S - log(1 - S) from log-sum-exps, so y is exact and
    onto R, with no clipping.

    Arguments:
        hidden: sigmoid units H per layer (``ds_hidden``).
        layers: 1 = DSF, 2 or more = DDSF.
    """

    def __init__(self, hidden: int, layers: int):
        super().__init__()
        self.hidden, self.layers = hidden, layers
        self.sizes = [(1 if l == 0 else hidden, 1 if l == layers - 1 else hidden) for l in range(layers)]
        self.u = nn.ParameterList(nn.Parameter(torch.randn(hidden, i)) for i, _ in self.sizes)
        self.w = nn.ParameterList(nn.Parameter(torch.randn(o, hidden)) for _, o in self.sizes)
        self.n_params = sum(3 * hidden + i for i, _ in self.sizes)

    def init_hyper_bias(self, bias: Tensor) -> None:
        """Spreads the sigmoid units' offsets b over [-2, 2] with slopes a = 1, so the
        flow starts as a non-trivial map in the middle with slope-1 linear tails.

        Spread slopes at init compound over stacked layers into extremely heavy tails,
        where float32 pseudo-parameters saturate and the map goes numerically flat.
        """
        H, start = self.hidden, 0
        with torch.no_grad():
            for n_in, _ in self.sizes:
                bias[start : start + H] = 0.0
                bias[start + H : start + 2 * H] = torch.linspace(-2, 2, H)
                start += 3 * H + n_in

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """x (...), params (..., n_params) -> y (...), log dy/dx (...)."""
        H, start = self.hidden, 0
        h = x[..., None]
        g = torch.zeros_like(h)  # log dh/dx
        for (n_in, _), u_own, w_own in zip(self.sizes, self.u, self.w):
            p = params[..., start : start + 3 * H + n_in]
            start += 3 * H + n_in
            log_a = soft_clamp(p[..., :H], LOG_SCALE_BOUND)
            b, p_w, p_u = p[..., H : 2 * H], p[..., 2 * H : 3 * H], p[..., 3 * H :]
            if n_in == 1:  # softmax over one input: u = 1
                uh, t = h, g
            else:  # u_kj = softmax_j(u_own[k, j] + p_u[j]); uh = u @ h, t = log(u @ exp(g))
                c = (p_u - p_u.amax(-1, keepdim=True)).exp()
                e_u = u_own.exp()
                uh = ((c * h) @ e_u.T) / (c @ e_u.T)
                log_z = log_matmul(u_own, p_u)
                t = log_matmul(u_own, p_u + g) - log_z
            pre = log_a.exp() * uh + b  # (..., H)
            ls, lms = log_sigmoids(pre)  # guarded: a root-finder's bracket reaches |pre| far past 87
            # w_ok = softmax_k(w_own[o, k] + p_w[k]); S = w @ sigmoid(pre), 1 - S = w @ sigmoid(-pre)
            log_z = log_matmul(w_own, p_w)
            log_s = log_matmul(w_own, p_w + ls) - log_z
            log_ms = log_matmul(w_own, p_w + lms) - log_z
            g = log_matmul(w_own, p_w + ls + lms + log_a + t) - log_z - log_s - log_ms
            h = log_s - log_ms
        return h[..., 0], g[..., 0]

    def columns(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """The same map, feature-major: x (C,), params (n_params, C) -> y (C,), log dy/dx (C,).

        Each parameter group is a contiguous block of rows over the points, so the
        element-wise work runs on long rows, a reduction over the H units adds H rows,
        and a layer's four log-matrix products are one GEMM (:func:`log_matmuls`)."""
        H, start = self.hidden, 0
        h = x[None]  # (n_in, C)
        g = torch.zeros_like(h)  # log dh/dx
        for (n_in, _), u_own, w_own in zip(self.sizes, self.u, self.w):
            p = params[start : start + 3 * H + n_in]
            start += 3 * H + n_in
            log_a = soft_clamp(p[:H], LOG_SCALE_BOUND)
            b, p_w, p_u = p[H : 2 * H], p[2 * H : 3 * H], p[3 * H :]
            if n_in == 1:  # softmax over one input: u = 1
                uh, t = h, g
            else:  # u_kj = softmax_j(u_own[k, j] + p_u[j]); uh = u @ h, t = log(u @ exp(g))
                c = (p_u - p_u.amax(0, keepdim=True)).exp()
                both = u_own.exp() @ torch.cat([c * h, c], dim=1)
                uh = both[:, : x.shape[0]] / both[:, x.shape[0] :]
                log_ug, log_z = log_matmuls(u_own, p_u + g, p_u)
                t = log_ug - log_z
            pre = torch.addcmul(b, log_a.exp(), uh)  # (H, C)
            ls, lms = log_sigmoids(pre)
            # w_ok = softmax_k(w_own[o, k] + p_w[k]); S = w @ sigmoid(pre), 1 - S = w @ sigmoid(-pre)
            log_z, log_s, log_ms, log_g = log_matmuls(w_own, p_w, p_w + ls, p_w + lms, p_w + ls + lms + log_a + t)
            log_s, log_ms = log_s - log_z, log_ms - log_z
            g = log_g - log_z - log_s - log_ms
            h = log_s - log_ms
        return h[0], g[0]

    def at(self, params: Tensor) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
        """:meth:`columns` at fixed ``params`` (n_params, C), for a root-finder's many
        evaluations: x (C,) -> y (C,), dy/dx (C,) (the derivative itself, as Newton's
        step takes it, not its log).

        An evaluation runs in the linear domain: sigmoid(pre) and sigmoid(-pre), the
        mixtures S = w @ s and 1 - S = w @ sigmoid(-pre) and dS/dx as one GEMM per layer,
        y = log S - log(1 - S); two exps and two logs per unit where :meth:`columns` takes
        five of each. The derivative cannot overflow (dy/dx <= 2 a du/dx per layer: w @ s(1 - s)
        is at most min(S, 1 - S)); S or 1 - S can underflow, for points far from the root
        (|pre| past the exp's range), and such columns are evaluated again in the log
        domain (:meth:`_at_log`), so the value is :meth:`columns`' wherever it is finite."""
        if params.shape[1] == 0:  # no point: nothing to evaluate
            return lambda x: (x.clone(), torch.ones_like(x))
        H, start, layers = self.hidden, 0, []
        for (n_in, _), u_own, w_own in zip(self.sizes, self.u, self.w):
            p = params[start : start + 3 * H + n_in]
            start += 3 * H + n_in
            a = soft_clamp(p[:H], LOG_SCALE_BOUND).exp()
            b, p_w, p_u = p[H : 2 * H], p[2 * H : 3 * H], p[3 * H :]
            e_w = w_own.exp()
            c_w = (p_w - p_w.amax(0, keepdim=True)).exp()  # w_kj = e_w[k, j] c_w[j] / z_w[k]
            z_w = (e_w @ c_w).repeat(1, 3)
            c_w = c_w.repeat(1, 3)  # one product for s, 1 - s and the slope side by side
            mixing = None
            if n_in > 1:
                c_u = (p_u - p_u.amax(0, keepdim=True)).exp()
                e_u = u_own.exp()
                mixing = (c_u.repeat(1, 2), e_u, (e_u @ c_u).repeat(1, 2))
            layers.append((a, b, c_w, e_w, z_w, mixing))
        # below this, S or 1 - S has lost digits to underflow: that column goes the log way
        floor = torch.finfo(params.dtype).tiny * 2**24
        C = params.shape[1]

        def evaluate(x: Tensor) -> tuple[Tensor, Tensor]:
            h, dh = x[None], torch.ones_like(x)[None]
            lowest = []  # per layer, each column's least S or 1 - S
            for a, b, c_w, e_w, z_w, mixing in layers:
                if mixing is None:
                    uh, duh = h, dh
                else:
                    c_u, e_u, z_u = mixing
                    uh, duh = (e_u @ torch.cat([h, dh], dim=1).mul_(c_u)).div_(z_u).split(C, dim=1)
                pre = torch.addcmul(b, a, uh)
                s, ms = torch.sigmoid(pre), torch.sigmoid(pre.neg_())
                stacked = torch.cat([s, ms, (s * ms).mul_(a).mul_(duh)], dim=1).mul_(c_w)
                mixed = (e_w @ stacked).div_(z_w)
                lowest.append(mixed[:, : 2 * C].amin(0))
                big_s, big_ms, ds = mixed.split(C, dim=1)
                h = big_s.log() - big_ms.log()
                dh = ds.div_(big_s.mul_(big_ms))
            y, dy = h[0], dh[0]
            far = torch.stack(lowest).view(-1, 2, C).amin((0, 1)) < floor
            if bool(far.any()):  # the few columns whose mixture underflowed, in the log domain
                idx = far.nonzero()[:, 0]
                y_far, g_far = self._at_log(params[:, idx])(x[idx])
                y, dy = y.index_put((idx,), y_far), dy.index_put((idx,), g_far.exp())
            return y, dy

        return evaluate

    def _at_log(self, params: Tensor) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
        """:meth:`at`'s map in the log domain (:meth:`columns`' arithmetic, its x-free terms
        once): x (C,) -> y (C,), log dy/dx (C,), finite wherever :meth:`columns` is."""
        if params.shape[1] == 0:  # no point: nothing to evaluate (log_matmuls splits by C)
            return lambda x: (x.clone(), x.clone())
        H, start, layers = self.hidden, 0, []
        for (n_in, _), u_own, w_own in zip(self.sizes, self.u, self.w):
            p = params[start : start + 3 * H + n_in]
            start += 3 * H + n_in
            log_a = soft_clamp(p[:H], LOG_SCALE_BOUND)
            b, p_w, p_u = p[H : 2 * H], p[2 * H : 3 * H], p[3 * H :]
            (log_zw,) = log_matmuls(w_own, p_w)
            mixing = None
            if n_in > 1:  # u's softmax weights and normaliser, as columns() forms them
                c = (p_u - p_u.amax(0, keepdim=True)).exp()
                e_u = u_own.exp()
                (log_zu,) = log_matmuls(u_own, p_u)
                mixing = (c, e_u, e_u @ c, log_zu, p_u, u_own)
            layers.append((log_a, log_a.exp(), b, p_w, w_own, w_own.exp(), log_zw, mixing))

        def evaluate(x: Tensor) -> tuple[Tensor, Tensor]:
            h = x[None]
            g = torch.zeros_like(h)
            for log_a, a, b, p_w, w_own, e_w, log_zw, mixing in layers:
                if mixing is None:
                    uh, t = h, g
                else:
                    c, e_u, norm, log_zu, p_u, u_own = mixing
                    uh = (e_u @ (c * h)).div_(norm)
                    (log_ug,) = log_matmuls(u_own, p_u + g, m=e_u)
                    t = log_ug.sub_(log_zu)
                pre = torch.addcmul(b, a, uh)
                ls, lms = log_sigmoids(pre)
                ls.add_(p_w)  # ls, lms are fresh: shifted in place
                lms.add_(p_w)
                log_s, log_ms, log_g = log_matmuls(w_own, ls, lms, (ls + lms).sub_(p_w).add_(log_a).add_(t), m=e_w)
                log_s, log_ms = log_s - log_zw, log_ms - log_zw
                g = log_g - log_zw - log_s - log_ms
                h = log_s - log_ms
            return h[0], g[0]

        return evaluate


def log_sigmoids(pre: Tensor) -> tuple[Tensor, Tensor]:
    """(log sigmoid(pre), log sigmoid(-pre)) from one exp and one log1p: both are
    min(+-pre, 0) - log1p(exp(-|pre|)); two logsigmoid calls would take two of each."""
    if in_place_ok(pre):  # each op on the fresh output of the one before: no new buffer
        l1p = floored(pre.abs().neg_()).exp_().log1p_()
        return pre.clamp(max=0).sub_(l1p), pre.clamp(min=0).neg_().sub_(l1p)
    l1p = torch.log1p(torch.exp(floored(-pre.abs())))
    return pre.clamp(max=0) - l1p, -pre.clamp(min=0) - l1p


def log_matmuls(log_m: Tensor, *bs: Tensor, m: Tensor | None = None) -> tuple[Tensor, ...]:
    """log(exp(log_m) @ exp(b)) of each b, feature-major: log_m (out, H), each b (H, C) ->
    (out, C). One GEMM for all of them: each column shifted by its own maximum, so the
    largest term is exp(0) and nothing overflows (De Cao et al., appendix D). ``m``:
    exp(log_m), where the caller has it."""
    stacked = torch.cat(bs, dim=1) if len(bs) > 1 else bs[0].clone()
    shift = stacked.amax(0, keepdim=True)
    m = log_m.exp() if m is None else m
    if in_place_ok(stacked):
        out = torch.mm(m, floored(stacked.sub_(shift)).exp_()).log_().add_(shift)
    else:
        out = torch.log(m @ floored(stacked - shift).exp()) + shift
    return out.split(bs[0].shape[1], dim=1)


def log_matmul(log_m: Tensor, b: Tensor) -> Tensor:
    """log(exp(log_m) @ exp(b)) for a fixed log_m (out, H) and b (..., H) -> (..., out):
    the layout of the root-finder's per-dimension calls (:meth:`DeepSigmoid.forward`).

    A log-matrix product (De Cao et al., appendix D) done as one matmul: b is shifted
    by its row maximum, so the largest term is exp(0) and nothing overflows.
    """
    m = b.amax(-1, keepdim=True)
    return m + torch.log(floored(b - m).exp() @ log_m.exp().T)


class SigmoidalAutoregressive(Transform):
    """One NAF layer, data->base: y_i = DDSF(x_i; params(x_<i)).

    The MADE emits ``channels`` values per dimension; a linear map shared across
    dimensions (Huang et al.'s 1x1 convolution) turns them into the DDSF's
    pseudo-parameters. ``forward`` is one MADE pass; ``inverse`` solves by ``solver``:
    ``bisection`` or ``newton`` solve each dimension in order, the MADE evaluated
    incrementally (each hidden unit once per call), the root-find on that dimension's
    DDSF alone; ``fixed-point`` runs bracketed Newton steps on every dimension at
    once, one full pass per iteration.
    """

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int],
        ds_hidden: int,
        ds_layers: int,
        channels: int,
        activation: str = "relu",
        weight_norm: bool = False,
        solver: str = DEFAULT["monotone"],
        context: int = 0,
    ):
        super().__init__()
        self.dim, self.solver = dim, check_solver("monotone", solver)
        self.made = MADE(dim, hidden, channels, activation, weight_norm, context=context)
        self.ds = DeepSigmoid(ds_hidden, ds_layers)
        self.to_params = nn.Linear(channels, self.ds.n_params)
        self.ds.init_hyper_bias(self.to_params.bias)
        # the root-finder's steps as compiled passes on the CPU (harness.models.kernels.root_step)
        self.kernel = True

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Data->base, feature-major: the MADE's outputs become (channels, d x n) columns,
        each chunk of :data:`CHUNK` columns gets its pseudo-parameters (one GEMM) and the
        DDSF (:meth:`DeepSigmoid.columns`) while it fits the cache."""
        n, d = x.shape
        if n == 0:  # no chunk to run
            return x.clone(), x.new_zeros(0)
        out = self.made.network()(x)  # (n, d, channels), a view of (n, channels, d)
        k = out.shape[-1]
        features = out.transpose(-1, -2).permute(1, 2, 0).reshape(k, d * n)  # (channels, d x n), dimension-major
        columns = x.T.reshape(d * n)
        w, bias = self.to_params.weight, self.to_params.bias
        ys, gs = [], []
        for start in range(0, d * n, CHUNK):
            stop = min(start + CHUNK, d * n)
            params = torch.addmm(bias[:, None], w, features[:, start:stop])
            y, g = self.ds.columns(columns[start:stop], params)
            ys.append(y)
            gs.append(g)
        y = torch.cat(ys).view(d, n).T
        return y, torch.cat(gs).view(d, n).sum(0)

    def _map(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (n, d) -> y (n, d) and dy_i/dx_i (n, d): the fixed-point solver's pass."""
        y, logder = self.ds(x, self.to_params(self.made(x)))
        return y, logder.exp()

    def inverse(self, y: Tensor) -> Tensor:
        x = self._solve(y)
        return implicit_grad(lambda x: self.ds(x, self.to_params(self.made(x)))[0], x, y, list(self.parameters()))

    def _solve(self, y: Tensor) -> Tensor:
        if self.solver == "fixed-point":
            x, self.stats = invert_coupled(self._map, y)
            return x
        output = None

        def dim_solver(x: Tensor, i: int):
            nonlocal output
            if output is None:  # inside the solver's no_grad: hidden units kept in buffers
                output = self.made.incremental(x, in_place=True)
            # feature-major (n_params, n), its x-free terms once (DeepSigmoid.at): each of
            # the root-finder's evaluations is then one GEMM per layer, as log_prob's
            w, bias = self.to_params.weight, self.to_params.bias
            ddsf = self.ds.at(torch.addmm(bias[:, None], w, output(i, x[:, :i]).T))

            return ddsf  # x_i -> (y_i, dy_i/dx_i)

        x, self.stats = invert_autoregressive(dim_solver, y, method=self.solver, compiled=self.kernel)
        return x


class WeightNormLinear(nn.Module):
    """Weight-normalised linear layer: rows ``scale * v / |v|`` plus a bias."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_out, n_in) / math.sqrt(n_in))
        self.scale = nn.Parameter(torch.ones(n_out))
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight / self.weight.norm(dim=1, keepdim=True)
        return F.linear(x, self.scale[:, None] * w, self.bias)


class ResidualMLP(nn.Module):
    """``W2 relu(W1 c) + W3 c`` of weight-normalised layers (torchkit's ResLinear)."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.inner, self.outer = WeightNormLinear(n_in, n_out), WeightNormLinear(n_out, n_out)
        self.skip = WeightNormLinear(n_in, n_out)

    def forward(self, c: Tensor) -> Tensor:
        return self.outer(F.relu(self.inner(c))) + self.skip(c)


class ContextAffine(Transform):
    """Element-wise affine layer, data->base: ``z = loc + softplus(t) * x``, where loc and
    t are residual MLPs of a constant zero context (the NAF paper's final linear flow)."""

    def __init__(self, dim: int, context: int = 1):
        super().__init__()
        self.loc, self.t = ResidualMLP(context, dim), ResidualMLP(context, dim)
        self.register_buffer("context", torch.zeros(1, context))

    def _loc_std(self) -> tuple[Tensor, Tensor]:
        return self.loc(self.context)[0], F.softplus(self.t(self.context)[0])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        loc, std = self._loc_std()
        return loc + std * x, std.log().sum().expand(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        loc, std = self._loc_std()
        return (y - loc) / std


def build_naf(
    dim: int,
    *,
    flows: int = 5,
    hidden: Sequence[int] | None = None,
    ds_hidden: int = 16,
    ds_layers: int = 2,
    ds_channels: int | None = None,
    activation: str = "relu",
    weight_norm: bool = False,
    final_affine: bool = False,
    solver: str = DEFAULT["monotone"],
    context: int = 0,
) -> Flow:
    """Neural autoregressive flow: K sigmoidal autoregressive layers, order reversed between.

    Arguments:
        ds_hidden: sigmoid units per DDSF layer.
        ds_layers: 1 = DSF, 2 or more = DDSF.
        ds_channels: MADE outputs per dimension; default ``3 * ds_layers * max(1, h // d)``
            with h the last hidden size, the rule of Huang et al.'s code.
        activation: MADE activation, ``relu`` or ``elu``.
        weight_norm: conditional weight normalisation in the MADE (the paper's conditioner).
        final_affine: end with the paper's element-wise affine layer.
        solver: ``sample``'s root-finder: ``bisection``, ``newton`` or ``fixed-point``.
        context: features of a context every MADE reads (0: unconditional).

    ``log_prob`` is one MADE pass per layer; ``sample`` inverts each layer numerically.
    """
    if activation not in ACTIVATIONS:
        raise UserError(f"unknown activation {activation!r}; allowed: {', '.join(ACTIVATIONS)}")
    hidden = default_hidden(dim) if hidden is None else hidden
    channels = 3 * ds_layers * max(1, hidden[-1] // dim) if ds_channels is None else ds_channels
    layers: list[Transform] = [
        SigmoidalAutoregressive(dim, hidden, ds_hidden, ds_layers, channels, activation, weight_norm, solver, context)
        for _ in range(flows)
    ]
    transforms = stack(layers, dim)
    if final_affine:
        transforms.append(ContextAffine(dim))
    cost = Cost(log_prob="parallel", sample="iterative", family="monotone")
    return Flow(dim, transforms, cost, family="naf", context=context)
