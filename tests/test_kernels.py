"""The fast paths agree with their references in float64: NAF's feature-major log_prob
with the per-dimension DDSF, B-NAF's feature-major map with the row-major one (gated
and ungated), the compiled incremental solve with the eager one, B-NAF's and NAF's
compiled Newton solves with the eager ones and with bisection, to 1e-9 or better, and
NAF's compiled DDSF evaluation with the eager one."""

import numpy as np
import pytest
import torch

from harness.models import build, kernels, use_kernel

from .conftest import perturb


def _float64(name: str, dim: int, **config):
    torch.manual_seed(0)
    return perturb(build(name, dim, **config)).double().eval()


@pytest.mark.parametrize("dim", [1, 3, 17])
def test_naf_log_prob_agrees_with_the_per_dimension_ddsf(dim):
    flow = _float64("naf", dim)
    x = torch.randn(600, dim, dtype=torch.float64)  # more points x dims than a chunk: chunks are joined right
    layer = flow.transforms[0]
    with torch.no_grad():
        y, logdet = layer(x)
        params = layer.to_params(layer.made(x))  # (n, d, n_params): the root-finder's layout
        y_ref, logder = layer.ds(x, params)
    assert torch.allclose(y, y_ref, rtol=0, atol=1e-10) and torch.allclose(logdet, logder.sum(-1), rtol=0, atol=1e-10)


@pytest.mark.parametrize("residual", ["gated", "gated-but-last", "none"])
def test_bnaf_feature_major_map_agrees_with_the_row_major_one(residual):
    flow = _float64("bnaf", 9, residual=residual)
    x = torch.randn(64, 9, dtype=torch.float64)
    for layer in flow.transforms[::2]:
        with torch.no_grad():
            (y, lj), (y_ref, lj_ref) = layer._map(x), layer._map_rows(x)
        assert torch.allclose(y, y_ref, rtol=0, atol=1e-12) and torch.allclose(lj, lj_ref, rtol=0, atol=1e-12)
    with torch.enable_grad():  # the gradient flows through the feature-major map (training)
        loss = -flow.log_prob(x).mean()
        loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in flow.parameters())


@pytest.mark.parametrize(
    "name, op, dim",
    [
        ("made", "sample", 9),
        ("maf", "sample", 33),
        ("iaf", "log_prob", 33),
        ("nsf", "sample", 1),
        ("nsf", "sample", 33),
    ],
)
def test_the_compiled_incremental_solve_agrees_with_the_eager_one(name, op, dim):
    flow = _float64(name, dim)
    # more points than a tile: tiles and padding are exact; NSF's beyond its bound: the tails
    x = 2 * torch.randn(300, dim, dtype=torch.float64)
    call = (lambda: flow.inverse(x)) if op == "sample" else (lambda: flow.log_prob(x))
    with torch.no_grad():
        compiled = call()
        for t in flow.transforms:
            if hasattr(t, "kernel"):
                t.kernel = False
        eager = call()
    assert torch.allclose(compiled, eager, rtol=1e-12, atol=1e-12)
    assert kernels.compile_seconds() > 0  # compiling was timed, apart from any call


@pytest.mark.parametrize("residual", ["gated", "gated-but-last"])
@pytest.mark.parametrize("dim", [1, 8, 19])  # a block, and blocks with a remainder (harness.models.bnaf.KERNEL_BLOCK)
def test_the_compiled_bnaf_newton_agrees_with_the_eager_one_and_bisection(residual, dim):
    flow = _float64("bnaf", dim, residual=residual, flows=2, hidden_factor=3)
    torch.manual_seed(1)
    x = torch.randn(70, dim, dtype=torch.float64)
    with torch.no_grad():
        z = flow(x)[0]
        compiled = flow.inverse(z)
        compiled_spent = flow.solve_stats()
        use_kernel(flow, False)
        eager = flow.inverse(z)
        eager_spent = flow.solve_stats()
        for t in flow.transforms:
            if t.solver:
                t.solver = "bisection"
        reference = flow.inverse(z)
    assert torch.allclose(compiled, eager, rtol=0, atol=1e-10)
    if residual == "gated":  # an ungated last layer saturates: its inverse is ill-conditioned for any solver
        assert torch.allclose(compiled, reference, rtol=0, atol=1e-9)
        assert torch.allclose(compiled, x, rtol=0, atol=1e-8)
    # the same safeguarded Newton: the evaluations spent agree to a step or two per dimension
    assert abs(compiled_spent.evaluations - eager_spent.evaluations) <= 2 * dim * 2


