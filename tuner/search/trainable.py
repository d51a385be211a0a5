"""The Ray Tune function trainable: one trial trains one DeepEmoCluster model epoch by epoch.

The trial opens the feature store by path (memory-mapped in this process; the store never goes
into Ray's object store), builds the Trainer from the sampled config, restores from the trial's
last checkpoint when Ray hands one over (a retried or resumed trial), and reports the metrics and a
checkpoint after every epoch (a callback of Trainer.fit, the one epoch loop) so that a scheduler can
stop it between epochs. Each checkpoint also holds every epoch's report so far (`REPORTED`, JSON): the
record a resumed driver rebuilds the trial's rows from (tuner.runs.checkpoint_reports).
"""
from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from tuner.runs.checkpoint_reports import REPORTED, read_reported
from tuner.space.schema import trial_threads

if TYPE_CHECKING:
    from tuner.runs.config_errors import ConfigErrorRecorder


def best_so_far(history: list[dict[str, Any]], metric: str, mode: str) -> float | None:
    """The best finite value of `metric` over a trial's epochs (None before any)."""
    values = [float(m[metric]) for m in history if metric in m and math.isfinite(float(m[metric]))]
    if not values:
        return None
    return max(values) if mode == "max" else min(values)


def _peak_rss_mb() -> float:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def train_trial(config: dict[str, Any], store_path: str, cpus: float, gpus: float,
                first_keys: tuple[str, ...] = (), on_last_epoch: Callable[[Any, str], dict] | None = None,
                finished: frozenset[str] = frozenset(), ranked: tuple[tuple[str, str], ...] = (),
                config_errors: ConfigErrorRecorder | None = None, selection: tuple[str, str] | None = None) -> None:
    """Ray Tune function trainable: train `config` on the store at `store_path`, reporting each epoch.

    `first_keys` come first in every report (Ray's progress table shows the first four). A trial in
    `finished` (resumed, but its study had finished it before the driver died) returns at once: Ray ends it
    with its last result.
    `on_last_epoch(trainer, checkpoint_dir)`, when given, runs after the last epoch's checkpoint is saved
    and before it is reported: it may add files to that checkpoint and returns metrics to report with it.
    For each (metric, mode) in `ranked`, `best_<metric>` is the trial's best value so far
    (scheduler.rank_by: best). `selection`: the (metric, mode) that picks the trial's best model (the
    search's metric; default the trainer's, val_ccc_mean), so that best_model.pt is the best epoch's.
    `config_errors`: records a configuration the store cannot train (a UserError while the trial sets up) instead
    of raising it, so that Ray does not retry it (tuner.runs.config_errors): a search's condition and a confirmation
    (experiment `confirm`) pass one; None: raised."""
    from ray import tune

    from tuner.search.hold import hold_after, hold_epoch

    if tune.get_context().get_trial_id() in finished:
        return
    started = _trainer(config, store_path, cpus, gpus, config_errors, selection)
    if started is None:   # a configuration error, recorded: the trial ends without a result
        return
    trainer, reported = started
    held = hold_epoch(config)   # tests only (tuner.search.hold)
    epoch_start = time.perf_counter()

    def report(metrics: dict[str, Any]) -> None:
        """After each epoch of Trainer.fit: checkpoint into a fresh folder and report both to Ray Tune."""
        nonlocal epoch_start
        epoch_s = time.perf_counter() - epoch_start
        with tempfile.TemporaryDirectory(prefix="trial-ckpt-") as directory:
            metrics = _checkpointed(trainer, directory, metrics, epoch_s, ranked)
            if on_last_epoch is not None and trainer.epoch >= trainer.config.epochs:
                metrics.update(on_last_epoch(trainer, directory))
            metrics = {**{k: metrics[k] for k in first_keys if k in metrics}, **metrics}
            if reported is not None:
                reported.append(metrics)
                (Path(directory) / REPORTED).write_text(json.dumps(reported))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
        hold_after(trainer.epoch, held)
        epoch_start = time.perf_counter()

    trainer.fit(report)   # the trainer's own epoch loop; Ray's checkpoints replace fit's checkpoint_dir


def _trainer(config: dict[str, Any], store_path: str, cpus: float, gpus: float,
             config_errors: ConfigErrorRecorder | None,
             selection: tuple[str, str] | None) -> tuple[Any, list | None] | None:
    """The trial's Trainer (CVTrainer for cv_folds) on this node's copy of the store, restored from the
    checkpoint Ray hands over, and the reports that checkpoint holds ([] for a fresh trial; None: continued
    from a checkpoint without them). None: the configuration cannot train on the store, recorded by `config_errors`."""
    import torch
    from ray import tune

    from model.config import TrainConfig
    from model.cpu_memory import keep_freed_blocks_in_malloc
    from model.cv import make_trainer
    from model.errors import UserError
    from tuner.storage.store_sync import ensure_local_store

    keep_freed_blocks_in_malloc()   # this thread shares the worker's one arena (tuner.search.experiment.start_ray)
    threads = trial_threads(cpus)
    torch.set_num_threads(threads)
    values = {**config, "num_threads": threads, "device": "cuda" if gpus > 0 else "cpu"}
    # a bucket URI is copied to this node's disk once (file lock), then memory-mapped like a local store; a copy
    # that fails stays an exception (Ray retries the trial)
    local_store = str(ensure_local_store(store_path))
    try:
        train_config = TrainConfig.from_dict(values, source="trial config")
        trainer = make_trainer(train_config, local_store)   # CVTrainer for cv_folds
        if selection is not None:   # a metric this configuration never reports is a configuration error
            trainer.select_best_by(*selection)
    except UserError as exc:
        if config_errors is None:
            raise
        folder = Path(tune.get_context().get_trial_dir()).name
        config_errors.record(folder, str(exc))
        print(f"[tuner] {folder}: {exc} (a configuration error: the trial ends, it is not retried)")
        return None
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return trainer, []
    with checkpoint.as_directory() as directory:
        trainer.load_checkpoint(directory)
        return trainer, read_reported(directory)


def _checkpointed(trainer, directory: str, metrics: dict[str, Any], epoch_s: float,
                  ranked: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """The epoch's finite metrics once the trainer's checkpoint is in `directory`, with the time it took, the
    epoch's time, peak memory and each ranked metric's best so far."""
    import torch

    from model.metrics import finite_metrics

    metrics = finite_metrics(metrics)
    ckpt_start = time.perf_counter()
    trainer.save_checkpoint(directory)
    metrics["time_checkpoint_s"] = time.perf_counter() - ckpt_start
    metrics["time_run_epoch_s"] = epoch_s
    metrics["peak_rss_mb"] = _peak_rss_mb()
    if trainer.device.type == "cuda":  # what torch's allocator held at most (no CUDA context)
        metrics["peak_gpu_mb"] = torch.cuda.max_memory_reserved(trainer.device) / 2**20
    metrics["epoch"] = float(trainer.epoch)
    for metric, mode in ranked:
        best = best_so_far(trainer.history, metric, mode)
        if best is not None:
            metrics[f"best_{metric}"] = best
    return metrics
