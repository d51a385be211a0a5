"""The Ray Tune function trainable: one trial trains one DeepEmoCluster model epoch by epoch.

The trial opens the feature store by path (memory-mapped in this process; the store never goes
into Ray's object store), builds the Trainer from the sampled config, restores from the trial's
last checkpoint when Ray hands one over (a retried or resumed trial), and reports the metrics and a
checkpoint after every epoch (a callback of Trainer.fit, the one epoch loop) so that a scheduler can
stop it between epochs. Each checkpoint also holds every epoch's report so far (`REPORTED`, JSON): the
record a resumed driver rebuilds the trial's rows from (tuner.trial_record).
"""
from __future__ import annotations

import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from tuner.config_errors import ErrorFolder

# Metric name -> TensorBoard tag; every reported metric gets a tag under val/, train/, ssl/,
# cluster/ or time/ (tuner.tensorboard_log writes them).
TAG_PREFIXES = (("best_val_", "val/best_"), ("best_", "best/"), ("kmeans_objective", "cluster/objective"),
                ("chunks_per_s", "time/chunks_per_s"), ("ssl_cluster_", "ssl/cluster_"), ("val_", "val/"),
                ("ssl_", "ssl/"), ("loss_", "train/loss_"), ("time_", "time/"), ("cluster_", "cluster/"),
                ("nmi", "cluster/nmi"), ("fold", "folds/fold"), ("is_best", "val/is_best"),
                ("peak_rss_mb", "resources/peak_rss_mb"), ("peak_gpu_mb", "resources/peak_gpu_mb"))
TRAINER_PEAK_RSS = "peak_rss_mb"
REPORTED = "reported.json"   # in each trial checkpoint: the metrics reported for epochs 1..k, in order


def tag_for(metric: str) -> str:
    """TensorBoard tag of a reported metric: val_ccc_act -> val/ccc_act, nmi -> cluster/nmi."""
    for prefix, tag in TAG_PREFIXES:
        if metric.startswith(prefix):
            return tag + metric[len(prefix):]
    return f"other/{metric}"


def trial_threads(cpus: float) -> int:
    """The torch/faiss threads of a trial given its CPUs (at least 1)."""
    return max(1, int(cpus))


def best_so_far(history: list[dict[str, Any]], metric: str, mode: str) -> float | None:
    """The best finite value of `metric` over a trial's epochs (None before any)."""
    values = [float(m[metric]) for m in history if metric in m and math.isfinite(float(m[metric]))]
    if not values:
        return None
    return max(values) if mode == "max" else min(values)


def _peak_rss_mb() -> float:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def read_reported(directory: str | Path) -> list[dict[str, Any]] | None:
    """The reports a trial checkpoint holds (None for a checkpoint written before they were kept)."""
    path = Path(directory) / REPORTED
    return parse_reported(path.read_bytes(), str(path)) if path.exists() else None


def parse_reported(data: bytes, where: str) -> list[dict[str, Any]] | None:
    """A checkpoint's REPORTED file; damaged (not JSON, not a list of objects), a warning naming it and None:
    the trial is then continued as from a checkpoint written before reports were kept (its record as stored)."""
    try:
        reports = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        reports = None
    if isinstance(reports, list) and all(isinstance(r, dict) for r in reports):
        return reports
    print(f"warning: {where}: damaged (expected a JSON list of epoch reports); the trial's result rows are "
          "kept as stored", file=sys.stderr)
    return None


