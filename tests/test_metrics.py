"""Tests of model.metrics: CCC and NMI against hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest

from model.metrics import ccc, nmi


def test_ccc_hand_computed():
    # t = [1, 2, 3], p = [2, 2, 5]: means 2 and 3, var_t = 2/3, var_p = 2, cov = 1
    # ccc = 2 * 1 / (2/3 + 2 + 1) = 6 / 11
    assert ccc(np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 5.0])) == pytest.approx(6 / 11)


def test_ccc_perfect_and_inverse_and_shifted():
    y = np.random.default_rng(0).standard_normal(200)
    y -= y.mean()  # y and -y share the mean only when it is 0
    assert ccc(y, y) == pytest.approx(1.0)
    assert ccc(y, -y) == pytest.approx(-1.0)
    shifted = ccc(y, y + 1.0)  # perfectly correlated but biased: CCC < Pearson = 1
    assert 0.0 < shifted < 1.0
    assert shifted == pytest.approx(2 * y.var() / (2 * y.var() + 1.0))


def test_ccc_degenerate_inputs_give_zero_not_nan():
    assert ccc(np.array([]), np.array([])) == 0.0
    assert ccc(np.array([3.0]), np.array([1.0])) == 0.0
    assert ccc(np.full(5, 2.0), np.full(5, 2.0)) == 0.0
    assert ccc(np.full(5, 2.0), np.full(5, 4.0)) == 0.0
    assert ccc(np.full(4, 2.0), np.array([1.0, 2.0, 3.0, 4.0])) == 0.0


def test_ccc_drops_nan_pairs_and_checks_lengths():
    t = np.array([1.0, np.nan, 2.0, 3.0])
    p = np.array([2.0, 100.0, 2.0, 5.0])
    assert ccc(t, p) == pytest.approx(6 / 11)
    with pytest.raises(ValueError, match="3 values"):
        ccc(np.zeros(3), np.zeros(4))


def test_nmi_hand_computed():
    # a = [0,0,1,1], b = [0,0,0,1]: contingency [[2,0],[1,1]], n = 4
    # MI = 1/2 ln(2*4/(2*3)) + 1/4 ln(1*4/(2*3)) + 1/4 ln(1*4/(2*1)) = 1/2 ln(4/3) + 1/4 ln(2/3) + 1/4 ln 2
    # H(a) = ln 2, H(b) = -(3/4 ln 3/4 + 1/4 ln 1/4)
    mi = 0.5 * math.log(4 / 3) + 0.25 * math.log(2 / 3) + 0.25 * math.log(2)
    h_a = math.log(2)
    h_b = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert nmi(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 1])) == pytest.approx(mi / ((h_a + h_b) / 2))
    assert nmi(np.array([0, 0, 0, 1]), np.array([0, 0, 1, 1])) == pytest.approx(mi / ((h_a + h_b) / 2))


def test_nmi_relabelling_independence_and_limits():
    a = np.random.default_rng(1).integers(0, 7, 500)
    perm = np.array([3, 6, 0, 1, 5, 2, 4])
    assert nmi(a, perm[a]) == pytest.approx(1.0)
    assert nmi(a, a + 100) == pytest.approx(1.0)
    assert nmi(np.zeros(10, int), np.zeros(10, int)) == 1.0  # neither splits: a perfect match
    assert nmi(np.zeros(10, int), np.arange(10) % 2) == 0.0  # one constant: no information
    assert nmi(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])) == pytest.approx(0.0, abs=1e-12)  # independent
    b = np.random.default_rng(2).integers(0, 7, 500)
    assert 0.0 <= nmi(a, b) < 0.1
    with pytest.raises(ValueError, match="length"):
        nmi(np.zeros(3), np.zeros(4))
