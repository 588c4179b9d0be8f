"""The B-NAF paper's Table 1 (bottom), from the harness's own NAF and B-NAF presets."""

import pytest
import torch

from harness.paper import DATASETS, bnaf_paper, naf_paper, table1


def test_every_ratio_matches_the_paper_to_two_decimals():
    df = table1()
    assert list(df.columns[:9]) == [
        "dataset",
        "dim",
        "params_bnaf",
        "params_naf5",
        "params_naf10",
        "ratio5",
        "ratio10",
        "paper_ratio5",
        "paper_ratio10",
    ]
    for r in df.itertuples():
        assert f"{r.ratio5:.2f}" == f"{r.paper_ratio5:.2f}", r.dataset
        assert f"{r.ratio10:.2f}" == f"{r.paper_ratio10:.2f}", r.dataset


def test_power_counts_by_hand():
    # B-NAF, d=6, a=40: per flow d(d+1)/2 (a^2 + 2a) non-zero weights, 4ad + 2d scales
    # and biases; 5 flows and 4 gates
    d, a = 6, 40
    assert (
        table1().set_index("dataset").loc["POWER", "params_bnaf"]
        == 5 * (d * (d + 1) // 2 * (a * a + 2 * a) + 4 * a * d + 2 * d) + 4
    )


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_presets_are_real_models(dataset):
    d = DATASETS[dataset].dim
    x = torch.randn(4, d)
    with torch.inference_mode():
        for model in (bnaf_paper(dataset), naf_paper(dataset, 5)):
            lp = model.log_prob(x)
            assert lp.shape == (4,) and torch.isfinite(lp).all()


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'CIFAR'; allowed: POWER, GAS, HEPMASS, MINIBOONE, BSDS300"):
        bnaf_paper("CIFAR")