def train_trial(config: dict[str, Any], store_path: str, cpus: float, gpus: float,
                first_keys: tuple[str, ...] = (), finish: Callable[[Any, str], dict] | None = None,
                finished: frozenset[str] = frozenset(), ranked: tuple[tuple[str, str], ...] = (),
                errors: ErrorFolder | None = None, selection: tuple[str, str] | None = None) -> None:
    """Ray Tune function trainable: train `config` on the store at `store_path`, reporting each epoch.

    `first_keys` come first in every report (Ray's progress table shows the first four). A trial in
    `finished` (resumed, but already finished before the driver died) returns at once: Ray ends it
    with its last result.
    `finish(trainer, checkpoint_dir)`, when given, runs after the last epoch's checkpoint is saved and
    before it is reported: it may add files to that checkpoint and returns metrics to report with it.
    For each (metric, mode) in `ranked`, `best_<metric>` is the trial's best value so far
    (scheduler.rank_by: best). `selection`: the (metric, mode) that picks the trial's best model (the
    search's metric; default the trainer's, val_ccc_mean), so that best_model.pt is the best epoch's.
    `errors`: where a configuration the store cannot train (a UserError
    while the trial sets up) is recorded instead of raised, so that Ray does not retry it; None: raised."""
    import torch
    from ray import tune

    if tune.get_context().get_trial_id() in finished:
        return

    from model.config import TrainConfig
    from model.cpu_memory import keep_freed_memory
    from model.cv import make_trainer
    from model.errors import UserError
    from model.metrics import finite_metrics
    from tuner.hold import hold_after, hold_epoch
    from tuner.store_sync import ensure_local_store

    keep_freed_memory()   # this thread shares the worker's one arena (tuner.experiment.start_ray)
    threads = trial_threads(cpus)
    torch.set_num_threads(threads)
    values = {**config, "num_threads": threads, "device": "cuda" if gpus > 0 else "cpu"}
    # a bucket URI is copied to this node's disk once (file lock), then memory-mapped like a local store; a copy
    # that fails stays an exception (Ray retries the trial)
    local_store = str(ensure_local_store(store_path))
    try:
        train_config = TrainConfig.from_dict(values, source="trial config")
        trainer = make_trainer(train_config, local_store)   # CVTrainer for cv_folds
        if selection is not None:
            trainer.selection = selection
    except UserError as exc:
        if errors is None:
            raise
        folder = Path(tune.get_context().get_trial_dir()).name
        errors.record(folder, str(exc))
        print(f"[tuner] {folder}: {exc} (a configuration error: the trial ends, it is not retried)")
        return

    checkpoint = tune.get_checkpoint()
    reported: list[dict[str, Any]] | None = []   # None: continued from a checkpoint without them
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            trainer.load_checkpoint(directory)
            reported = read_reported(directory)

    held = hold_epoch(config)   # tests only (tuner.hold)
    epoch_start = time.perf_counter()

    def report(metrics: dict[str, Any]) -> None:
        """After each epoch of Trainer.fit: checkpoint into a fresh folder and report both to Ray Tune."""
        nonlocal epoch_start
        metrics = finite_metrics(metrics)
        epoch_s = time.perf_counter() - epoch_start
        with tempfile.TemporaryDirectory(prefix="trial-ckpt-") as directory:
            ckpt_start = time.perf_counter()
            trainer.save_checkpoint(directory)
            metrics["time_checkpoint_s"] = time.perf_counter() - ckpt_start
            metrics["time_run_epoch_s"] = epoch_s
            metrics[TRAINER_PEAK_RSS] = _peak_rss_mb()
            if trainer.device.type == "cuda":  # what torch's allocator held at most (no CUDA context)
                metrics["peak_gpu_mb"] = torch.cuda.max_memory_reserved(trainer.device) / 2**20
            metrics["epoch"] = float(trainer.epoch)
            for metric, mode in ranked:
                best = best_so_far(trainer.history, metric, mode)
                if best is not None:
                    metrics[f"best_{metric}"] = best
            if finish is not None and trainer.epoch >= train_config.epochs:
                metrics.update(finish(trainer, directory))
            metrics = {**{k: metrics[k] for k in first_keys if k in metrics}, **metrics}
            if reported is not None:
                reported.append(metrics)
                (Path(directory) / REPORTED).write_text(json.dumps(reported))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
        hold_after(trainer.epoch, held)
        epoch_start = time.perf_counter()

    trainer.fit(report)   # the trainer's own epoch loop; Ray's checkpoints replace fit's checkpoint_dir
