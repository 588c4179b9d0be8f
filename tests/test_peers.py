"""Peers (harness.peers) behind the flow contract, their matched shapes, the sweep and
report with peers, and the A/B contests. Each peer's tests skip when its library is
not installed (the ``peers`` extra)."""

import math
import os
from pathlib import Path

import pytest
import torch

from harness import grid, ops, peers, store, sweep, versus
from harness.__main__ import main
from harness.errors import UserError
from harness.measure.counting import count_params
from harness.models import build
from harness.models.base import normal_log_prob
from harness.report import build_report

ROOT = Path(__file__).resolve().parents[1]


# The torch peers; the JAX peers' adapters have tests of their own (tests/test_jax.py:
# torch's autograd cannot see into JAX, and each JAX build compiles for seconds)
TORCH_PEERS = [n for n in peers.UNCONDITIONAL if peers.PEERS[n].wrapper.framework == "torch"]


def need(name: str) -> None:
    why = peers.unavailable(name)
    if why:
        pytest.skip(why)


def built(name: str, dim: int, **config) -> peers.PeerFlow:
    need(name)
    torch.manual_seed(0)
    return peers.build(name, dim, **config).eval()


@pytest.fixture
def float64():
    """pyro's IAF inverse makes its buffers in the default dtype."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("name", TORCH_PEERS)
def test_log_prob_is_normal_of_forward_plus_log_det(name):
    flow = built(name, 3)
    x = torch.randn(16, 3)
    with torch.no_grad():
        z, ladj = flow(x)
        lp = flow.log_prob(x)
    assert lp.shape == ladj.shape == (16,) and z.shape == (16, 3)
    torch.testing.assert_close(lp, normal_log_prob(z) + ladj, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", TORCH_PEERS)
def test_forward_log_det_matches_autograd_in_float64(name, float64):
    """The adapter's direction and sign: log|det dz/dx| of the data->base map."""
    flow = built(name, 3).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    for xi in x:
        jac = torch.autograd.functional.jacobian(lambda v: flow(v[None])[0][0], xi)
        expected = torch.linalg.slogdet(jac).logabsdet
        with torch.no_grad():
            got = flow(xi[None])[1][0]
        assert abs(float(got - expected)) < 1e-6, (name, float(got), float(expected))


@pytest.mark.parametrize("name", [n for n in TORCH_PEERS if "sample" not in peers.PEERS[n].unsupported])
def test_inverse_round_trip(name):
    flow = built(name, 4)
    x = torch.randn(32, 4)
    with torch.no_grad():
        z, _ = flow(x)
        back = flow.inverse(z)
    assert (back - x).abs().max() < 1e-3


@pytest.mark.parametrize("name", [n for n in TORCH_PEERS if "sample" in peers.PEERS[n].unsupported])
def test_missing_inverse_raises_with_the_reason(name):
    flow = built(name, 3)
    with pytest.raises(NotImplementedError, match="has no inverse"):
        flow.sample(4)


def test_pyro_cache_does_not_shortcut_a_repeated_input():
    """pyro caches a transform's last (x, y): a repeated call must recompute."""
    flow = built("pyro.iaf", 4)
    z = torch.randn(8, 4)
    with torch.no_grad():
        flow.inverse(z)
        seen = []
        for t in flow.transforms:
            t.arn.register_forward_hook(lambda *a: seen.append(1))
        flow.inverse(z)
    assert len(seen) == len(flow.transforms), "every transform ran its network again"


