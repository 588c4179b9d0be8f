"""Fitting flows on tiny budgets: rows, checkpoints, resume, failures, the train_step op
and the report's quality section."""

from __future__ import annotations

import csv
import math
import re
import sys
import types

import numpy as np
import pytest
import torch

from harness import data, registry
from harness.__main__ import main
from harness.fit import FitConfig, run
from harness.table import CHECKPOINTS, CURVES, DENSITIES, ERROR, FIT, FIT_COLUMNS, OK, Col
from harness.training import NonFinite, fit_one, nll_per_point, train

TINY = dict(steps=40, wall_s=20.0, eval_every=10, time_batch=64, time_s=0.01)


def rows_of(folder):
    with (folder / FIT).open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    out = tmp_path_factory.mktemp("fit")
    config = FitConfig(models=["maf", "bnaf"], data=["eight_gaussians"], seeds=(0,), **TINY)
    rows = run(config, out, progress=False)
    return out, rows, config


@pytest.mark.slow
def test_a_fit_writes_one_row_per_model_and_data_set_with_units(fitted):
    out, rows, _ = fitted
    on_disk = rows_of(out)
    assert [(r[Col.MODEL], r[Col.DATA], r[Col.SEED]) for r in on_disk] == [
        ("maf", "eight_gaussians", "0"),
        ("bnaf", "eight_gaussians", "0"),
    ]
    assert list(on_disk[0]) == FIT_COLUMNS
    for r in on_disk:
        assert r[Col.STATUS] == OK and r[Col.NLL_UNITS] == "nats per point"
        nll, entropy = float(r[Col.TEST_NLL]), float(r[Col.ENTROPY])
        # the gap is paired on the test points: its mean is test NLL - mean log p, close to NLL - entropy
        assert float(r[Col.GAP]) == pytest.approx(nll - entropy, abs=0.05) and float(r[Col.GAP_SE]) > 0
        assert float(r[Col.VAL_NLL_SE]) > 0 and r[Col.WORSE_THAN_BASELINE] in ("True", "False")
        assert (out / r[Col.NLL_FILE]).is_file()
        assert float(r[Col.TEST_NLL_SE]) > 0 and int(r[Col.STEPS]) <= 40
        assert float(r[Col.TRAINED_LOG_PROB_S]) > 0 and float(r[Col.TRAINED_SAMPLE_S]) > 0
        assert int(r[Col.PARAMS_EFFECTIVE]) <= int(r[Col.PARAMS_STORED])
        assert (out / DENSITIES / f"{r[Col.MODEL]}__eight_gaussians.npy").is_file()
    assert (out / DENSITIES / "truth__eight_gaussians.npy").is_file()
    with (out / CURVES).open() as f:
        curve = list(csv.DictReader(f))
    assert {c[Col.MODEL] for c in curve} == {"maf", "bnaf"} and all(math.isfinite(float(c[Col.VAL_NLL])) for c in curve)
    assert {c[Col.SEED] for c in curve} == {"0"}


def test_the_checkpoint_loads_with_weights_only_and_gives_the_test_nll(fitted):
    out, _, config = fitted
    row = rows_of(out)[0]
    state = torch.load(out / row[Col.CHECKPOINT], weights_only=True)
    flow = registry.build_any("maf", 2)
    flow.load_state_dict(state)
    flow.eval()
    ds = data.load("eight_gaussians", int(row[Col.SEED]))
    points = nll_per_point(flow, ds.test)
    assert float(points.mean()) == pytest.approx(float(row[Col.TEST_NLL]), rel=1e-6)
    kept = np.load(out / row[Col.NLL_FILE])  # each test point's NLL, as the report pairs them
    assert kept.shape == points.shape and np.allclose(kept, points.numpy(), rtol=1e-5)


def test_training_improves_on_the_initial_weights_and_keeps_the_best():
    ds = data.load("eight_gaussians", 0)
    torch.manual_seed(0)
    flow = registry.build_any("maf", 2)
    before = float(nll_per_point(flow, ds.val).mean())
    trained = train(flow, ds, FitConfig(**TINY), seed=0)
    after = float(nll_per_point(flow, ds.val).mean())
    best = min(c[Col.VAL_NLL] for c in trained.curve)  # in the data set's units (offset 0 for a toy)
    assert after < before and after == pytest.approx(best, rel=1e-6)
    assert trained.best_step in [c[Col.STEP] for c in trained.curve]


@pytest.mark.slow
def test_resume_skips_finished_rows_and_refuses_other_settings(fitted, tmp_path):
    out, _, config = fitted
    again = run(
        FitConfig(models=["maf", "bnaf", "made"], data=["eight_gaussians"], seeds=(0,), **TINY), out, resume=True
    )
    assert [r[Col.MODEL] for r in again] == ["made"]
    assert [r[Col.MODEL] for r in rows_of(out)] == ["maf", "bnaf", "made"]
    with pytest.raises(ValueError, match="steps"):
        run(FitConfig(models=["maf"], data=["eight_gaussians"], seeds=(0,), **{**TINY, "steps": 41}), out, resume=True)
    with pytest.raises(ValueError, match="--resume"):
        run(FitConfig(models=["maf"], data=["eight_gaussians"], seeds=(0,), **TINY), out)


