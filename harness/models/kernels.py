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
_COMPILED: dict[str, float] = {}  # kernel and dtype -> seconds spent compiling (or loading) in this process


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
def advance(p, u, hw, hw_off, hin, hb, hb_off, ends, hidden, h_off, acc, term):
    """Computes the hidden units of degree p (ReLU), from the p solved inputs ``u[:p]``
    and the units of lower degree (MADE.incremental's step; the layout of
    :func:`_affine_solve`); at p = 0 a conditional MADE's units of degree 0, which read
    only the context. ``term`` (first-layer units, points): each point's context term
    of the first layer (none: 0 rows, a shared context is in the biases). ``acc`` is
    scratch of one row."""
    n = acc.shape[0]
    for layer in range(ends.shape[0]):
        start, stop = (ends[layer, p - 1] if p >= 1 else 0), ends[layer, p]
        known = p if layer == 0 else ends[layer - 1, p]
        for r in range(start, stop):
            acc[:] = hb[hb_off[layer] + r]
            if layer == 0 and term.shape[0] > 0:
                for i in range(n):
                    acc[i] += term[r, i]
            base = hw_off[layer] + r * hin[layer]
            if layer == 0:
                _accumulate(acc, hw, base, known, u, 0)
            else:
                _accumulate(acc, hw, base, known, hidden, h_off[layer - 1])
            row = h_off[layer] + r
            for i in range(n):
                hidden[row, i] = max(acc[i], 0.0)


@numba.njit(cache=True, nogil=True, boundscheck=False, fastmath={"contract"})
def _affine_solve(v, hw, hw_off, hin, hb, hb_off, ends, hidden, h_off, w_m, w_s, b_m, b_s, bound, u, ladj, term):
    """u = solve of v (tiles, d, T) through one MADE-affine layer, in solve order; ladj
    (tiles, T) -= s. Each tile is a contiguous (d, T) block of points.

    Hidden layer l: weights hw[hw_off[l]:] (units sorted by degree) x (hin[l] inputs in
    the previous layer's order), biases hb[hb_off[l]:], activations hidden[h_off[l]:];
    ends[l, p] counts its units of degree <= p. The output of position p reads the
    last layer's first ends[-1, p] units (w_m, w_s: (d, h_last) in solve order); term
    (tiles, first-layer units or 0, T): the points' context terms (:func:`advance`)."""
    for t in range(v.shape[0]):  # a tile of points at a time: its activations stay in the cache
        _solve_tile(
            v[t], hw, hw_off, hin, hb, hb_off, ends, hidden[t], h_off, w_m, w_s, b_m, b_s, bound, u[t], ladj[t], term[t]
        )


@numba.njit(cache=True, nogil=True, boundscheck=False, fastmath={"contract"})
def _solve_tile(v, hw, hw_off, hin, hb, hb_off, ends, hidden, h_off, w_m, w_s, b_m, b_s, bound, u, ladj, term):
    d, n = v.shape
    layers = ends.shape[0]
    acc = np.empty(n, dtype=v.dtype)
    m = np.empty(n, dtype=v.dtype)
    s = np.empty(n, dtype=v.dtype)
    last = h_off[layers - 1]
    for p in range(d):
        advance(p, u, hw, hw_off, hin, hb, hb_off, ends, hidden, h_off, acc, term)
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
    term: np.ndarray | None = None,
) -> np.ndarray:
    """The solved u (d, n) of v (d, n), feature-major and in solve order; subtracts each
    clamped log-scale from ``ladj`` (n,). ``hidden_layers``: (weight (h, in), bias (h,))
    per hidden layer, rows sorted by degree and columns in the previous layer's order;
    ``term``: each point's context term of the first layer (n, h), same unit order."""
    v3, net, hidden, tiles = tiled(v, hidden_layers)
    d, n = v.shape
    u3 = np.empty_like(v3)
    ladj3 = np.zeros((tiles, TILE), dtype=v.dtype)
    args = (v3, *net, ends, hidden, net[-1], w_m, w_s, b_m, b_s, bound, u3, ladj3, tiled_term(term, v))
    _ready(str(v.dtype), _affine_solve, *args)
    _affine_solve(*args)
    ladj -= ladj3.reshape(-1)[:n]
    return untiled(u3, n)


