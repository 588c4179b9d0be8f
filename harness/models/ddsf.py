"""The deep (dense) sigmoidal flow (Huang et al., 2018): NAF's element-wise monotone
map, whose pseudo-parameters a hypernetwork emits per dimension (:mod:`.naf`), in the
three forms NAF takes it: batch-major (:meth:`DeepSigmoid.forward`), feature-major
for log_prob (:meth:`DeepSigmoid.columns`), and at fixed parameters for a root-finder's
evaluations (:meth:`DeepSigmoid.at`)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from .masked import LOG_SCALE_BOUND, floored, in_place_ok
from .workspace import scratch

# scratch address -> the token of the evaluator whose terms it holds now (DeepSigmoid._compiled)
_PACKED: dict[int, object] = {}


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

    def at(self, params: Tensor, compiled: bool = False) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
        """:meth:`columns` at fixed ``params`` (n_params, C), for a root-finder's many
        evaluations: x (C,) -> y (C,), dy/dx (C,) (the derivative itself, as Newton's
        step takes it, not its log).

        An evaluation runs in the linear domain: sigmoid(pre) and sigmoid(-pre), the
        mixtures S = w @ s and 1 - S = w @ sigmoid(-pre) and dS/dx as one GEMM per layer,
        y = log S - log(1 - S); two exps and two logs per unit where :meth:`columns` takes
        five of each. The derivative cannot overflow (dy/dx <= 2 a du/dx per layer: w @ s(1 - s)
        is at most min(S, 1 - S)); S or 1 - S can underflow, for points far from the root
        (|pre| past the exp's range), and such columns are evaluated again in the log
        domain (:meth:`_at_log`), so the value is :meth:`columns`' wherever it is finite.
        ``compiled``: each evaluation as one compiled pass (:mod:`.ddsf_kernel`) where
        ``params`` are float32 or float64 on the CPU, the same map in their type."""
        if params.shape[1] == 0:  # no point: nothing to evaluate
            return lambda x: (x.clone(), torch.ones_like(x))
        # below this, S or 1 - S has lost digits to underflow: that column goes the log way
        floor = torch.finfo(params.dtype).tiny * 2**24
        if compiled and params.device.type == "cpu" and params.dtype in (torch.float32, torch.float64):
            evaluate = self._compiled(params.contiguous(), floor)
        else:
            evaluate = self._eager(params, floor)

        def checked(x: Tensor) -> tuple[Tensor, Tensor]:
            y, dy, far = evaluate(x)
            if far is not None:  # the few columns whose mixture underflowed, in the log domain
                idx = far.nonzero()[:, 0]
                y_far, g_far = self._at_log(params[:, idx])(x[idx])
                y, dy = y.index_put((idx,), y_far), dy.index_put((idx,), g_far.exp())
            return y, dy

        return checked

    def _eager(self, params: Tensor, floor: float) -> Callable[[Tensor], tuple[Tensor, Tensor, Tensor | None]]:
        """:meth:`at`'s evaluation in torch's ops: x -> y, dy/dx and which columns' least
        S or 1 - S over the layers is below ``floor`` (None: none). Each layer's x-free
        terms once: a, b, the mixing weights' column factors c and normalisers z
        (w_kj = e_w[k, j] c_w[j] / z_w[k])."""
        H, start, eager, C = self.hidden, 0, [], params.shape[1]
        for (n_in, _), u_own, w_own in zip(self.sizes, self.u, self.w):
            p = params[start : start + 3 * H + n_in]
            start += 3 * H + n_in
            a = soft_clamp(p[:H], LOG_SCALE_BOUND).exp()
            b, p_w, p_u = p[H : 2 * H], p[2 * H : 3 * H], p[3 * H :]
            e_w = w_own.exp()
            c_w = (p_w - p_w.amax(0, keepdim=True)).exp()
            mixing = None
            if n_in > 1:
                c_u = (p_u - p_u.amax(0, keepdim=True)).exp()
                e_u = u_own.exp()
                mixing = (c_u.repeat(1, 2), e_u, (e_u @ c_u).repeat(1, 2))
            # one product for s, 1 - s and the slope side by side
            eager.append((a, b, c_w.repeat(1, 3), e_w, (e_w @ c_w).repeat(1, 3), mixing))

        def evaluate(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            h, dh = x[None], torch.ones_like(x)[None]
            lowest = []  # per layer, each column's least S or 1 - S
            for a, b, c_w, e_w, z_w, mixing in eager:
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
            far = torch.stack(lowest).view(-1, 2, C).amin((0, 1)) < floor
            return h[0], dh[0], far if bool(far.any()) else None

        return evaluate

    def _compiled(self, params: Tensor, floor: float) -> Callable[[Tensor], tuple[Tensor, Tensor, Tensor | None]]:
        """:meth:`_eager`'s evaluation as compiled passes (:mod:`.ddsf_kernel`): the
        x-free terms in one (``pack``) into scratch kept from dimension to dimension,
        each evaluation in one. The scratch is this thread's: an evaluation finds its
        terms overwritten by a later ``at`` (two evaluators used in turn) and packs them
        again, so it is never read stale."""
        from . import ddsf_kernel  # numba: imported where first used

        L, H, C = len(self.sizes), self.hidden, params.shape[1]
        n_in, n_out = (np.array(n, dtype=np.int64) for n in zip(*self.sizes))
        starts = np.cumsum([0] + [3 * H + i for i in n_in[:-1]]).astype(np.int64)
        e_w, e_u = self._exp_weights(params)
        unit = scratch("ddsf-unit", (L, 3, H, C), params).numpy()
        z_w, c_u, z_u = (scratch(f"ddsf-{name}", (L, H, C), params).numpy() for name in ("z_w", "c_u", "z_u"))
        arrays = (unit, z_w, e_w, c_u, z_u, e_u)
        packed = params.numpy()

        def pack() -> object:
            ddsf_kernel.pack(packed, starts, n_in, n_out, e_w, e_u, LOG_SCALE_BOUND, unit, z_w, c_u, z_u)
            if len(_PACKED) > 64:  # addresses of scratch since dropped: forgetting one costs a pack
                _PACKED.clear()
            token = _PACKED[unit.ctypes.data] = object()
            return token

        mine = pack()

        def evaluate(x: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
            nonlocal mine
            if _PACKED.get(unit.ctypes.data) is not mine:
                mine = pack()
            points = x.contiguous().numpy()
            y, dy, lowest = np.empty_like(points), np.empty_like(points), np.empty_like(points)
            below = ddsf_kernel.evaluate(points, *arrays, n_in, n_out, floor, y, dy, lowest)
            far = torch.from_numpy(lowest) < floor if below else None
            return torch.from_numpy(y), torch.from_numpy(dy), far

        return evaluate

    def _exp_weights(self, like: Tensor) -> tuple[np.ndarray, np.ndarray]:
        """exp of the learned mixing weights u and w, each layer's in an (H, H) block of an
        (L, H, H) array in ``like``'s dtype (past a layer's own sizes, 0): made again only
        when a weight, or the dtype, has changed since the last call (always, for weights
        made under inference mode: they keep no version counter)."""
        weights = (*self.u, *self.w)
        inference = any(p.is_inference() for p in weights)
        key = None if inference else (like.dtype, *((p.data_ptr(), p._version) for p in weights))
        kept = getattr(self, "_exp_kept", None)
        if key is None or kept is None or kept[0] != key:
            L, H = len(self.sizes), self.hidden
            e_w, e_u = like.new_zeros(L, H, H), like.new_zeros(L, H, H)
            with torch.no_grad():
                for l, ((i, o), u_own, w_own) in enumerate(zip(self.sizes, self.u, self.w)):
                    e_w[l, :o], e_u[l, :, :i] = w_own.exp(), u_own.exp()
            kept = self._exp_kept = (key, e_w.numpy(), e_u.numpy())
        return kept[1], kept[2]

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