def _nan_module():
    module = types.ModuleType("nan_flow_for_fit")

    class NanFlow(torch.nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(dim))

        def forward(self, x):
            return x + self.w, torch.zeros(x.shape[0])

        def inverse(self, z):
            return z - self.w

        def log_prob(self, x):
            return (x * self.w).sum(-1) * float("nan")

    module.make = NanFlow
    return module


def test_a_non_finite_loss_is_an_error_row_and_the_others_go_on(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "nan_flow_for_fit", _nan_module())
    config = FitConfig(
        models=["nan_flow_for_fit:make", "made"], data=["eight_gaussians"], seeds=(0,), isolate=False, **TINY
    )
    rows = run(config, tmp_path, progress=False)
    assert rows[0][Col.STATUS] == ERROR and "non-finite training loss at step 1" in rows[0][Col.REASON]
    assert rows[1][Col.STATUS] == OK
    # resume fits the failed one again, and the table keeps one row per key
    run(config, tmp_path, resume=True, progress=False)
    assert [r[Col.MODEL] for r in rows_of(tmp_path)] == ["made", "nan_flow_for_fit:make"]


def test_bad_settings_name_the_value_and_the_allowed_ones():
    with pytest.raises(ValueError, match="unknown data set 'mnist'; allowed: eight_gaussians"):
        FitConfig(data=["mnist"]).validate()
    with pytest.raises(ValueError, match="steps must be an int >= 1, got 0"):
        FitConfig(steps=0).validate()
    with pytest.raises(ValueError, match="--data-dir"):
        FitConfig(data=["gas"]).validate()


