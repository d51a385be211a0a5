"""The search driver: Ray start-up, resource checks, one Tuner (one Optuna study) per condition.

`run_search` starts a run, `resume_search` continues one after the driver died; both go through
`_run_conditions`, which runs the conditions' studies side by side (tuner.search.side_by_side; or one after
another with `run --sequential`) and records each one's state in the run manifest, so that a resume
skips finished studies, restores interrupted ones (Tuner.restore: unfinished and errored trials
continue from their checkpoints, the searcher re-opens its durable Optuna study, ASHA gets its rungs
back) and starts the ones that never began.
"""
from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from model.devices import usable_cpus
from model.errors import UserError
from tuner.runs.config_errors import ConfigErrorRecorder
from tuner.runs.studies import (JOURNAL_STORAGE, check_storage_url, fetch_journal, open_storage,
                                   storage_setting, upload_journal)
from tuner.runs.run_dir import RunDir, condition_trainable, new_manifest, space_from_manifest
from tuner.space.schema import SearchSpace, SpaceSampler, best_metric, condition_label
from tuner.search.stop_signals import ray_start, tune_stop
from tuner.storage.store_sync import check_store
from tuner.runs.trials import read_condition

LOOPBACK_IP = "127.0.0.2"   # Ray rewrites 127.0.0.1/localhost to the network address
# Each trial keeps its CHECKPOINTS_KEPT most recent checkpoints (Ray's default order, not the best by the
# metric): Ray forces an experiment snapshot after that many checkpoints of a trial, so the checkpoint the
# last snapshot names is kept until the next one (but for a short window, docs/resume.md); every checkpoint
# holds the trial's best model so far (best_model.pt).
CHECKPOINTS_KEPT = 3
MAX_FAILURES = 2
# Ray's progress table shows the first four metrics a trial reports: these, after the searched ones.
PROGRESS_COLUMNS = ("val_ccc_mean", "loss_total", "nmi", "time_epoch_s")
REUSE_ACTORS = True  # a trial process keeps torch imported for the next trial: less start-up per trial


def start_ray(address: str | None, num_cpus: int | None = None) -> str:
    """Join the cluster at `address` (`auto`: the running one) or start a local one on loopback.

    The job's workers, on every node, start with the allocator setting (model.cpu_memory): a trial
    trains in a thread of its worker, which keeps freed memory only with one malloc arena."""
    import ray

    from model.cpu_memory import worker_environment

    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    if ray.is_initialized():
        return "existing"
    runtime_env = {"env_vars": worker_environment()}
    if address:
        try:
            with ray_start():   # SIGTERM stays ours (tuner.search.stop_signals), not Ray's
                ray.init(address=address, include_dashboard=False, log_to_driver=True, runtime_env=runtime_env)
        except ConnectionError as exc:
            raise UserError(f"--address {address}: cannot join a Ray cluster there: {exc}") from None
        return address
    # address="local": a new Ray of our own, even when RAY_ADDRESS points elsewhere
    with ray_start():
        ray.init(address="local", num_cpus=num_cpus or usable_cpus(), _node_ip_address=LOOPBACK_IP,
                 include_dashboard=False, log_to_driver=True, runtime_env=runtime_env)
    return "local"


def check_resources(space: SearchSpace, where: str) -> None:
    """Fail before tuner.fit when no node could ever hold one trial's resources."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    max_cpu = max((n["Resources"].get("CPU", 0.0) for n in nodes), default=0.0)
    max_gpu = max((n["Resources"].get("GPU", 0.0) for n in nodes), default=0.0)
    cpu, gpu = space.resources.cpu, space.resources.gpu
    if gpu > 0 and max_gpu == 0:
        raise UserError(f"{space.source}: resources.gpu={gpu:g} but the Ray cluster ({where}, {len(nodes)} "
                        "node(s)) has no GPU; set resources.gpu: 0 or join a cluster with GPUs (--address)")
    if gpu > max_gpu:
        raise UserError(f"{space.source}: resources.gpu={gpu:g} but the largest node has {max_gpu:g} GPU(s)")
    if cpu > max_cpu:
        raise UserError(f"{space.source}: resources.cpu={cpu:g} but the largest node of the Ray cluster "
                        f"({where}) has {max_cpu:g} CPU(s); lower resources.cpu")


def make_searcher(space: SearchSpace, condition: dict[str, Any], index: int, run: RunDir, storage_setting: str):
    """A StudySearcher (OptunaSearch over the run's durable study): seeded TPE, random, or multi-objective TPE."""
    import optuna

    from tuner.search.study_searcher import StudySearcher

    seed = space.searcher.seed + index  # each condition's study gets its own, reproducible stream
    if space.searcher.type == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=space.searcher.n_startup_trials)
    metric = space.metrics if space.multi_objective else space.metric
    mode = space.modes if space.multi_objective else space.mode
    return StudySearcher(space=SpaceSampler(space, condition), metric=metric, mode=mode, sampler=sampler,
                         run=run, label=condition_label(condition), storage_setting=storage_setting,
                         epochs=space.budget.max_epochs, condition=condition)