@pytest.mark.parametrize(
    "ours,peer,config,same_masks",
    [
        ("maf", "zuko.maf", {}, True),
        ("maf", "nflows.maf", {}, True),
        ("iaf", "pyro.iaf", {}, False),  # pyro spreads hidden degrees its own way
        ("bnaf", "pyro.bnaf", {"hidden_factor": 8}, True),
        ("maf", "zuko.maf", {"flows": 2, "hidden": (20, 20)}, True),
        ("nsf", "zuko.nsf", {}, True),
        ("nsf", "nflows.nsf", {"bins": 4, "bound": 2.0}, True),
        ("nsf", "normflows.nsf", {}, True),
        ("nsf", "pyro.nsf", {"bins": 4}, False),
    ],
)
def test_matched_configs_have_the_same_parameters(ours, peer, config, same_masks):
    """Matched shapes: the same MADE or block layers hold the same parameters, stored,
    and effective (masked-out entries not counted) where the masks follow the same degrees."""
    for dim in (5, 12):
        (p_stored, p_eff), (o_stored, o_eff) = (
            count_params(theirs := built(peer, dim, **config), theirs.masks()),
            count_params(build(ours, dim, **config)),
        )
        assert p_stored == o_stored, dim
        if same_masks:
            assert p_eff == o_eff, dim
        else:
            assert 0 < p_eff < p_stored


TORCH_NSF = [p for p in versus.NSF_PEERS if p in TORCH_PEERS]


@pytest.mark.parametrize("name", ["nsf", *TORCH_NSF])
def test_every_spline_flow_is_the_identity_beyond_its_bound(name):
    """The bound reaches each library's spline (zuko's NSF class would fix it at 5): with
    one layer at d = 1, points beyond B map to themselves with log-det 0."""
    torch.manual_seed(0)
    flow = (build(name, 1, flows=1, bound=2.0) if name == "nsf" else built(name, 1, flows=1, bound=2.0)).double()
    x = torch.tensor([[-4.0], [-2.5], [2.5], [4.0]], dtype=torch.float64)
    with torch.no_grad():
        z, log_det = flow(x)
    assert torch.allclose(z, x, atol=1e-12) and torch.allclose(log_det, torch.zeros(4, dtype=torch.float64), atol=1e-12)


def test_unknown_peer_and_keyword_are_named():
    with pytest.raises(ValueError, match="unknown peer 'zuko.iaf'; allowed: zuko.maf"):
        peers.build("zuko.iaf", 3)
    need("nflows.maf")
    with pytest.raises(ValueError, match="unknown keyword 'layers' for peer 'nflows.maf'; allowed: flows, hidden"):
        peers.build("nflows.maf", 3, layers=2)
    with pytest.raises(ValueError, match="equal hidden widths"):
        peers.build("nflows.maf", 3, hidden=(8, 16))


def test_each_peer_computes_in_the_framework_the_report_names():
    """The report reads a contender's framework from its library (ops.framework): it
    must be the adapter's own."""
    for name, peer in peers.PEERS.items():
        assert ops.framework(peer.library) == peer.wrapper.framework, name
    assert ops.framework(ops.OURS) == "torch"


def test_without_the_extra_peers_are_listed_unavailable(monkeypatch, tmp_path, capsys):
    """A missing library is reported, not raised: in the registry listing and as
    skipped sweep rows."""
    real = peers.importlib.util.find_spec
    monkeypatch.setattr(peers.importlib.util, "find_spec", lambda n, *a: None if n == "zuko" else real(n, *a))
    assert "zuko is not installed" in peers.unavailable("zuko.maf")
    with pytest.raises(ValueError, match="peer 'zuko.maf' is unavailable: zuko is not installed"):
        peers.build("zuko.maf", 3)
    assert main(["models", "--dims", "2"]) == 0
    assert "unavailable: zuko is not installed" in capsys.readouterr().out
    config = grid.Config(
        models=("zuko.maf",),
        dims=(2,),
        ops=("log_prob", "sample"),
        batches=(8,),
        device="cpu",
        flops=False,
        memory=False,
        roofline=False,
    )
    rows = sweep.run(config, tmp_path, progress=False)
    assert {(r["status"], r["op"]) for r in rows} == {("skipped", "log_prob"), ("skipped", "sample")}
    assert all("unavailable: zuko is not installed" in r["reason"] for r in rows)


