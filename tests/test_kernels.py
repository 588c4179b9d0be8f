"""The fast paths agree with their references in float64: NAF's feature-major log_prob
with the per-dimension DDSF, B-NAF's feature-major map with the row-major one (gated
and ungated), and the compiled incremental solve with the eager one, to 1e-9 or better."""

import pytest
import torch

from harness.models import build, kernels

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


@pytest.mark.parametrize("name, op, dim", [("made", "sample", 9), ("maf", "sample", 33), ("iaf", "log_prob", 33)])
def test_the_compiled_incremental_solve_agrees_with_the_eager_one(name, op, dim):
    flow = _float64(name, dim)
    x = torch.randn(300, dim, dtype=torch.float64)  # more points than a tile: tiles and padding are exact
    call = (lambda: flow.inverse(x)) if op == "sample" else (lambda: flow.log_prob(x))
    with torch.no_grad():
        compiled = call()
        for t in flow.transforms:
            if hasattr(t, "kernel"):
                t.kernel = False
        eager = call()
    assert torch.allclose(compiled, eager, rtol=1e-12, atol=1e-12)
    assert kernels.compile_seconds() > 0  # compiling was timed, apart from any call


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