def make_scheduler(space: SearchSpace, run: RunDir, label: str):
    """ASHA (default; rungs rebuilt on resume, tuner.search.scheduler_state), HyperBand, median stopping or none
    (FIFO), on training iterations (= epochs); metric and mode reach it through TuneConfig."""
    from ray.tune.schedulers import FIFOScheduler, HyperBandScheduler

    from tuner.search.scheduler_state import ResultlessMedian, ResumableASHA

    s, max_t = space.scheduler, space.budget.max_epochs
    # rank_by best: the scheduler judges best_<metric> (its own metric; TuneConfig then has none)
    ranked = {"metric": best_metric(space.metric), "mode": space.mode} if s.rank_by == "best" else {}
    if s.type == "asha":
        return ResumableASHA(run, label, time_attr="training_iteration", max_t=max_t,
                             grace_period=s.grace_period, reduction_factor=s.reduction_factor, **ranked)
    if s.type == "hyperband":
        return HyperBandScheduler(time_attr="training_iteration", max_t=max_t, reduction_factor=s.reduction_factor,
                                  **ranked)
    if s.type == "median":
        return ResultlessMedian(time_attr="training_iteration", grace_period=s.grace_period,
                                  min_samples_required=s.min_samples_required, **ranked)
    return FIFOScheduler()


def trial_dirname(trial) -> str:
    """Short trial folders: `trial_<id>` (Ray's default name holds the whole config)."""
    return f"trial_{trial.trial_id}"


def make_trainable(space: SearchSpace, store: str, trainable=None, name: str | None = None, **params):
    """The function trainable (default train_trial; `params` go to it) with its store path and
    resources attached (fractional GPU allowed).

    `name`: the name Ray registers it under (default the function's): Ray names a function trainable
    by its `__name__`, and its registry keeps one trainable per name, so each condition's gets its own
    (tuner.runs.run_dir.trainable_name) and keeps its own parameters when the studies run side by side."""
    from ray import tune

    from tuner.search.trainable import train_trial

    if trainable is None:  # train_trial reports best_<metric> for scheduler.rank_by: best, keeps the best model by
        # the search's (first) metric
        trainable, params = train_trial, {"ranked": tuple(zip(space.metrics, space.modes)),
                                          "selection": (space.metric, space.mode), **params}
    fn = tune.with_parameters(trainable, store_path=store, cpus=space.resources.cpu, gpus=space.resources.gpu,
                              first_keys=list(dict.fromkeys([*space.metrics, *PROGRESS_COLUMNS]))[:4], **params)
    if name is not None:
        fn.__name__ = name
    return tune.with_resources(fn, {"cpu": space.resources.cpu, "gpu": space.resources.gpu})


def hparam_names(space: SearchSpace) -> list[str]:
    """The hyperparameters shown in TensorBoard's HParams table: conditions and parameters."""
    return list(dict.fromkeys([*space.conditions, *(p.name for p in space.parameters)]))


def make_tuner(space: SearchSpace, condition: dict[str, Any], index: int, run: RunDir, store: str,
               storage_setting: str, side_by_side: bool = False, trainable: str | None = None):
    """A fresh Tuner for one condition: OptunaSearch + scheduler, results at RUN/<condition>.

    `side_by_side`: max_concurrent_trials counts the trials of the whole run (tuner.search.side_by_side).
    `trainable`: the name Ray registers the condition's trainable under (make_trainable)."""
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback

    from tuner.runs.result_log import ResultJsonLogger
    from tuner.runs.tensorboard_log import TensorBoardCallback

    # the searcher has its metric; TuneConfig passes one to the scheduler unless it judges its own
    single = not space.multi_objective and space.scheduler.rank_by == "current"
    label = condition_label(condition)
    searcher, limit = make_searcher(space, condition, index, run, storage_setting), space.resources.max_concurrent_trials
    if side_by_side and limit:
        from tuner.search.run_limiter import RunWideLimiter

        searcher, limit = RunWideLimiter(searcher, run.uri, label, limit), None
    tune_config = tune.TuneConfig(
        metric=space.metric if single else None, mode=space.mode if single else None,
        search_alg=searcher, scheduler=make_scheduler(space, run, label),
        num_samples=space.budget.num_samples, time_budget_s=space.budget.time_limit_s,
        max_concurrent_trials=limit or None, reuse_actors=REUSE_ACTORS,
        trial_dirname_creator=trial_dirname)
    run_config = tune.RunConfig(
        name=condition_label(condition), storage_path=run.uri,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
        failure_config=tune.FailureConfig(max_failures=MAX_FAILURES),
        callbacks=[ResultJsonLogger(), CSVLoggerCallback(),
                   TensorBoardCallback(space.metrics, space.modes, hparam_names(space))])
    trainable_fn = make_trainable(space, store, name=trainable,
                                  config_errors=ConfigErrorRecorder(run.storage, run.name, label))
    return tune.Tuner(trainable_fn, tune_config=tune_config, run_config=run_config)


