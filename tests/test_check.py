"""``python -m harness check``: the exactness suite for any flow, and user flows by name."""

import csv
from functools import partial

import pandas as pd
import pytest
import torch

from harness import check, check_cost, registry
from harness.__main__ import main
from harness.models import NAMES, Cost
from harness.ops import OURS
from harness.report import build_report
from harness.table import CHECKS, VERSUS


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_every_reference_model_passes(name):
    make = registry.factory(name)
    if name == "naf":  # two flows, not five: the same checks in a third of the time (make checks runs five)
        make = partial(make, flows=2)
    results = check.run(make, dims=(1, 2, 5))
    assert check.passed(results), check.table(results)
    assert {r.check for r in results if r.passed} >= {"log-det", "round trip x", "normalises (d=2)"}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["zuko.maf", "nflows.maf", "pyro.iaf", "pyro.bnaf"])
def test_peers_pass_and_say_what_they_cannot_do(name):
    from harness import peers

    if peers.unavailable(name):
        pytest.skip(peers.unavailable(name))
    results = check.run(registry.factory(name), dims=(2, 3))
    assert check.passed(results), check.table(results)
    assert not any("cannot build or run" in r.note for r in results), check.table(results)
    assert {r.check for r in results if r.passed} >= {"log-det", "log_prob", "normalises (d=2)"}
    if name == "pyro.bnaf":
        assert any(r.passed is None and "no inverse" in r.note for r in results)


class LoopedInverse(torch.nn.Module):
    """The example flow sampled one dimension at a time, as a d-step loop is: each
    step solves the triangular system for its row alone."""

    def __init__(self, dim):
        super().__init__()
        from examples.linear_flow import make

        self.flow = make(dim)

    def forward(self, x):
        return self.flow(x)

    def inverse(self, z):
        m, v = self.flow.matrix(), z - self.flow.shift
        x = torch.zeros_like(z)
        for i in range(z.shape[1]):
            x[:, i] = (v[:, i] - x[:, :i] @ m[i, :i]) / m[i, i]
        return x

    def log_prob(self, x):
        return self.flow.log_prob(x)


def test_a_flow_that_samples_in_d_steps_but_says_parallel_is_told_how_to_declare_it():
    def wrapped(cls, cost=None):
        def make(dim):
            flow = registry.UserFlow(dim, cls(dim), name="tests.test_check:LoopedInverse")
            if cost is not None:
                flow.cost = cost
            return flow.double()

        return make

    (looped,) = check_cost.check_cost(wrapped(LoopedInverse))
    assert looped.passed is None and looped.measured > check_cost.GROWTH and "declare it" in looped.note
    (declared,) = check_cost.check_cost(wrapped(LoopedInverse, Cost(log_prob="parallel", sample="sequential")))
    assert "declared sample cost: sequential" in declared.note and "declare it" not in declared.note
    from examples.linear_flow import LinearFlow

    (one_pass,) = check_cost.check_cost(wrapped(LinearFlow))
    assert one_pass.measured < check_cost.GROWTH and "declare it" not in one_pass.note


class ScaledLogDet(torch.nn.Module):
    """The example flow with its log-det scaled by 0.9: wrong by 10%."""

    def __init__(self, dim):
        super().__init__()
        from examples.linear_flow import make

        self.flow = make(dim)

    def forward(self, x):
        z, ladj = self.flow(x)
        return z, 0.9 * ladj

    def inverse(self, z):
        return self.flow.inverse(z)

    def log_prob(self, x):
        z, ladj = self(x)
        return -0.5 * (z.square().sum(-1) + z.shape[-1] * torch.log(torch.tensor(2 * torch.pi))) + ladj


class WrongSampler(torch.nn.Module):
    """The example flow whose sample draws from the base, not from its own density."""

    def __init__(self, dim):
        super().__init__()
        from examples.linear_flow import make

        self.flow = make(dim, scale=1.0)

    def forward(self, x):
        return self.flow(x)

    def inverse(self, z):
        return z

    def log_prob(self, x):
        return self.flow.log_prob(x)


class RaisingInverse(WrongSampler):
    """The example flow whose inverse raises (as flowjax's bisection does at its step limit)."""

    def inverse(self, z):
        raise RuntimeError("maximum steps reached")


def test_a_flow_whose_inverse_raises_still_has_its_density_checked():
    results = check.run(registry.factory("tests.test_check:RaisingInverse"), dims=(2,))
    by = {r.check: r for r in results}
    assert by["log-det"].passed and by["log_prob"].passed and by["normalises (d=2)"].passed
    for what in ("contract inverse", "round trip x", "round trip z", "samples match density"):
        assert by[what].passed is False and "could not run: RuntimeError: maximum steps reached" in by[what].note


