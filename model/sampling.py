"""Cluster-balanced sampling of sentences and chunks, and the speaker-stratified labeled split (all seeded)."""
from __future__ import annotations

import numpy as np


def _check_assignments(assignments: np.ndarray, k: int) -> np.ndarray:
    """Return the assignments as int64, raising ValueError if an id lies outside 0..k-1."""
    a = np.asarray(assignments, dtype=np.int64)
    if a.size and (a.min() < 0 or a.max() >= k):
        raise ValueError(f"cluster ids must lie in 0..{k - 1}, got {a.min()}..{a.max()}")
    return a


def sentence_weights(assignments: np.ndarray, k: int) -> np.ndarray:
    """Sampling weight per sentence: sum over its chunks of 1/size(chunk's cluster), normalised to sum 1."""
    a = _check_assignments(assignments, k)
    if a.ndim != 2:
        raise ValueError(f"assignments must be [sentences, chunks], got shape {a.shape}")
    if a.size == 0:
        return np.full(a.shape[0], 1.0 / a.shape[0]) if a.shape[0] else np.zeros(0)
    sizes = np.bincount(a.ravel(), minlength=k)  # every id present has size >= 1: no division by zero
    weights = (1.0 / sizes[a]).sum(axis=1)
    return weights / weights.sum()


def sample_sentences(assignments: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Draw as many sentence indices as there are sentences, with replacement, by `sentence_weights`."""
    weights = sentence_weights(assignments, k)
    return rng.choice(len(weights), size=len(weights), replace=True, p=weights).astype(np.int64)


def sample_chunks(assignments_flat: np.ndarray, k: int, rng: np.random.Generator,
                  n_samples: int | None = None) -> np.ndarray:
    """Vanilla DeepEmoCluster: pick a non-empty cluster uniformly, then a chunk uniformly in it."""
    a = _check_assignments(assignments_flat, k).ravel()
    n_samples = len(a) if n_samples is None else int(n_samples)
    if len(a) == 0 or n_samples == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(a, kind="stable")  # chunk indices grouped by cluster
    sizes = np.bincount(a, minlength=k)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    nonempty = np.flatnonzero(sizes)
    clusters = nonempty[rng.integers(0, len(nonempty), size=n_samples)]
    within = rng.integers(0, sizes[clusters])
    return order[starts[clusters] + within].astype(np.int64)


def _round(x: np.ndarray | float) -> np.ndarray:
    """Round half up (not to even), so 2.5 -> 3."""
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5).astype(np.int64)


def split_labeled(speakers: np.ndarray, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """Keep labels for a speaker-stratified fraction `ratio` of the utterances; returns a boolean mask."""
    spk = np.asarray(speakers).ravel()
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"labeled ratio must lie in [0, 1], got {ratio}")
    n = len(spk)
    if ratio == 0.0 or n == 0:
        return np.zeros(n, dtype=bool)
    codes, inverse, counts = np.unique(spk, return_inverse=True, return_counts=True)
    exact = ratio * counts
    quota = np.clip(_round(exact), 1, counts)  # at least one per speaker
    target = int(_round(ratio * n))
    tiebreak = rng.random(len(codes))  # random order among speakers with the same rounding error
    while quota.sum() != target:
        if quota.sum() > target:  # take one from the speaker rounded up the most (never below 1)
            can = quota > 1
            key = np.where(can, quota - exact, -np.inf)
        else:  # give one to the speaker rounded down the most (never above its count)
            can = quota < counts
            key = np.where(can, exact - quota, -np.inf)
        if not can.any():
            break  # one label per speaker already exceeds the target: as close as it gets
        best = np.flatnonzero(key == key.max())
        pick = best[np.argmax(tiebreak[best])]
        quota[pick] += 1 if quota.sum() < target else -1
    keep = np.zeros(n, dtype=bool)
    for s in range(len(codes)):
        members = np.flatnonzero(inverse == s)
        keep[rng.permutation(members)[:quota[s]]] = True
    return keep