@pytest.mark.slow
def test_the_fit_command_and_the_report_quality_section(tmp_path, capsys):
    out = tmp_path / "fit"
    code = main(
        [
            "fit",
            "--models",
            "made,iaf",
            "--data",
            "two_moons",
            "--seeds",
            "0",
            "--steps",
            "20",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0 and "2 fits" in capsys.readouterr().out
    assert all((out / CHECKPOINTS / f"{m}__two_moons__s0.pt").is_file() for m in ("made", "iaf"))
    assert main(["report", str(out), "--out", str(tmp_path / "rep")]) == 0
    report = (tmp_path / "rep" / "REPORT.md").read_text()
    assert "## Quality: density against size and training time" in report
    assert "**Quality on two_moons**" in report.split("## Quality")[0]  # answered in the Findings
    assert (tmp_path / "rep" / "quality.png").is_file() and (tmp_path / "rep" / "densities.png").is_file()


def test_digits_fit_reports_bits_per_dimension():
    ds = data.load("digits", 0)
    row, curve, observations = fit_one("made", ds, FitConfig(**{**TINY, "steps": 10}), 0, _tmp_out())
    assert row[Col.BITS_PER_DIM] == pytest.approx(row[Col.TEST_NLL] / (64 * math.log(2)))
    assert row[Col.NLL_UNITS] == "nats per image" and Col.GAP not in row and curve and observations == []
    assert all(c[Col.VAL_NLL] > 50 for c in curve), "curves are in nats per image, as fit.csv"


def _tmp_out():
    import tempfile
    from pathlib import Path

    return Path(tempfile.mkdtemp())


def test_train_step_is_a_sweep_op_that_leaves_the_model_as_it_was():
    from harness.measure.call import Settings, measure

    torch.manual_seed(0)
    flow = registry.build_any("maf", 4)
    before = {k: v.clone() for k, v in flow.state_dict().items()}
    config = Settings(min_run_time=0.02, budget_s=5.0, memory=False)
    row, out = measure(flow, "train_step", "cpu", 32, config, None, essential=True)
    assert row[Col.STATUS] == OK and row[Col.FLOPS] > 0 and out.shape == ()
    lp_row, _ = measure(flow, "log_prob", "cpu", 32, config, None, essential=True)
    assert row[Col.FLOPS] > 2 * lp_row[Col.FLOPS]  # forward, backward and the update
    assert all(torch.equal(v, before[k]) for k, v in flow.state_dict().items())
    assert flow.cost["train_step"] == flow.cost["log_prob"]


def test_a_uci_fit_is_reported_beside_the_papers_numbers():
    import pandas as pd

    from harness.report.sections.quality import published_table
    from harness.table import FIT_COLUMNS

    fits = pd.DataFrame(
        [
            {Col.MODEL: "maf", Col.DATA: "power", Col.STATUS: OK, Col.TEST_NLL: nll, Col.TEST_NLL_SE: 0.01}
            for nll in (-0.20, -0.21, -0.22)
        ],
        columns=FIT_COLUMNS,
    ).assign(dim=6, params_effective=1, train_s=1.0, baseline_nll=8.5, nll_units="nats per point", seed=[0, 1, 2])
    table = published_table(fits)
    assert list(table[Col.DATA]) == ["power"]
    # as the paper states its numbers: mean ± sd over trainings (seeds)
    assert table.loc[0, "B-NAF (paper)"] == "0.61 ± .01" and table.loc[0, "maf (ours)"] == "0.21 ± 0.01 (SE 0.01)"
    assert table.loc[0, "RQ-NSF (AR) (paper)"] == "0.66 ± .01"  # Durkan et al., 2019, Table 1
    assert published_table(fits.assign(**{Col.DATA: "eight_gaussians"})).empty


def test_a_non_finite_validation_nll_raises(monkeypatch):
    import harness.training as training

    ds = data.load("eight_gaussians", 0)
    torch.manual_seed(0)
    flow = registry.build_any("made", 2)
    monkeypatch.setattr(training, "nll_per_point", lambda flow, x, c=None: torch.full((len(x),), float("inf")))
    with pytest.raises(NonFinite, match="non-finite validation NLL at step 10"):
        train(flow, ds, FitConfig(**TINY), seed=0)


def test_a_diverged_seed_is_flagged_and_rules_neither_the_summary_nor_the_axis(tmp_path):
    import pandas as pd

    from harness.report.sections.quality import nll_table, quality_figure
    from harness.table import FIT_COLUMNS

    nlls = {"iaf": (126.5, 5.07e11, 127.3), "naf": (108.0, 108.7, 110.9)}
    fits = pd.DataFrame(
        [
            {Col.MODEL: m, Col.DATA: "digits", Col.STATUS: OK, Col.TEST_NLL: v, Col.TEST_NLL_SE: 0.5, Col.SEED: s}
            for m, values in nlls.items()
            for s, v in enumerate(values)
        ],
        columns=FIT_COLUMNS,
    ).assign(dim=64, params_effective=[10, 10, 10, 20, 20, 20], train_s=1.0, baseline_nll=150.9)
    fits = fits.assign(nll_units="nats per image", entropy=float("nan"))
    table = nll_table(fits)
    # the median over seeds [min, max] of the seeds that trained; the diverged one after it
    assert table.loc[0, "iaf"] == "126.900 [126.500, 127.300] (SE 0.500); diverged: 5.07e+11"
    assert table.loc[0, "naf"] == "108.700 [108.000, 110.900] (SE 0.500)"
    quality_figure(fits, tmp_path)
    svg = (tmp_path / "quality.svg").read_text()
    assert "diverged seed" in svg and svg.count("<!-- iaf -->") == 1  # one legend entry per model, not per seed
    y_top = max(float(v) for v in re.findall(r"<!-- (\d+(?:\.\d+)?) -->", svg))  # the axes' tick labels
    assert y_top < 1000  # the axis is the seeds' that trained, not 5e11


@pytest.mark.slow
def test_a_conditional_fit_is_judged_at_each_fixed_observation_and_reported(tmp_path):
    """Each model built with the task's context, trained on (theta, x) pairs; its row
    has the gap to the exact posterior, posterior.csv one row per fixed observation
    whose gaps average to it; a flow that takes no context is an error row saying so."""
    from harness.data import posteriors
    from harness.report import build_report
    from harness.table import POSTERIOR

    config = FitConfig(models=["maf", "bnaf"], data=["gaussian_linear"], seeds=(0, 1), **TINY)
    rows = {(r[Col.MODEL], r[Col.SEED]): r for r in run(config, tmp_path, progress=False)}
    assert rows["bnaf", 0][Col.STATUS] == ERROR and "takes no context" in rows["bnaf", 0][Col.REASON]
    maf = rows["maf", 0]
    assert maf[Col.STATUS] == OK and maf[Col.DIM] == 10 and maf[Col.TRAINED_LOG_PROB_S] > 0
    with (tmp_path / POSTERIOR).open(newline="") as f:
        judged = [r for r in csv.DictReader(f) if r[Col.MODEL] == "maf" and r[Col.SEED] == "0"]
    assert [int(r[Col.OBSERVATION]) for r in judged] == list(range(posteriors.OBSERVATIONS))
    assert all(int(r[Col.POINTS]) == data.PER_OBSERVATION for r in judged)
    assert np.mean([float(r[Col.GAP]) for r in judged]) == pytest.approx(maf[Col.GAP], rel=1e-9)
    assert maf[Col.GAP] > 0  # 40 steps are far from the truth, and the gap estimates a KL
    report = build_report([tmp_path], tmp_path / "rep", paper=False, figures=False).read_text()
    assert "### Conditional fits: the posterior at fixed observations" in report
    assert "**How close is each conditional flow's posterior?** on gaussian_linear" in report
