"""The fit's data sets: toys with their true entropy, digits, and the UCI loaders on
small files in the MAF release's formats."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from harness import data
from harness.data import toys, uci

CHEAP_TOYS = ["eight_gaussians", "checkerboard"]


def test_quadrature_gives_a_gaussians_closed_form_entropy():
    sigma = 0.3
    x, area = toys.grid(3.0, 300)
    log_p = toys._gaussian_mixture_log_density(x, torch.zeros(1, 2, dtype=torch.float64), sigma)
    entropy = float(-(log_p.exp() * log_p).sum() * area)
    assert entropy == pytest.approx(1 + math.log(2 * math.pi * sigma**2), abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(toys.TOYS))
def test_each_toy_density_normalises_and_matches_its_samples(name):
    toy = toys.TOYS[name]
    n = 100 if name in ("two_spirals", "two_moons") else 400  # the curve mixtures cost most
    x, area = toys.grid(toy.extent, n)
    assert float(toy.log_density(x).exp().sum() * area) == pytest.approx(1.0, abs=2e-3)
    samples = toy.sample(20000, 7)
    assert samples.shape == (20000, 2) and samples.dtype == torch.float64
    assert torch.equal(samples, toy.sample(20000, 7)) and not torch.equal(samples, toy.sample(20000, 8))
    # samples against the density: -mean log p(samples) is a Monte Carlo estimate of the entropy
    nll = -toy.log_density(samples)
    assert torch.isfinite(nll).all(), "a sample fell where the density is 0"
    if name in CHEAP_TOYS:
        se = float(nll.std()) / math.sqrt(len(nll))
        assert float(nll.mean()) == pytest.approx(toy.entropy, abs=4 * se + 1e-3)


def test_entropies_by_quadrature_agree_with_monte_carlo_and_with_a_finer_grid():
    toy = toys.TOYS["eight_gaussians"]
    coarse, fine = toys.quadrature_entropy(toy.name, 200), toys.quadrature_entropy(toy.name, 400)
    assert coarse == pytest.approx(fine, abs=1e-4)
    # nearly separated components: log 8 plus a Gaussian's entropy, less a little overlap
    assert fine < math.log(8) + 1 + math.log(2 * math.pi * toys.EIGHT_SIGMA**2) + 1e-9
    assert toys.TOYS["checkerboard"].entropy == math.log(8)


def test_digits_split_dequantisation_and_units():
    ds = data.load("digits", seed=0)
    assert (len(ds.train), len(ds.val), len(ds.test), ds.dim) == (1257, 180, 360, 64)
    assert abs(float(ds.train.mean())) < 1e-4 and float(ds.train.std()) == pytest.approx(1.0, abs=1e-2)
    again = data.load("digits", seed=0)
    assert torch.equal(ds.test, again.test)
    other = data.load("digits", seed=1)  # the seed redraws the noise, not the split
    assert not torch.equal(ds.test, other.test)
    assert float((ds.test - other.test).mean().abs()) < 0.05  # the same images under other noise
    # a uniform model on the levels scores 64 log 17 nats: bits per dimension of log2(17)
    assert ds.bits_per_dim(64 * math.log(17)) == pytest.approx(math.log2(17))
    assert math.isfinite(ds.nll_offset) and ds.units == "nats per image"


def test_unknown_data_set_and_missing_dir_name_the_allowed_values(tmp_path):
    with pytest.raises(ValueError, match="allowed: eight_gaussians"):
        data.load("mnist")
    with pytest.raises(ValueError, match="--data-dir"):
        data.load("power")
    with pytest.raises(FileNotFoundError, match="power/data.npy"):
        data.load("power", data_dir=tmp_path)


# ---- the UCI loaders on small files written in the release's formats ------------------


def _check_splits(splits, dim: int, n: int) -> None:
    train, val, test = splits
    assert train.shape[1] == val.shape[1] == test.shape[1] == dim
    assert len(train) + len(val) + len(test) == n
    assert np.isfinite(train).all() and np.isfinite(test).all()


def test_power_drops_two_columns_adds_noise_and_normalises(tmp_path):
    rng = np.random.RandomState(1)
    (tmp_path / "power").mkdir()
    np.save(tmp_path / "power" / "data.npy", rng.rand(500, 8) * [5, 1, 240, 20, 10, 10, 10, 1440])
    train, val, test = uci.power(tmp_path)
    _check_splits((train, val, test), 6, 500)
    assert (len(test), len(val)) == (50, 45)
    both = np.vstack([train, val])
    assert np.allclose(both.mean(axis=0), 0, atol=1e-9) and np.allclose(both.std(axis=0), 1)


def test_gas_drops_labels_and_correlated_columns(tmp_path):
    rng = np.random.RandomState(2)
    sensors = rng.randn(300, 9)
    frame = pd.DataFrame(sensors, columns=[f"s{i}" for i in range(9)])
    frame["copy"] = 2 * frame["s0"] + 1e-6 * rng.randn(300)  # correlated above 0.98: one of the pair goes
    frame["Meth"], frame["Eth"], frame["Time"] = rng.rand(300), rng.rand(300), np.arange(300.0)
    (tmp_path / "gas").mkdir()
    frame.to_pickle(tmp_path / "gas" / "ethylene_CO.pickle")
    splits = uci.gas(tmp_path)
    _check_splits(splits, 9, 300)


def test_hepmass_keeps_signal_drops_repeating_features_and_the_extra_test_column(tmp_path):
    rng = np.random.RandomState(3)

    def table(n: int, extra: bool) -> pd.DataFrame:
        features = rng.randn(n, 5)
        features[:, 4] = rng.choice([400.0, 500.0, 600.0], n)  # the discrete mass: dropped
        frame = pd.DataFrame(features, columns=[f"f{i}" for i in range(4)] + ["mass"])
        frame.insert(0, "# label", rng.randint(0, 2, n).astype(float))
        if extra:
            frame["junk"] = 0.0
        return frame

    (tmp_path / "hepmass").mkdir()
    train, test = table(400, False), table(200, True)
    train.to_csv(tmp_path / "hepmass" / "1000_train.csv", index=False)
    test.to_csv(tmp_path / "hepmass" / "1000_test.csv", index=False)
    tr, val, te = uci.hepmass(tmp_path)
    signal_train, signal_test = int((train["# label"] == 1).sum()), int((test["# label"] == 1).sum())
    assert tr.shape[1] == 4 and len(tr) + len(val) == signal_train and len(te) == signal_test


def test_miniboone_and_bsds300(tmp_path):
    import h5py

    rng = np.random.RandomState(4)
    (tmp_path / "miniboone").mkdir()
    np.save(tmp_path / "miniboone" / "data.npy", rng.randn(300, 43))
    _check_splits(uci.miniboone(tmp_path), 43, 300)
    (tmp_path / "BSDS300").mkdir()
    with h5py.File(tmp_path / "BSDS300" / "BSDS300.hdf5", "w") as f:
        for split, n in (("train", 50), ("validation", 10), ("test", 20)):
            f[split] = rng.rand(n, 63)
    _check_splits(uci.bsds300(tmp_path), 63, 80)
    ds = data.load("miniboone", data_dir=tmp_path)
    assert ds.dim == 43 and ds.nll_offset == 0.0


def _release_power(data: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The POWER splits as the MAF release's loader makes them, step by step: shuffle with
    RandomState(42), drop columns 3 and 1, draw the voltage noise, then the gap noise,
    then the sub-meterings', stack them gap, voltage, sub-meterings, zero time; the last
    10% is test, the last 10% of the rest validation; standardise with train+validation."""
    rng = np.random.RandomState(42)
    data = data.copy()
    rng.shuffle(data)
    n = len(data)
    data = np.delete(np.delete(data, 3, axis=1), 1, axis=1)
    voltage, gap, sm = 0.01 * rng.rand(n, 1), 0.001 * rng.rand(n, 1), rng.rand(n, 3)
    data = data + np.hstack([gap, voltage, sm, np.zeros((n, 1))])
    n_test = int(0.1 * n)
    test, rest = data[n - n_test :], data[: n - n_test]
    n_val = int(0.1 * len(rest))
    train, val = rest[: len(rest) - n_val], rest[len(rest) - n_val :]
    both = np.vstack([train, val])
    mu, sd = both.mean(axis=0), both.std(axis=0)
    return (train - mu) / sd, (val - mu) / sd, (test - mu) / sd


