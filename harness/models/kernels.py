"""Compiled loops (numba) for slow directions made of many small steps.

The incremental affine solve of MADE, MAF and IAF takes d steps per layer, each a few
small matrix-vector products: in eager torch every step is ~35 dispatched ops of a few
microseconds each, so the solve is set by per-op overhead, not by arithmetic. Here the
whole d-step loop is one compiled function over feature-major arrays (units x points,
so the innermost loop runs over contiguous points and vectorises). It does exactly the
arithmetic of :meth:`harness.models.masked.MADE.incremental`: each hidden unit once,
from the inputs or units of lower degree only.

Compiling takes a few seconds per process the first time (cached on disk after);
:func:`compile_seconds` says how long this process spent, so a timing can report it
apart and never inside its steady state.
"""

from __future__ import annotations

import math
import time

import numba
import numpy as np

TILE = 256  # points per tile: 256 units x 256 points of activations per layer fit the L2 cache
_COMPILED: dict[str, float] = {}  # dtype -> seconds spent compiling (or loading) in this process


@numba.njit(cache=True, nogil=True, boundscheck=False, fastmath={"contract"})
def _accumulate(acc, weights, start, count, rows, first):
    """acc += sum_k weights[start + k] * rows[first + k] for k < count: eight rows per
    pass over acc (fewer loads and stores of it), acc never aliasing the rows."""
    n = acc.shape[0]
    k = 0
    while k + 8 <= count:
        w = weights[start + k : start + k + 8]
        r0, r1, r2, r3 = rows[first + k], rows[first + k + 1], rows[first + k + 2], rows[first + k + 3]
        r4, r5, r6, r7 = rows[first + k + 4], rows[first + k + 5], rows[first + k + 6], rows[first + k + 7]
        for i in range(n):
            acc[i] += (w[0] * r0[i] + w[1] * r1[i] + w[2] * r2[i] + w[3] * r3[i]) + (
                w[4] * r4[i] + w[5] * r5[i] + w[6] * r6[i] + w[7] * r7[i]
            )
        k += 8
    while k < count:
        wk, rk = weights[start + k], rows[first + k]
        for i in range(n):
            acc[i] += wk * rk[i]
        k += 1


@numba.njit(cache=True, nogil=True, boundscheck=False, fastmath={"contract"})
def _accumulate_two(a, b, wa, wb, count, rows, first):
    """a += wa @ rows, b += wb @ rows over the same count rows: one pass over them."""
    n = a.shape[0]
    k = 0
    while k + 4 <= count:
        r0, r1, r2, r3 = rows[first + k], rows[first + k + 1], rows[first + k + 2], rows[first + k + 3]
        a0, a1, a2, a3 = wa[k], wa[k + 1], wa[k + 2], wa[k + 3]
        b0, b1, b2, b3 = wb[k], wb[k + 1], wb[k + 2], wb[k + 3]
        for i in range(n):
            x0, x1, x2, x3 = r0[i], r1[i], r2[i], r3[i]
            a[i] += a0 * x0 + a1 * x1 + a2 * x2 + a3 * x3
            b[i] += b0 * x0 + b1 * x1 + b2 * x2 + b3 * x3
        k += 4
    while k < count:
        rk, ak, bk = rows[first + k], wa[k], wb[k]
        for i in range(n):
            a[i] += ak * rk[i]
            b[i] += bk * rk[i]
        k += 1


@numba.njit(cache=True, nogil=True, boundscheck=False, fastmath={"contract"})
def _affine_solve(v, hw, hw_off, hin, hb, hb_off, ends, hidden, h_off, w_m, w_s, b_m, b_s, bound, u, ladj):
    """u = solve of v (tiles, d, T) through one MADE-affine layer, in solve order; ladj
    (tiles, T) -= s. Each tile is a contiguous (d, T) block of points.

    Hidden layer l: weights hw[hw_off[l]:] (units sorted by degree) x (hin[l] inputs in
    the previous layer's order), biases hb[hb_off[l]:], activations hidden[h_off[l]:];
    ends[l, p] counts its units of degree <= p. The output of position p reads the
    last layer's first ends[-1, p] units (w_m, w_s: (d, h_last) in solve order)."""
    for t in range(v.shape[0]):  # a tile of points at a time: its activations stay in the cache
        _solve_tile(v[t], hw, hw_off, hin, hb, hb_off, ends, hidden[t], h_off, w_m, w_s, b_m, b_s, bound, u[t], ladj[t])