def test_the_compiled_bnaf_solve_in_float32_round_trips():
    torch.manual_seed(0)
    flow = build("bnaf", 12).eval()
    z = torch.randn(300, 12)
    with torch.no_grad():
        x = flow.inverse(z)
        assert torch.allclose(flow(x)[0], z, rtol=1e-4, atol=1e-4)
        use_kernel(flow, False)
        assert torch.allclose(flow.inverse(z), x, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dim", [1, 9])
def test_the_compiled_naf_newton_agrees_with_the_eager_one_and_bisection(dim):
    flow = _float64("naf", dim, flows=2, hidden=[18, 18])
    torch.manual_seed(1)
    x = torch.randn(70, dim, dtype=torch.float64)  # more points than a tile (ddsf_kernel.POINTS), and a remainder
    with torch.no_grad():
        z = flow(x)[0]
        compiled = flow.inverse(z)
        use_kernel(flow, False)
        eager = flow.inverse(z)
        for t in flow.transforms:
            if getattr(t, "solver", None):
                t.solver = "bisection"
        reference = flow.inverse(z)
    assert torch.allclose(compiled, eager, rtol=0, atol=1e-10)
    assert torch.allclose(compiled, reference, rtol=0, atol=1e-9) and torch.allclose(compiled, x, rtol=0, atol=1e-8)


def test_the_compiled_naf_solve_follows_its_weights_under_inference_mode_too():
    """The compiled evaluations keep exp of the DDSF's own weights between calls: a flow
    made under inference mode (weights without a version counter) samples there, and a
    weight changed in place is seen by the next call."""
    with torch.inference_mode():
        torch.manual_seed(0)
        flow = build("naf", 3, flows=1).eval()
        z = torch.randn(50, 3)
        x = flow.inverse(z)
        assert torch.allclose(flow(x)[0], z, rtol=1e-4, atol=1e-4)
    torch.manual_seed(0)
    flow = build("naf", 3, flows=1).eval()
    with torch.no_grad():
        first = flow.inverse(z)
        flow.transforms[0].ds.w[1].mul_(1.5)
        changed = flow.inverse(z)
        use_kernel(flow, False)
        eager = flow.inverse(z)
    assert not torch.allclose(first, changed, rtol=1e-3, atol=1e-3)
    assert torch.allclose(changed, eager, rtol=1e-4, atol=1e-4)


def test_two_compiled_ddsf_evaluators_used_in_turn_each_keep_their_own_map():
    """The compiled evaluations keep a dimension's terms in this thread's scratch; an
    evaluator made before another one still evaluates its own parameters."""
    torch.manual_seed(4)
    ds = build("naf", 2).transforms[0].ds.double()
    p1, p2 = (torch.randn(ds.n_params, 40, dtype=torch.float64) for _ in range(2))
    x = torch.randn(40, dtype=torch.float64)
    with torch.no_grad():
        first, second = ds.at(p1, compiled=True), ds.at(p2, compiled=True)
        for evaluate, params in ((first, p1), (second, p2), (first, p1)):
            assert torch.allclose(evaluate(x)[0], ds.at(params)(x)[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-13), (torch.float32, 2e-5)])
def test_the_compiled_ddsf_evaluation_agrees_with_the_eager_one(dtype, tol):
    """Near points and far ones (whose mixtures underflow and go the log way), three
    DDSF layers (an inner layer's mixing too), and a NaN parameter column: NaN in both."""
    torch.manual_seed(3)
    ds = build("naf", 2, ds_layers=3, ds_hidden=5).transforms[0].ds.to(dtype)
    params = 2 * torch.randn(ds.n_params, 300, dtype=dtype)
    params[:, 7] = float("nan")
    x = torch.cat([torch.randn(150, dtype=dtype), 3000 * torch.randn(150, dtype=dtype)])
    with torch.no_grad():
        (y, dy), (y_ref, dy_ref) = ds.at(params, compiled=True)(x), ds.at(params)(x)
    assert torch.isnan(y[7]) and torch.isnan(y_ref[7])
    keep = torch.arange(300) != 7
    assert float(((y - y_ref).abs() / (1 + y_ref.abs()))[keep].max()) < tol
    assert float(((dy - dy_ref).abs() / dy_ref.abs().clamp_min(torch.finfo(dtype).tiny))[keep].max()) < 10 * tol


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_ddsf_kernels_exp_and_log_are_within_an_ulp_or_two(dtype):
    """exp and log written out for the vectorised loops (harness.models.ddsf_kernel),
    computed in the argument's type: against float64 numpy, in units of that type's eps;
    exp down through the subnormals to 0, log NaN outside the normal positive numbers."""
    import numba

    from harness.models.ddsf_kernel import exp_small, log_normal

    @numba.njit
    def both(x, v, ex, lg):
        for i in range(x.shape[0]):
            ex[i] = exp_small(x[i])
        for i in range(v.shape[0]):
            lg[i] = log_normal(v[i])

    eps, info = np.finfo(dtype).eps, np.finfo(dtype)
    low = -745.2 if dtype == np.float64 else -103.3
    x = np.concatenate([np.linspace(low, 5, 100001), [-0.0, np.nan, low - 30]]).astype(dtype)
    v = np.concatenate([np.geomspace(info.tiny, info.max / 2, 100001), [0.0, -1.0, np.inf, info.tiny / 2]]).astype(
        dtype
    )
    ex, lg = np.empty_like(x), np.empty_like(v)
    both(x, v, ex, lg)
    ref = np.exp(x.astype(np.float64))
    normal = ref >= info.tiny
    assert np.max(np.abs(ex[normal] - ref[normal]) / ref[normal]) <= 2 * eps
    assert np.max(np.abs(ex[~normal & np.isfinite(x)] - ref[~normal & np.isfinite(x)])) <= info.tiny * eps
    assert np.isnan(ex[-2]) and ex[-1] == 0
    ref = np.log(v[:-4].astype(np.float64))
    assert np.max(np.abs(lg[:-4] - ref) / np.maximum(np.abs(ref), 1)) <= 2 * eps
    assert np.isnan(lg[-4:]).all()


