"""Grouped k-fold splits of Train + Validation for cross-validation (`cv_folds`, `cv_group`).

Every group (a speaker, or a session) lies in exactly one fold, so a fold's validation utterances
come from groups its training set never saw. Utterances without a group id are their own groups.
Test splits are never part of a fold.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.errors import UserError


@dataclass
class DataSplit:
    """The labeled utterances a Trainer trains on and validates on (store row numbers)."""
    train: np.ndarray
    validation: np.ndarray
    name: str                 # how the validation set was made, e.g. "fold 2/5 (speaker)"


def assign_folds(groups: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold (0..k-1) of each utterance: whole groups, largest first, each to the fold with the fewest
    utterances so far (ties in a seeded random order); -1 (unknown) marks an utterance as its own group."""
    groups = np.asarray(groups, dtype=np.int64).copy()
    unknown = groups < 0
    groups[unknown] = groups.max(initial=0) + 1 + np.arange(int(unknown.sum()))
    names, inverse, sizes = np.unique(groups, return_inverse=True, return_counts=True)
    if len(names) < k:
        raise UserError(f"cv_folds={k} needs at least {k} groups, but Train + Validation hold {len(names)}; "
                        "lower cv_folds or group by another column (cv_group)")
    rng = np.random.default_rng([seed, 0xF01D])
    order = rng.permutation(len(names))
    order = order[np.argsort(-sizes[order], kind="stable")]      # largest first, shuffled among equals
    fold_of_group = np.empty(len(names), dtype=np.int64)
    totals = np.zeros(k, dtype=np.int64)
    for g in order:
        fold = int(np.argmin(totals))
        fold_of_group[g] = fold
        totals[fold] += sizes[g]
    return fold_of_group[inverse]


def cv_splits(store, k: int, column: str, seed: int) -> list[DataSplit]:
    """k DataSplits of the store's labeled Train + Validation utterances, grouped by `column`."""
    roles = store.roles
    names = [roles.get("train"), roles.get("validation")]
    names = [n for n in names if n in store.splits]
    ids = np.asarray(store.ids(names, labeled=True), dtype=np.int64) if names else np.zeros(0, np.int64)
    if len(ids) == 0:
        raise UserError(f"{store.path}: no labeled Train or Validation utterances to make cross-validation folds of")
    fold = assign_folds(store.groups(ids, column), k, seed)
    return [DataSplit(ids[fold != i], ids[fold == i], f"fold {i + 1}/{k} ({column})") for i in range(k)]
