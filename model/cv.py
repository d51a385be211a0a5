"""Cross-validation: k Trainers on grouped folds of Train + Validation, advanced in lock-step.

`CVTrainer` has the Trainer's interface (`epoch`, `run_epoch`, `fit`, `save_checkpoint`,
`load_checkpoint`, `save_best_model`), so `train`, search trials and resume use either through
`make_trainer`. Each fold has its own seed (so its own initialisation, k-means seeds and sampling),
its own validation groups and its own best epoch. An epoch's metrics are the folds' means
(`val_ccc_mean` is the mean over folds of each fold's validation CCC: what a scheduler sees), plus
`fold<i>_val_ccc_<attr>` / `fold<i>_val_ccc_mean` per fold. The best epoch is the one whose fold
mean is best (`val_ccc_mean`, what the run reports as `best_val_ccc_mean`; a search trial's own metric,
`selection`), and the best model is a folder of the
fold models at that epoch (`fold_<i>.pt`), which `evaluate` and `predict` average: what is reported
is what is saved.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from model import checkpoint as ckpt
from model.atomic_files import building_dir
from model.checkpoint import CV_BEST_MODEL
from model.config import TrainConfig
from model.errors import UserError
from model.folds import cv_splits
from model.metrics import plain
from model.trainer import SELECTION, Trainer, best_val_ccc, check_resumable, checkpoint_selection, improves

SUMMED = ("cluster_empty", "ssl_cluster_empty")


def fold_seed(seed: int, fold: int) -> int:
    """The seed of fold `fold` (0-based) of a run seeded `seed`."""
    return int(np.random.SeedSequence([seed, 0xCF, fold]).generate_state(1)[0] & 0x7FFFFFFF)


def make_trainer(config: TrainConfig, store) -> "Trainer | CVTrainer":
    """A CVTrainer when config.cv_folds >= 2, else a Trainer; the config's warnings on stderr first."""
    for warning in config.warnings():
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    return CVTrainer(config, store) if config.cv_folds else Trainer(config, store)


def fold_means(per_fold: list[dict[str, Any]]) -> dict[str, Any]:
    """One epoch's metrics over the folds: means, except times and re-seeded clusters (sums) and the
    smallest/largest cluster (min/max)."""
    out: dict[str, Any] = {}
    for key, first in per_fold[0].items():
        if key in ("epoch", "is_best", "best_val_ccc_mean") or isinstance(first, bool) \
                or not isinstance(first, (int, float, np.number)):
            continue
        values = [float(m[key]) for m in per_fold if key in m]
        if key.startswith("time_") or key in SUMMED:
            out[key] = sum(values)
        elif key == "cluster_min":
            out[key] = min(values)
        elif key == "cluster_max":
            out[key] = max(values)
        else:
            out[key] = float(np.mean(values))
    return out


class CVTrainer:
    """k Trainers (one per fold), one epoch of each per run_epoch; see the module docstring."""

    def __init__(self, config: TrainConfig, store):
        from model.store import FeatureStore

        self.config = config
        self.store = store if isinstance(store, FeatureStore) else FeatureStore.open(store)
        splits = cv_splits(self.store, config.cv_folds, config.cv_group, config.seed)
        self.folds = [Trainer(config.replace(seed=fold_seed(config.seed, i)), self.store, split)
                      for i, split in enumerate(splits)]
        for fold in self.folds:
            fold.selects_best = False   # the fold models are kept at the epoch of the best fold mean
        self.device = self.folds[0].device
        self.val_name = f"{config.cv_folds}-fold CV of Train + Validation ({config.cv_group})"
        self.epoch = 0
        self.best_metric = -math.inf
        self.best_epoch = 0
        self.best_metrics: dict[str, Any] | None = None
        self.selection = SELECTION   # (metric, mode) of the folds' means that picks the best epoch
        self.history: list[dict[str, Any]] = []

    fit = Trainer.fit     # the same loop: run_epoch, checkpoint, on_epoch; resumes from checkpoint_dir

    def run_epoch(self) -> dict[str, Any]:
        """The next epoch of every fold; the folds' mean metrics plus each fold's validation CCC."""
        per_fold = [t.run_epoch() for t in self.folds]
        self.epoch += 1
        metrics: dict[str, Any] = {"epoch": self.epoch, **fold_means(per_fold)}
        for i, m in enumerate(per_fold, start=1):
            metrics.update({f"fold{i}_{k}": v for k, v in m.items() if k.startswith("val_ccc_")})
        metrics["is_best"] = improves(metrics, self.selection, None if self.best_metrics is None else self.best_metric)
        if metrics["is_best"]:
            self.best_metric, self.best_epoch = float(metrics[self.selection[0]]), self.epoch
            self.best_metrics = dict(metrics)
            for fold, fold_metrics in zip(self.folds, per_fold):
                fold.keep_as_best(fold_metrics)
        metrics["best_val_ccc_mean"] = best_val_ccc(self)
        self.history.append(dict(metrics))
        return metrics

    def select_best_by(self, metric: str, mode: str) -> None:
        """Pick the best epoch by the folds' mean of `metric` (a search trial's metric); a UserError when a fold
        would never report it."""
        for fold in self.folds:
            fold.select_best_by(metric, mode)
        self.selection = (metric, mode)

    def save_best_model(self, path: str | Path) -> bool:
        """Write the folder `path` of fold models `fold_<i>.pt` atomically; False before the first epoch."""
        if any(t.best_state is None for t in self.folds):
            return False
        with building_dir(path) as tmp:
            for i, t in enumerate(self.folds, start=1):
                t.save_best_model(tmp / f"fold_{i}.pt")
        return True

    def save_checkpoint(self, directory: str | Path) -> Path:
        """Every fold's checkpoint state and the CV bookkeeping, plus the fold models, atomically."""
        state = {
            "epoch": self.epoch,
            "config": self.config.to_dict(),
            "folds": [t.checkpoint_state() for t in self.folds],
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "best_metrics": plain(self.best_metrics) if self.best_metrics else None,
            "history": [plain(m) for m in self.history],
            "selection": list(self.selection),
        }
        ready = all(t.best_state is not None for t in self.folds)
        return ckpt.write_checkpoint(directory, state, {CV_BEST_MODEL: self.save_best_model} if ready else {})

    def load_checkpoint(self, directory: str | Path) -> None:
        """Continue every fold from a checkpoint written by save_checkpoint with a compatible config."""
        state = ckpt.read_checkpoint(directory)
        where = state["_path"]
        check_resumable(state["config"], self.config, where)
        folds = state.get("folds")
        if not isinstance(folds, list) or len(folds) != len(self.folds):
            raise UserError(f"{where}: not a checkpoint of a {len(self.folds)}-fold run")
        for trainer, fold_state in zip(self.folds, folds):
            trainer.restore_state(fold_state, where)
        self.epoch = int(state["epoch"])
        self.best_metric = float(state["best_metric"])
        self.best_epoch = int(state["best_epoch"])
        self.best_metrics = state["best_metrics"]
        self.selection = checkpoint_selection(state)
        self.history = list(state["history"])
