"""Tests of model.clustering: faiss k-means, whitening, empty-cluster re-seeding and input errors."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from model import clustering
from model.clustering import kmeans, pca_whiten
from model.errors import UserError
from model.metrics import nmi


def _blobs(n_per: int, k: int, d: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """k well-separated Gaussian blobs and their true labels."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d)) * 20
    truth = np.repeat(np.arange(k), n_per)
    return (centres[truth] + rng.standard_normal((len(truth), d))).astype(np.float32), truth


def test_kmeans_recovers_separated_blobs():
    x, truth = _blobs(40, 4, seed=1)
    runs = [kmeans(x, 4, seed=s) for s in range(8)]
    # faiss initialises from random points, so a seed may land in a local minimum; the best run must not
    r = min(runs, key=lambda run: run.objective)
    assert len({run.objective for run in runs}) > 1  # the seed reaches faiss
    assert r.assignments.dtype == np.int64 and r.assignments.shape == (160,)
    assert r.sizes.dtype == np.int64 and r.sizes.tolist() == np.bincount(r.assignments, minlength=4).tolist()
    assert nmi(truth, r.assignments) == pytest.approx(1.0)
    assert r.reseeded == 0
    assert r.seconds >= 0


def test_kmeans_objective_is_within_cluster_sum_of_squares():
    x, _ = _blobs(30, 4, seed=3)
    r = kmeans(x, 4, seed=1)
    expected = sum(((x[r.assignments == c] - x[r.assignments == c].mean(0)) ** 2).sum() for c in range(4))
    assert r.objective == pytest.approx(float(expected), rel=1e-4)
    # about d = 8 unit variances per point for well-separated blobs
    assert r.objective / len(x) == pytest.approx(8.0, rel=0.3)


def test_kmeans_deterministic_for_a_seed():
    x = np.random.default_rng(5).standard_normal((600, 16)).astype(np.float32)
    a, b = kmeans(x, 7, seed=11), kmeans(x, 7, seed=11)
    np.testing.assert_array_equal(a.assignments, b.assignments)
    assert a.objective == b.objective
    big = kmeans(x, 7, seed=2**40 + 11)  # any integer seed works; faiss gets it modulo 2**31
    np.testing.assert_array_equal(big.assignments, kmeans(x, 7, seed=2**40 + 11).assignments)


def test_duplicated_points_force_reseeding_and_no_cluster_stays_empty():
    x = np.zeros((20, 4), dtype=np.float32)
    r = kmeans(x, 5, seed=0)
    assert (r.sizes > 0).all() and r.sizes.sum() == 20
    assert r.reseeded >= 1
    # three distinct points, duplicated: at most 3 clusters can be found, 2 must be re-seeded
    x = np.repeat(np.eye(3, dtype=np.float32) * 5, [10, 6, 4], axis=0)
    r = kmeans(x, 5, seed=2)
    assert r.reseeded >= 2 and (r.sizes > 0).all() and r.sizes.sum() == 20
    r2 = kmeans(x, 5, seed=2)
    np.testing.assert_array_equal(r.assignments, r2.assignments)


def test_reseed_splits_the_largest_cluster_in_half():
    x = np.random.default_rng(0).standard_normal((10, 3)).astype(np.float32)
    assignments = np.array([0] * 8 + [1] * 2, dtype=np.int64)
    count = clustering._reseed_empty(x, assignments, 4, np.random.default_rng(0))
    sizes = np.bincount(assignments, minlength=4)
    assert count == 2
    assert sorted(sizes.tolist()) == [2, 2, 2, 4]  # 8 -> 4 + 4, then one of the two 4s -> 2 + 2
    assert (assignments[8:] == 1).all()  # the small cluster is untouched


def test_k_equals_n_gives_singletons_and_k2_works():
    x, _ = _blobs(1, 6)
    r = kmeans(x, 6)
    assert r.sizes.tolist() == [1] * 6
    x, truth = _blobs(25, 2, seed=4)
    assert nmi(truth, kmeans(x, 2).assignments) == pytest.approx(1.0)


def test_fewer_samples_than_clusters_is_a_user_error():
    with pytest.raises(UserError) as err:
        kmeans(np.zeros((7, 4), dtype=np.float32), 10)
    message = str(err.value)
    assert "7" in message and "10" in message and "fewer" in message and "num_clusters" in message