@numba.njit(cache=True, nogil=True, boundscheck=False, fastmath={"contract"})
def _solve_tile(v, hw, hw_off, hin, hb, hb_off, ends, hidden, h_off, w_m, w_s, b_m, b_s, bound, u, ladj):
    d, n = v.shape
    layers = ends.shape[0]
    acc = np.empty(n, dtype=v.dtype)
    m = np.empty(n, dtype=v.dtype)
    s = np.empty(n, dtype=v.dtype)
    last = h_off[layers - 1]
    for p in range(d):
        if p >= 1:
            for layer in range(layers):
                start, stop = ends[layer, p - 1], ends[layer, p]
                known = p if layer == 0 else ends[layer - 1, p]
                for r in range(start, stop):
                    acc[:] = hb[hb_off[layer] + r]
                    base = hw_off[layer] + r * hin[layer]
                    if layer == 0:
                        _accumulate(acc, hw, base, known, u, 0)
                    else:
                        _accumulate(acc, hw, base, known, hidden, h_off[layer - 1])
                    row = h_off[layer] + r
                    for i in range(n):
                        hidden[row, i] = max(acc[i], 0.0)
        units = ends[layers - 1, p]
        m[:] = b_m[p]
        s[:] = b_s[p]
        _accumulate_two(m, s, w_m[p], w_s[p], units, hidden, last)
        for i in range(n):
            si = min(max(s[i], -bound), bound)
            u[p, i] = (v[p, i] - m[i]) * math.exp(-si)
            ladj[i] += si


def affine_solve(
    v: np.ndarray,
    hidden_layers: list[tuple[np.ndarray, np.ndarray]],
    ends: np.ndarray,
    w_m: np.ndarray,
    w_s: np.ndarray,
    b_m: np.ndarray,
    b_s: np.ndarray,
    bound: float,
    ladj: np.ndarray,
) -> np.ndarray:
    """The solved u (d, n) of v (d, n), feature-major and in solve order; subtracts each
    clamped log-scale from ``ladj`` (n,). ``hidden_layers``: (weight (h, in), bias (h,))
    per hidden layer, rows sorted by degree and columns in the previous layer's order."""
    dtype = v.dtype
    hw = np.concatenate([w.ravel() for w, _ in hidden_layers]).astype(dtype, copy=False)
    hw_off = np.cumsum([0] + [w.size for w, _ in hidden_layers])[:-1].astype(np.int64)
    hin = np.array([w.shape[1] for w, _ in hidden_layers], dtype=np.int64)
    hb = np.concatenate([b for _, b in hidden_layers]).astype(dtype, copy=False)
    sizes = [w.shape[0] for w, _ in hidden_layers]
    hb_off = h_off = np.cumsum([0] + sizes)[:-1].astype(np.int64)
    d, n = v.shape
    tiles = -(-n // TILE)
    padded = np.zeros((d, tiles * TILE), dtype=dtype)  # the last tile padded with zeros, dropped after
    padded[:, :n] = v
    v3 = np.ascontiguousarray(padded.reshape(d, tiles, TILE).transpose(1, 0, 2))
    hidden = np.empty((tiles, sum(sizes), TILE), dtype=dtype)
    u3 = np.empty_like(v3)
    ladj3 = np.zeros((tiles, TILE), dtype=dtype)
    _ensure_compiled(v3, hw, hw_off, hin, hb, hb_off, ends, h_off, w_m, w_s, b_m, b_s, bound)
    _affine_solve(v3, hw, hw_off, hin, hb, hb_off, ends, hidden, h_off, w_m, w_s, b_m, b_s, bound, u3, ladj3)
    ladj -= ladj3.reshape(-1)[:n]
    return u3.transpose(1, 0, 2).reshape(d, tiles * TILE)[:, :n]


def _ensure_compiled(v, hw, hw_off, hin, hb, hb_off, ends, h_off, w_m, w_s, b_m, b_s, bound) -> None:
    """Compiles (or loads from the disk cache) the kernel for v's dtype on a tiny
    problem, timing it: the first real call is then steady state."""
    key = str(v.dtype)
    if key in _COMPILED:
        return
    start = time.perf_counter()
    tiny = np.zeros((1, 1, 1), dtype=v.dtype)
    _affine_solve(
        tiny,
        np.zeros(1, v.dtype),
        np.zeros(1, np.int64),
        np.ones(1, np.int64),
        np.zeros(1, v.dtype),
        np.zeros(1, np.int64),
        np.zeros((1, 1), np.int64),
        np.zeros((1, 1, 1), v.dtype),
        np.zeros(1, np.int64),
        np.zeros((1, 1), v.dtype),
        np.zeros((1, 1), v.dtype),
        np.zeros(1, v.dtype),
        np.zeros(1, v.dtype),
        float(bound),
        np.zeros((1, 1, 1), v.dtype),
        np.zeros((1, 1), v.dtype),
    )
    _COMPILED[key] = time.perf_counter() - start


def compile_seconds() -> float:
    """Seconds this process has spent compiling (or loading) kernels so far."""
    return sum(_COMPILED.values())
