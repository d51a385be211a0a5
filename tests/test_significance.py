"""tuner.significance against known results: scipy, hand-computed cases and synthetic systems."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from model.metrics import ccc
from tuner.significance import holm, paired_bootstrap, paired_t_test, resampled_ccc, t_interval


def test_t_interval_matches_scipy():
    x = [0.51, 0.48, 0.55, 0.47, 0.52]
    out = t_interval(x)
    low, high = stats.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=stats.sem(x))
    assert out["n"] == 5 and out["mean"] == pytest.approx(np.mean(x))
    assert out["ci95"] == pytest.approx([low, high])
    assert out["sd"] == pytest.approx(np.std(x, ddof=1))
    assert t_interval([0.5])["ci95"] is None and t_interval([])["mean"] is None


def test_paired_t_test_known_case():
    # d = [1, 0.5, 1.5]: mean 1, sd 0.5, t = 1 / (0.5 / sqrt 3) = 3.4641, df 2, p = 0.0742
    out = paired_t_test([1, 2, 3.5], [0, 1.5, 2])
    assert out["diff"] == pytest.approx(1.0) and out["df"] == 2
    assert out["t"] == pytest.approx(2 * np.sqrt(3))
    assert out["p"] == pytest.approx(0.07417990022744854)
    half = stats.t.ppf(0.975, 2) * 0.5 / np.sqrt(3)
    assert out["ci95"] == pytest.approx([1 - half, 1 + half])
    assert "ttest_rel" in out["test"]


def test_paired_t_test_degenerate_cases():
    assert paired_t_test([0.5, 0.6], [0.5, 0.6])["p"] == 1.0       # identical systems
    assert paired_t_test([0.5, 0.6], [0.4, 0.5])["p"] is None      # constant difference: t undefined
    assert paired_t_test([0.5], [0.4])["p"] is None and paired_t_test([0.5], [0.4])["diff"] == pytest.approx(0.1)
    with pytest.raises(ValueError):
        paired_t_test([0.5, 0.6], [0.5])


def test_holm_known_case():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, None, 0.01]) == [pytest.approx(0.5), None, pytest.approx(0.02)]
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])   # 2 * 0.6 capped at 1; monotone
    assert holm([]) == []


def test_resampled_ccc_weights_equal_repeated_utterances():
    rng = np.random.default_rng(0)
    labels = rng.normal(4, 1, size=(30, 2))
    labels[3, 1] = np.nan
    preds = labels[None] + rng.normal(0, 0.7, size=(2, 30, 2))
    draw = rng.integers(0, 30, size=30)
    counts = np.bincount(draw, minlength=30)[None].astype(float)
    got = resampled_ccc(labels, preds, counts)[0]
    for k in range(2):
        for j in range(2):
            assert got[k, j] == pytest.approx(ccc(labels[draw, j], preds[k][draw, j]), abs=1e-10)


def synthetic(noise_a: float, noise_b: float, n: int = 400, seeds: int = 3):
    rng = np.random.default_rng(7)
    y = rng.normal(4, 1, size=n)
    a = y + rng.normal(0, noise_a, size=(seeds, n))
    b = y + rng.normal(0, noise_b, size=(seeds, n))
    return y, a, b


def test_bootstrap_clearly_significant_difference():
    y, a, b = synthetic(0.4, 1.2)
    out = paired_bootstrap(y, a, b, resamples=1000, seed=0)
    expected = np.mean([ccc(y, p) for p in a]) - np.mean([ccc(y, p) for p in b])
    assert out["diff"] == pytest.approx(expected, abs=1e-10)
    assert out["diff"] > 0.2 and out["ci95"][0] > 0 and out["p"] < 0.01
    assert out["p"] == pytest.approx(2 / 1001)   # no resample reached 0: the smallest p possible
    assert paired_bootstrap(y, a, b, resamples=1000, seed=0) == out   # seeded: repeats exactly


def test_bootstrap_no_difference_is_not_significant():
    # b mirrors a's errors: both systems have the same CCC on all utterances, differently per utterance
    rng = np.random.default_rng(3)
    y = rng.normal(4, 1, size=300)
    e = rng.normal(0, 0.8, size=300)
    e -= e.mean()
    yc = y - y.mean()
    e -= yc * (e @ yc) / (yc @ yc)          # errors uncorrelated with the labels
    a, b = (y + e)[None], (y - e)[None]
    out = paired_bootstrap(y, a, b, resamples=1000, seed=0)
    assert ccc(y, a[0]) == pytest.approx(ccc(y, b[0]))
    assert abs(out["diff"]) < 1e-12
    assert out["ci95"][0] < 0 < out["ci95"][1] and out["p"] > 0.3


def test_bootstrap_mean_over_attributes_and_nan_labels():
    rng = np.random.default_rng(1)
    y = rng.normal(4, 1, size=(100, 2))
    y[:5, 1] = np.nan
    a = y[None] + rng.normal(0, 0.5, size=(2, 100, 2))
    b = y[None] + rng.normal(0, 0.9, size=(2, 100, 2))
    out = paired_bootstrap(y, a, b, resamples=200, seed=1)
    def mean_ccc(p):
        return np.mean([ccc(y[:, j], s[:, j]) for s in p for j in range(2)])
    assert out["diff"] == pytest.approx(mean_ccc(a) - mean_ccc(b), abs=1e-10)
    with pytest.raises(ValueError):
        paired_bootstrap(y, a, b[:, :50])