@pytest.mark.slow
def test_sweep_with_peers_records_missing_directions_and_reports(tmp_path):
    for name in ("zuko.maf", "pyro.bnaf"):
        need(name)
    out = tmp_path / "s"
    assert (
        main(
            [
                "sweep",
                "--models",
                "maf,zuko.maf,bnaf,pyro.bnaf",
                "--dims",
                "2,4",
                "--batch",
                "16",
                "--ops",
                "log_prob,sample",
                "--budget",
                "5",
                "--device",
                "cpu",
                "--solvers",
                "default",
                "--no-memory",
                "--no-roofline",
                "--no-progress",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rows = {(r["model"], r["dim"], r["op"]): r for r in store.read_table(out / "results.csv")}
    assert len(rows) == 4 * 2 * 2
    skipped = rows[("pyro.bnaf", "2", "sample")]
    assert (
        skipped["status"] == "skipped"
        and skipped["reason"] == "pyro B-NAF has no inverse: pyro implements only its forward map"
    )
    for key, r in rows.items():
        if key != ("pyro.bnaf", "2", "sample") and key != ("pyro.bnaf", "4", "sample"):
            assert r["status"] == "ok", r
            assert float(r["median_s"]) > 0 and int(r["params_effective"]) > 0
    assert int(rows[("zuko.maf", "4", "log_prob")]["flops"]) > 0
    report = build_report([out], tmp_path / "r", paper=False, figures=False).read_text()
    assert "## Ours against peers" in report and "### maf: time on cpu, batch 16" in report
    assert "ours / zuko.maf" not in report and "not interleaved" in report  # ratios come from contests alone
    assert "skipped: pyro B-NAF has no inverse" in report


@pytest.mark.slow
def test_versus_times_every_contender_and_reports(tmp_path):
    for name in ("zuko.maf", "nflows.maf", "zuko.naf"):
        need(name)
    results, naf = versus.main(
        ["maf.log_prob"],
        dims=[4],
        naf_dims=[2],
        batch=32,
        rounds=3,
        out=tmp_path,
        progress=False,
        frameworks=("torch",),
    )
    (r,) = results
    assert set(r["medians"]) == {"ours", "zuko.maf", "nflows.maf"} and r["rounds"] >= 3
    assert all(t > 0 for t in r["medians"].values()) and math.isfinite(r["ratio"]) and r["ratio"] > 0
    assert r["ratio_low"] <= r["ratio"] <= r["ratio_high"]  # the bootstrap interval over rounds
    assert r["verdict"] == {True: "faster", False: "slower"}.get(
        r["ratio_high"] < 1 if r["ratio_high"] < 1 or r["ratio_low"] > 1 else None, "no clear difference"
    )
    assert [n["model"] for n in naf] == ["naf", "zuko.naf"] and all(n["ratio"] > 0 for n in naf)
    out = tmp_path / "sweep"
    sweep.run(grid.Config.quick(models=("maf",), dims=(4,), device="cpu", roofline=False), out, progress=False)
    (out / "versus.csv").write_text((tmp_path / "versus.csv").read_text())
    report = build_report([out], tmp_path / "r", paper=False, figures=False).read_text()
    assert "### A/B: ours against the fastest peer" in report and "sample / log_prob" in report
    assert "ours / fastest peer [95% CI]" in report and r["verdict"] in report


def test_a_contender_too_slow_for_rounds_is_timed_once_and_given_no_interval(monkeypatch):
    """A peer whose checked call takes over ONE_CALL_S (the d-pass inverses at d=128)
    is timed by that call alone: its ratio is stated without interval or verdict."""
    for name in TORCH_NSF:
        need(name)
    monkeypatch.setattr(versus, "ONE_CALL_S", 0.0)  # every peer is "too slow"
    contest = versus.CONTESTS["nsf.sample"]
    contest = type(contest)(contest.model, contest.op, tuple((p, "sample") for p in TORCH_NSF))
    r = versus.run_contest(contest, 4, batch=16, rounds=3, block_s=0.01)
    assert set(r["once"]) == set(TORCH_NSF) and r["fastest"] in r["once"]
    assert r["ratio"] == pytest.approx(r["medians"]["ours"] / r["once"][r["fastest"]])
    assert math.isnan(r["ratio_low"]) and r["verdict"] == ""  # no interval, no verdict
    rows = [row for row in versus.rows_of([r], []) if row["contender"] in r["once"]]
    assert all(row["reason"].startswith("timed once") and row["verdict"] == "" and row["rounds"] == 1 for row in rows)


@pytest.mark.slow
def test_a_peer_too_slow_for_rounds_is_called_once_through_the_worker(monkeypatch, tmp_path):
    """Through the command's worker: the checked call's seconds decide (harness.versus_worker),
    the peers are not called again, and the table and report say "timed once"."""
    for name in TORCH_NSF:
        need(name)
    monkeypatch.setattr(versus, "ONE_CALL_S", 0.0)  # read by the parent's check of each rival
    (r,), _ = versus.main(
        ["nsf.sample"], dims=[2], naf_dims=[], batch=16, rounds=3, out=tmp_path, progress=False, frameworks=("torch",)
    )
    assert set(r["once"]) == set(TORCH_NSF) and math.isnan(r["ratio_low"]) and r["verdict"] == ""
    table = (tmp_path / "versus.md").read_text()
    assert "(1 call)" in table and "(no interval)" in table
    assert {row["rounds"] for row in versus.rows_of([r], []) if row["contender"] in r["once"]} == {1}


def test_a_contest_with_a_context_keeps_the_rivals_that_take_one_and_says_which_it_left_out():
    from harness.contests import conditioned

    contest, left_out = conditioned(versus.CONTESTS["maf.log_prob"], 3)
    assert contest.context == 3 and contest.config["context"] == 3
    assert [p for p, _ in contest.rivals] == ["zuko.maf", "nflows.maf", "sbi.maf"]  # sbi's estimator: conditional
    assert left_out == ["flowjax.maf takes no context: this adapter builds the library's flow without one"]
    plain, left_out = conditioned(versus.CONTESTS["maf.log_prob"], 0)
    assert "sbi.maf" not in dict(plain.rivals) and "flowjax.maf" in dict(plain.rivals) and not left_out
    assert plain.context == 0 and "context" not in plain.config
    joined = versus.CONTESTS["maf.log_prob"].joined(["mine:make"])
    assert "mine:make" in dict(conditioned(joined, 3)[0].rivals)  # an entrant's own checked call decides
    with pytest.raises(UserError, match="bnaf.log_prob cannot run with --context 3: our bnaf takes no context"):
        conditioned(versus.CONTESTS["bnaf.log_prob"], 3)
    with pytest.raises(UserError, match="bnaf.log_prob cannot run with --context 3"):
        versus.main(["bnaf.log_prob"], contexts=[3], progress=False)  # named: an error before any timing


def test_every_contender_of_a_conditional_contest_gets_the_same_contexts():
    """log_prob and a pass: one context per point; sample: one context for the batch of
    draws (the posterior's shape), the same for every contender."""
    from harness.contests import conditioned, inputs, rival_config

    contest, _ = conditioned(versus.CONTESTS["maf.sample"], 3)
    x, contexts = inputs(contest, 2, 16)
    x2, again = inputs(contest, 2, 16)
    assert torch.equal(x, x2) and all(torch.equal(again[op], c) for op, c in contexts.items())
    assert contexts["log_prob"].shape == (16, 3) and contexts["sample"].shape == (3,)
    assert torch.equal(contexts["sample"], contexts["log_prob"][0])
    assert rival_config(contest, "zuko.maf")["context"] == 3 and rival_config(contest, "mine:make") == {"context": 3}
    _, none = inputs(versus.CONTESTS["maf.sample"], 2, 16)
    assert set(none.values()) == {None}


@pytest.mark.slow
def test_a_conditional_contest_times_conditioned_contenders_and_reports_apart(tmp_path):
    for name in ("zuko.maf", "nflows.maf"):
        need(name)
    results, _ = versus.main(
        ["maf.log_prob"],
        dims=[2],
        naf_dims=[],
        contexts=[0, 3],
        batch=32,
        rounds=3,
        min_rounds=3,
        out=tmp_path,
        progress=False,
        frameworks=("torch",),
    )
    plain, conditioned = results
    assert plain["context"] == 0 and conditioned["context"] == 3
    assert {"zuko.maf", "nflows.maf"} <= set(conditioned["medians"]) and conditioned["rounds"] == 3
    assert "sbi.maf" not in plain["medians"]
    assert conditioned["ratio_low"] <= conditioned["ratio"] <= conditioned["ratio_high"]
    rows = store.read_table(tmp_path / "versus.csv")
    assert {r["context"] for r in rows} == {"0", "3"}
    report = build_report([tmp_path], tmp_path / "r", paper=False, figures=False).read_text()
    conditional_part = report.split("\n## Conditional flows\n")[1].split("\n## ")[0]
    peers_part = report.split("\n## Ours against peers\n")[1].split("\n## ")[0]
    assert "### Conditioned contests" in conditional_part
    assert "Whose conditional flow is fastest?** in A/B contests" in report
    conditioned_shown = f"{conditioned['ratio']:.3f} [{conditioned['ratio_low']:.3f}, {conditioned['ratio_high']:.3f}]"
    plain_shown = f"{plain['ratio']:.3f} [{plain['ratio_low']:.3f}, {plain['ratio_high']:.3f}]"
    assert conditioned_shown in conditional_part and conditioned_shown not in peers_part
    assert plain_shown in peers_part and plain_shown not in conditional_part


def test_versus_names_a_bad_contest():
    with pytest.raises(ValueError, match="unknown contest 'made.sample'; allowed: maf.log_prob"):
        versus.main(["made.sample"])


HANGS = """
import time

from examples.linear_flow import LinearFlow


class Hangs(LinearFlow):
    def log_prob(self, x):
        time.sleep(3600)


def make(dim):
    return Hangs(dim)
"""


@pytest.mark.slow
def test_a_hanging_contender_is_an_error_row_and_the_contest_goes_on(tmp_path, monkeypatch):
    need("zuko.maf")
    (tmp_path / "hangs.py").write_text(HANGS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), str(ROOT)]))
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "versus.csv").write_text("old\n")  # an earlier table: moved aside, not overwritten
    results, _ = versus.main(
        ["maf.log_prob"],
        dims=[4],
        naf_dims=[],
        batch=32,
        rounds=3,
        out=tmp_path,
        progress=False,
        frameworks=("torch",),
        entrants=[("hangs:make", "maf.log_prob")],
        deadline_s=5,
    )
    (r,) = results
    assert "killed after 5 s" in r["broken"]["hangs:make"]
    assert "zuko.maf" in r["medians"] and "ours" in r["medians"]
    assert "hangs:make" in (tmp_path / "versus.csv").read_text()
    assert [p.read_text() for p in (tmp_path / "previous").glob("*/versus.csv")] == ["old\n"]