def _prepare_env() -> None:
    # Ray's own TensorBoard logger would write a second, `ray/tune/...`-tagged copy with its own
    # HParams experiment per trial; tuner.runs.tensorboard_log replaces it (CSV/JSON are added explicitly).
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # a trial that ends on a configuration error returns without a result (tuner.runs.config_errors); Ray's check that
    # every result holds the run's metric counts the config Ray adds to that empty one as a result and fails the
    # whole experiment (Ray's documented switch; our trials report their metrics in every real result)
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"


def run_search(space: SearchSpace, space_text: str, store: str, run: RunDir, address: str | None,
               num_cpus: int | None = None, optuna_storage: str | None = None,
               side_by_side: bool = True) -> dict[str, Any]:
    """Start run `run`: write its manifest, then run every condition's study.

    `optuna_storage`: an RDB URL for the studies; default a journal file in the run (tuner.runs.studies).
    `side_by_side`: the conditions' studies at the same time (tuner.search.side_by_side), else one after another."""
    from tuner.runs.tensorboard_log import hparam_metric_tags, write_experiment_summary

    if run.has_manifest():
        raise UserError(f"{run}: a run named {run.name!r} exists already; continue it with "
                        f"`python -m tuner resume {run.name}` or choose another --name")
    run.check_writable()  # a bucket's endpoint, credentials and permissions, before Ray starts
    setting = JOURNAL_STORAGE if optuna_storage is None else check_storage_url(optuna_storage)
    if setting != JOURNAL_STORAGE:
        open_storage(run, setting)  # an unreachable database fails here, before anything is written
    start_checked_ray(space, store, address, num_cpus)  # fails before anything is written
    run.write_manifest(start_manifest(space, space_text, store, run.name, setting, side_by_side))
    with tempfile.TemporaryDirectory(prefix="hparams-") as tmp:  # a local file, then into the run (any storage)
        write_experiment_summary(tmp, space, hparam_metric_tags(space.metrics))
        for f in Path(tmp).iterdir():
            run.write_bytes(f.read_bytes(), f.name)
    return _run_conditions(space, store, run, resume=False)


def start_manifest(space: SearchSpace, space_text: str, store: str, name: str, setting: str,
                   side_by_side: bool) -> dict[str, Any]:
    """run.json of a new run (tuner.runs.run_dir.new_manifest); with ASHA also `rung_epochs`, the epochs at
    which Ray's scheduler judges trials, for the report (which then needs no Ray)."""
    from tuner.search.scheduler_state import asha_rung_epochs

    manifest = new_manifest(space, space_text, store, name, setting, side_by_side)
    if space.scheduler.type == "asha":
        manifest["rung_epochs"] = asha_rung_epochs(space)
    return manifest


def resume_search(run: RunDir, address: str | None, num_cpus: int | None = None) -> dict[str, Any]:
    """Continue a run whose driver stopped: finished studies are kept, the rest continue."""
    manifest = run.read_manifest()
    space = space_from_manifest(manifest)
    run.check_writable()
    start_checked_ray(space, manifest["store"], address, num_cpus)
    fetch_journal(run)  # a bucket run resumed on another machine: its studies come back first
    return _run_conditions(space, manifest["store"], run, resume=True)


def start_checked_ray(space: SearchSpace, store: str, address: str | None, num_cpus: int | None) -> None:
    """Check the store, start or join Ray and check that the trials' resources can be met."""
    _prepare_env()
    check_store(store)  # a local store or a bucket URI; trials copy a bucket store once per node
    where = start_ray(address, num_cpus)
    check_resources(space, where)


def kept_finished(run: RunDir, label: str, space: SearchSpace) -> frozenset[str]:
    """Trials Ray would resume that the condition's Optuna study had finished (the driver died between
    the scheduler's decision and Ray's next snapshot): they stay finished."""
    from tuner.runs.studies import load_studies
    from tuner.search.scheduler_state import finished_in_study
    from tuner.runs.checkpoint_reports import keep_as_recorded

    if storage_setting(run.read_manifest()) is None:
        return frozenset()
    study = load_studies(run).get(label)
    ids = finished_in_study(read_condition(run, label, space.metric, space.mode), study, space.metric)
    keep_as_recorded(frozenset(ids))   # ended at once: their rows and curves stay as recorded
    if ids:
        print(f"[tuner] condition {label}: {len(ids)} trial(s) the study had already finished (stopped early or "
              f"complete) stay finished: {', '.join(sorted(ids))}")
    return frozenset(ids)