def test_the_example_passes_and_broken_flows_fail():
    assert check.passed(check.run(registry.factory("examples.linear_flow:make")))
    scaled = check.run(registry.factory("tests.test_check:ScaledLogDet"))
    failed = {r.check for r in scaled if r.passed is False}
    assert "log-det" in failed and not check.passed(scaled)
    wrong = check.run(registry.factory("tests.test_check:WrongSampler"), dims=(2,))
    failed = {r.check: r for r in wrong if r.passed is False}
    assert "samples match density" in failed and failed["samples match density"].measured > check.TV_BOUND


@pytest.mark.slow
def test_check_command_exit_codes_and_table(capsys):
    # in this process (the checks still run in a worker): the command's code and output
    assert main(["check", "examples.linear_flow:make", "--dims", "1,3"]) == 0
    out = capsys.readouterr().out
    assert "| check" in out and "log-det" in out and "checks ran and passed, 0 failed" in out
    assert out.strip().splitlines()[-1].startswith("pass: ")
    assert main(["check", "tests.test_check:ScaledLogDet", "--dims", "2"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "log-det d=2" in out


def test_unknown_specs_are_one_line_errors(capsys):
    assert main(["check", "nosuch"]) == 2
    assert "unknown model 'nosuch'; allowed: made, maf" in capsys.readouterr().err
    assert main(["check", "examples.linear_flow:nope"]) == 2
    assert "has no callable 'nope'" in capsys.readouterr().err
    assert main(["check", "no_such_module:make"]) == 2
    assert "cannot import 'no_such_module'" in capsys.readouterr().err


@pytest.mark.slow
def test_a_user_flow_runs_in_the_sweep_like_a_peer(tmp_path):
    args = ["--models", "examples.linear_flow:make,maf", "--quick", "--device", "cpu", "--no-roofline"]
    assert main(["sweep", *args, "--no-progress", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "results.csv").read_text()
    assert text.count("examples.linear_flow:make,") == 4 and ",error," not in text
    # family and library are columns: the report never parses them out of names
    rows = pd.read_csv(tmp_path / "results.csv", keep_default_na=False)
    mine, ours = rows[rows["model"] == "examples.linear_flow:make"], rows[rows["model"] == "maf"]
    assert set(mine["library"]) == {"examples.linear_flow"} and set(mine["family"]) == {""}
    assert set(ours["library"]) == {OURS} and set(ours["family"]) == {"maf"}
    # a report of the user's flow beside MAF: the flow in the overview figure and in the
    # time and size tables, every section with data, no peer section (it is no peer)
    report = build_report([tmp_path], tmp_path / "report", paper=False).read_text()
    spec = "examples.linear_flow:make"
    for heading in ("## Time on cpu, batch 64", "## Size and work on cpu, batch 64"):
        section = report.split(heading, 1)[1].split("\n## ", 1)[0]
        assert f"| {spec}" in section, heading
    assert spec in (tmp_path / "report" / "overview.svg").read_text()
    assert "## Ours against peers" not in report and "no rows" not in report
    assert "B-NAF paper" not in report and "## Quality" not in report
    assert "fastest" not in report.split("## Contents")[0]
    headings = [line for line in report.splitlines() if line.startswith("## ")]
    for heading, nxt in zip(headings, headings[1:] + [None]):
        body = report.split(heading + "\n", 1)[1]
        body = body.split(nxt + "\n", 1)[0] if nxt else body
        assert body.strip(), f"{heading} is empty"


def _quick_maf(out):
    from harness import grid, sweep

    sweep.run(
        grid.Config.quick(models=("maf",), dims=(2,), device="cpu", flops=False, memory=False, roofline=False),
        out,
        progress=False,
    )


NAN_INVERSE = """
import torch
from examples.linear_flow import LinearFlow


class Broken(LinearFlow):
    def inverse(self, z):
        return super().inverse(z) * float("nan")


def make(dim):
    return Broken(dim)
"""


@pytest.mark.slow
def test_a_contender_that_breaks_the_contract_is_never_timed_nor_fastest(tmp_path, monkeypatch):
    from harness import peers, versus

    if any(peers.unavailable(p) for p in ("zuko.maf", "nflows.maf")):
        pytest.skip("needs zuko and nflows")
    (tmp_path / "nan_inverse_flow.py").write_text(NAN_INVERSE)
    monkeypatch.syspath_prepend(str(tmp_path))
    results, _ = versus.main(
        dims=[4],
        naf_dims=[],
        rounds=3,
        out=tmp_path,
        progress=False,
        frameworks=("torch",),
        entrants=[("nan_inverse_flow:make", "maf.sample")],
    )
    (r,) = results
    assert "nan_inverse_flow:make" not in r["medians"] and r["fastest"] != "nan_inverse_flow:make"
    assert "non-finite values" in r["broken"]["nan_inverse_flow:make"]
    rows = {row["contender"]: row for row in csv.DictReader((tmp_path / VERSUS).open())}
    assert rows["nan_inverse_flow:make"]["status"] == "error" and rows["nan_inverse_flow:make"]["median_s"] == ""


@pytest.mark.slow
def test_a_user_flow_joins_a_contest(tmp_path):
    from harness import peers, versus

    if any(peers.unavailable(p) for p in ("zuko.maf", "nflows.maf")):
        pytest.skip("needs zuko and nflows")
    results, _ = versus.main(
        dims=[4],
        naf_dims=[],
        rounds=5,
        out=tmp_path,
        progress=False,
        frameworks=("torch",),
        entrants=[("examples.linear_flow:make", "maf.sample")],
    )
    assert [r["contest"] for r in results] == ["maf.sample"]
    (r,) = results
    assert r["ops"]["examples.linear_flow:make"] == "sample"
    assert r["roles"]["examples.linear_flow:make"] == "entrant" and r["fastest"] in ("zuko.maf", "nflows.maf")
    assert "examples.linear_flow:make" in (tmp_path / VERSUS).read_text()
    # the report compares ours with the entrant on its own, and never calls it the fastest MAF
    sweep_dir = tmp_path / "s"
    sweep_dir.mkdir()
    for name in ("versus.csv",):
        (sweep_dir / name).write_text((tmp_path / name).read_text())
    _quick_maf(sweep_dir)
    report = build_report([sweep_dir], tmp_path / "r", paper=False, figures=False).read_text()
    found = report.split("## Contents")[0]
    assert "examples.linear_flow" not in found and "joined (ours / it [95% CI])" in report
    with pytest.raises(ValueError, match="unknown contest 'maf.nope'.*allowed: maf.log_prob"):
        versus.main(entrants=[("examples.linear_flow:make", "maf.nope")], progress=False)


@pytest.mark.slow
def test_check_out_records_every_model_for_the_report(tmp_path):
    rc = main(["check", "examples.linear_flow:make,maf", "--dims", "1,2", "--out", str(tmp_path)])
    assert rc == 0
    checks = pd.read_csv(tmp_path / CHECKS, keep_default_na=False)
    assert set(checks["model"]) == {"examples.linear_flow:make", "maf"}
    assert set(checks[checks["model"] == "maf"]["library"]) == {OURS}
    # a second check of one model replaces its rows, never duplicates them
    assert main(["check", "maf", "--dims", "1", "--out", str(tmp_path)]) == 0
    again = pd.read_csv(tmp_path / CHECKS, keep_default_na=False)
    assert len(again[again["model"] == "maf"]) < len(checks[checks["model"] == "maf"])
    assert len(again[again["model"] == "examples.linear_flow:make"]) == len(
        checks[checks["model"] == "examples.linear_flow:make"]
    )


@pytest.mark.slow
def test_the_report_has_a_correctness_table_with_failures_spelled_out(tmp_path):
    from .test_report import synthetic

    src = synthetic(tmp_path / "sweep")
    bad = [check.Result("log-det", 2, 0.5, 1e-6, False, "against slogdet")]
    good = [check.Result("log-det", 2, 1e-15, 1e-6, True), check.Result("structure", 2, 0.25, None, None)]
    check.write(src, "mine:make", "", "mine", bad)
    check.write(src, "maf", "maf", OURS, good)
    text = build_report([src], tmp_path / "out", paper=False, figures=False).read_text()
    assert "## Correctness" in text
    assert "| mine:make | mine      | FAIL 0.5" in text and "| pass 1e-15 " in text and "(0.25)" in text
    assert "- mine:make log-det at d=2: 0.5 > 1e-06 (against slogdet)" in text


def test_every_kind_of_flow_satisfies_the_contract():
    from harness.models import Measurable, build

    assert isinstance(build("maf", 3), Measurable)
    assert isinstance(registry.build_any("examples.linear_flow:make", 3), Measurable)