def test_the_contests_forest_plot_draws_each_contest_with_its_interval_and_verdict(tmp_path):
    import pandas as pd

    from harness.report.sections.peers import forest

    keys = ("contest", "dim", "role", "fastest", "ratio", "ratio_low", "ratio_high", "verdict")
    rows = [
        dict(zip(keys, values))
        for values in (
            ("maf.sample", 8, "ours", "zuko.maf", 0.2, 0.18, 0.22, "faster"),
            ("iaf.sample", 8, "ours", "pyro.iaf", 1.01, 0.9, 1.1, "no clear difference"),
            ("iaf.sample", 8, "peer", "pyro.iaf", 1.01, 0.9, 1.1, ""),
        )
    ]
    names = forest(pd.DataFrame(rows), tmp_path)
    assert names == ["contests.png", "contests.svg"]
    svg = (tmp_path / "contests.svg").read_text()
    assert "<!-- maf.sample d=8 vs zuko.maf -->" in svg and "<!-- iaf.sample d=8 vs pyro.iaf -->" in svg
    assert forest(pd.DataFrame(rows[2:]), tmp_path / "none") == []  # no contest of ours: no figure


CONDITIONAL_PEERS = [
    n for n in peers.NAMES if peers.PEERS[n].wrapper.framework == "torch" and not grid.takes_context(n)
]