def _run_conditions(space: SearchSpace, store: str, run: RunDir, resume: bool) -> dict[str, Any]:
    """Run (or restore) the conditions' studies, side by side (the default) or one after another,
    recording each one's state in the manifest."""
    manifest = run.read_manifest()
    states = {c["label"]: c["state"] for c in manifest["conditions"]}
    setting = storage_setting(manifest) or JOURNAL_STORAGE  # None: a run made before studies were kept
    side_by_side = manifest.get("side_by_side", False)
    todo = []
    for index, condition in enumerate(space.condition_values()):
        if states.get(condition_label(condition)) == "done":
            print(f"[tuner] condition {condition_label(condition)}: finished earlier, kept")
        else:
            todo.append((index, condition))
    timings: dict[str, float] = {}
    interrupted = False
    with tune_stop() as stop:   # Ctrl+C or SIGTERM: every study stops, its state saved
        if side_by_side and len(todo) > 1:
            from tuner.search.side_by_side import run_in_threads

            print(f"[tuner] {len(todo)} studies side by side, at most "
                  f"{space.resources.max_concurrent_trials or 'unlimited'} trial(s) at a time in the run")
            outcomes = run_in_threads({condition_label(c): (lambda i=i, c=c: _run_condition(
                space, store, run, i, c, resume, setting, side_by_side, stop)) for i, c in todo}, stop)
            timings = {label: seconds for label, (seconds, _) in outcomes.items()}
            interrupted = any(stopped for _, stopped in outcomes.values())
        else:
            for index, condition in todo:
                seconds, interrupted = _run_condition(space, store, run, index, condition, resume, setting,
                                                      side_by_side, stop)
                timings[condition_label(condition)] = seconds
                if interrupted:
                    break
    return {"run": run.uri, "timings": timings, "interrupted": interrupted}


def _run_condition(space: SearchSpace, store: str, run: RunDir, index: int, condition: dict[str, Any],
                   resume: bool, setting: str, side_by_side: bool, stop: threading.Event) -> tuple[float, bool]:
    """Run or restore one condition's study; returns (seconds, interrupted). `stop`: set by Ctrl+C or SIGTERM
    (tuner.search.stop_signals), Tune's loop ends when it is set."""
    from ray import tune

    label = condition_label(condition)
    exp_uri, name = run.child_uri(label), condition_trainable(run.read_manifest(), label)
    start = time.perf_counter()
    if resume and tune.Tuner.can_restore(exp_uri):
        print(f"[tuner] condition {label}: restoring the interrupted study from {exp_uri}")
        finished = kept_finished(run, label, space)
        if side_by_side and space.resources.max_concurrent_trials:
            # Ray restarts these without asking the searcher: they hold their run-wide slots from the start
            from tuner.search.run_limiter import run_slots

            slots = run_slots(run.uri, space.resources.max_concurrent_trials)
            with slots.lock:
                slots.live |= {(label, r.trial_id) for r in read_condition(run, label, space.metric, space.mode)
                               if r.status not in ("TERMINATED",) and r.trial_id not in finished}
        trainable = make_trainable(space, store, name=name, finished=finished,
                                   config_errors=ConfigErrorRecorder(run.storage, run.name, label))
        tuner = tune.Tuner.restore(exp_uri, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        print(f"[tuner] condition {label}: starting a study of {space.budget.num_samples} trials")
        tuner = make_tuner(space, condition, index, run, store, setting, side_by_side, name)
    _set_state(run, label, "running")
    try:
        tuner.fit()
    finally:
        upload_journal(run)  # bucket storage: the local journal into the run folder
    seconds = time.perf_counter() - start
    # a stopped driver (Ctrl+C, SIGTERM) leaves RUNNING/PENDING trials, or fewer trials than the budget when it
    # stopped between two trials or before the first; HyperBand may end with PAUSED ones
    records = read_condition(run, label, space.metric, space.mode)
    unfinished = [r.trial_id for r in records if r.status in ("RUNNING", "PENDING")]
    if unfinished or (stop.is_set() and len(records) < space.budget.num_samples):  # keep the study resumable
        print(f"[tuner] condition {label}: interrupted with {len(unfinished)} unfinished trial(s) and "
              f"{space.budget.num_samples - len(records)} not started; "
              f"continue with `python -m tuner resume {run.name}`", file=sys.stderr)
        return seconds, True
    _set_state(run, label, "done")
    return seconds, False


_MANIFEST_LOCK = threading.Lock()   # the studies' threads update one manifest


def _set_state(run: RunDir, label: str, state: str) -> None:
    with _MANIFEST_LOCK:
        run.set_condition_state(label, state)
