"""Intervals that mean what they say: in log space (never negative, mirrored for the
inverse ratio), paired rounds cancel shared drift, and a verdict needs the whole
interval past the minimum effect."""

import numpy as np
import pytest

from harness.intervals import paired_ratio, unpaired_ratio, verdict


def test_ratio_intervals_are_positive_and_mirrored_for_the_inverse():
    rng = np.random.default_rng(0)
    a = np.exp(rng.normal(0, 1.5, 9))  # a spread far above the median: a linear interval would go negative
    b = np.exp(rng.normal(0, 1.5, 9))
    for ratio in (paired_ratio, unpaired_ratio):
        r, inverse = ratio(a, b), ratio(b, a)
        assert 0 < r.low <= r.value <= r.high
        assert r.value * inverse.value == pytest.approx(1)
        assert inverse.low <= 1 / r.value <= inverse.high
    r, inverse = paired_ratio(a, b), paired_ratio(b, a)  # the same rounds resampled: exactly mirrored
    assert r.low * inverse.high == pytest.approx(1) and r.high * inverse.low == pytest.approx(1)


def test_paired_rounds_cancel_drift_that_unpaired_runs_cannot():
    drift = np.linspace(1, 3, 9)  # the machine slows down threefold during the measurement
    a, b = 2.0 * drift, 1.0 * drift * np.exp(np.random.default_rng(1).normal(0, 0.01, 9))
    paired, unpaired = paired_ratio(a, b), unpaired_ratio(a, b)
    assert paired.low <= 2.0 <= paired.high and paired.high / paired.low < 1.05
    assert unpaired.high / unpaired.low > 1.5  # honest about what timing apart cannot separate


def test_a_verdict_needs_the_whole_interval_past_the_minimum_effect():
    assert verdict(1.06, 1.2, min_effect=0.05) == "slower"
    assert verdict(1.04, 1.2, min_effect=0.05) == "no clear difference"
    assert verdict(0.8, 0.95, min_effect=0.05) == "faster"
    assert verdict(0.8, 0.96, min_effect=0.05) == "no clear difference"
    assert verdict(0.8, 0.99) == "faster"  # no minimum effect: the interval must exclude 1
