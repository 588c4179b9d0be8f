"""NSF's incremental solve as one compiled loop (numba): for each dimension in solve
order, the hidden units of its degree (:func:`harness.models.kernels.advance`), its
3K - 1 spline parameters from the last layer's known units, then each point's spline
inverse (:func:`harness.models.spline.rq_inverse`, the same arithmetic one point at a
time), over feature-major tiles of points as the affine solve's.

In eager torch each of the d steps of a layer is ~60 dispatched ops on a (batch, 3K - 1)
block; here a step is a few passes over contiguous points.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from .kernels import TILE, _accumulate, _ready, advance, tiled, tiled_term, untiled


@numba.njit(cache=True, inline="always")
def _softplus(x):
    """torch's softplus: log1p(exp(x)), x itself above 20."""
    return x if x > 20.0 else math.log1p(math.exp(x))


@numba.njit(cache=True, nogil=True, boundscheck=False, fastmath={"contract"})
def _knots(params, row, i, bins, bound, floor, knots):
    """knots[0..K] of one point's widths (or heights): softmax of params[row:row + K, i],
    each bin at least ``floor`` of the interval, from -B to B (the last exactly B)."""
    top = params[row, i]
    for j in range(1, bins):
        top = max(top, params[row + j, i])
    total = 0.0
    for j in range(bins):
        total += math.exp(params[row + j, i] - top)
    knots[0] = -bound
    cum = 0.0
    for j in range(bins - 1):
        cum += floor + (1.0 - floor * bins) * (math.exp(params[row + j, i] - top) / total)
        knots[j + 1] = 2.0 * bound * cum - bound
    knots[bins] = bound


@numba.njit(cache=True, nogil=True, boundscheck=False, fastmath={"contract"})
def _invert_one(y, params, i, bins, bound, min_w, min_h, min_d, xs, ys):
    """x with spline(x) = y for point i's spline (params[:, i]); y outside [-B, B] is itself."""
    if not (y >= -bound and y <= bound):
        return y
    _knots(params, 0, i, bins, bound, min_w, xs)
    _knots(params, bins, i, bins, bound, min_h, ys)
    k = 0
    for j in range(1, bins):  # how many interior knots lie at or below y
        if y >= ys[j]:
            k += 1
    d0 = 1.0 if k == 0 else min_d + _softplus(params[2 * bins + k - 1, i])
    d1 = 1.0 if k == bins - 1 else min_d + _softplus(params[2 * bins + k, i])
    w, h = xs[k + 1] - xs[k], ys[k + 1] - ys[k]
    s = h / w
    dy = y - ys[k]
    slack = d1 + d0 - 2.0 * s
    a = h * (s - d0) + dy * slack
    b = h * d0 - dy * slack
    c = -s * dy
    theta = (2.0 * c) / (-b - math.sqrt(max(b * b - 4.0 * a * c, 0.0)))
    return xs[k] + min(max(theta, 0.0), 1.0) * w


@numba.njit(cache=True, nogil=True, boundscheck=False, fastmath={"contract"})
def _spline_solve(v, hw, hw_off, hin, hb, hb_off, ends, hidden, w_out, b_out, bins, bound, floors, u, term):
    """u = the solve of v (tiles, d, T) through one MADE-spline layer, in solve order.
    w_out (3K - 1, d, h_last), b_out (3K - 1, d): the output rows in solve order;
    floors: the least bin width, height and derivative."""
    # numba's disk cache keys this function by this file alone: it does not see a change to
    # advance (kernels.py), which it inlines; edit this file too when advance changes
    d, n = v.shape[1], v.shape[2]
    p_count = w_out.shape[0]
    last = hb_off[ends.shape[0] - 1]
    acc = np.empty(n, dtype=v.dtype)
    params = np.empty((p_count, n))
    xs, ys = np.empty(bins + 1), np.empty(bins + 1)
    for t in range(v.shape[0]):  # a tile of points at a time: its activations stay in the cache
        ut, ht = u[t], hidden[t]
        for p in range(d):
            advance(p, ut, hw, hw_off, hin, hb, hb_off, ends, ht, hb_off, acc, term[t])
            units = ends[ends.shape[0] - 1, p]
            for k in range(p_count):
                acc[:] = b_out[k, p]
                _accumulate(acc, w_out[k, p], 0, units, ht, last)
                params[k, :] = acc
            for i in range(n):
                ut[p, i] = _invert_one(v[t, p, i], params, i, bins, bound, floors[0], floors[1], floors[2], xs, ys)


def spline_solve(
    v: np.ndarray,
    hidden_layers: list[tuple[np.ndarray, np.ndarray]],
    ends: np.ndarray,
    w_out: np.ndarray,
    b_out: np.ndarray,
    bins: int,
    bound: float,
    floors: tuple[float, float, float],
    term: np.ndarray | None = None,
) -> np.ndarray:
    """The solved x (d, n) of z (d, n), feature-major and in solve order, through one
    MADE-spline layer (``hidden_layers`` as :func:`harness.models.kernels.affine_solve`
    takes them; ``w_out`` (3K - 1, d, h_last) and ``b_out`` (3K - 1, d) in solve order;
    ``term``: each point's context term of the first layer, as affine_solve takes it)."""
    v3, net, hidden, _ = tiled(v, hidden_layers)
    u3 = np.empty_like(v3)
    w_out, b_out = w_out.astype(v.dtype, copy=False), b_out.astype(v.dtype, copy=False)
    floors = np.asarray(floors, dtype=np.float64)
    args = (v3, *net, ends, hidden, w_out, b_out, bins, float(bound), floors, u3, tiled_term(term, v))
    _ready("spline-" + str(v.dtype), _spline_solve, *args)
    _spline_solve(*args)
    return untiled(u3, v.shape[1])


__all__ = ["TILE", "spline_solve"]
