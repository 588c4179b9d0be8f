"""NAF's root-finder evaluations (:meth:`harness.models.naf.DeepSigmoid.at`) as one
compiled pass (numba) each.

In eager torch an evaluation of the deep sigmoidal flow at 1024 points is ~40
dispatched ops on (H, points) blocks, each a pass over memory; here it is one pass over
tiles of points, every unit's sigmoid and every mixture in the L1 cache. It is
:meth:`~harness.models.naf.DeepSigmoid.at`'s arithmetic in the points' own type (float32
or float64, as the eager ops), with one exp and one division per unit (sigmoid(pre) and
sigmoid(-pre) from exp(-|pre|)) and one log per output (log S - log(1 - S) as
log(S / (1 - S))). The x-free terms of a dimension (``pack``) are one pass too.

numba vectorises no libm call (no SVML here), so exp and log are written out below,
in the argument's type: Cody-Waite reduction and a polynomial, within two units in the
last place of libm's (tested); the loops over points then run 16 floats (8 doubles) a
vector. LLVM vectorises a loop only where it can check at run time that the rows it
writes overlap none it reads, and gives up past a few such pairs: hence a loop per
written row.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic, overload

from .kernels import _ready

POINTS = 64  # points per tile: a layer's (H, 64) activations stay in the L1 cache
_EXP_TAYLOR = tuple(1.0 / math.factorial(k) for k in range(12, -1, -1))  # exp's, highest power first
_ATANH_SERIES = tuple(1.0 / k for k in range(21, 2, -2))  # atanh(s) / s - 1 over s^2, in s^2: 1/21 .. 1/3
_F64, _F32 = types.float64, types.float32


def _bitcast(source, target):
    """An intrinsic: the ``target``-typed value whose bits are a ``source``-typed one's."""

    @intrinsic
    def cast(typingctx, value):
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(target))

        return target(source), codegen

    return cast


_f64_of, _bits_64 = _bitcast(types.int64, _F64), _bitcast(_F64, types.int64)
_f32_of, _bits_32 = _bitcast(types.int32, _F32), _bitcast(_F32, types.int32)


def const(value, like):
    """``value`` in ``like``'s float type (a compiled constant): arithmetic stays in it."""


@overload(const, inline="always")
def _const(value, like):
    if like == _F32:
        return lambda value, like: np.float32(value)
    return lambda value, like: np.float64(value)


def pow2(k, like):
    """2.0 ** k in ``like``'s float type, for an integer-valued k within its normal range,
    built from its bits."""


@overload(pow2, inline="always")
def _pow2(k, like):
    if like == _F32:
        return lambda k, like: _f32_of((np.int32(k) + np.int32(127)) << np.int32(23))
    return lambda k, like: _f64_of((np.int64(k) + 1023) << 52)


def split_log2(v):
    """(e, m) of a normal positive float, v = m 2^e with m in [1, 2), in v's type; and
    whether v is normal and finite."""


