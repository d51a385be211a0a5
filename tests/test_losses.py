"""Tests of model.losses: the NaN-masked CCC loss and the triplet sampling and loss."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from model.losses import ccc_loss, sample_triplets, triplet_loss
from model.metrics import ccc


def test_ccc_loss_matches_numpy_ccc_per_column():
    rng = np.random.default_rng(0)
    target = rng.standard_normal((50, 3))
    pred = target * np.array([1.0, 0.5, -1.0]) + rng.standard_normal((50, 3)) * 0.3
    loss = ccc_loss(torch.tensor(pred), torch.tensor(target))
    assert loss.shape == (3,)
    for a in range(3):
        assert loss[a].item() == pytest.approx(1.0 - ccc(target[:, a], pred[:, a]), abs=1e-9)


def test_ccc_loss_ignores_nan_targets_per_column():
    rng = np.random.default_rng(1)
    target = rng.standard_normal((40, 2))
    pred = target + rng.standard_normal((40, 2)) * 0.5
    target[::3, 0] = np.nan
    target[5:20, 1] = np.nan
    loss = ccc_loss(torch.tensor(pred), torch.tensor(target))
    for a in range(2):
        keep = ~np.isnan(target[:, a])
        assert loss[a].item() == pytest.approx(1.0 - ccc(target[keep, a], pred[keep, a]), abs=1e-9)


def test_ccc_loss_gradient_flows_and_is_finite_with_empty_columns():
    pred = torch.randn(10, 3, requires_grad=True)
    target = torch.randn(10, 3)
    target[:, 1] = float("nan")  # no labels at all
    target[1:, 2] = float("nan")  # one label: fewer than 2
    loss = ccc_loss(pred, target)
    assert loss[1].item() == 0.0 and loss[2].item() == 0.0
    assert loss.requires_grad
    loss.sum().backward()
    assert torch.isfinite(pred.grad).all()
    assert pred.grad[:, 0].abs().sum() > 0
    assert (pred.grad[:, 1:] == 0).all()
    # a fully unlabeled batch still yields a differentiable zero
    pred2 = torch.randn(4, 2, requires_grad=True)
    loss2 = ccc_loss(pred2, torch.full((4, 2), float("nan")))
    loss2.sum().backward()
    assert torch.equal(loss2.detach(), torch.zeros(2)) and torch.isfinite(pred2.grad).all()


def test_ccc_loss_constant_prediction_no_nan():
    pred = torch.zeros(6, 1, requires_grad=True)
    loss = ccc_loss(pred, torch.zeros(6, 1))  # both constant and equal: CCC taken as 0
    assert loss.item() == pytest.approx(1.0)
    loss.sum().backward()
    assert torch.isfinite(pred.grad).all()


def test_ccc_loss_gradient_descent_improves_ccc():
    torch.manual_seed(0)
    target = torch.randn(32, 2)
    pred = torch.zeros(32, 2).normal_(0, 0.01).requires_grad_()
    opt = torch.optim.SGD([pred], lr=1.0)
    first = ccc_loss(pred, target).sum().item()
    for _ in range(50):
        opt.zero_grad()
        ccc_loss(pred, target).sum().backward()
        opt.step()
    assert ccc_loss(pred, target).sum().item() < first * 0.2


@pytest.mark.parametrize("C,window", [(4, 2), (5, 2), (11, 2), (3, 1), (7, 3), (11, 1)])
def test_triplet_constraints_hold_for_many_draws(C, window):
    g = torch.Generator().manual_seed(C * 10 + window)
    t = sample_triplets(500, C, window, 10, g)
    assert t.shape == (5000, 3) and t.dtype == torch.int64
    a, p, n = t.unbind(1)
    assert ((t >= 0) & (t < C)).all()
    assert (a != p).all()
    assert ((a - p).abs() <= window).all()
    assert ((a - n).abs() > window).all()
    has_negative = [(x - window - 1 >= 0) or (x + window + 1 <= C - 1) for x in range(C)]
    seen = set(a.tolist())
    assert seen == {x for x in range(C) if has_negative[x]}  # every anchor with a negative is used


def test_triplet_positive_and_negative_cover_their_ranges():
    g = torch.Generator().manual_seed(3)
    t = sample_triplets(2000, 11, 2, 10, g)
    a, p, n = t.unbind(1)
    at5 = a == 5
    assert set(p[at5].tolist()) == {3, 4, 6, 7}
    assert set(n[at5].tolist()) == {0, 1, 2, 8, 9, 10}
    # anchors are uniform over 0..10 (all have a negative when C = 11, w = 2)
    counts = torch.bincount(a, minlength=11).double() / len(a)
    assert (counts - 1 / 11).abs().max() < 0.01


def test_triplet_sampling_is_seeded_and_checks_arguments():
    t1 = sample_triplets(8, 11, 2, 10, torch.Generator().manual_seed(5))
    t2 = sample_triplets(8, 11, 2, 10, torch.Generator().manual_seed(5))
    t3 = sample_triplets(8, 11, 2, 10, torch.Generator().manual_seed(6))
    assert torch.equal(t1, t2) and not torch.equal(t1, t3)
    with pytest.raises(ValueError, match="C >= window \\+ 2 = 4"):
        sample_triplets(2, 3, 2, 10)
    with pytest.raises(ValueError, match="window"):
        sample_triplets(2, 5, 0, 10)


def test_triplet_loss_matches_manual_computation_and_has_gradient():
    torch.manual_seed(0)
    emb = torch.randn(3, 6, 4, requires_grad=True)
    loss = triplet_loss(emb, 1.0, 1, 5, torch.Generator().manual_seed(9))
    t = sample_triplets(3, 6, 1, 5, torch.Generator().manual_seed(9))
    s = torch.arange(3).repeat_interleave(5)
    d_ap = (emb[s, t[:, 0]] - emb[s, t[:, 1]]).norm(dim=1)
    d_an = (emb[s, t[:, 0]] - emb[s, t[:, 2]]).norm(dim=1)
    expected = (d_ap - d_an + 1.0).clamp(min=0).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    loss.backward()
    assert emb.grad is not None and emb.grad.abs().sum() > 0


def test_triplet_loss_zero_when_structure_satisfied():
    # embeddings on a line far apart: near chunks are much closer than far ones, so margin 1 is met
    pos = torch.arange(11, dtype=torch.float32) * 10.0
    emb = pos.view(1, 11, 1).repeat(4, 1, 1)
    assert triplet_loss(emb, 1.0, 2, 10, torch.Generator().manual_seed(0)).item() == 0.0
    with pytest.raises(ValueError, match="\\[B, C, D\\]"):
        triplet_loss(torch.zeros(4, 11), 1.0, 2, 10)
