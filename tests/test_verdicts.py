"""Every verdict is earned: ``check`` passes only what it ran, outputs that break the
flow contract are error rows (never timed, never fastest), a user's module or factory
that fails is one line or one row, never a traceback, and a hang ends at its deadline."""

from __future__ import annotations

import sys
import time

import pytest

from harness import check, fit, grid, sweep
from harness.__main__ import main

FLOWS = """
import math
import time

import torch
from torch import nn


class Linear(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.b = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        return x + self.b, torch.zeros(x.shape[0], dtype=x.dtype)

    def inverse(self, z):
        return z - self.b

    def log_prob(self, x):
        z, ladj = self(x)
        return -0.5 * (z**2).sum(-1) - 0.5 * x.shape[1] * math.log(2 * math.pi) + ladj


class Column(Linear):
    def log_prob(self, x):
        return super().log_prob(x)[:, None]


class Scalar(Linear):
    def log_prob(self, x):
        return super().log_prob(x).sum()


class Half(Linear):
    def inverse(self, z):
        return super().inverse(z).half()


class NanInverse(Linear):
    def inverse(self, z):
        return super().inverse(z) * float("nan")


class Hangs(Linear):
    def log_prob(self, x):
        while True:
            time.sleep(0.05)


def good(dim):
    return Linear(dim)


def raises_value(dim):
    raise ValueError("never builds")


def raises_key(dim):
    raise KeyError(dim)


def string(dim):
    return "a flow"


def no_log_prob(dim):
    return nn.Linear(dim, dim)


def only_d1(dim):
    if dim != 1:
        raise IndexError(dim)
    return Linear(dim)


def column(dim):
    return Column(dim)


def scalar(dim):
    return Scalar(dim)


def half(dim):
    return Half(dim)


def nan_inverse(dim):
    return NanInverse(dim)


def hangs(dim):
    return Hangs(dim)


def hangs_building(dim):
    while True:
        time.sleep(0.05)


class Slow(Linear):
    def log_prob(self, x):
        time.sleep(0.2)  # an honest flow, slow in every call
        return super().log_prob(x)


def slow(dim):
    return Slow(dim)
"""