def test_the_kernels_tanh_is_within_4e_16_of_tanh():
    v = torch.cat([torch.linspace(-25, 25, 100001, dtype=torch.float64), torch.logspace(-300, 1.3, 2000).double()])
    got = torch.tensor([kernels._tanh(float(t), 1.0) for t in v], dtype=torch.float64)
    assert float((got - torch.tanh(v)).abs().max()) <= 4e-16


def test_the_compiled_solve_is_used_only_without_gradients():
    flow = build("maf", 5)
    z = torch.randn(8, 5, requires_grad=True)
    x = flow.inverse(z)  # needs the graph: the eager solve
    x.sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_underflow_guard_leaves_every_normal_result_unchanged(dtype):
    from harness.models.masked import exp_floor, floored

    low, tiny = exp_floor(dtype), torch.finfo(dtype).tiny
    x = torch.linspace(low - 50, 0, 200001, dtype=dtype)
    guarded, plain = floored(x.clone()).exp(), x.exp()
    normal = plain >= tiny
    assert torch.equal(guarded[normal], plain[normal])  # at or above the smallest normal: identical
    assert (guarded >= tiny).all() and (guarded[~normal] == guarded[~normal].min()).all()  # no subnormal is made
    assert (
        torch.exp(torch.tensor(low, dtype=dtype))
        >= tiny
        > torch.exp(torch.nextafter(torch.tensor(low, dtype=dtype), torch.tensor(-1e9, dtype=dtype)))
    )


@pytest.mark.parametrize("method", ["newton", "bisection"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_compiled_root_step_takes_the_torch_loops_steps(method, dtype):
    """The root-finder's bookkeeping as one compiled pass per step: on increasing maps
    with flat stretches, far targets (outward doubling) and a NaN, the same points, the
    same evaluations and the same failure as the torch loop."""
    from harness.models import invert

    def fn(x):  # increasing, flat around 0 (Newton steps there are refused), cubic tails
        return x**3 + 0.01 * torch.tanh(x), 3 * x**2 + 0.01 * (1 - torch.tanh(x) ** 2)

    target = torch.tensor([0.0, 1e-6, -2.5, 1e5, -1e6, 7.0, 0.3], dtype=dtype)
    with torch.no_grad():
        compiled = invert.solve_increasing(fn, target, target.clone(), method=method, compiled=True)
        loop = invert.solve_increasing(fn, target, target.clone(), method=method)
        assert compiled[1] == loop[1] and torch.allclose(
            compiled[0], loop[0], rtol=1e-6 if dtype == torch.float32 else 1e-14
        )
        bad = torch.cat([target, torch.tensor([float("nan")], dtype=dtype)])
        messages = []
        for steps in (True, False):
            with pytest.raises(invert.InversionError) as caught:
                invert.solve_increasing(fn, bad, bad.clone(), method=method, compiled=steps)
            messages.append(str(caught.value))
    assert messages[0] == messages[1] and "1 of 8 entries unsolved" in messages[0]


def test_the_compiled_nsf_solve_round_trips_in_float32():
    torch.manual_seed(0)
    flow = perturb(build("nsf", 12)).eval()
    x = 2 * torch.randn(500, 12)
    with torch.no_grad():
        z, _ = flow(x)
        back = flow.inverse(z)
    assert flow.transforms[0].kernel and torch.allclose(back, x, rtol=0, atol=1e-4)


def test_the_warm_up_calls_every_kernel_of_every_family():
    """``make test`` compiles the kernels once before its workers start
    (harness.models.warm): every family's kernel solvers, both dtypes."""
    from harness.models.warm import warm
    from harness.ops import FAMILIES

    called = {tuple(entry.split("/")[:3]) for entry in warm()}
    wanted = {(n, s, t) for n, f in FAMILIES.items() for s in f.kernels for t in ("float32", "float64")}
    assert called == wanted and wanted
