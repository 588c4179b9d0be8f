"""The JAX peers (flowjax, numpyro; the ``jax`` extra): the adapters compute what the
libraries compute, match our sizes, pass ``check``, time without compiling, and are
left out with the install command where JAX is missing.

Marked ``jax``: XLA compiles for seconds per op and shape on every core, more than
`make test`'s four minutes hold, so these run as `make test-jax` (and in CI after it)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from harness import check, peers
from harness.contests import CONTESTS, available
from harness.measure.call import NOT_TORCH, Settings, Watched, measure
from harness.models import build
from harness.ops import LOG_PROB, TRAIN_STEP
from harness.table import ERROR, OK, Col

JAX_PEERS = [n for n in peers.NAMES if peers.PEERS[n].wrapper.framework == "jax"]
pytestmark = pytest.mark.jax


def _needs(name: str) -> None:
    if peers.unavailable(name):
        pytest.skip(peers.unavailable(name))


def test_the_jax_peers_are_registered_with_their_extra():
    assert set(JAX_PEERS) == {"flowjax.maf", "flowjax.nsf", "flowjax.bnaf", "numpyro.iaf", "numpyro.bnaf"}


@pytest.mark.parametrize("name, ours", [("flowjax.maf", "maf"), ("numpyro.iaf", "iaf"), ("numpyro.bnaf", "bnaf")])
def test_matched_configurations_hold_our_parameter_count(name, ours):
    _needs(name)
    count = lambda flow: sum(p.numel() for p in flow.parameters())  # noqa: E731
    flow = peers.build(name, 3)
    assert count(flow) == count(build(ours, 3))
    assert "torch's autograd cannot see into JAX" in flow.unsupported[TRAIN_STEP]  # a skipped row, never an error


@pytest.mark.parametrize("name", ["flowjax.maf", "flowjax.nsf", "flowjax.bnaf"])
def test_flowjax_adapters_compute_what_flowjax_computes(name):
    """log_prob against the library's distribution called directly; sampling against
    flowjax's own sample: the same key's base draws through our inverse."""
    _needs(name)
    import jax
    import jax.numpy as jnp
    import jax.random as jr
    from flowjax.distributions import Normal
    from flowjax.flows import block_neural_autoregressive_flow, masked_autoregressive_flow

    dim, flow = 3, peers.build(name, 3)
    if name == "flowjax.bnaf":
        dist = block_neural_autoregressive_flow(
            jr.key(0), base_dist=Normal(jnp.zeros(dim)), flow_layers=5, nn_depth=2, nn_block_dim=4
        )
    elif name == "flowjax.maf":
        dist = masked_autoregressive_flow(
            jr.key(0), base_dist=Normal(jnp.zeros(dim)), flow_layers=5, nn_width=64, nn_depth=2
        )
    else:
        from flowjax.bijections import RationalQuadraticSpline

        spline = RationalQuadraticSpline(knots=7, interval=3.0)
        dist = masked_autoregressive_flow(
            jr.key(0), base_dist=Normal(jnp.zeros(dim)), transformer=spline, flow_layers=5, nn_width=64, nn_depth=2
        )
    x = torch.randn(16, dim)
    theirs = np.asarray(dist.log_prob(jnp.asarray(x.numpy())))
    np.testing.assert_allclose(flow.log_prob(x).numpy(), theirs, rtol=1e-5, atol=1e-5)
    if name != "flowjax.bnaf":  # flowjax's bisection is a tolerance away from its own result
        key = jr.key(1)
        z = torch.from_numpy(np.asarray(dist.base_dist.sample(key, (16,))))
        np.testing.assert_allclose(flow.inverse(z).numpy(), np.asarray(dist.sample(key, (16,))), rtol=1e-4, atol=1e-5)
    assert jax.config.jax_enable_x64 is False  # the 64-bit mode is on only inside float64 calls


def test_numpyro_iaf_computes_what_numpyros_transformed_distribution_computes():
    """The adapter's stack against numpyro's own TransformedDistribution of the same
    transforms (same networks, same parameters): log_prob, and sample from a key."""
    _needs("numpyro.iaf")
    import jax.random as jr
    import numpyro.distributions as nd
    from numpyro.distributions.flows import InverseAutoregressiveTransform
    from numpyro.nn import AutoregressiveNN

    from harness.peers.base import orders

    dim, flow = 3, peers.build("numpyro.iaf", 3)
    keys, transforms = jr.split(jr.key(0), 5), []
    for key, order, params in zip(keys, orders(dim, 5), flow.module.params):
        init, apply = AutoregressiveNN(dim, [64, 64], permutation=np.asarray(order))
        assert all(np.array_equal(a, b) for a, b in zip(_leaves(init(key, (dim,))[1]), _leaves(params)))
        transforms.append(InverseAutoregressiveTransform(lambda v, a=apply, q=params: a(q, v)))
    base = nd.Normal(np.zeros(dim, np.float32), 1.0).to_event(1)
    dist = nd.TransformedDistribution(base, transforms)
    x = torch.randn(16, dim)
    np.testing.assert_allclose(flow.log_prob(x).numpy(), np.asarray(dist.log_prob(x.numpy())), rtol=1e-4, atol=1e-4)
    key = jr.key(2)
    z = torch.from_numpy(np.asarray(base.sample(key, (16,))))
    np.testing.assert_allclose(flow.inverse(z).numpy(), np.asarray(dist.sample(key, (16,))), rtol=1e-5, atol=1e-5)


def _leaves(tree):
    import jax

    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(tree)]


def test_the_checks_of_one_dimension_pass_a_jax_peer_in_float64():
    """Built again under JAX's 64-bit mode: the contract, the log-det against JAX's own
    autodiff (torch's autograd cannot see into JAX), log_prob, both round trips (the
    density checks are `make checks`', every peer into reports/cpu/checks)."""
    _needs("numpyro.iaf")
    results = check.check_dim(peers.build("numpyro.iaf", 2).double(), 2)
    assert check.passed(results), check.table(results)
    assert {r.check for r in results if r.passed} >= {"log-det", "log_prob", "round trip x", "round trip z"}


def test_compiling_is_timed_apart_and_a_recompile_while_timed_is_an_error():
    _needs("flowjax.maf")
    settings = Settings(1, budget_s=30.0, min_run_time=0.05, flops=True, memory=True, seed=0)
    flow = peers.build("flowjax.maf", 4)
    row, _ = measure(flow, LOG_PROB, "cpu", 32, settings, None, True)
    assert row[Col.STATUS] == OK and row[Col.COMPILE_S] > 0 and row[Col.MEDIAN_S] < row[Col.COMPILE_S]
    assert row[Col.FLOPS_NOTE] == NOT_TORCH and Col.FLOPS not in row

    class Reshaping(torch.nn.Module):  # an input whose shape changes after the checked call
        def __init__(self):
            super().__init__()
            self.inner, self.calls = flow, 0

        def __getattr__(self, name):
            try:
                return super().__getattr__(name)
            except AttributeError:
                return getattr(self._modules["inner"], name)

        def log_prob(self, x, context=None):
            self.calls += 1
            return self.inner.log_prob(x if self.calls < 4 else x[: len(x) - self.calls % 2])

    row, _ = measure(Reshaping(), LOG_PROB, "cpu", 32, settings, None, True)
    assert row[Col.STATUS] == ERROR and row[Col.REASON] == Watched.JAX_NOT_STEADY


def test_without_jax_the_peers_say_how_to_install_it_and_the_contests_go_on(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n in ("flowjax", "numpyro") else real(n, *a))
    assert "pip install 'flowbench-harness[jax]'" in peers.unavailable("flowjax.maf")
    chosen = available({"maf.log_prob": CONTESTS["maf.log_prob"]}, {"zuko.maf", "nflows.maf", "flowjax.maf"})
    assert "flowjax.maf" not in dict(chosen["maf.log_prob"].rivals) and "zuko.maf" in dict(
        chosen["maf.log_prob"].rivals
    )
    assert "flowjax.maf left out of the contests" in capsys.readouterr().err


def test_a_jax_peer_takes_part_in_a_contest_and_says_it_takes_no_context():
    _needs("numpyro.iaf")
    from harness import grid, versus

    contest = CONTESTS["iaf.sample"]
    contest = type(contest)(contest.model, contest.op, (("numpyro.iaf", "sample"),))
    r = versus.run_contest(contest, 4, batch=16, rounds=3, block_s=0.01)
    assert set(r["medians"]) == {"ours", "numpyro.iaf"} and r["ratio"] > 0 and r["ratio_low"] <= r["ratio_high"]
    assert grid.takes_context("numpyro.iaf")  # a reason: it takes none