@pytest.fixture()
def flows(tmp_path, monkeypatch):
    (tmp_path / "verdict_flows.py").write_text(FLOWS)
    (tmp_path / "broken_at_import.py").write_text("raise RuntimeError('broken at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    yield "verdict_flows"
    for name in ("verdict_flows", "broken_at_import"):
        sys.modules.pop(name, None)


@pytest.mark.slow
@pytest.mark.parametrize(
    "factory, code",
    [
        ("good", 0),
        ("raises_value", 1),
        ("raises_key", 1),
        ("string", 1),
        ("no_log_prob", 1),
        ("only_d1", 1),
        ("column", 1),
        ("scalar", 1),
        ("half", 1),
        ("nan_inverse", 1),
    ],
)
def test_check_passes_only_what_ran_and_passed(flows, capsys, factory, code):
    assert main(["check", f"{flows}:{factory}", "--dims", "1,2"]) == code
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    assert out.out.strip().splitlines()[-1].startswith("pass: " if code == 0 else "FAIL: ")


@pytest.mark.slow
def test_check_refuses_what_it_cannot_take(flows, capsys):
    assert main(["check", "maf", "--config", "nosuchkey=1"]) == 2
    assert "unknown keyword 'nosuchkey' for model 'maf'; allowed: flows, hidden, solver" in capsys.readouterr().err
    assert main(["check", "maf", "--config", "flows=0", "--dims", "1"]) == 2  # a value the model cannot take
    assert "flows must be an int >= 1, got 0" in capsys.readouterr().err
    assert main(["check", "os:system", "--dims", "1"]) == 1
    assert main(["check", "broken_at_import:make"]) == 2
    assert "importing 'broken_at_import'" in capsys.readouterr().err


@pytest.mark.slow
def test_a_checks_deadline_fails_a_hanging_flow(flows):
    start = time.time()
    ((spec, _, _, results),) = list(check.run_isolated([f"{flows}:hangs"], [1], {}, deadline_s=3))
    assert time.time() - start < 60 and check.passed(results) is False
    assert "did not finish within the deadline of 3 s" in results[0].note


@pytest.mark.slow
def test_checks_default_deadline_follows_the_flows_own_calls(flows, monkeypatch):
    """Without --deadline: a flow whose first calls hang fails after FIRST_S; one slow
    in every call gets what its calls take and is not killed, though its checks
    outlast FIRST_S."""
    # FIRST_S leaves the probe's few 0.2 s calls room on a loaded runner (0.3 s did not, at load 3)
    monkeypatch.setattr(check, "FIRST_S", 1.0)
    start = time.time()
    ((_, _, _, hung),) = list(check.run_isolated([f"{flows}:hangs"], [1], {}))
    assert time.time() - start < 30 and "first calls did not return within 1 s" in hung[0].note
    start = time.time()
    ((_, _, _, results),) = list(check.run_isolated([f"{flows}:slow"], [1, 2], {}))
    # its checks make ten or more 0.2 s calls: a fixed deadline of FIRST_S would have killed them
    assert time.time() - start > 1.5
    assert check.passed(results), [r for r in results if r.passed is False]


def _small(models, **overrides) -> grid.Config:
    base = dict(models=models, dims=(2,), batches=(8,), ops=("log_prob", "sample"), device="cpu", budget_s=2.0)
    base.update(min_run_time=0.01, flops=False, memory=False, roofline=False, deadline_margin_s=1.0)
    return grid.Config(**{**base, **overrides})


@pytest.mark.slow
def test_outputs_that_break_the_contract_are_error_rows_never_timed(flows, tmp_path):
    models = [f"{flows}:{f}" for f in ("column", "scalar", "half", "nan_inverse")]
    rows = sweep.run(_small(models), tmp_path / "out", progress=False)
    status = {(r["model"].partition(":")[2], r["op"]): r for r in rows}
    for key, why in [
        (("column", "log_prob"), "log_prob returned shape (8, 1), expected (8,)"),
        (("scalar", "log_prob"), "log_prob returned shape (), expected (8,)"),
        (("half", "sample"), "sample returned torch.float16, expected torch.float32"),
        (("nan_inverse", "sample"), "sample returned 16 non-finite values"),
    ]:
        r = status[key]
        assert r["status"] == "error" and "breaks the contract" in r["reason"] and why in r["reason"], r
        assert r.get("median_s") in (None, "")
    assert status[("column", "sample")]["status"] == "ok"  # the op that keeps it is measured


@pytest.mark.slow
def test_user_code_that_raises_is_a_row_and_a_hang_a_timeout(flows, tmp_path):
    models = [f"{flows}:{f}" for f in ("raises_key", "hangs_building", "hangs", "good")]
    start = time.time()
    rows = sweep.run(_small(models), tmp_path / "out", progress=False)
    assert time.time() - start < 120
    status = {(r["model"].partition(":")[2], r["op"]): (r["status"], r["reason"]) for r in rows}
    assert status[("raises_key", "log_prob")] == ("error", "cannot build it: KeyError: 2") or status[
        ("raises_key", "log_prob")
    ][1].startswith("cannot build it: KeyError")
    assert status[("hangs_building", "sample")][0] == "error" and "(killed)" in status[("hangs_building", "sample")][1]
    assert status[("hangs", "log_prob")][0] == "timeout"
    assert status[("good", "log_prob")][0] == status[("good", "sample")][0] == "ok"


def test_a_broken_module_is_one_line_in_every_command(flows, tmp_path, capsys):
    spec = "broken_at_import:make"
    for args in (
        ["sweep", "--models", spec, "--quick", "--out", str(tmp_path / "s")],
        ["fit", "--models", spec, "--quick", "--out", str(tmp_path / "f")],
        ["check", spec],
        ["versus", "--contest", f"{spec}=maf.sample", "--dims", "4", "--no-naf", "--frameworks", "torch"],
    ):
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("error: importing 'broken_at_import'") and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_fit_that_raises_or_hangs_is_a_row_and_the_others_go_on(flows, tmp_path):
    config = fit.FitConfig(
        models=(f"{flows}:raises_key", f"{flows}:hangs", "made"),
        data=("eight_gaussians",),
        seeds=(0,),
        steps=20,
        wall_s=1.0,
        eval_every=10,
        time_s=0.01,
        deadline_margin_s=4.0,
    )
    start = time.time()
    rows = fit.run(config, tmp_path / "fit", progress=False)
    assert time.time() - start < 120
    status = {r["model"].rpartition(":")[2]: (r["status"], r["reason"]) for r in rows}
    assert status["raises_key"][0] == "error" and "KeyError" in status["raises_key"][1]
    assert status["hangs"][0] == "timeout" and "killed after 6 s" in status["hangs"][1]
    assert status["made"][0] == "ok"


def test_the_budget_bounds_every_configuration_outside_the_default_grid():
    assert grid.essential("maf", "direct", 256, 1024) and grid.essential("maf", "incremental", 2, 1024)
    assert not grid.essential("maf", "direct", 256, 65536)  # another batch
    assert not grid.essential("maf", "direct", 300, 1024)  # another d
    assert not grid.essential("maf", "sequential", 256, 1024)  # a reference solver
    assert not grid.essential("zuko.maf", "direct", 256, 1024)  # a peer
