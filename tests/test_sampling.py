"""Tests of model.sampling: cluster-balanced sentence and chunk sampling, and the labeled split."""
from __future__ import annotations

import numpy as np
import pytest

from model.sampling import sample_chunks, sample_sentences, sentence_weights, split_labeled


def test_sentence_weights_hand_computed():
    # sizes over all 6 chunks: cluster 0 -> 3, cluster 1 -> 2, cluster 2 -> 1
    a = np.array([[0, 0], [0, 1], [1, 2]])
    raw = np.array([1 / 3 + 1 / 3, 1 / 3 + 1 / 2, 1 / 2 + 1])
    np.testing.assert_allclose(sentence_weights(a, 3), raw / raw.sum())


def test_sentence_weights_edge_cases():
    # all chunks in one cluster (k larger than used): uniform, no division by zero
    w = sentence_weights(np.zeros((5, 4), dtype=int), 10)
    np.testing.assert_allclose(w, np.full(5, 0.2))
    # C = 1: the weight is 1/size of the sentence's own cluster
    a = np.array([[0], [0], [0], [1]])
    np.testing.assert_allclose(sentence_weights(a, 2), np.array([1 / 3, 1 / 3, 1 / 3, 1.0]) / 2.0)
    # k = 2, balanced clusters give uniform weights
    np.testing.assert_allclose(sentence_weights(np.array([[0, 1], [1, 0]]), 2), [0.5, 0.5])
    with pytest.raises(ValueError, match="0..1"):
        sentence_weights(np.array([[0, 2]]), 2)
    with pytest.raises(ValueError, match="sentences, chunks"):
        sentence_weights(np.array([0, 1]), 2)


def test_sample_sentences_frequencies_match_weights():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, size=(20, 3))
    a[:5] = 0  # make cluster 0 big, so weights differ clearly
    weights = sentence_weights(a, 4)
    draws = np.concatenate([sample_sentences(a, 4, rng) for _ in range(1000)])  # 20k draws
    assert draws.shape == (20000,) and draws.dtype == np.int64
    freq = np.bincount(draws, minlength=20) / len(draws)
    # binomial std of a frequency near 0.05 with 20k draws is ~0.0015; allow 4 sigma
    assert np.abs(freq - weights).max() < 4 * np.sqrt(weights.max() / len(draws))


def test_sample_sentences_balances_clusters_and_is_seeded():
    # one sentence in a rare cluster among many in a common one: it gets drawn far more than 1/n
    a = np.zeros((10, 2), dtype=int)
    a[9] = 1
    draws = sample_sentences(a, 2, np.random.default_rng(1))
    assert len(draws) == 10
    many = np.concatenate([sample_sentences(a, 2, np.random.default_rng(s)) for s in range(200)])
    # sizes 18 and 2: sentence 9 weighs 2/2 = 1, the others 2/18 each (total 1): P(9) = 1/2, not 1/10
    assert np.mean(many == 9) == pytest.approx(0.5, abs=0.04)
    np.testing.assert_array_equal(sample_sentences(a, 2, np.random.default_rng(7)),
                                  sample_sentences(a, 2, np.random.default_rng(7)))


def test_sample_chunks_uniform_over_nonempty_clusters():
    rng = np.random.default_rng(0)
    a = np.array([0] * 90 + [2] * 9 + [3] * 1)  # cluster 1 empty
    idx = sample_chunks(a, 4, rng, n_samples=20000)
    assert idx.shape == (20000,) and idx.min() >= 0 and idx.max() < 100
    cluster_freq = np.bincount(a[idx], minlength=4) / len(idx)
    assert cluster_freq[1] == 0
    np.testing.assert_allclose(cluster_freq[[0, 2, 3]], 1 / 3, atol=0.015)
    # within a cluster, chunks are uniform: the 9 chunks of cluster 2 each ~ 1/27
    within = np.bincount(idx[a[idx] == 2] - 90, minlength=9) / len(idx)
    np.testing.assert_allclose(within, 1 / 27, atol=0.006)
    assert len(sample_chunks(a, 4, rng)) == 100  # default: as many draws as chunks


def test_sample_chunks_single_cluster_and_seed():
    a = np.ones(7, dtype=int)
    idx = sample_chunks(a, 2, np.random.default_rng(0), n_samples=500)
    assert set(idx.tolist()) == set(range(7))
    np.testing.assert_array_equal(sample_chunks(a, 2, np.random.default_rng(3)),
                                  sample_chunks(a, 2, np.random.default_rng(3)))


def test_split_labeled_is_stratified_and_hits_total():
    speakers = np.repeat(np.arange(6), [10, 20, 30, 5, 3, 12])  # 80 utterances
    keep = split_labeled(speakers, 0.25, np.random.default_rng(0))
    assert keep.dtype == bool and keep.shape == (80,)
    assert keep.sum() == 20
    per_speaker = np.array([keep[speakers == s].sum() for s in range(6)])
    exact = 0.25 * np.array([10, 20, 30, 5, 3, 12])
    assert (per_speaker >= 1).all()
    assert np.abs(per_speaker - exact).max() <= 1.0


def test_split_labeled_at_least_one_per_speaker_and_as_close_as_possible():
    speakers = np.repeat(np.arange(10), 4)  # 40 utterances, 10 speakers
    keep = split_labeled(speakers, 0.1, np.random.default_rng(0))  # target 4 < 10 speakers
    assert all(keep[speakers == s].sum() == 1 for s in range(10))
    assert keep.sum() == 10
    # rounding excess removed: 7 speakers x 5 at ratio 0.5 rounds each to 3 (=21) but the total is 18
    speakers = np.repeat(np.arange(7), 5)
    keep = split_labeled(speakers, 0.5, np.random.default_rng(1))
    assert keep.sum() == 18
    assert sorted(keep[speakers == s].sum() for s in range(7)) == [2, 2, 2, 3, 3, 3, 3]


def test_split_labeled_limits_and_determinism():
    speakers = np.array([5, 5, 7, -1, 7, 5, 9, 9])
    assert split_labeled(speakers, 1.0, np.random.default_rng(0)).all()
    assert not split_labeled(speakers, 0.0, np.random.default_rng(0)).any()
    k1 = split_labeled(np.repeat(np.arange(5), 9), 0.4, np.random.default_rng(42))
    k2 = split_labeled(np.repeat(np.arange(5), 9), 0.4, np.random.default_rng(42))
    k3 = split_labeled(np.repeat(np.arange(5), 9), 0.4, np.random.default_rng(43))
    np.testing.assert_array_equal(k1, k2)
    assert not np.array_equal(k1, k3)
    with pytest.raises(ValueError, match="1.5"):
        split_labeled(speakers, 1.5, np.random.default_rng(0))