def tiled(v: np.ndarray, hidden_layers: list[tuple[np.ndarray, np.ndarray]]):
    """The incremental solves' layout: v (d, n) as (tiles, d, TILE), the last tile padded
    with zeros (dropped after); the hidden layers' weights and biases flat with their
    offsets, (hw, hw_off, hin, hb, hb_off); the activations' buffer (tiles, units,
    TILE), whose layer offsets equal hb_off; and the tile count."""
    dtype = v.dtype
    hw = np.concatenate([w.ravel() for w, _ in hidden_layers]).astype(dtype, copy=False)
    hw_off = np.cumsum([0] + [w.size for w, _ in hidden_layers])[:-1].astype(np.int64)
    hin = np.array([w.shape[1] for w, _ in hidden_layers], dtype=np.int64)
    hb = np.concatenate([b for _, b in hidden_layers]).astype(dtype, copy=False)
    sizes = [w.shape[0] for w, _ in hidden_layers]
    hb_off = np.cumsum([0] + sizes)[:-1].astype(np.int64)
    d, n = v.shape
    tiles = -(-n // TILE)
    padded = np.zeros((d, tiles * TILE), dtype=dtype)
    padded[:, :n] = v
    v3 = np.ascontiguousarray(padded.reshape(d, tiles, TILE).transpose(1, 0, 2))
    hidden = np.empty((tiles, sum(sizes), TILE), dtype=dtype)
    return v3, (hw, hw_off, hin, hb, hb_off), hidden, tiles


def tiled_term(term: np.ndarray | None, v: np.ndarray) -> np.ndarray:
    """The points' context terms (n, h), point-major, as (tiles, h, TILE), the layout
    :func:`tiled` gives v; (tiles, 0, TILE) without any."""
    tiles = -(-v.shape[1] // TILE)
    if term is None:
        return np.zeros((tiles, 0, TILE), dtype=v.dtype)
    n, h = term.shape
    padded = np.zeros((tiles * TILE, h), dtype=v.dtype)
    padded[:n] = term
    return np.ascontiguousarray(padded.reshape(tiles, TILE, h).transpose(0, 2, 1))


def untiled(u3: np.ndarray, n: int) -> np.ndarray:
    """(tiles, d, TILE) back to (d, n), the padding dropped."""
    tiles, d, _ = u3.shape
    return u3.transpose(1, 0, 2).reshape(d, tiles * TILE)[:, :n]


def _ready(key: str, kernel, *args) -> None:
    """Compiles ``kernel`` for these arguments' types (or loads it from the disk cache)
    once per process, timing it apart: the first real call is then steady state."""
    if key not in _COMPILED:
        start = time.perf_counter()
        kernel.compile(tuple(numba.typeof(a) for a in args))
        _COMPILED[key] = time.perf_counter() - start


def compile_seconds() -> float:
    """Seconds this process has spent compiling (or loading) kernels so far."""
    return sum(_COMPILED.values())


# ---- the safeguarded root-find (harness.models.invert.solve_increasing) -----------------


@numba.njit(cache=True, inline="always", error_model="numpy")  # r / 0 is inf
def _step(x, r, dy, lo, hi, step, prev, tol_abs, eps, newton):
    """After an evaluation at x (residual r, slope dy, bracket [lo, hi] already updated
    by r's sign): (accepted, the next point, the next outward step). Accepted when
    finite and within tolerance, or pinned by a bracket closed to resolution with a
    residual the slope across it explains. Otherwise bisect a closed bracket, or step
    outwards from the known side, doubling; a Newton step replaces that where it stays
    inside the bracket (within twice the step on an open side) and halves |r|."""
    closed = math.isfinite(lo) and math.isfinite(hi)
    span = hi - lo
    pinned = closed and span <= eps * (1.0 + abs(x)) and abs(r) <= 2.0 * abs(dy) * span + tol_abs
    if math.isfinite(x) and math.isfinite(r) and (abs(r) <= tol_abs or pinned):
        return True, x, step
    if closed:
        nxt = 0.5 * (lo + hi)
    elif math.isinf(hi):
        nxt = lo + step
    else:
        nxt = hi - step
    if newton:
        trial = x - r / dy
        reach_lo = hi - 2.0 * step if math.isinf(lo) else lo
        reach_hi = lo + 2.0 * step if math.isinf(hi) else hi
        if trial > reach_lo and trial < reach_hi and math.isfinite(trial) and abs(r) <= 0.5 * prev:
            nxt = trial
    return False, nxt, step if closed else 2.0 * step


# ---- B-NAF: the per-dimension root-find (harness.models.bnaf) -------------------------


@numba.njit(cache=True, inline="always")
def _tanh(v, one):
    """tanh(v) from one exp in v's precision (``one`` is 1 in it), within 4e-16 of it in
    float64 (absolute, all that the sums after it see) at a third of libm's tanh's cost
    here; +-1 beyond |v| = 20, where tanh rounds to +-1."""
    if v > 20.0:
        return one
    if v < -20.0:
        return -one
    two = one + one
    return one - two / (math.exp(two * v) + one)


GROUP = 8  # points solved in lock-step: eight independent Newton chains keep the core busy


@numba.njit(cache=True, nogil=True, boundscheck=False, fastmath={"contract"}, error_model="numpy")  # r / 0 is inf
def _bnaf_block(
    z,
    points,
    i0,
    i1,
    acts,
    act_off,
    pre,
    pre_off,
    w,
    w_off,
    diag,
    diag_off,
    blocks,
    alpha,
    gated,
    tol,
    eps,
    max_iter,
    out,
):
    """Solves dimensions i0..i1-1 of one B-NAF layer for every point (column of z; the
    first ``points`` are the caller's, the rest padding to whole groups),
    :data:`GROUP` points at a time: for each dimension its block row's known part
    (``pre``, the contributions of dimensions before i0, plus those of i0..i-1 added
    here), then the safeguarded Newton of :func:`harness.models.invert.solve_increasing`
    on the scalar map of its diagonal blocks, the group's points in lock-step (one
    point's evaluation is a chain of dependent exps and divisions; eight independent
    chains overlap). A point that has converged keeps its x, so evaluating it again
    gives its solution's values; each layer's inputs at the solution go to ``acts``.

    Layer k (blocks[k] -> blocks[k+1] units per dimension): weight w[w_off[k]:] (d
    blocks[k+1], d blocks[k]) row-major, diagonal blocks diag[diag_off[k]:] (d, out, in);
    its inputs acts[act_off[k]:] and pre-activations pre[pre_off[k]:], feature-major
    (features, points). ``out`` (i1 - i0, 3): per dimension, the most evaluations a
    point took, the points left unsolved and their worst residual."""
    d, n = z.shape
    layers = blocks.shape[0] - 1
    width = 1
    for k in range(blocks.shape[0]):
        width = max(width, blocks[k])
    # the evaluations run in the points' precision (float32 arithmetic for float32
    # points, as the eager solve's); the root-find's bookkeeping in float64
    one = np.ones(1, dtype=z.dtype)[0]
    c = np.empty((layers, width, GROUP), dtype=z.dtype)  # the block row's known part, per layer
    h = np.empty((layers + 1, width, GROUP), dtype=z.dtype)  # the layers' inputs at x (h[0, 0] = x)
    g = np.empty((layers + 1, width, GROUP), dtype=z.dtype)  # their derivatives in x
    x, lo, hi = np.empty(GROUP), np.empty(GROUP), np.empty(GROUP)
    step, prev, r = np.empty(GROUP), np.empty(GROUP), np.empty(GROUP)
    target, tol_abs = np.empty(GROUP), np.empty(GROUP)
    done, its = np.zeros(GROUP, dtype=np.bool_), np.zeros(GROUP, dtype=np.int64)
    for i in range(i1 - i0):
        out[i, 0] = 0.0
        out[i, 1] = 0.0
        out[i, 2] = 0.0
    for p0 in range(0, n, GROUP):  # n is a multiple of GROUP (the caller pads)
        for i in range(i0, i1):
            for k in range(layers):
                bi, bo = blocks[k], blocks[k + 1]
                for a in range(bo):
                    row = pre_off[k] + i * bo + a
                    for q in range(GROUP):
                        c[k, a, q] = pre[row, p0 + q]
                    base = w_off[k] + (i * bo + a) * d * bi
                    for col in range(i0 * bi, i * bi):
                        wv, src = w[base + col], act_off[k] + col
                        for q in range(GROUP):
                            c[k, a, q] += wv * acts[src, p0 + q]
            for q in range(GROUP):
                t = float(z[i, p0 + q])
                target[q], tol_abs[q], x[q] = t, tol * max(1.0, abs(t)), t
                lo[q], hi[q], step[q], prev[q], r[q] = -np.inf, np.inf, 1.0 + abs(t), np.inf, np.nan
                done[q], its[q] = False, 0
            left, it = GROUP, 0
            while left > 0 and it < max_iter:
                it += 1
                # the map of dimension i and its derivative, layer by layer, at every x
                for q in range(GROUP):
                    h[0, 0, q], g[0, 0, q] = x[q], one
                for k in range(layers):
                    bi, bo = blocks[k], blocks[k + 1]
                    base = diag_off[k] + i * bo * bi
                    for a in range(bo):
                        for q in range(GROUP):
                            h[k + 1, a, q], g[k + 1, a, q] = c[k, a, q], one - one
                        for b in range(bi):
                            dw = diag[base + a * bi + b]
                            for q in range(GROUP):
                                h[k + 1, a, q] += dw * h[k, b, q]
                                g[k + 1, a, q] += dw * g[k, b, q]
                        if k < layers - 1:
                            for q in range(GROUP):
                                v = _tanh(h[k + 1, a, q], one)
                                h[k + 1, a, q] = v
                                g[k + 1, a, q] *= one - v * v
                for q in range(GROUP):
                    if done[q]:
                        continue
                    its[q] += 1
                    y, dy = float(h[layers, 0, q]), float(g[layers, 0, q])
                    if gated:
                        y, dy = alpha * y + (1.0 - alpha) * x[q], alpha * dy + (1.0 - alpha)
                    rq = y - target[q]
                    r[q] = rq
                    if rq < 0:
                        lo[q] = x[q]
                    if rq > 0:
                        hi[q] = x[q]
                    ok, nxt, st = _step(x[q], rq, dy, lo[q], hi[q], step[q], prev[q], tol_abs[q], eps, True)
                    if ok:
                        done[q] = True
                        left -= 1
                    else:
                        prev[q], x[q], step[q] = abs(rq), nxt, st
            j = i - i0
            for q in range(min(GROUP, points - p0)):  # the caller's padding is not counted
                out[j, 0] = max(out[j, 0], its[q])
                if not done[q]:
                    out[j, 1] += 1.0
                    out[j, 2] = max(out[j, 2], abs(r[q]) if math.isfinite(r[q]) else np.inf)
            for k in range(layers):  # the last evaluation was at each solution: keep each layer's input
                for b in range(blocks[k]):
                    for q in range(GROUP):
                        acts[act_off[k] + i * blocks[k] + b, p0 + q] = h[k, b, q]


def bnaf_block(z, points, i0, i1, *rest):
    """:func:`_bnaf_block` on numpy arrays, compiled (or loaded) and timed apart on first use.
    Returns (i1 - i0, 3): per dimension, the evaluations, unsolved points and worst residual."""
    out = np.zeros((i1 - i0, 3))
    args = (z, points, i0, i1, *rest)
    _ready("bnaf-" + str(z.dtype), _bnaf_block, *args, out)
    _bnaf_block(*args, out)
    return out


# ---- one step of the safeguarded root-finder (harness.models.invert) ------------------


@numba.njit(cache=True, nogil=True, boundscheck=False, error_model="numpy")
def _root_step(x, y, dy, target, tol_abs, lo, hi, step, prev, done, residual, newton, eps, x_next):
    """One step of :func:`harness.models.invert.solve_increasing` (not coupled) over
    every entry, in one pass where torch takes ~60 ops: the residual, the bracket, the
    acceptance test, then the next point (Newton where it is trusted, else bisection or
    an outward step). Returns how many entries are not done."""
    left = 0
    for j in range(x.shape[0]):
        xj = x[j]
        r = y[j] - target[j]
        residual[j] = r
        if r < 0:
            lo[j] = xj
        if r > 0:
            hi[j] = xj
        done[j], x_next[j], s = _step(xj, r, dy[j], lo[j], hi[j], step[j], prev[j], tol_abs[j], eps, newton)
        if not done[j]:
            left += 1
            step[j] = s
            prev[j] = abs(r)
    return left


def root_step(x, y, dy, target, tol_abs, lo, hi, step, prev, done, residual, newton, eps, x_next) -> int:
    """:func:`_root_step` on numpy arrays, compiled (or loaded) and timed apart on first use."""
    args = (x, y, dy, target, tol_abs, lo, hi, step, prev, done, residual, newton, eps, x_next)
    _ready("root-" + str(x.dtype), _root_step, *args)
    return _root_step(*args)