def test_non_finite_embeddings_are_a_user_error():
    x = np.random.default_rng(0).standard_normal((30, 4)).astype(np.float32)
    x[3, 1] = np.nan
    x[7, 0] = np.inf
    with pytest.raises(UserError, match="2 of 30"):
        kmeans(x, 3)
    with pytest.raises(UserError, match="2-D"):
        kmeans(np.zeros(30, dtype=np.float32), 3)


def test_gpu_request_without_gpus_is_a_user_error(monkeypatch):
    monkeypatch.setattr(clustering, "_faiss_gpus", lambda faiss: 0)
    with pytest.raises(UserError, match="GPU"):
        kmeans(np.zeros((10, 2), dtype=np.float32), 2, use_gpu=True)


def test_whitening_unit_rows_and_decorrelated():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((500, 6)) @ np.diag([10, 5, 1, 0.5, 0.1, 0.05])).astype(np.float32)
    y = pca_whiten(x)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, rtol=1e-5)
    var = y.var(axis=0)
    assert var.max() / var.min() < 2.0  # every direction gets a similar share after whitening
    # a dead (constant) dimension is dropped rather than amplified into noise
    x[:, 2] = 3.0
    y = pca_whiten(x)
    assert y.shape == (500, 5) and np.isfinite(y).all()
    r = kmeans(x, 4, whiten=True)
    assert (r.sizes > 0).all()
    # anisotropic blobs: whitening still lets k-means find them, and the result is usable
    x, truth = _blobs(30, 3, d=4, seed=7)
    r = kmeans(x * np.array([100, 1, 1, 1], dtype=np.float32), 3, whiten=True)
    assert (r.sizes > 0).all() and nmi(truth, r.assignments) > 0.5


def test_large_input_is_subsampled_but_every_point_assigned():
    x, truth = _blobs(600, 2, d=4, seed=8)  # 1200 > 256 * 2 points: faiss trains on a subsample
    r = kmeans(x, 2, seed=0)
    assert r.assignments.shape == (1200,)
    assert nmi(truth, r.assignments) == pytest.approx(1.0)


def test_faiss_is_quiet_and_threads_restored(capfd):
    import faiss

    before = faiss.omp_get_max_threads()
    kmeans(np.random.default_rng(0).standard_normal((30, 4)).astype(np.float32), 5)
    assert faiss.omp_get_max_threads() == before
    out, err = capfd.readouterr()
    assert "WARNING" not in out + err


def test_faiss_threads_follow_torch(monkeypatch):
    import faiss
    import torch

    calls: list[int] = []
    real = faiss.omp_set_num_threads
    monkeypatch.setattr(faiss, "omp_set_num_threads", lambda n: (calls.append(n), real(n)))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        kmeans(np.random.default_rng(0).standard_normal((40, 3)).astype(np.float32), 4)
    finally:
        torch.set_num_threads(before)
    assert calls[0] == 1  # capped to torch's thread count while clustering, then restored
    assert len(calls) == 2


def test_cuda_node_without_gpu_faiss_warns_naming_the_extra(monkeypatch):
    import torch

    monkeypatch.setattr(clustering, "_faiss_gpus", lambda faiss: 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(clustering, "_warned_cpu_on_gpu_node", False)
    x, _ = _blobs(20, 2, d=3, seed=3)
    with pytest.warns(RuntimeWarning, match=r"deepemocluster-tuner\[gpu\].*faiss-gpu") as caught:
        r = kmeans(x, 2, use_gpu=None)   # the trainer's choice on a CUDA device: GPU if faiss has one
    assert (r.sizes > 0).all()           # it still clusters (on the CPU), and said so
    assert "faiss-cpu" in str(caught[0].message)  # names the build that is installed
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kmeans(x, 2, use_gpu=None)       # once per process, not every epoch
        kmeans(x, 2, use_gpu=False)      # an explicit CPU choice is not warned about


def test_missing_faiss_is_a_user_error_naming_the_extras(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss raises ImportError
    with pytest.raises(UserError, match=r'deepemocluster-tuner\[cpu\]".*\[gpu\]'):
        kmeans(np.zeros((10, 2), dtype=np.float32), 2)