@overload(split_log2, inline="always")
def _split_log2(v):
    if v == _F32:

        def split32(v):
            bits = _bits_32(v)
            e = np.float32((bits >> np.int32(23)) - np.int32(127))
            m = _f32_of((bits & np.int32(0x007FFFFF)) | np.int32(0x3F800000))
            return e, m, v >= np.float32(1.1754944e-38) and v <= np.float32(3.4028235e38)

        return split32

    def split64(v):
        bits = _bits_64(v)
        e = np.float64((bits >> 52) - 1023)
        m = _f64_of((bits & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000)
        return e, m, v >= 2.2250738585072014e-308 and v <= 1.7976931348623157e308

    return split64


def ln2_split(like):
    """ln 2 as hi + lo in ``like``'s type, hi with few enough bits that k * hi is exact for
    the exponents k of that type."""


@overload(ln2_split, inline="always")
def _ln2_split(like):
    if like == _F32:
        return lambda like: (np.float32(0.693359375), np.float32(-2.12194440e-4))
    return lambda like: (np.float64(6.93147180369123816490e-01), np.float64(1.90821492927058770002e-10))


def exp_floor(like):
    """Below this, exp in ``like``'s type is 0 (past its subnormals)."""


@overload(exp_floor, inline="always")
def _exp_floor(like):
    if like == _F32:
        return lambda like: np.float32(-104.0)
    return lambda like: np.float64(-746.0)


@numba.njit(cache=True, inline="always")
def exp_small(x):
    """exp(x) for x below the type's overflow (float32 or float64, computed in it): x = k
    ln 2 + r, |r| <= ln 2 / 2, exp(r) by its Taylor polynomial of degree 12 (remainder
    below 2e-16), times 2^k as two factors built from their bits, so that a result below
    the smallest normal rounds to a subnormal or 0 as libm's."""
    hi, lo = ln2_split(x)
    floor = exp_floor(x)
    x = floor if x < floor else x  # (NaN stays NaN)
    k = np.floor(x * const(1.4426950408889634, x) + const(0.5, x))
    r = (x - k * hi) - k * lo
    p = const(_EXP_TAYLOR[0], x)
    for c in _EXP_TAYLOR[1:]:  # a global tuple: unrolled, each coefficient a constant of x's type
        p = p * r + const(c, x)
    half = np.floor(k * const(0.5, x))
    return p * pow2(half, x) * pow2(k - half, x)


@numba.njit(cache=True, inline="always")
def log_normal(v):
    """log(v) for a normal positive float32 or float64 v, computed in its type (anything
    else: NaN): v = m 2^e with m in [sqrt(1/2), sqrt(2)), log m = 2 atanh(s),
    s = (m - 1) / (m + 1), |s| <= 0.172, by its series to s^21 (remainder below 1e-18)."""
    one = const(1.0, v)
    e, m, normal = split_log2(v)
    big = one if m > const(1.4142135623730951, v) else const(0.0, v)
    m = m - const(0.5, v) * big * m
    e = e + big
    s = (m - one) / (m + one)
    s2 = s * s
    q = const(_ATANH_SERIES[0], v)
    for c in _ATANH_SERIES[1:]:
        q = q * s2 + const(c, v)
    hi, lo = ln2_split(v)
    two_s = s + s
    out = e * hi + (e * lo + (two_s + two_s * s2 * q))
    return out if normal else const(np.nan, v)


@numba.njit(cache=True, nogil=True, boundscheck=False, fastmath={"contract"}, error_model="numpy")
def _evaluate(x, unit, z_w, e_w, c_u, z_u, e_u, n_in, n_out, floor, y, dy, lowest):
    """y, dy/dx and each point's least mixture (S or 1 - S, over every layer; -1 where
    one is NaN) of the DDSF at x (C,); returns how many points' least is below
    ``floor``. Layer l: ``unit[l]`` (3, H, C) holds a, b and c_w; ``e_w[l]`` (H, H)
    and ``z_w[l]`` (H, C) its first ``n_out[l]`` rows; ``c_u[l]`` (H, C), ``e_u[l]``
    (H, H) and ``z_u[l]`` (H, C) the input mixing's, used where ``n_in[l] > 1`` (the
    names of :meth:`harness.models.naf.DeepSigmoid.at`)."""
    layers, _, H, C = unit.shape
    rows = np.empty((9, H, POINTS), x.dtype)  # in the points' type: float32 runs 16 a vector
    h, dh, uh, duh, hc, dc = rows[0], rows[1], rows[2], rows[3], rows[4], rows[5]
    sc, msc, dsc = rows[6], rows[7], rows[8]
    points = np.empty((7, POINTS), x.dtype)
    big_s, big_ms, big_d, low = points[0], points[1], points[2], points[3]
    pre, ex, recip = points[4], points[5], points[6]
    for t0 in range(0, C, POINTS):
        n = min(POINTS, C - t0)
        t1 = t0 + n
        h[0, :n] = x[t0:t1]
        dh[0, :n] = 1.0
        low[:n] = np.inf
        for l in range(layers):
            if n_in[l] == 1:  # one input: u = 1
                for k in range(H):
                    uh[k, :n] = h[0, :n]
                    duh[k, :n] = dh[0, :n]
            else:  # uh = (e_u @ (c_u h)) / z_u, and the same of dh
                for j in range(n_in[l]):
                    _scaled(h[j], dh[j], c_u[l, j, t0:t1], hc[j], dc[j], n)
                for k in range(H):
                    _mix_two(uh[k], duh[k], e_u[l, k], hc, dc, n_in[l], z_u[l, k, t0:t1], n)
            for k in range(H):  # the units: sigmoid(pre), sigmoid(-pre) and the slope, times c_w
                _units(
                    unit[l, 0, k, t0:t1],
                    unit[l, 1, k, t0:t1],
                    unit[l, 2, k, t0:t1],
                    uh[k],
                    duh[k],
                    sc[k],
                    msc[k],
                    dsc[k],
                    pre,
                    ex,
                    recip,
                    n,
                )
            for o in range(n_out[l]):  # S, 1 - S and dS/dx of output o, then y and dy/dx
                _mix_three(big_s, big_ms, big_d, e_w[l, o], sc, msc, dsc, H, n)
                _outputs(big_s, big_ms, big_d, z_w[l, o, t0:t1], low, h[o], dh[o], n)
        y[t0:t1] = h[0, :n]
        dy[t0:t1] = dh[0, :n]
        lowest[t0:t1] = low[:n]
    below = 0
    for i in range(C):
        below += lowest[i] < floor
    return below


@numba.njit(cache=True, inline="always", boundscheck=False, fastmath={"contract"}, error_model="numpy")
def _scaled(h, dh, c, hc, dc, n):
    """hc = h c, dc = dh c: the inputs times their mixing weights' column factors."""
    for i in range(n):
        hc[i] = h[i] * c[i]
        dc[i] = dh[i] * c[i]


@numba.njit(cache=True, inline="always", boundscheck=False, fastmath={"contract"}, error_model="numpy")
def _sum_rows(acc, w, rows, count, n):
    """acc = w @ rows[:count] over n points, four rows a pass (the sum stays in registers
    for four products)."""
    for i in range(n):
        acc[i] = 0.0
    j = 0
    while j + 4 <= count:
        w0, w1, w2, w3 = w[j], w[j + 1], w[j + 2], w[j + 3]
        r0, r1, r2, r3 = rows[j], rows[j + 1], rows[j + 2], rows[j + 3]
        for i in range(n):
            acc[i] += (w0 * r0[i] + w1 * r1[i]) + (w2 * r2[i] + w3 * r3[i])
        j += 4
    while j < count:
        wj, rj = w[j], rows[j]
        for i in range(n):
            acc[i] += wj * rj[i]
        j += 1


@numba.njit(cache=True, inline="always", boundscheck=False, fastmath={"contract"}, error_model="numpy")
def _mix_two(uh, duh, w, hc, dc, count, z, n):
    """uh = (w @ hc) / z, duh = (w @ dc) / z over ``count`` rows."""
    _sum_rows(uh, w, hc, count, n)
    _sum_rows(duh, w, dc, count, n)
    for i in range(n):
        uh[i] /= z[i]
    for i in range(n):
        duh[i] /= z[i]


@numba.njit(cache=True, inline="always", boundscheck=False, fastmath={"contract"}, error_model="numpy")
def _units(a_row, b_row, c_row, uh, duh, sc, msc, dsc, pre, e, r, n):
    """One unit's sigmoid(pre), sigmoid(-pre) and slope s (1 - s) a du/dx, times c_w:
    both sigmoids from one exp(-|pre|) and one division (``pre``, ``e``, ``r``: scratch
    rows), a loop per written row."""
    for i in range(n):
        pre[i] = b_row[i] + a_row[i] * uh[i]
    for i in range(n):
        e[i] = exp_small(-abs(pre[i]))
    one, zero = const(1.0, e[0]), const(0.0, e[0])
    for i in range(n):
        r[i] = one / (one + e[i])
    for i in range(n):
        sc[i] = (r[i] if pre[i] >= zero else e[i] * r[i]) * c_row[i]
    for i in range(n):
        msc[i] = (e[i] * r[i] if pre[i] >= zero else r[i]) * c_row[i]
    for i in range(n):
        dsc[i] = e[i] * r[i] * r[i] * a_row[i] * duh[i] * c_row[i]


@numba.njit(cache=True, inline="always", boundscheck=False, fastmath={"contract"}, error_model="numpy")
def _mix_three(big_s, big_ms, big_d, w, sc, msc, dsc, count, n):
    """The three sums w @ sc, w @ msc, w @ dsc over ``count`` rows."""
    _sum_rows(big_s, w, sc, count, n)
    _sum_rows(big_ms, w, msc, count, n)
    _sum_rows(big_d, w, dsc, count, n)


@numba.njit(cache=True, inline="always", boundscheck=False, fastmath={"contract"}, error_model="numpy")
def _outputs(big_s, big_ms, big_d, z, low, h, dh, n):
    """S and 1 - S normalised by z; each point's least of them so far (-1 for NaN); y as
    log(S / (1 - S)) (z cancels) and dy/dx, a loop per written row."""
    minus_one = const(-1.0, big_s[0])
    for i in range(n):
        s, ms = big_s[i] / z[i], big_ms[i] / z[i]
        least = s if s < ms else ms
        least = least if least == least else minus_one
        low[i] = least if least < low[i] else low[i]
    for i in range(n):
        h[i] = log_normal(big_s[i] / big_ms[i])
    for i in range(n):
        dh[i] = big_d[i] * z[i] / (big_s[i] * big_ms[i])


@numba.njit(cache=True, nogil=True, boundscheck=False, fastmath={"contract"}, error_model="numpy")
def _pack(params, starts, n_in, n_out, e_w, e_u, bound, unit, z_w, c_u, z_u):
    """The x-free terms of each layer from the pseudo-parameters ``params`` (n_params,
    C), layer l's from row ``starts[l]``: a = exp(soft_clamp(log a)), b, c_w = exp(p_w -
    max p_w) and z_w = e_w @ c_w; where ``n_in[l] > 1``, c_u and z_u = e_u @ c_u (the
    arrays :func:`_evaluate` reads)."""
    layers, _, H, C = unit.shape
    top = np.empty(C, params.dtype)
    one = const(1.0, top[0])
    for l in range(layers):
        p0 = starts[l]
        for k in range(H):
            raw, a = params[p0 + k], unit[l, 0, k]
            for i in range(C):
                a[i] = exp_small(raw[i] / (one + abs(raw[i]) / bound))
            unit[l, 1, k, :] = params[p0 + H + k]
        _weights(params, p0 + 2 * H, H, top, unit[l, 2])
        for o in range(n_out[l]):
            _mix_rows(e_w[l, o], unit[l, 2], H, top, z_w[l, o])
        if n_in[l] > 1:
            _weights(params, p0 + 3 * H, n_in[l], top, c_u[l])
            for k in range(H):
                _mix_rows(e_u[l, k], c_u[l], n_in[l], top, z_u[l, k])


@numba.njit(cache=True, inline="always", boundscheck=False, fastmath={"contract"}, error_model="numpy")
def _weights(params, first, count, top, out):
    """out[j] = exp(params[first + j] - the column's maximum over the ``count`` rows)."""
    top[:] = params[first]
    for j in range(1, count):
        row = params[first + j]
        for i in range(top.shape[0]):
            top[i] = max(top[i], row[i])
    for j in range(count):
        row, dest = params[first + j], out[j]
        for i in range(top.shape[0]):
            dest[i] = exp_small(row[i] - top[i])


@numba.njit(cache=True, inline="always", boundscheck=False, fastmath={"contract"}, error_model="numpy")
def _mix_rows(w, rows, count, acc, out):
    """out = w @ rows[:count], summed in ``acc``."""
    acc[:] = 0.0
    for j in range(count):
        wj, row = w[j], rows[j]
        for i in range(acc.shape[0]):
            acc[i] += wj * row[i]
    out[:] = acc


def pack(params, starts, n_in, n_out, e_w, e_u, bound, unit, z_w, c_u, z_u) -> None:
    """:func:`_pack` on numpy arrays, compiled (or loaded) and timed apart on first use."""
    args = (params, starts, n_in, n_out, e_w, e_u, params.dtype.type(bound), unit, z_w, c_u, z_u)
    _ready("ddsf-pack-" + str(params.dtype), _pack, *args)
    _pack(*args)


def evaluate(x, unit, z_w, e_w, c_u, z_u, e_u, n_in, n_out, floor, y, dy, lowest) -> int:
    """:func:`_evaluate` on numpy arrays, compiled (or loaded) and timed apart on first use."""
    args = (x, unit, z_w, e_w, c_u, z_u, e_u, n_in, n_out, x.dtype.type(floor), y, dy, lowest)
    _ready("ddsf-" + str(x.dtype), _evaluate, *args)
    return _evaluate(*args)