def test_zuko_and_nflows_take_a_context_and_the_others_say_why_not():
    assert set(CONDITIONAL_PEERS) == {"zuko.maf", "zuko.naf", "zuko.nsf", "nflows.maf", "nflows.nsf", "sbi.maf"}
    assert "this adapter builds the library's flow without one" in grid.takes_context("pyro.iaf")


@pytest.mark.parametrize("name", CONDITIONAL_PEERS)
def test_a_conditional_peer_round_trips_and_reads_its_context(name):
    """Per-point contexts and one for all (broadcast by zuko, expanded for nflows):
    log_prob is the base's density of forward plus its log-det, the inverse recovers x,
    and two contexts give two densities."""
    flow = built(name, 3, context=4).double()
    x = torch.randn(6, 3, dtype=torch.float64)
    per_point, shared = torch.randn(6, 4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    with torch.no_grad():
        for c in (per_point, shared):
            z, ladj = flow(x, c)
            assert torch.allclose(flow.log_prob(x, c), normal_log_prob(z) + ladj, atol=1e-10)
            assert torch.allclose(flow.inverse(z, c), x, atol=1e-5 if name == "zuko.naf" else 1e-9)
        assert float((flow.log_prob(x, per_point) - flow.log_prob(x, shared)).abs().min()) > 1e-9
    with pytest.raises(ValueError, match="conditional on a context of 4 features"):
        flow.log_prob(x)


def test_conditional_peers_hold_our_parameters_but_nflows_context_biases():
    """zuko feeds the context into the first layer as ours does (its weights only);
    nflows' context layer has a bias too: one per first-layer unit and layer."""
    pairs = ("maf", "zuko.maf"), ("nsf", "zuko.nsf"), ("maf", "nflows.maf"), ("nsf", "nflows.nsf"), ("maf", "sbi.maf")
    for ours, peer in pairs:
        theirs, mine = built(peer, 5, context=7), build(ours, 5, context=7)
        extra = 5 * 64 if peer.startswith(("nflows", "sbi")) else 0  # 5 layers x 64 first-layer units
        assert count_params(theirs, theirs.masks())[0] == count_params(mine)[0] + extra, peer


def test_sbi_maf_is_sbis_own_estimator_and_needs_a_context():
    """The adapter's density is sbi's NFlowsFlow's on the same network (the one sbi's
    posterior_nn builds: theta's z-scoring first, a tanh MADE and a permutation per
    layer, x's z-scoring as the embedding); without a context it is not built, and
    `--models peers` leaves it out."""
    need("sbi.maf")
    from sbi.neural_nets.estimators import NFlowsFlow

    flow = built("sbi.maf", 3, context=4)
    estimator = NFlowsFlow(flow.module, input_shape=torch.Size([3]), condition_shape=torch.Size([4]))
    x, c = torch.randn(6, 3), torch.randn(6, 4)
    with torch.no_grad():
        assert torch.allclose(flow.log_prob(x, c), estimator.log_prob(x[None], c)[0], atol=1e-6)
    kinds = [type(t).__name__ for t in flow.module._transform._transforms]
    assert kinds[:3] == ["PointwiseAffineTransform", "MaskedAffineAutoregressiveTransform", "RandomPermutation"]
    with pytest.raises(UserError, match="conditional only: give it a context"):
        peers.build("sbi.maf", 3)
    assert "sbi.maf" in peers.NAMES and "sbi.maf" not in grid.GROUPS["peers"]