def test_power_draws_its_noise_in_the_releases_order(tmp_path):
    rng = np.random.RandomState(5)
    raw = rng.rand(400, 8) * [5, 1, 240, 20, 10, 10, 10, 1440]
    (tmp_path / "power").mkdir()
    np.save(tmp_path / "power" / "data.npy", raw)
    for ours, theirs in zip(uci.power(tmp_path), _release_power(raw)):
        assert np.array_equal(ours, theirs)


def _malformed(root, case: str) -> str:
    """Writes one malformed release file under root; returns the data set and the file."""
    rng = np.random.RandomState(6)
    if case == "empty npy":
        (root / "power").mkdir()
        (root / "power" / "data.npy").write_bytes(b"")
        return "power", "power/data.npy"
    if case == "non-numeric cell":
        (root / "hepmass").mkdir()
        frame = pd.DataFrame(rng.randn(50, 4), columns=list("abcd"))
        frame.insert(0, "# label", 1.0)
        frame["b"] = frame["b"].astype(object)
        frame.loc[3, "b"] = "oops"
        for name in ("1000_train.csv", "1000_test.csv"):
            frame.to_csv(root / "hepmass" / name, index=False)
        return "hepmass", "hepmass/1000_train.csv"
    if case == "pickle without columns":
        (root / "gas").mkdir()
        pd.DataFrame(rng.randn(30, 3), columns=list("xyz")).to_pickle(root / "gas" / "ethylene_CO.pickle")
        return "gas", "gas/ethylene_CO.pickle"
    if case == "hdf5 without test":
        import h5py

        (root / "BSDS300").mkdir()
        with h5py.File(root / "BSDS300" / "BSDS300.hdf5", "w") as f:
            f["train"], f["validation"] = rng.rand(20, 63), rng.rand(5, 63)
        return "bsds300", "BSDS300/BSDS300.hdf5"
    (root / "miniboone").mkdir()  # the wrong dimension
    np.save(root / "miniboone" / "data.npy", rng.randn(200, 42))
    return "miniboone", "miniboone/data.npy"


@pytest.mark.parametrize(
    "case", ["empty npy", "non-numeric cell", "pickle without columns", "hdf5 without test", "wrong dimension"]
)
def test_a_malformed_release_file_is_one_line_naming_it(tmp_path, capsys, case):
    from harness.__main__ import main

    name, file = _malformed(tmp_path, case)
    args = ["fit", "--models", "made", "--data", name, "--data-dir", str(tmp_path), "--steps", "1"]
    assert main([*args, "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / file) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_conditional_task_has_bayes_posterior_and_fixed_observations():
    """gaussian_linear's posterior is prior x likelihood / evidence: log p(theta | x)
    minus log prior(theta) + log lik(x | theta) is one constant per x; its draws have
    the stated entropy; the observations are the same whatever the fit's seed."""
    from harness.data import posteriors

    task = posteriors.TASKS["gaussian_linear"]
    g = torch.Generator().manual_seed(3)
    theta, x = task.simulate(64, g)
    x0 = x[:1].expand(64, -1)

    def log_normal(v, var):
        return -0.5 * (v.square().sum(-1) / var + task.dim * math.log(2 * math.pi * var))

    evidence = log_normal(theta, 0.1) + log_normal(x0 - theta, 0.1) - task.log_posterior(theta, x0)
    assert float(evidence.std()) < 1e-12
    draws = task.posterior_sample(x[0], 200_000, g)
    lp = task.log_posterior(draws, x[0].expand(len(draws), -1))
    assert abs(float(-lp.mean()) - task.entropy) < 5 * float(lp.std()) / math.sqrt(len(lp))
    one, other = data.load("gaussian_linear", 0), data.load("gaussian_linear", 1)
    assert torch.equal(one.contexts[2], other.contexts[2]) and not torch.equal(one.test, other.test)
    assert one.context_features == 10 and one.observation.unique().tolist() == list(range(posteriors.OBSERVATIONS))
    assert torch.allclose(one.true_log_density(), task.log_posterior(one.test.double(), one.contexts[2].double()))
